import shutil

import pytest
import torch

from svdtool.errors import SvdtoolError
from svdtool.models import BUILTIN_MODELS, PRESETS, generation_defaults, load_component, load_pipeline, resolve_source


def test_presets_are_labelled_random_weights():
    for name in PRESETS:
        source = resolve_source(name)
        assert source.random_weights and "random weights" in source.label()
        assert "random weights" in source.describe()["description"]


def test_tiny_keeps_svd_interfaces(tiny_torch):
    assert tiny_torch.vae_scale_factor == 8
    assert tiny_torch.unet.config.in_channels == 2 * tiny_torch.vae.config.latent_channels
    assert tiny_torch.unet.config.cross_attention_dim == tiny_torch.image_encoder.config.projection_dim
    assert tiny_torch.unet.config.projection_class_embeddings_input_dim == 3 * tiny_torch.unet.config.addition_time_embed_dim


def test_true_svd_architecture_configs():
    preset = PRESETS["svd-xt"]
    assert preset.vae["block_out_channels"] == [128, 256, 512, 512]
    assert preset.image_encoder["hidden_size"] == 1280 and preset.image_encoder["projection_dim"] == 1024
    assert preset.defaults.num_frames == 25 and PRESETS["svd"].defaults.num_frames == 14


def test_presets_are_deterministic():
    a, b = load_component(resolve_source("tiny"), "unet"), load_component(resolve_source("tiny"), "unet")
    assert all(torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters()))


def test_local_diffusers_folder_round_trip(tiny_torch, tmp_path):
    tiny_torch.save_pretrained(tmp_path / "fp32")
    source = resolve_source(str(tmp_path / "fp32"))
    assert source.kind == "folder" and source.variant is None
    loaded = load_pipeline(source)
    assert all(torch.equal(p, q) for p, q in zip(loaded.unet.parameters(), tiny_torch.unet.parameters()))
    assert generation_defaults(source).num_frames == tiny_torch.unet.config.num_frames


def test_a_folder_train_mini_wrote_defaults_to_svd_minis_size(tmp_path):
    """A retrained svd-mini (its training.json says so) keeps mini's 128x128; without the record a folder is SVD's."""
    shutil.copytree(BUILTIN_MODELS["mini"].folder, tmp_path / "retrained")
    defaults = generation_defaults(resolve_source(str(tmp_path / "retrained")))
    assert defaults == generation_defaults(resolve_source("mini")) and (defaults.height, defaults.width) == (128, 128)
    (tmp_path / "retrained" / "training.json").unlink()
    defaults = generation_defaults(resolve_source(str(tmp_path / "retrained")))
    assert (defaults.height, defaults.width, defaults.num_frames) == (576, 1024, 8)


def test_local_fp16_variant_is_detected(tiny_torch, tmp_path):
    tiny_torch.save_pretrained(tmp_path / "half", variant="fp16")
    source = resolve_source(str(tmp_path / "half"))
    assert source.variant == "fp16"
    unet = load_component(source, "unet")
    assert unet.dtype == torch.float32  # upcast on load for export


def test_hub_offline_is_one_clear_error():
    source = resolve_source("stabilityai/stable-video-diffusion-img2vid-xt")
    assert source.kind == "hub"
    with pytest.raises(SvdtoolError, match="stabilityai/stable-video-diffusion-img2vid-xt"):
        load_component(source, "unet")


@pytest.mark.parametrize("spec", ["not-a-model", "a/b/c", "/"])
def test_unknown_source(spec):
    with pytest.raises(SvdtoolError):
        resolve_source(spec)


def test_folder_without_model_index(tmp_path):
    with pytest.raises(SvdtoolError, match="model_index.json"):
        resolve_source(str(tmp_path))
