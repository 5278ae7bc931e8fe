"""One small `torch.nn.Module` per exported component: plain tensors in, plain tensors out.

`openvino.convert_model` traces these; their input names become the IR's input names, which the runtime's
OV parts feed. Input layouts follow diffusers' StableVideoDiffusionPipeline exactly.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from svdtool.models.decoders import with_neighbours


class ImageEncoderWrapper(nn.Module):
    """pixel_values [B, 3, S, S] (S: the CLIP config's image_size, 224 for SVD) → image_embeds [B, D] (CLIP projection)."""

    def __init__(self, image_encoder: nn.Module):
        super().__init__()
        self.image_encoder = image_encoder

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        return self.image_encoder(pixel_values).image_embeds


class VaeEncoderWrapper(nn.Module):
    """sample [B, 3, H, W] in [-1, 1] → latent_parameters [B, 2*C, H/s, W/s] (mean ‖ logvar, optimum-intel's layout; s is
    the VAE's downscale, 8 for SVD)."""

    def __init__(self, vae: nn.Module):
        super().__init__()
        self.vae = vae

    def forward(self, sample: torch.Tensor) -> torch.Tensor:
        return self.vae.encode(sample).latent_dist.parameters


class VaeDecoderWrapper(nn.Module):
    """latent_sample [F, C, h, w] (one chunk of frames, already divided by scaling_factor) → sample [F, 3, s·h, s·w].

    The temporal decoder mixes the F frames of the chunk; num_frames is read from the batch dimension, so one
    dynamic IR serves every `decode_chunk_size`.
    """

    def __init__(self, vae: nn.Module):
        super().__init__()
        self.vae = vae

    def forward(self, latent_sample: torch.Tensor) -> torch.Tensor:
        return self.vae.decode(latent_sample, num_frames=latent_sample.shape[0]).sample


class TinyDecoderWrapper(nn.Module):
    """The VaeDecoderWrapper interface for a tiny decoder (`--vae-decoder`, an AutoencoderTiny): latent_sample as the
    pipeline hands it (divided by the VAE's scaling_factor) times `scale` (the VAE's scaling factor over the tiny
    model's) is in the tiny model's latent space; it decodes each frame on its own, seeing the `context` frames on
    each side within the chunk it is given (models/decoders.py: with_neighbours)."""

    def __init__(self, tiny: nn.Module, scale: float, context: int = 0):
        super().__init__()
        self.tiny, self.scale, self.context = tiny, scale, context

    def forward(self, latent_sample: torch.Tensor) -> torch.Tensor:
        return self.tiny.decode(with_neighbours(latent_sample * self.scale, self.context)).sample


class UnetWrapper(nn.Module):
    """sample [B, F, 2C, h, w], timestep [] , encoder_hidden_states [B, 1, D], added_time_ids [B, 3] → [B, F, C, h, w]."""

    def __init__(self, unet: nn.Module):
        super().__init__()
        self.unet = unet

    def forward(
        self,
        sample: torch.Tensor,
        timestep: torch.Tensor,
        encoder_hidden_states: torch.Tensor,
        added_time_ids: torch.Tensor,
    ) -> torch.Tensor:
        return self.unet(sample, timestep, encoder_hidden_states, added_time_ids, return_dict=False)[0]


@dataclass(frozen=True)
class ExportShape:
    """The shape used for tracing and, with `static`, baked into the IR (pixels; latents are `vae_scale` smaller)."""

    height: int
    width: int
    num_frames: int
    batch_size: int = 1
    static: bool = False
    vae_scale: int = 8

    @property
    def latent_hw(self) -> tuple[int, int]:
        return self.height // self.vae_scale, self.width // self.vae_scale


def example_inputs(name: str, shape: ExportShape, config: dict) -> dict[str, torch.Tensor]:
    """Example inputs for tracing `name`, every size taken from its own config (CLIP's image size and channels, the
    VAE's channels and latent width, the UNet's input channels and cross-attention width)."""
    h, w = shape.latent_hw
    guided = 2 * shape.batch_size  # SVD always runs the unconditional and conditional halves together
    if name == "image_encoder":
        size = config["image_size"]
        return {"pixel_values": torch.randn(shape.batch_size, config["num_channels"], size, size)}
    if name == "vae_encoder":
        return {"sample": torch.randn(shape.batch_size, config["in_channels"], shape.height, shape.width)}
    if name == "vae_decoder":
        return {"latent_sample": torch.randn(shape.num_frames, config["latent_channels"], h, w)}
    if name == "unet":  # three added time ids (fps - 1, motion bucket, noise augmentation), as diffusers' pipeline checks
        return {
            "sample": torch.randn(guided, shape.num_frames, config["in_channels"], h, w),
            "timestep": torch.tensor(0.5),
            "encoder_hidden_states": torch.randn(guided, 1, config["cross_attention_dim"]),
            "added_time_ids": torch.tensor([[6.0, 127.0, 0.02]]).repeat(guided, 1),
        }
    raise KeyError(name)


def input_shapes(name: str, shape: ExportShape, config: dict) -> dict[str, list[int]]:
    """IR input shapes: the example's, with batch/frames/height/width set to -1 unless `static`."""
    shapes = {key: list(value.shape) for key, value in example_inputs(name, shape, config).items()}
    if shape.static:
        return shapes
    dynamic_dims = {
        "image_encoder": {"pixel_values": [0]},
        "vae_encoder": {"sample": [0, 2, 3]},
        "vae_decoder": {"latent_sample": [0, 2, 3]},
        "unet": {"sample": [0, 1, 3, 4], "encoder_hidden_states": [0], "added_time_ids": [0]},
    }[name]
    for key, dims in dynamic_dims.items():
        for dim in dims:
            shapes[key][dim] = -1
    return shapes
