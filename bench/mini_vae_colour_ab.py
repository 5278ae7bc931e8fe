"""Why svd-mini's VAE loses colour, isolated on the CPU: the same training (seed, data, steps) with one thing changed
per row, scored on held-out photos by how much of their colourfulness (mean Lab chroma) the reconstructions keep.

- v1: first VAE level of 32 channels with the default init of the temporal decoder's last colour-mixing layer;
- identity init of that layer (`train_mini.identity_time_mixing`);
- 64 first-level channels: AutoencoderKLTemporalDecoder's GroupNorms have 32 groups, so at 32 channels each group
  is one channel, an instance norm that removes every feature map's mean: the image's colour;
- 16 latent channels instead of SVD's 4.

Small: STEPS steps of 2 clips x 4 frames, 64x64 (area-downscaled 128 px clips), 32 px crops (~12 min on 2 cores).
python bench/mini_vae_colour_ab.py [STEPS] -> bench/results/mini_vae_colour_ab.{json,md}
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from diffusers import AutoencoderKLTemporalDecoder, UNetSpatioTemporalConditionModel

sys.path.insert(0, str(Path(__file__).parent))
from common import machine, save  # noqa: E402
from mini_vae_check import held_out_pixels, mixing_spectrum, reconstruct, to_uint8  # noqa: E402

from svdtool.models.scenes import photo_bank, render_clips  # noqa: E402
from svdtool.models.train_mini import MINI_UNET, identity_time_mixing, vae_loss  # noqa: E402
from svdtool.models.training_data import crop_tiles  # noqa: E402
from svdtool.validate.metrics import colourfulness, psnr_per_frame  # noqa: E402

SIZE, CROP, FRAMES, CLIPS = 64, 32, 4, 2
VARIANTS = {  # name: (first-level channels, identity init, latent channels)
    "v1: 32 channels, default init, 4 latents": (32, False, 4),
    "32 channels, identity init, 4 latents": (32, True, 4),
    "64 channels, identity init, 4 latents (v2)": (64, True, 4),
    "64 channels, identity init, 16 latents": (64, True, 16),
}


def build(first: int, identity: bool, latents: int) -> AutoencoderKLTemporalDecoder:
    torch.manual_seed(0)
    UNetSpatioTemporalConditionModel(**MINI_UNET)  # v1's build order, so the default init is v1's draw
    vae = AutoencoderKLTemporalDecoder(block_out_channels=(first, 2 * first, 128, 128), down_block_types=("DownEncoderBlock2D",) * 4,
                                       layers_per_block=2, latent_channels=latents)
    return identity_time_mixing(vae) if identity else vae


def train(vae: AutoencoderKLTemporalDecoder, steps: int) -> dict:
    optimizer = torch.optim.AdamW(vae.parameters(), lr=4e-4, betas=(0.9, 0.99))
    photos = photo_bank()
    for step in range(steps):
        frames = render_clips(1_000_000 + step, CLIPS, FRAMES, photos).frames
        frames = F.interpolate(frames.flatten(0, 1), size=(SIZE, SIZE), mode="area").unflatten(0, (CLIPS, FRAMES))
        loss = vae_loss(vae, crop_tiles(frames, CROP))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    vae.eval()
    psnr, kept = [], []
    with torch.no_grad():
        for pixels in held_out_pixels(SIZE).values():
            rebuilt, original = to_uint8(reconstruct(vae, pixels)), to_uint8(pixels)
            psnr.append(float(psnr_per_frame(rebuilt[None], original[None])[0]))
            kept.append(colourfulness(rebuilt) / colourfulness(original))
    return {"final_loss": round(float(loss), 4), "psnr": round(float(np.mean(psnr)), 2), "colourfulness_kept": round(float(np.mean(kept)), 3),
            "mixing_after": mixing_spectrum(vae)}


def main(steps: int = 300) -> None:
    torch.set_num_threads(2)
    runs = {}
    for name, (first, identity, latents) in VARIANTS.items():
        vae = build(first, identity, latents)
        runs[name] = {"mixing_at_init": mixing_spectrum(vae), **train(vae, steps)}
        print(name, runs[name], flush=True)
    result = {"machine": machine(), "steps": steps, "batch": f"{CLIPS} clips x {FRAMES} frames, {CROP} px crops of {SIZE} px clips", "runs": runs}
    lines = ["# svd-mini VAE: what keeps colour", "",
             f"Same seed, data and {steps} steps ({result['batch']}) on {result['machine']['cpu']}; held-out photos (bench/heldout) "
             f"at {SIZE}x{SIZE}. Colourfulness kept = mean Lab chroma of the reconstruction / of the photo.", "",
             "| VAE | colourfulness kept | PSNR (dB) | last-layer singular values at init → after |", "|---|---|---|---|"]
    for name, run in runs.items():
        lines.append(f"| {name} | {run['colourfulness_kept']:.0%} | {run['psnr']} | {run['mixing_at_init']['singular_values']} → "
                     f"{run['mixing_after']['singular_values']} |")
    save("mini_vae_colour_ab", result, "\n".join(lines) + "\n")


if __name__ == "__main__":
    main(*map(int, sys.argv[1:]))
