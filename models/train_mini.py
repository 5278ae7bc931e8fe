"""Train svd-mini: a small Stable Video Diffusion (same diffusers classes) on procedural clips, on one GPU.

    python -m svdtool.models.train_mini --out mini/ --state .train/ --vae-minutes 3 --unet-minutes 5

Stage 1 trains the VAE (encoder + temporal decoder) on clips; stage 2 freezes it and trains the UNet and the CLIP
image encoder with SVD's objective: EDM sigmas, v-prediction preconditioning (the scheduler's `v_prediction` with
continuous timesteps 0.25·log σ), the conditioning frame's VAE latent (noise-augmented, unscaled) concatenated to
the noisy latents, the CLIP image embedding, and added time ids (fps-1, motion_bucket_id, noise_aug_strength);
both conditions are dropped together for classifier-free guidance, as the pipeline's negative branch zeros both.
Each call resumes from `--state` (full precision + optimiser) when that folder survived, else from `--init`
(a saved fp16 pipeline) with a fresh optimiser, and writes the fp16 pipeline plus the loss log to `--out`.

Written by hand: diffusers ships no SVD training loop; its pieces (EMAModel, the pipeline's resize) are reused.
"""

from __future__ import annotations

import copy
import functools
import itertools
import json
import math
import time
from pathlib import Path

import torch
import torch.nn.functional as F
import typer
from diffusers import AutoencoderKLTemporalDecoder, StableVideoDiffusionPipeline, UNetSpatioTemporalConditionModel
from diffusers.pipelines.stable_video_diffusion.pipeline_stable_video_diffusion import _resize_with_antialiasing
from diffusers.training_utils import EMAModel
from transformers import CLIPVisionConfig, CLIPVisionModelWithProjection

from .presets import CLIP_MEAN, CLIP_STD, PRESETS
from .scenes import CLIP_SIZE, MOSAIC_SHARE, Motion, SceneMix, photo_bank, render_clips
from .training_data import FRAMES, LatentPool, build_pool, clip_batches, crop_tiles, pooled_clip_batches

FPS = 7
P_MEAN, P_STD = 0.4, 1.4  # log-normal training sigmas (EDM); the latents are 16x16, so weight lower noise
CONDITION_DROP = 0.1
COMPILE_MODES = ("default", "reduce-overhead")  # --compile
VAE_PARTS = {"all": "(encoder + temporal decoder)", "decoder": "decoder only", "encoder": "encoder only"}  # --vae-part
MINI_UNET = {
    "sample_size": 16,
    "block_out_channels": (64, 128, 128),
    "layers_per_block": 2,
    "down_block_types": ("CrossAttnDownBlockSpatioTemporal", "CrossAttnDownBlockSpatioTemporal", "DownBlockSpatioTemporal"),
    "up_block_types": ("UpBlockSpatioTemporal", "CrossAttnUpBlockSpatioTemporal", "CrossAttnUpBlockSpatioTemporal"),
    "cross_attention_dim": 128,
    "num_attention_heads": (2, 4, 4),
    "addition_time_embed_dim": 64,
    "projection_class_embeddings_input_dim": 192,
    "num_frames": FRAMES,
}
# The first level has 64 channels: AutoencoderKLTemporalDecoder's GroupNorms have 32 groups, so v1's 32 channels made
# every full-resolution norm an instance norm that erases each feature map's mean -- the image's colour.
MINI_VAE = {
    "block_out_channels": (64, 128, 128, 128),
    "down_block_types": ("DownEncoderBlock2D",) * 4,
    "layers_per_block": 2,
    "sample_size": 128,
}
MINI_IMAGE_ENCODER = {
    "hidden_size": 128, "intermediate_size": 512, "num_attention_heads": 4, "num_hidden_layers": 4,
    "patch_size": 32, "image_size": 224, "projection_dim": 128,
}

app = typer.Typer(add_completion=False)


def identity_time_mixing(vae: AutoencoderKLTemporalDecoder) -> AutoencoderKLTemporalDecoder:
    """Start the temporal decoder's last layer, a 3→3 colour-mixing Conv3d over 3 frames, as the identity.

    Its default (Kaiming-uniform) init is a random 3x3 colour matrix; v1's (seed 0) had singular values 0.96 / 0.54
    / 0.15, and its weakest direction, mostly red against green and blue, stayed the weakest after training (0.37):
    that axis of colour was attenuated at the decoder's very output and v1's videos came out grey-green. As the
    identity, the decoder starts as a per-frame image decoder and learns temporal mixing from there.
    """
    conv = vae.decoder.time_conv_out
    with torch.no_grad():
        conv.weight.zero_()
        conv.weight[:, :, conv.kernel_size[0] // 2, 0, 0] = torch.eye(conv.out_channels)
        conv.bias.zero_()
    return vae


def build_models(latent_channels: int = 16, vae_shape: dict | None = None) -> dict[str, torch.nn.Module]:
    """A new svd-mini; `vae_shape` (block_out_channels, layers_per_block) other than MINI_VAE's to resume a saved one."""
    torch.manual_seed(0)
    unet = {**MINI_UNET, "in_channels": 2 * latent_channels, "out_channels": latent_channels}
    vae = {**MINI_VAE, **(vae_shape or {})}
    return {
        "unet": UNetSpatioTemporalConditionModel(**unet),
        "vae": identity_time_mixing(AutoencoderKLTemporalDecoder(**vae, latent_channels=latent_channels)),
        "image_encoder": CLIPVisionModelWithProjection(CLIPVisionConfig(**MINI_IMAGE_ENCODER)),
    }


def grow_vae(vae: AutoencoderKLTemporalDecoder, state: dict[str, torch.Tensor]) -> AutoencoderKLTemporalDecoder:
    """Load a VAE with fewer layers per block into `vae` and start each added residual block as the identity (its
    last convolution zero), so the grown VAE computes what the saved one did -- the same latents, the same decoding
    (the UNet trained on them stays valid) -- and training adds depth from there (`widen_vae` adds width instead).
    (The temporal decoder's mid block builds `layers_per_block` resnets but runs only two; the unused ones stay
    unused.)"""
    missing = set(vae.load_state_dict(state, strict=False).missing_keys)
    added = {key.rsplit(".", 2)[0] for key in missing if key.endswith("conv2.weight")}
    with torch.no_grad():
        for name in added:
            conv = vae.get_submodule(name).conv2
            conv.weight.zero_()
            conv.bias.zero_()
    unexplained = {key for key in missing if not any(key.startswith(name + ".") for name in added)}
    unexplained -= {key for key in unexplained if ".time_mixer." in key}  # mixes two identities: any weight will do
    if unexplained:
        raise ValueError(f"the saved VAE does not fit this one: {sorted(unexplained)[:3]}")
    return vae


def _doubled(narrow: torch.Tensor, shape: torch.Size, generator: torch.Generator) -> torch.Tensor:
    """`narrow` grown to `shape`, each dimension kept or doubled: a doubled channel is copied twice (`repeat_interleave`,
    so both copies fall in the GroupNorm group of the original); a doubled input channel (dim 1 of a weight) shares its
    weight between its two copies at a random split, so the layer's sum is unchanged and the copies learn apart."""
    grown = narrow
    for dim, (old, new) in enumerate(zip(narrow.shape, shape)):
        if new == old:
            continue
        if new != 2 * old:
            raise ValueError(f"the saved VAE does not fit this one: width {old} -> {new} (kept or doubled only)")
        grown = grown.repeat_interleave(2, dim=dim)
        if dim == 1:
            share = torch.rand(old, generator=generator) * 0.5 + 0.25
            grown = grown * torch.stack([share, 1 - share], 1).flatten().view(1, -1, *[1] * (grown.ndim - 2))
    return grown


def widen_vae(vae: AutoencoderKLTemporalDecoder, state: dict[str, torch.Tensor]) -> AutoencoderKLTemporalDecoder:
    """Load a VAE whose blocks are as wide or half as wide as `vae`'s into it so that it computes what the saved one did
    (the same latents: the UNet trained on them stays valid), and training uses the width from there. Written here:
    diffusers and torch widen nothing (Net2Net's function-preserving widening, Chen et al. 2016, exact under
    GroupNorm because each copy stays in its original's group). A resnet that gains a shortcut (its input and output
    widths now differ) starts it as the identity the narrow block had; each mid-block attention (one head) has its
    queries scaled for its doubled head width, and its queries and keys turned by one random rotation, which keeps
    every score and lets the copies learn apart (their dot product alone would keep them equal)."""
    generator = torch.Generator().manual_seed(0)
    target = vae.state_dict()
    widened = {}
    for key, wide in target.items():
        narrow = state.get(key)
        if narrow is None:
            if ".conv_shortcut." not in key:
                raise ValueError(f"the saved VAE does not fit this one: it has no {key}")
            narrow = torch.eye(min(wide.shape[:2]))[..., None, None] if key.endswith("weight") else torch.zeros_like(wide)
        widened[key] = _doubled(narrow.float(), wide.shape, generator)
    for name, module in vae.named_modules():
        if not hasattr(module, "to_q") or module.to_q.weight.shape == state[f"{name}.to_q.weight"].shape:
            continue
        if module.heads != 1:
            raise ValueError(f"{name}: only one-head attention widens")
        rotation = torch.linalg.qr(torch.randn(module.inner_dim, module.inner_dim, generator=generator))[0]
        scale = (state[f"{name}.to_q.weight"].shape[0] / module.inner_dim) ** 0.5
        for projection, factor in (("to_q", scale), ("to_k", 1.0)):
            for part in ("weight", "bias"):
                key = f"{name}.{projection}.{part}"
                if key in widened:
                    widened[key] = factor * rotation @ widened[key]
    lost = [key for key in state if key not in target]
    if lost:  # a doubled block feeding a kept, once wider one: the kept block's resnet no longer has a shortcut
        raise ValueError(f"these widths drop {len(lost)} of the saved VAE's weights ({lost[0]}, ...): double the block "
                         "after a doubled one too")
    vae.load_state_dict(widened)
    return vae


def clip_pixels(images: torch.Tensor) -> torch.Tensor:
    """What the pipeline's `_encode_image` feeds CLIP: antialiased resize to 224 in [-1, 1], then CLIP-normalised."""
    pixels = (_resize_with_antialiasing(images, (224, 224)) + 1) / 2
    mean = torch.tensor(CLIP_MEAN, device=images.device)[:, None, None]
    std = torch.tensor(CLIP_STD, device=images.device)[:, None, None]
    return (pixels - mean) / std


# sRGB (D65) -> XYZ, each row divided by the white point's X, Y, Z: what skimage's rgb2lab (validate's colourfulness)
# computes. Written by hand: a few lines, where kornia's rgb_to_lab would be one more dependency for training.
RGB_TO_XYZ_WHITE = torch.tensor([[0.412453, 0.357580, 0.180423], [0.212671, 0.715160, 0.072169],
                                 [0.019334, 0.119193, 0.950227]]) / torch.tensor([0.95047, 1.0, 1.08883])[:, None]


def lab_chroma(images: torch.Tensor) -> torch.Tensor:
    """CIELAB chroma (N, H, W) of images in [-1, 1] (N, 3, H, W), differentiable."""
    rgb = ((images.float() + 1) / 2).clamp(0, 1)
    linear = torch.where(rgb > 0.04045, ((rgb + 0.055) / 1.055).clamp_min(1e-6) ** 2.4, rgb / 12.92)
    xyz = torch.einsum("ij,njhw->nihw", RGB_TO_XYZ_WHITE.to(images.device), linear)
    f = torch.where(xyz > 0.008856, xyz.clamp_min(0.008856) ** (1 / 3), 7.787 * xyz + 16 / 116)
    a, b = 500 * (f[:, 0] - f[:, 1]), 200 * (f[:, 1] - f[:, 2])
    return (a ** 2 + b ** 2 + 1e-6).sqrt()


def vae_loss(vae: AutoencoderKLTemporalDecoder, frames: torch.Tensor, mse: float = 0.0, chroma: float = 0.0) -> torch.Tensor:
    """L1 + L1 of image gradients (sharpness) + `mse` x MSE (what PSNR measures) + `chroma` x L1 of the Lab chroma
    (/100) averaged over 8x8 px (detail the decoder cannot draw still keeps its colourfulness, where L1 alone
    settles for the greyer mean) + a small KL, decoding each clip with the temporal decoder."""
    batch, num_frames = frames.shape[:2]
    images = frames.flatten(0, 1)
    posterior = vae.encode(images).latent_dist
    decoded = vae.decode(posterior.sample(), num_frames=num_frames).sample.float()
    loss = F.l1_loss(decoded, images)
    for dim in (-1, -2):
        loss = loss + 0.5 * F.l1_loss(decoded.diff(dim=dim), images.diff(dim=dim))
    if mse:
        loss = loss + mse * F.mse_loss(decoded, images)
    if chroma:
        local = [F.avg_pool2d(lab_chroma(x)[:, None], 8) for x in (decoded, images)]
        loss = loss + chroma / 100 * F.l1_loss(*local)
    return loss + 1e-6 * posterior.kl().mean()


def measured_scaling_factor(vae: AutoencoderKLTemporalDecoder, device: str, autocast) -> float:
    """1 / the standard deviation of the VAE's latents of 16 seeded clips: the scale the UNet sees them at."""
    with torch.no_grad(), autocast:
        frames = render_clips(424242, 16, FRAMES, photo_bank(), device).frames
        latents = vae.encode(frames.flatten(0, 1)).latent_dist.sample().float()
    return float(1 / latents.std())


def compiled(step, mode: str | None):
    """`step` compiled by torch.compile in `mode` ("default", "reduce-overhead"; None: eager): on the H200 the "default"
    mode trains 1.56x the VAE's and 1.62x the UNet's steps a minute, after compiling for the first step (103 s and
    251 s; models/training/train_speed.py, bench/results/mini_train_speed_h200.json)."""
    return step if mode is None else torch.compile(step, mode=mode)


def optimizer_for(parameters, lr: float, weight_decay: float, device: str) -> torch.optim.AdamW:
    """AdamW as every stage runs it; fused into one kernel on CUDA (the same update, fewer launches)."""
    return torch.optim.AdamW(parameters, lr=lr, betas=(0.9, 0.99), weight_decay=weight_decay, fused=device == "cuda")


def ema_for(parameters) -> EMAModel:
    """The UNet's EMA as its stage trains it (diffusers' EMAModel, one foreach update over all tensors)."""
    return EMAModel(parameters, decay=0.999, use_ema_warmup=True, power=0.75, foreach=True)


def vae_step(vae: AutoencoderKLTemporalDecoder, crop: int, compile_mode: str | None, mse: float = 0.0, chroma: float = 0.0):
    """The VAE stage's loss on a batch of rendered clips (`(frames, buckets)`), each cut into `crop` px tiles."""
    loss = compiled(functools.partial(vae_loss, vae, mse=mse, chroma=chroma), compile_mode)
    return lambda batch: loss(crop_tiles(batch[0], crop))


def conditioning(image_encoder: torch.nn.Module, batch: LatentPool) -> dict[str, torch.Tensor]:
    """`denoise`'s conditions for a batch of encoded clips: the condition latents and the CLIP embedding, both dropped
    together for CONDITION_DROP of the clips (as the pipeline's negative branch zeros both), and the added time ids."""
    latents = batch.latents
    embeddings = image_encoder(clip_pixels(batch.first_frames)).image_embeds[:, None]
    keep = (torch.rand(len(latents), device=latents.device) >= CONDITION_DROP).float()
    added_time_ids = torch.stack([torch.full_like(batch.noise_aug, FPS - 1), batch.buckets.float(), batch.noise_aug], dim=1)
    return {"condition_latents": batch.condition * keep[:, None, None, None], "embeddings": embeddings * keep[:, None, None],
            "added_time_ids": added_time_ids}


def unet_loss(models: dict, batch: LatentPool) -> torch.Tensor:
    """SVD's denoising loss, EDM-weighted, on one batch of encoded clips."""
    latents = batch.latents
    condition = conditioning(models["image_encoder"], batch)
    sigma = torch.exp(torch.randn(len(latents), device=latents.device) * P_STD + P_MEAN)
    s = sigma[:, None, None, None, None]
    noisy = latents + s * torch.randn_like(latents)
    denoised = denoise(models["unet"], noisy, sigma, **condition)
    weight = (s ** 2 + 1) / s ** 2
    return (weight * (denoised - latents) ** 2).mean()


def denoise(unet: torch.nn.Module, noisy: torch.Tensor, sigma: torch.Tensor, condition_latents: torch.Tensor,
            embeddings: torch.Tensor, added_time_ids: torch.Tensor) -> torch.Tensor:
    """SVD's denoiser D(x; σ): the UNet's v-prediction under EDM preconditioning (σ_data 1), conditioned on c_noise =
    0.25·ln σ and the condition latents concatenated to every frame, as the pipeline runs it."""
    s = sigma[:, None, None, None, None]
    c_in, c_skip, c_out = 1 / (s ** 2 + 1).sqrt(), 1 / (s ** 2 + 1), -s / (s ** 2 + 1).sqrt()
    num_frames = noisy.shape[1]
    model_input = torch.cat([noisy * c_in, condition_latents[:, None].expand(-1, num_frames, -1, -1, -1)], dim=2)
    prediction = unet(model_input, 0.25 * sigma.log(), encoder_hidden_states=embeddings, added_time_ids=added_time_ids).sample
    return c_skip * noisy + c_out * prediction.float()


def save_pipeline(models: dict, ema: EMAModel | None, scaling_factor: float, folder: Path) -> None:
    """The diffusers folder in fp16 (EMA UNet weights), loadable by StableVideoDiffusionPipeline.from_pretrained."""
    unet, vae, image_encoder = (copy.deepcopy(models[name]).half() for name in ("unet", "vae", "image_encoder"))
    if ema is not None:
        ema.copy_to(unet.parameters())
    vae.register_to_config(scaling_factor=scaling_factor)
    tiny = PRESETS["tiny"]
    pipeline = StableVideoDiffusionPipeline(
        vae=vae, image_encoder=image_encoder, unet=unet,
        scheduler=tiny.build_component("scheduler"), feature_extractor=tiny.build_component("feature_extractor"),
    )
    pipeline.save_pretrained(folder, safe_serialization=True)


def write_training_record(folder: Path, steps: dict, scaling_factor: float, device: str, runs: list[str]) -> None:
    """`training.json`: how the folder was made (objective, data, steps, the runs that made it, versions) and a
    checksum of every file."""
    from svdtool.outputs import file_inventory, library_versions

    record = {
        "model": "svd-mini", "trained_on": device, "steps": steps, "frames": FRAMES, "fps": FPS,
        "objective": {"sigma": f"lognormal(P_mean={P_MEAN}, P_std={P_STD})", "prediction": "v (EDM preconditioning)",
                      "condition_drop": CONDITION_DROP, "noise_aug_strength": "lognormal(-3.0, 0.5)"},
        "vae_scaling_factor": scaling_factor, "data": "svdtool.models.scenes.render_clips (procedural, seeded)",
        "loss_log": "loss.json", "versions": library_versions(), "runs": runs,
    }
    record["files"] = file_inventory(folder)
    (folder / "training.json").write_text(json.dumps(record, indent=2))


def load_init(models: dict, folder: Path) -> float:
    """Start from a saved fp16 pipeline (its VAE grown when `models` has a deeper one, widened when a wider one);
    returns its VAE scaling factor."""
    pipeline = StableVideoDiffusionPipeline.from_pretrained(folder, torch_dtype=torch.float32)
    for name in models:
        if name == "vae" and pipeline.vae.config.layers_per_block != models["vae"].config.layers_per_block:
            grow_vae(models["vae"], pipeline.vae.state_dict())
        elif name == "vae" and tuple(pipeline.vae.config.block_out_channels) != tuple(models["vae"].config.block_out_channels):
            widen_vae(models["vae"], pipeline.vae.state_dict())
        else:
            models[name].load_state_dict(getattr(pipeline, name).state_dict())
    return float(pipeline.vae.config.scaling_factor)


def transplant(models: dict, folder: Path) -> list[str]:
    """Start the UNet and the image encoder from a saved pipeline's, whose latents may be of another width: every
    weight of the same name and shape is copied; those that differ (the UNet's first and last convolutions, which
    read and write the latents) keep their new init. Returns the names of those."""
    pipeline = StableVideoDiffusionPipeline.from_pretrained(folder, torch_dtype=torch.float32)
    kept = []
    for name in ("unet", "image_encoder"):
        target, source = models[name].state_dict(), getattr(pipeline, name).state_dict()
        if set(source) != set(target):
            raise typer.BadParameter(f"--unet-from: the {name} of {folder} is not shaped as svd-mini's")
        fitting = {key: value for key, value in source.items() if value.shape == target[key].shape}
        models[name].load_state_dict(fitting, strict=False)
        kept += [f"{name}.{key}" for key in source if key not in fitting]
    return kept


def require_pipeline(folder: Path, option: str) -> None:
    """A one-line error, before anything loads, when `option`'s folder is not a saved svd-mini pipeline."""
    missing = [name for name in ("model_index.json", "vae/config.json") if not (folder / name).is_file()]
    if missing:
        raise typer.BadParameter(f"{option} {folder} is not a saved pipeline (no {missing[0]})")


def read_state(state: Path, keys: tuple[str, ...]) -> dict | None:
    """The training state saved in `state`/state.pt (None when there is none); a one-line error, before anything loads,
    when the file is damaged (a run killed while saving) or another trainer's."""
    checkpoint = state / "state.pt"
    if not checkpoint.is_file():
        return None
    try:
        saved = torch.load(checkpoint, map_location="cpu")
    except Exception as exc:  # torch raises pickle, zip and runtime errors alike for a damaged file
        raise typer.BadParameter(f"--state {state}: state.pt cannot be read ({type(exc).__name__}: damaged or not a "
                                 f"training state); move it away to start afresh") from exc
    missing = [key for key in keys if not isinstance(saved, dict) or key not in saved]
    if missing:
        raise typer.BadParameter(f"--state {state}: state.pt is not this trainer's (no {missing[0]!r}); give another --state folder")
    return saved


def new_vae_widths(vae_channels: str | None, resuming: bool, init: Path | None) -> tuple[int, ...] | None:
    """--vae-channels as block_out_channels, checked before anything loads: a new model's, or `init`'s VAE widened
    (each block's width kept or doubled)."""
    if not vae_channels:
        return None
    if resuming:
        raise typer.BadParameter("--vae-channels shapes a new model or widens --init's VAE: give an empty --state")
    widths = vae_channels.split(",")
    if len(widths) != len(MINI_VAE["down_block_types"]) or not all(w.isdigit() and int(w) % 32 == 0 for w in widths):
        raise typer.BadParameter(f"--vae-channels is {len(MINI_VAE['down_block_types'])} comma-separated multiples of 32 "
                                 f"(the GroupNorms' groups), not {vae_channels!r}")
    widths = tuple(int(width) for width in widths)
    if init is not None:
        saved = json.loads((init / "vae" / "config.json").read_text())["block_out_channels"]
        if not all(new in (old, 2 * old) for old, new in zip(saved, widths)):
            raise typer.BadParameter(f"--vae-channels widens --init's VAE ({','.join(map(str, saved))}): keep or double "
                                     f"each width, not {vae_channels}")
        if any(old[0] != old[1] and new[0] == new[1] for old, new in zip(zip(saved, saved[1:]), zip(widths, widths[1:]))):
            raise typer.BadParameter(f"--vae-channels {vae_channels} doubles a block of --init's VAE "
                                     f"({','.join(map(str, saved))}) but keeps the wider one after it, whose learned "
                                     "shortcut would be lost: double that one too")
    return widths


def saved_vae_shape(saved: dict | None, init: Path | None, default: int) -> tuple[int, dict]:
    """The VAE's latent width and shape (block_out_channels, layers_per_block) of what training resumes from (a state
    or a pipeline folder), else (`default`, {}: MINI_VAE's)."""
    if saved:
        shape = {"block_out_channels": saved.get("vae_channels"), "layers_per_block": saved.get("vae_layers")}
        return saved.get("latent_channels", 4), {key: value for key, value in shape.items() if value}
    if init:
        config = json.loads((init / "vae" / "config.json").read_text())
        return config["latent_channels"], {key: config[key] for key in ("block_out_channels", "layers_per_block")}
    return default, {}


@app.command()
def main(
    out: Path = typer.Option(..., help="folder for the fp16 pipeline and loss.json"),
    state: Path = typer.Option(Path(".train"), help="full-precision state to resume from and save to"),
    init: Path | None = typer.Option(None, exists=True, file_okay=False, help="saved pipeline to start from when --state holds nothing"),
    vae_minutes: float = typer.Option(0.0),
    unet_minutes: float = typer.Option(0.0),
    vae_batch: int = typer.Option(16, help="rendered clips per VAE step (x8 frames, x4 tiles)"),
    vae_crop: int = typer.Option(64, help="VAE training tile (px): each 128 px clip gives 4 clips of 64 px tiles"),
    unet_batch: int = typer.Option(32, help="clips per UNet step (x8 frames)"),
    lr: float = typer.Option(2e-4, help="UNet and image encoder learning rate"),
    vae_lr: float = typer.Option(4e-4),
    vae_anneal: bool = typer.Option(False, help="decay the VAE's learning rate linearly to 0 over --vae-minutes"),
    unet_anneal: bool = typer.Option(False, help="decay the UNet's learning rate linearly to 0 over --unet-minutes"),
    vae_mse: float = typer.Option(0.0, min=0.0, help="weight of an MSE term added to the VAE's L1 loss"),
    vae_chroma: float = typer.Option(0.0, min=0.0, help="weight of a term added to the VAE's L1 loss: L1 of the Lab "
                                     "chroma over 8x8 px, /100 (colourfulness kept where detail is not)"),
    vae_mosaics: float = typer.Option(MOSAIC_SHARE, min=0.0, max=1.0, help="share of the VAE's clips showing four "
                                      "whole photos, at the detail density of the pipeline's inputs"),
    vae_leaves: float = typer.Option(0.0, min=0.0, max=1.0, help="share of the VAE's clips showing dead-leaves scenes "
                                     "(ellipses of every size, coloured and textured by the colour photos)"),
    colour_casts: float = typer.Option(0.0, min=0.0, max=1.0, help="share of both stages' photo clips under a random "
                                       "colour cast (white-balance error): faint tints between grey and colourful"),
    vae_part: str = typer.Option("all", help="what the VAE stage trains: all; decoder (the latents, and the UNet trained on "
                                 "them, stay valid); encoder (the decoder and the scaling factor stay: the UNet's latents "
                                 "decode as before, its condition latents shift)"),
    # 16: held-out photos at 20.4 dB after 1,070 VAE steps; 4: 16.2-17.6 dB after 800-1,200 (mini_vae_check.json)
    latent_channels: int = typer.Option(16, min=1, help="VAE latent channels of a new model (the UNet takes twice as many)"),
    vae_layers: int | None = typer.Option(None, min=1, help="resnets per VAE encoder block (the decoder's have one "
                                          "more): above --init's, its VAE grows deeper, computing the same at first"),
    vae_channels: str | None = typer.Option(None, help="block_out_channels of a new model's VAE, comma-separated "
                                            "(MINI_VAE's: 64,128,128,128); with --init, its VAE widened (each width "
                                            "kept or doubled), computing the same at first"),
    vae_pool: int = typer.Option(0, min=0, help="clips the VAE stage renders once and draws its batches from (0: a "
                                 "new rendered batch every step)"),
    workers: int = typer.Option(4, min=0, help="CPU processes rendering training clips"),
    pool_clips: int = typer.Option(16384, min=1, help="clips encoded once per call for the UNet stage"),
    motion: str = typer.Option("random", help="training clips' camera: random (pan/zoom/spin mix, moving shapes) or zoom"),
    compile_mode: str | None = typer.Option(None, "--compile", help="torch.compile the VAE's and the UNet's training "
                                            "steps in this mode: default or reduce-overhead (models/training/train_speed.py)"),
    unet_from: Path | None = typer.Option(None, exists=True, file_okay=False, help="saved pipeline whose UNet and image "
                                          "encoder start this model's untrained ones (all but the UNet's convolutions "
                                          "that read and write latents of another width)"),
) -> None:
    if motion not in Motion.__args__:
        raise typer.BadParameter(f"--motion is one of {', '.join(Motion.__args__)}, not {motion!r}")
    if compile_mode not in (None, *COMPILE_MODES):
        raise typer.BadParameter(f"--compile is one of {', '.join(COMPILE_MODES)}, not {compile_mode!r}")
    if vae_part not in VAE_PARTS:
        raise typer.BadParameter(f"--vae-part is one of {', '.join(VAE_PARTS)}, not {vae_part!r}")
    if unet_from:
        require_pipeline(unet_from, "--unet-from")
    checkpoint = state / "state.pt"
    if init and not checkpoint.is_file():
        require_pipeline(init, "--init")
    vae_widths = new_vae_widths(vae_channels, checkpoint.is_file(), init)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    torch.backends.cudnn.benchmark = True  # fixed shapes: let cuDNN pick its fastest convolutions
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = True
    saved = read_state(state, ("models", "steps", "log", "scaling_factor"))
    latent_channels, vae_shape = saved_vae_shape(saved, init, latent_channels)
    widened_from = tuple(vae_shape["block_out_channels"]) if init and vae_widths else None
    if vae_widths:
        vae_shape["block_out_channels"] = vae_widths
    saved_layers = vae_shape.get("layers_per_block", MINI_VAE["layers_per_block"])
    grown_from = None
    if vae_layers not in (None, saved_layers):
        if saved or vae_layers < saved_layers:
            raise typer.BadParameter("--vae-layers deepens the VAE of --init (a pipeline folder, with nothing in "
                                     "--state): more layers than it has")
        if vae_widths:
            raise typer.BadParameter("--vae-layers and --vae-channels: deepen or widen --init's VAE, one at a time")
        grown_from, vae_shape["layers_per_block"] = saved_layers, vae_layers
    models = build_models(latent_channels, vae_shape)
    log: list[dict] = []
    runs: list[str] = []
    steps = {"vae": 0, "unet": 0}
    scaling_factor = None
    if saved:
        for name in models:
            models[name].load_state_dict(saved["models"][name])
        log, steps, scaling_factor, runs = saved["log"], saved["steps"], saved["scaling_factor"], saved.get("runs", [])
    elif init:
        scaling_factor = load_init(models, init)
        log = json.loads((init / "loss.json").read_text()) if (init / "loss.json").is_file() else []
        record = json.loads((init / "training.json").read_text()) if (init / "training.json").is_file() else {}
        # the record's counts are exact; the loss log has a row per 25 steps
        steps = record.get("steps") or {phase: sum(1 for row in log if row["phase"] == phase) * 25 for phase in steps}
        runs = record.get("runs", [])
        if widened_from not in (None, vae_widths):
            runs.append(f"VAE widened from {init.name}'s: block_out_channels {widened_from} -> {vae_widths}, computing "
                        "what it did")
    if unet_from:
        if steps["unet"]:
            raise typer.BadParameter(f"--unet-from starts an untrained UNet; this one trained {steps['unet']:,} steps")
        kept = transplant(models, unet_from)
        runs.append(f"UNet + image encoder started from {unet_from.name}'s, but {', '.join(kept) or 'nothing'}")
    for model in models.values():
        model.to(device)
    casts_note = f", colour casts on {colour_casts:g} of photo clips" if colour_casts else ""
    autocast = torch.autocast(device, dtype=torch.bfloat16, enabled=device == "cuda")
    print(f"device {device}; resumed steps {steps}; parameters (M):",
          {name: round(sum(p.numel() for p in m.parameters()) / 1e6, 2) for name, m in models.items()}, flush=True)

    if vae_minutes > 0:
        vae = models["vae"].train()
        trained = {"all": [vae], "decoder": [vae.decoder], "encoder": [vae.encoder, vae.quant_conv]}[vae_part]
        vae.requires_grad_(False)
        parameters = [p for module in trained for p in module.requires_grad_(True).parameters()]
        optimizer = optimizer_for(parameters, vae_lr, 0.0, device)
        if saved and "vae_optimizer" in saved and vae_part == "all":
            optimizer.load_state_dict(saved["vae_optimizer"])
        seed = 1_000_000 + steps["vae"] * 7919
        mix = SceneMix(vae_mosaics, vae_leaves, colour_casts)
        batches = (pooled_clip_batches(vae_batch, vae_pool, seed, device, workers, motion, mix) if vae_pool
                   else clip_batches(vae_batch, seed, device, workers, motion, mix))
        batches = itertools.chain([next(batches)], batches)  # render the pool before the clock starts
        first = steps["vae"]
        _train(vae_step(vae, vae_crop, compile_mode, vae_mse, vae_chroma), parameters, optimizer, None,
               batches, vae_minutes, "vae", steps, log, autocast, anneal=vae_anneal)
        runs.append(f"VAE {VAE_PARTS[vae_part]}: {first:,} -> {steps['vae']:,} "
                    f"steps at lr {vae_lr:g}, {vae_batch} clips x {(CLIP_SIZE // vae_crop) ** 2} tiles of {vae_crop} px a step"
                    f"{f' (from {vae_pool:,} clips rendered once)' if vae_pool else ''}, motion={motion}"
                    f"{f', mosaics {vae_mosaics:g}' if vae_mosaics != MOSAIC_SHARE else ''}"
                    f"{f', dead leaves {vae_leaves:g}' if vae_leaves else ''}{casts_note}"
                    f"{', lr decayed linearly to 0' if vae_anneal else ''}{f', loss + {vae_mse:g} x MSE' if vae_mse else ''}"
                    f"{f', loss + {vae_chroma:g} x local Lab chroma L1' if vae_chroma else ''}"
                    f"{f', {vae.config.layers_per_block} layers per block (grown from {grown_from})' if grown_from else ''}")
        vae.eval()
        saved_vae_optimizer = optimizer.state_dict()
        if vae_part == "all":
            scaling_factor = None  # new latents: measure again
    else:
        saved_vae_optimizer = saved.get("vae_optimizer") if saved else None
    for model in models.values():
        model.requires_grad_(False)

    if scaling_factor is None:
        scaling_factor = measured_scaling_factor(models["vae"], device, autocast)
        print(f"VAE latent std {1 / scaling_factor:.4f} -> scaling_factor {scaling_factor:.5f}", flush=True)

    ema = None
    unet_optimizer_state = saved.get("unet_optimizer") if saved else None
    if unet_minutes > 0:
        if vae_minutes > 0:  # the VAE's minutes survive a failure in the UNet stage
            save_state(checkpoint, models, log, steps, scaling_factor, latent_channels,
                       {"vae_optimizer": saved_vae_optimizer, "unet_optimizer": unet_optimizer_state, "ema": saved and saved.get("ema"),
                        "runs": runs})
        unet, encoder = models["unet"].train().requires_grad_(True), models["image_encoder"].train().requires_grad_(True)
        parameters = list(unet.parameters()) + list(encoder.parameters())
        optimizer = optimizer_for(parameters, lr, 0.01, device)
        ema = ema_for(unet.parameters())
        if saved and "unet_optimizer" in saved:
            optimizer.load_state_dict(saved["unet_optimizer"])
            ema.load_state_dict(saved["ema"])
            ema.to(device)  # the state was loaded to the CPU
        elif saved is None and init is not None:
            ema.optimization_step = steps["unet"]  # a resumed run's EMA restarts from the saved (EMA) weights
        start = time.time()
        pool = build_pool(models["vae"], scaling_factor, pool_clips, steps["unet"] * 7919, device, workers, autocast, motion,
                          SceneMix(casts=colour_casts))
        first = steps["unet"]
        print(f"encoded {pool_clips} clips in {time.time() - start:.0f} s", flush=True)
        generator = torch.Generator(device).manual_seed(steps["unet"])
        batches = iter(lambda: pool.sample(unet_batch, generator), None)
        _train(compiled(functools.partial(unet_loss, models), compile_mode),
               parameters, optimizer, ema, batches, unet_minutes, "unet", steps, log, autocast, list(unet.parameters()),
               anneal=unet_anneal)
        unet.eval()
        encoder.eval()
        runs.append(f"UNet + image encoder: {first:,} -> {steps['unet']:,} steps at lr {lr:g}, {unet_batch} clips a step "
                    f"(a pool of {pool_clips:,}), EMA 0.999, motion={motion}{casts_note}{', lr decayed linearly to 0' if unet_anneal else ''}")
        unet_optimizer_state = optimizer.state_dict()
    elif saved and "ema" in saved:
        ema = ema_for(models["unet"].parameters())
        ema.load_state_dict(saved["ema"])

    save_state(checkpoint, models, log, steps, scaling_factor, latent_channels,
               {"vae_optimizer": saved_vae_optimizer, "unet_optimizer": unet_optimizer_state, "ema": ema and ema.state_dict(),
                "runs": runs})
    save_pipeline({n: m.cpu() for n, m in models.items()}, ema, scaling_factor, out)
    (out / "loss.json").write_text(json.dumps(log))
    write_training_record(out, steps, scaling_factor, torch.cuda.get_device_name() if device == "cuda" else "cpu", runs)
    print(f"saved {out} after steps {steps}", flush=True)


def save_state(checkpoint: Path, models: dict, log: list, steps: dict, scaling_factor: float | None, latent_channels: int,
               extra: dict) -> None:
    """The full-precision state `--state` resumes from; `extra` entries that are None are left out."""
    payload = {"models": {n: m.state_dict() for n, m in models.items()}, "log": log, "steps": steps,
               "scaling_factor": scaling_factor, "latent_channels": latent_channels,
               "vae_channels": tuple(models["vae"].config.block_out_channels),
               "vae_layers": models["vae"].config.layers_per_block,
               **{key: value for key, value in extra.items() if value is not None}}
    write_state(checkpoint.parent, payload)


def write_state(state: Path, payload: dict) -> None:
    """Save `payload` as `state`/state.pt, whole or not at all: written beside it and renamed into place, so a run
    killed while saving keeps the state it resumed from."""
    state.mkdir(parents=True, exist_ok=True)
    partial = state / "state.pt.partial"
    torch.save(payload, partial)
    partial.replace(state / "state.pt")


def _train(step_loss, parameters, optimizer, ema, batches, minutes: float, phase: str, steps: dict, log: list, autocast,
           ema_parameters=None, anneal: bool = False) -> None:
    """Optimise until the time budget is spent (`anneal`: the learning rate decays linearly to 0 over what the first
    step, which compiles under --compile, leaves of it); log the mean loss every 25 steps."""
    parameters = list(parameters)
    start, window = time.time(), []
    end, settled = start + minutes * 60, None  # settled: when the first step ended
    warmup = 200
    first = steps[phase]
    while (now := time.time()) < end:
        remaining = 1 - (now - settled) / (end - settled) if anneal and settled is not None else 1.0
        scale = min(1.0, (steps[phase] - first + 1) / warmup, remaining)
        for group in optimizer.param_groups:
            group.setdefault("initial_lr", group["lr"])
            group["lr"] = group["initial_lr"] * scale
        with autocast:
            loss = step_loss(next(batches))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(parameters, 1.0)
        optimizer.step()
        if ema is not None:
            ema.step(ema_parameters)
        steps[phase] += 1
        settled = settled or time.time()
        window.append(float(loss.detach()))
        if steps[phase] % 25 == 0:
            row = {"phase": phase, "step": steps[phase], "loss": sum(window) / len(window), "seconds": round(time.time() - start, 1)}
            log.append(row)
            window = []
            if steps[phase] % 250 == 0:
                print(json.dumps(row), flush=True)
    if not math.isfinite(float(loss.detach())):
        raise RuntimeError(f"{phase} loss diverged")


if __name__ == "__main__":
    app()
