"""Named models: presets built from config with seeded random weights (labelled "random weights" everywhere), and
the trained `mini` pipeline and its 4-step student `mini-lcm` shipped with the package.

`tiny` is a few MB and generates in seconds on a laptop CPU, yet keeps SVD's interfaces (VAE downscale 8,
8-channel UNet input, CLIP image embedding, 3 added time ids). `svd` and `svd-xt` are the true Stable Video
Diffusion architecture (UNetSpatioTemporalConditionModel defaults, AutoencoderKLTemporalDecoder 128/256/512/512,
CLIP ViT-H/14 with a 1024-d projection) for memory and speed work.
"""

from __future__ import annotations

import hashlib
import json
import math
import zlib
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

import numpy as np
import torch
from diffusers import AutoencoderKLTemporalDecoder, EulerDiscreteScheduler, UNetSpatioTemporalConditionModel
from transformers import CLIPImageProcessor, CLIPVisionConfig, CLIPVisionModelWithProjection

from svdtool.outputs import sha256_file


@dataclass(frozen=True)
class GenerationDefaults:
    """Settings `generate` uses when the user gives none (recorded in every manifest)."""

    num_frames: int
    height: int
    width: int
    num_inference_steps: int
    fps: int = 7
    motion_bucket_id: int = 127
    noise_aug_strength: float = 0.02
    min_guidance_scale: float = 1.0
    max_guidance_scale: float = 3.0
    size_multiple: int = 64  # height and width must be multiples of this (see sources.size_multiple)
    # Frames the VAE decoder takes at once (None: all). SVD-size models decode 8 at a time, as diffusers' SVD examples
    # do: at 576x1024 a chunk of 15 or more frames puts over 2**31 elements in one decoder tensor, which OpenVINO's
    # CPU plugin does not survive (25 frames crashed it), and the decoder's memory grows with the chunk.
    decode_chunk_size: int | None = None

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


# SVD / SVD-XT ship this Euler scheduler configuration (EDM sigmas, v-prediction, continuous timesteps).
SVD_SCHEDULER_CONFIG: dict[str, Any] = {
    "beta_end": 0.012,
    "beta_schedule": "scaled_linear",
    "beta_start": 0.00085,
    "interpolation_type": "linear",
    "num_train_timesteps": 1000,
    "prediction_type": "v_prediction",
    "sigma_max": 700.0,
    "sigma_min": 0.002,
    "steps_offset": 1,
    "timestep_spacing": "leading",
    "timestep_type": "continuous",
    "use_karras_sigmas": True,
}

CLIP_MEAN = [0.48145466, 0.4578275, 0.40821073]
CLIP_STD = [0.26862954, 0.26130258, 0.27577711]


def portable_init(module: torch.nn.Module, seed: int) -> torch.nn.Module:
    """Overwrite every parameter from a NumPy generator keyed by (seed, parameter name).

    Written by hand because library init code changes between versions (transformers 5.5 and 5.17 initialise CLIP
    differently): a preset must be bit-identical on every host, or a reference made on a GPU host with other
    library versions would be another model. Biases 0, norm scales 1, other vectors N(0, 0.02), weights
    N(0, 1/fan_in).
    """
    with torch.no_grad():
        for name, parameter in module.named_parameters():
            shape = tuple(parameter.shape)
            rng = np.random.default_rng([seed, zlib.crc32(name.encode())])
            if name.endswith("bias"):
                values = np.zeros(shape)
            elif parameter.ndim == 1:
                values = np.ones(shape) if "norm" in name else rng.normal(0.0, 0.02, shape)
            else:
                values = rng.normal(0.0, 1.0 / math.sqrt(math.prod(shape[1:])), shape)
            parameter.copy_(torch.from_numpy(values.astype(np.float32)))
    return module


@dataclass(frozen=True)
class Preset:
    """A named architecture: component configs plus default generation settings."""

    name: str
    description: str
    unet: dict[str, Any]
    vae: dict[str, Any]
    image_encoder: dict[str, Any]
    defaults: GenerationDefaults
    seed: int = 0

    def build_component(self, name: str) -> Any:
        """Build one component; its weights depend only on (preset seed, component, parameter name)."""
        if name == "unet":
            return portable_init(UNetSpatioTemporalConditionModel(**self.unet), self.seed).eval()
        if name == "vae":
            return portable_init(AutoencoderKLTemporalDecoder(**self.vae), self.seed).eval()
        if name == "image_encoder":
            return portable_init(CLIPVisionModelWithProjection(CLIPVisionConfig(**self.image_encoder)), self.seed).eval()
        if name == "scheduler":
            return EulerDiscreteScheduler.from_config(SVD_SCHEDULER_CONFIG)
        if name == "feature_extractor":
            return CLIPImageProcessor(
                crop_size={"height": 224, "width": 224}, size={"shortest_edge": 224},
                image_mean=CLIP_MEAN, image_std=CLIP_STD, resample=3,
            )
        raise KeyError(name)


_SVD_VAE = {
    "block_out_channels": [128, 256, 512, 512],
    "down_block_types": ["DownEncoderBlock2D"] * 4,
    "layers_per_block": 2,
    "latent_channels": 4,
    "sample_size": 768,
    "scaling_factor": 0.18215,
    "force_upcast": True,
}
_VIT_H_14 = {
    "hidden_size": 1280,
    "intermediate_size": 5120,
    "num_attention_heads": 16,
    "num_hidden_layers": 32,
    "patch_size": 14,
    "image_size": 224,
    "projection_dim": 1024,
    "hidden_act": "gelu",
}

PRESETS: dict[str, Preset] = {
    "tiny": Preset(
        name="tiny",
        description="tiny SVD-shaped pipeline (random weights, ~3 MB) for tests and demos",
        unet={
            "sample_size": 8,
            "block_out_channels": (32, 64),
            "layers_per_block": 1,
            "down_block_types": ("CrossAttnDownBlockSpatioTemporal", "DownBlockSpatioTemporal"),
            "up_block_types": ("UpBlockSpatioTemporal", "CrossAttnUpBlockSpatioTemporal"),
            "cross_attention_dim": 32,
            "num_attention_heads": (2, 4),
            "addition_time_embed_dim": 32,
            "projection_class_embeddings_input_dim": 96,
            "num_frames": 6,
        },
        vae={
            "block_out_channels": [32, 32, 32, 32],
            "down_block_types": ["DownEncoderBlock2D"] * 4,
            "layers_per_block": 1,
            "latent_channels": 4,
            "sample_size": 64,
        },
        image_encoder={
            "hidden_size": 32,
            "intermediate_size": 64,
            "num_attention_heads": 4,
            "num_hidden_layers": 2,
            "patch_size": 32,
            "image_size": 224,
            "projection_dim": 32,
        },
        defaults=GenerationDefaults(num_frames=6, height=64, width=64, num_inference_steps=4),
    ),
    "svd": Preset(
        name="svd",
        description="Stable Video Diffusion img2vid architecture (random weights), 14 frames at 576x1024",
        unet={"num_frames": 14},
        vae=_SVD_VAE,
        image_encoder=_VIT_H_14,
        defaults=GenerationDefaults(num_frames=14, height=576, width=1024, num_inference_steps=25, decode_chunk_size=8),
    ),
    "svd-xt": Preset(
        name="svd-xt",
        description="Stable Video Diffusion img2vid-xt architecture (random weights), 25 frames at 576x1024",
        unet={"num_frames": 25},
        vae=_SVD_VAE,
        image_encoder=_VIT_H_14,
        defaults=GenerationDefaults(num_frames=25, height=576, width=1024, num_inference_steps=25, decode_chunk_size=8),
    ),
}


WEIGHT_COMPONENTS = ("image_encoder", "unet", "vae")  # the pipeline components that hold weights (torch modules)


@dataclass(frozen=True)
class BuiltinModel:
    """A trained pipeline shipped inside the package as a diffusers folder (loads offline). One that `shares` another
    ships only its UNet and scheduler; its VAE, image encoder and feature extractor are the other's files."""

    name: str
    description: str
    folder: Path
    defaults: GenerationDefaults
    shares: str | None = None

    def component_folder(self, name: str) -> Path:
        """The folder that holds component `name` (its subfolder there)."""
        own = self.shares is None or name in ("unet", "scheduler")
        return self.folder if own else BUILTIN_MODELS[self.shares].component_folder(name)

    def weights_sha256(self) -> str:
        """One sha256 over the weight files it loads (shared ones included): tells an IR exported from an earlier build
        of the model."""
        return _weights_sha256(tuple(self.component_folder(name) / name for name in WEIGHT_COMPONENTS))


@cache
def _weights_sha256(component_folders: tuple[Path, ...]) -> str:
    files = {f"{folder.name}/{path.relative_to(folder).as_posix()}": sha256_file(path)
             for folder in component_folders for path in sorted(folder.rglob("*.safetensors"))}
    return hashlib.sha256(json.dumps(files).encode()).hexdigest()


BUILTIN_MODELS: dict[str, BuiltinModel] = {
    "mini": BuiltinModel(
        name="mini",
        description="svd-mini v7: a 41.4M-parameter SVD trained on procedural clips (128x128, 8 frames, camera zoom; models/train_mini.py)",
        folder=Path(__file__).parent / "mini",
        # Guidance ramps to 2.5, not SVD's 3.0: svd-mini's conditional model greys colour and guidance restores it,
        # overshooting on a face at 3.0 (models/training/mini_colour_seeds.py --guidance; README, svd-mini).
        defaults=GenerationDefaults(num_frames=8, height=128, width=128, num_inference_steps=25, max_guidance_scale=2.5),
    ),
    "mini-lcm": BuiltinModel(
        name="mini-lcm",
        description="svd-mini v7's 4-step consistency student: its UNet distilled with guidance 1.0 -> 2.5 built in "
                    "(models/distill_mini.py), sampled without guidance; mini's VAE and image encoder",
        folder=Path(__file__).parent / "mini-lcm",
        # Guidance 1.0 -> 1.0: the teacher's guidance is distilled into the UNet, so each step is one UNet half
        # (bench/results/mini_goals_lcm.md measured the student so).
        defaults=GenerationDefaults(num_frames=8, height=128, width=128, num_inference_steps=4, max_guidance_scale=1.0),
        shares="mini",
    ),
}
