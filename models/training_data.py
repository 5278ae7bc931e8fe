"""Batches for svd-mini's training (`train_mini`): procedural clips rendered by CPU processes as a stream or once into a
pool, cut into tiles for the VAE, and encoded once into a latent pool for the UNet."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch

if TYPE_CHECKING:
    from diffusers import AutoencoderKLTemporalDecoder

from .scenes import Motion, SceneMix, photo_bank, render_clips

FRAMES = 8  # frames per training clip: svd-mini's num_frames


class ClipStream(torch.utils.data.IterableDataset):
    """Batch k of the stream is `render_clips(seed + k)`, rendered on the CPU. Each DataLoader worker renders every
    `num_workers`-th batch and the loader takes them round-robin, so the stream is the same for any worker count.
    (v1 rendered on the GPU: its many small launches and host draws left the GPU idle most of the time.)"""

    def __init__(self, batch: int, seed: int, motion: Motion, mix: SceneMix = SceneMix()) -> None:
        super().__init__()
        self.batch, self.seed, self.motion, self.mix = batch, seed, motion, mix

    def __iter__(self):
        info = torch.utils.data.get_worker_info()
        index, stride = (info.id, info.num_workers) if info else (0, 1)
        torch.set_num_threads(1)
        photos = photo_bank()
        while True:
            clips = render_clips(self.seed + index, self.batch, FRAMES, photos, motion=self.motion, mix=self.mix)
            yield clips.frames, clips.motion_bucket_id
            index += stride


def clip_batches(batch: int, seed: int, device: str, workers: int, motion: Motion, mix: SceneMix = SceneMix()):
    """Endless (frames, motion_bucket_id) batches of procedural clips on `device`."""
    loader = torch.utils.data.DataLoader(ClipStream(batch, seed, motion, mix), batch_size=None, num_workers=workers,
                                         pin_memory=device == "cuda", prefetch_factor=4 if workers else None)
    for frames, buckets in loader:
        yield frames.to(device, non_blocking=True), buckets.to(device, non_blocking=True)


def pooled_clip_batches(batch: int, clips: int, seed: int, device: str, workers: int, motion: Motion,
                        mix: SceneMix = SceneMix()):
    """Endless (frames, None) batches drawn from `clips` clips rendered once (kept as uint8 on `device`), each
    flipped left-right at random, so that no VAE step waits on the CPU processes rendering clips (two runs sharing
    an H200's 16 cores thus kept its GPU fully busy)."""
    stream = clip_batches(min(64, clips), seed, device, workers, motion, mix)
    parts, count = [], 0
    while count < clips:
        frames = next(stream)[0]
        parts.append(((frames + 1) * 127.5).round().clamp(0, 255).to(torch.uint8))
        count += len(frames)
    pool = torch.cat(parts)[:clips]
    del stream
    generator = torch.Generator(device).manual_seed(seed)
    while True:
        index = torch.randint(0, clips, (batch,), generator=generator, device=device)
        frames = pool[index].float() / 127.5 - 1
        flip = torch.rand(batch, generator=generator, device=device) < 0.5
        yield torch.where(flip[:, None, None, None, None], frames.flip(-1), frames), None


def crop_tiles(frames: torch.Tensor, size: int) -> torch.Tensor:
    """Every size x size tile of a (B, F, 3, H, W) batch, from one random offset, as clips of their own: the VAE is
    convolutional, so it trains on tiles and runs on whole frames, and each rendered clip yields (H // size)² of them
    (rendering, not the GPU, bounds a VAE step)."""
    height, width = frames.shape[-2:]
    if size >= min(height, width):
        return frames
    top, left = (int(torch.randint(0, extent % size + 1, ())) for extent in (height, width))
    rows, cols = height // size, width // size
    tiles = frames[..., top:top + rows * size, left:left + cols * size]
    tiles = tiles.unflatten(-2, (rows, size)).unflatten(-1, (cols, size))  # (B, F, 3, rows, size, cols, size)
    return tiles.permute(0, 3, 5, 1, 2, 4, 6).flatten(0, 2)


@dataclass
class LatentPool:
    """Clips encoded once by the frozen VAE, for the UNet stage: encoding 512 frames at every step cost far more GPU
    time than the UNet itself (v2's first run: 1.7 steps/s)."""

    latents: torch.Tensor  # (P, F, C, h, w), scaled by the VAE's scaling_factor
    condition: torch.Tensor  # (P, C, h, w): unscaled latent of the noise-augmented first frame, as the pipeline makes it
    noise_aug: torch.Tensor  # (P,)
    first_frames: torch.Tensor  # (P, 3, H, W) in [-1, 1], for CLIP
    buckets: torch.Tensor  # (P,)

    def sample(self, batch: int, generator: torch.Generator) -> "LatentPool":
        index = torch.randint(0, len(self.buckets), (batch,), generator=generator, device=self.buckets.device)
        return LatentPool(*(field[index].float() for field in (self.latents, self.condition, self.noise_aug, self.first_frames)),
                          self.buckets[index])


@torch.no_grad()
def build_pool(vae: AutoencoderKLTemporalDecoder, scaling_factor: float, clips: int, seed: int, device: str,
               workers: int, autocast, motion: Motion, mix: SceneMix = SceneMix()) -> LatentPool:
    """Render `clips` clips (batch k of the stream is render_clips(seed + k)) and encode them once, in bf16."""
    parts: dict[str, list[torch.Tensor]] = {name: [] for name in ("latents", "condition", "noise_aug", "first_frames", "buckets")}
    stream = clip_batches(min(64, clips), seed, device, workers, motion, mix)
    while sum(len(b) for b in parts["buckets"]) < clips:
        frames, buckets = next(stream)
        batch, num_frames = frames.shape[:2]
        noise_aug = torch.exp(torch.randn(batch, device=device) * 0.5 - 3.0)
        condition = frames[:, 0] + noise_aug[:, None, None, None] * torch.randn_like(frames[:, 0])
        with autocast:
            latents = vae.encode(frames.flatten(0, 1)).latent_dist.sample() * scaling_factor
            condition_latents = vae.encode(condition).latent_dist.mode()
        parts["latents"].append(latents.unflatten(0, (batch, num_frames)).to(torch.bfloat16))
        parts["condition"].append(condition_latents.to(torch.bfloat16))
        parts["noise_aug"].append(noise_aug)
        parts["first_frames"].append(frames[:, 0].to(torch.bfloat16))
        parts["buckets"].append(buckets)
    return LatentPool(**{name: torch.cat(values)[:clips] for name, values in parts.items()})
