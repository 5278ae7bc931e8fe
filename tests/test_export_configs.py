"""Export and parity on SVD pipelines whose configs differ from the presets in every traced size: CLIP image and
patch size, VAE downscale and latent channels, UNet channels, depth and frame count."""

import numpy as np
import pytest
import torch
from diffusers import (AutoencoderKLTemporalDecoder, EulerDiscreteScheduler, StableVideoDiffusionPipeline,
                       UNetSpatioTemporalConditionModel)
from transformers import CLIPImageProcessor, CLIPVisionConfig, CLIPVisionModelWithProjection

from conftest import psnr
from svdtool.convert import export
from svdtool.models import generation_defaults, load_pipeline, resolve_source
from svdtool.models.presets import SVD_SCHEDULER_CONFIG
from svdtool.runtime import GenerationSettings, generate, load_image, load_ov_pipeline

CONFIGS = {
    # CLIP 32 px / patch 4; VAE downscale 4 (3 levels), 2 latent channels; UNet 2 levels, 5 frames -> size multiple 8
    "clip32-vae4-latent2": dict(clip=(32, 4), vae_levels=3, latents=2, unet_levels=2, frames=5, size=(40, 56)),
    # CLIP 64 px / patch 16; VAE downscale 2 (2 levels), 6 latent channels; UNet 3 levels, 3 frames -> size multiple 8
    "clip64-vae2-latent6": dict(clip=(64, 16), vae_levels=2, latents=6, unet_levels=3, frames=3, size=(24, 32)),
}


def build(clip: tuple[int, int], vae_levels: int, latents: int, unet_levels: int, frames: int, **_) -> StableVideoDiffusionPipeline:
    torch.manual_seed(0)
    image_size, patch = clip
    encoder = CLIPVisionModelWithProjection(CLIPVisionConfig(image_size=image_size, patch_size=patch, hidden_size=32,
                                                             intermediate_size=64, num_attention_heads=2, num_hidden_layers=2,
                                                             projection_dim=32))
    vae = AutoencoderKLTemporalDecoder(block_out_channels=[32] * vae_levels, down_block_types=["DownEncoderBlock2D"] * vae_levels,
                                       layers_per_block=1, latent_channels=latents)
    down = ["CrossAttnDownBlockSpatioTemporal"] * (unet_levels - 1) + ["DownBlockSpatioTemporal"]
    up = ["UpBlockSpatioTemporal"] + ["CrossAttnUpBlockSpatioTemporal"] * (unet_levels - 1)
    unet = UNetSpatioTemporalConditionModel(sample_size=8, in_channels=2 * latents, out_channels=latents,
                                            block_out_channels=[32] * unet_levels, down_block_types=down, up_block_types=up,
                                            layers_per_block=1, cross_attention_dim=32, num_attention_heads=[2] * unet_levels,
                                            addition_time_embed_dim=16, projection_class_embeddings_input_dim=48, num_frames=frames)
    extractor = CLIPImageProcessor(crop_size={"height": image_size, "width": image_size}, size={"shortest_edge": image_size})
    return StableVideoDiffusionPipeline(vae=vae, image_encoder=encoder, unet=unet, feature_extractor=extractor,
                                        scheduler=EulerDiscreteScheduler.from_config(SVD_SCHEDULER_CONFIG))


@pytest.mark.parametrize("name", [  # the second (about 30 s): `pytest -m slow`
    "clip32-vae4-latent2", pytest.param("clip64-vae2-latent6", marks=pytest.mark.slow)])
def test_export_and_parity(name, tmp_path, image_file):
    config = CONFIGS[name]
    build(**config).save_pretrained(tmp_path / "torch")
    source = resolve_source(str(tmp_path / "torch"))
    assert generation_defaults(source).size_multiple == 8 and generation_defaults(source).num_frames == config["frames"]
    manifest = export(source, tmp_path / "ir", weights="fp32")
    assert manifest["components"]["image_encoder"]["inputs"]["pixel_values"].endswith(f"{config['clip'][0]},{config['clip'][0]}]")
    height, width = config["size"]  # not the tracing shape, and not multiples of 64
    settings = GenerationSettings(num_frames=config["frames"], height=height, width=width, num_inference_steps=3,
                                  decode_chunk_size=2).resolved(manifest["generation_defaults"])
    image = load_image(image_file)
    ov_pipeline, _ = load_ov_pipeline(tmp_path / "ir", precision="f32")
    ov_frames = generate(ov_pipeline, image, settings, show_progress=False).frames
    torch_frames = generate(load_pipeline(source), image, settings, show_progress=False).frames
    assert ov_frames.shape == (config["frames"], height, width, 3) and np.ptp(ov_frames) > 0
    assert psnr(ov_frames, torch_frames) >= 60
