"""Same seed, same noise: every backend and dtype starts from the float32 draws of one CPU generator."""

import diffusers.pipelines.stable_video_diffusion.pipeline_stable_video_diffusion as svd_module
import numpy as np
import pytest
import torch
from diffusers import StableVideoDiffusionPipeline

from conftest import psnr
from svdtool.models import load_pipeline
from svdtool.runtime import GenerationSettings, generate, load_image, load_ov_pipeline

SETTINGS = GenerationSettings(num_frames=4, height=64, width=64, num_inference_steps=3, fps=7, motion_bucket_id=127,
                              noise_aug_strength=0.02, min_guidance_scale=1.0, max_guidance_scale=3.0, decode_chunk_size=4,
                              seed=123)


def expected_draws(seed: int, num_frames: int, channels: int, size: int) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    noise = torch.randn((1, 3, size, size), generator=generator, dtype=torch.float32)
    latents = torch.randn((1, num_frames, channels, size // 8, size // 8), generator=generator, dtype=torch.float32)
    return noise, latents


@pytest.fixture
def recorded(monkeypatch):
    """What the pipeline drew itself (randn_tensor calls) and the latents it was handed (prepare_latents)."""
    calls = {"randn": [], "latents": []}
    original_randn, original_prepare = svd_module.randn_tensor, StableVideoDiffusionPipeline.prepare_latents

    def randn(shape, generator=None, device=None, dtype=None, **kwargs):
        value = original_randn(shape, generator=generator, device=device, dtype=dtype, **kwargs)
        calls["randn"].append(value.clone())
        return value

    def prepare(self, *args, **kwargs):
        calls["latents"].append(args[-1].clone())
        return original_prepare(self, *args, **kwargs)

    monkeypatch.setattr(svd_module, "randn_tensor", randn)
    monkeypatch.setattr(StableVideoDiffusionPipeline, "prepare_latents", prepare)
    return calls


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16], ids=["fp32", "fp16"])
def test_torch_pipeline_gets_float32_draws(recorded, image_file, dtype):
    pipeline = load_pipeline("tiny", dtype)
    generate(pipeline, load_image(image_file), SETTINGS, show_progress=False)
    noise, latents = expected_draws(SETTINGS.seed, 4, pipeline.unet.config.in_channels // 2, 64)
    [drawn] = recorded["randn"]  # the pipeline drew only the noise augmentation, in float32
    assert drawn.dtype == torch.float32 and torch.equal(drawn, noise)
    [handed] = recorded["latents"]
    assert handed.dtype == dtype and torch.equal(handed, latents.to(dtype))


def test_openvino_pipeline_gets_the_same_draws(recorded, tiny_ir_fp32, image_file):
    pipeline, _ = load_ov_pipeline(tiny_ir_fp32, precision="f32")
    generate(pipeline, load_image(image_file), SETTINGS, show_progress=False)
    noise, latents = expected_draws(SETTINGS.seed, 4, pipeline.unet.config.in_channels // 2, 64)
    assert torch.equal(recorded["randn"][0], noise) and torch.equal(recorded["latents"][0], latents)


def test_fp16_and_fp32_runs_agree(image_file):
    """One seed gives one video whatever the dtype: fp16 execution stays close to fp32 (a different seed does not)."""
    image = load_image(image_file)
    fp32 = generate(load_pipeline("tiny"), image, SETTINGS, show_progress=False).frames
    fp16 = generate(load_pipeline("tiny", torch.float16), image, SETTINGS, show_progress=False).frames
    other_seed = generate(load_pipeline("tiny"), image, GenerationSettings(**{**SETTINGS.as_dict(), "seed": 124}), show_progress=False).frames
    assert psnr(fp16, fp32) >= 30 > psnr(other_seed, fp32)
    assert not np.array_equal(fp16, fp32)
