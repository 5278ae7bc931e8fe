"""The true SVD architecture (random weights): export once, then check each IR component against PyTorch at a
shape other than the tracing one. Slow (minutes, ~14 GB RAM): `pytest -m slow`."""

import numpy as np
import openvino as ov
import pytest
import torch

from svdtool.convert import export
from svdtool.models import load_component, resolve_source

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def svd_ir(tmp_path_factory):
    folder = tmp_path_factory.mktemp("svd") / "svd-fp32"
    export("svd", folder, weights="fp32")
    return folder


def relative_error(ov_out: np.ndarray, torch_out: torch.Tensor) -> float:
    reference = torch_out.float().numpy()
    return float(np.abs(ov_out - reference).max() / np.abs(reference).max())


def compiled(folder, name):
    return ov.Core().compile_model(folder / name / "openvino_model.xml", "CPU", {"INFERENCE_PRECISION_HINT": "f32"})


def test_unet_matches_pytorch_away_from_the_trace_shape(svd_ir):
    unet = load_component(resolve_source("svd"), "unet")
    generator = torch.Generator().manual_seed(0)
    inputs = {
        "sample": torch.randn(2, 3, 8, 16, 24, generator=generator),
        "timestep": torch.tensor(0.7),
        "encoder_hidden_states": torch.randn(2, 1, 1024, generator=generator),
        "added_time_ids": torch.tensor([[6.0, 127.0, 0.02]] * 2),
    }
    with torch.no_grad():
        expected = unet(*inputs.values(), return_dict=False)[0]
    del unet
    got = compiled(svd_ir, "unet")({k: v.numpy() for k, v in inputs.items()})[0]
    assert got.shape == (2, 3, 4, 16, 24)
    assert relative_error(got, expected) < 1e-3


def test_vae_and_image_encoder_match_pytorch(svd_ir):
    vae = load_component(resolve_source("svd"), "vae")
    latents = torch.randn(3, 4, 16, 24, generator=torch.Generator().manual_seed(1))
    image = torch.rand(1, 3, 128, 192) * 2 - 1
    with torch.no_grad():
        decoded = vae.decode(latents, num_frames=3).sample
        moments = vae.encode(image).latent_dist.parameters
    assert relative_error(compiled(svd_ir, "vae_decoder")({"latent_sample": latents.numpy()})[0], decoded) < 1e-3
    assert relative_error(compiled(svd_ir, "vae_encoder")({"sample": image.numpy()})[0], moments) < 1e-3
    encoder = load_component(resolve_source("svd"), "image_encoder")
    pixels = torch.randn(2, 3, 224, 224)
    with torch.no_grad():
        embeds = encoder(pixels).image_embeds
    assert relative_error(compiled(svd_ir, "image_encoder")({"pixel_values": pixels.numpy()})[0], embeds) < 1e-3
