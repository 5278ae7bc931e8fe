"""Where svd-mini's colour drifts over a video (issue #12's "colour kept over time"): in the UNet's latents or in the
VAE's temporal decoder.

python models/training/mini_colour_drift.py [FOLDER] [--out mini_colour_drift]   (CPU, ~1 min; FOLDER: models/mini)

For each held-out photo, at mini_goals' settings (128x128x8, 25 steps, bucket 127, seed 42, PyTorch fp32), the
pipeline's latents are decoded three ways and each frame's colourfulness (mean Lab chroma) is divided by the input's:
as the pipeline decodes them (one chunk of 8 frames), frame by frame (the temporal decoder sees one frame at a time),
and -- the decoder alone, on a clip that does not change -- the input's own latent repeated over 8 frames. Beside them,
the standard deviation of each frame's (unscaled) latent, and both again from the same noise without classifier-free
guidance (min = max guidance 1.0; the default ramps it from 1.0 on frame 0 to 3.0 on the last frame), which tells the
guidance's share of the drift from the conditional model's. For comparison, what the model was trained on: the latent
std of zoom training clips near bucket 127 (90-170), last frame over first. Writes bench/results/OUT.{json,md}.
"""

from __future__ import annotations

import dataclasses
import sys
from pathlib import Path

import numpy as np
import torch

sys.path[:0] = [str(Path(__file__).parent), str(Path(__file__).parents[2] / "bench")]  # these tools, and bench/common
from common import machine, save  # noqa: E402
from mini_goals import SETTINGS  # noqa: E402
from mini_vae_check import PHOTOS, held_out_pixels  # noqa: E402

from svdtool.models import load_pipeline  # noqa: E402
from svdtool.models.scenes import photo_bank, render_clips, to_uint8  # noqa: E402
from svdtool.runtime import load_image  # noqa: E402
from svdtool.runtime.generate import fit_shapes, seeded_noise  # noqa: E402
from svdtool.validate.metrics import colourfulness  # noqa: E402


def chroma_ratios(frames: torch.Tensor, input_chroma: float) -> list[float]:
    """Each frame's colourfulness over the input's, for (F, 3, H, W) decoded frames in [-1, 1]."""
    return [round(colourfulness(frame[None]) / input_chroma, 3) for frame in to_uint8(frames.clamp(-1, 1))]


def training_clip_std_ratio(vae, seed: int = 123, count: int = 48) -> float:
    """Mean over zoom training clips with buckets 90-170 of (last frame's latent std / first frame's)."""
    clips = render_clips(seed, count, SETTINGS.num_frames, photo_bank(), motion="zoom")
    frames = clips.frames[(clips.motion_bucket_id > 90) & (clips.motion_bucket_id < 170)]
    latents = vae.encode(frames.flatten(0, 1)).latent_dist.mode().unflatten(0, frames.shape[:2]).flatten(2)
    return round(float((latents[:, -1].std(1) / latents[:, 0].std(1)).mean()), 3)


def video_latents(pipeline, settings, name: str) -> torch.Tensor:
    """The pipeline's unscaled latents (F, C, h, w) for a held-out photo, from `seeded_noise`."""
    generator, noise = seeded_noise(pipeline, settings)
    latents = pipeline(load_image(PHOTOS[name]), **settings.pipeline_kwargs(), generator=generator, latents=noise,
                       output_type="latent").frames[0]
    return latents / pipeline.vae.config.scaling_factor


@torch.no_grad()
def measure(folder: str) -> dict:
    pipeline = load_pipeline(folder, torch.float32)
    pipeline.set_progress_bar_config(disable=True)
    vae, frames = pipeline.vae, SETTINGS.num_frames
    unguided = dataclasses.replace(SETTINGS, min_guidance_scale=1.0, max_guidance_scale=1.0)
    fit_shapes(pipeline, SETTINGS)
    photos = {}
    for name, pixels in held_out_pixels().items():
        input_chroma = colourfulness(to_uint8(pixels))
        latents, plain = video_latents(pipeline, SETTINGS, name), video_latents(pipeline, unguided, name)
        own_latent = vae.encode(pixels).latent_dist.mode()
        photos[name] = {
            "pipeline_decode": chroma_ratios(vae.decode(latents, num_frames=frames).sample, input_chroma),
            "frame_by_frame_decode": chroma_ratios(torch.cat([vae.decode(z[None], num_frames=1).sample for z in latents]), input_chroma),
            "static_clip_decode": chroma_ratios(vae.decode(own_latent.repeat(frames, 1, 1, 1), num_frames=frames).sample, input_chroma),
            "latent_std": [round(float(z.std()), 3) for z in latents],
            "unguided_decode": chroma_ratios(vae.decode(plain, num_frames=frames).sample, input_chroma),
            "unguided_latent_std": [round(float(z.std()), 3) for z in plain],
        }
    return {"photos": photos, "training_clip_std_ratio": training_clip_std_ratio(vae)}


def spread(ratios: list[float]) -> str:
    return f"×{min(ratios)}–{max(ratios)}"


def std_change(std: list[float]) -> str:
    return f"{std[0]} → {std[-1]} (×{std[-1] / std[0]:.2f})"


def markdown(folder: str, result: dict, info: dict) -> str:
    photos = result["photos"]
    lines = [f"# svd-mini's colour over time ({folder}): latents or decoder; 128x128x8, 25 steps, bucket 127, PyTorch fp32 on {info['cpu']}",
             "", "Each frame's colourfulness over the input's (the range over the 8 frames), and the latents' std on frames 0 and 7; "
             "*no guidance*: the same noise with min = max guidance 1.0.", "",
             "| photo | pipeline decode (8-frame chunk) | frame by frame | the input's latent ×8 frames (decoder alone) | latent std, frame 0 → 7 | no guidance: decode | no guidance: latent std |",
             "|---|---|---|---|---|---|---|"]
    for name, r in photos.items():
        lines.append(f"| {name} | {spread(r['pipeline_decode'])} | {spread(r['frame_by_frame_decode'])} | "
                     f"{spread(r['static_clip_decode'])} | {std_change(r['latent_std'])} | {spread(r['unguided_decode'])} | "
                     f"{std_change(r['unguided_latent_std'])} |")
    lines += ["", f"The zoom training clips near bucket 127: latent std of the last frame over the first ×{result['training_clip_std_ratio']}."]
    return "\n".join(lines) + "\n"


def main(argv: list[str]) -> None:
    out = argv[argv.index("--out") + 1] if "--out" in argv else "mini_colour_drift"
    folders = [arg for arg in argv if not arg.startswith("--") and arg != out]
    folder = folders[0] if folders else "mini"
    info = machine()
    result = measure(folder)
    save(out, {"machine": info, "model": folder, "settings": SETTINGS.as_dict(), **result}, markdown(folder, result, info))


if __name__ == "__main__":
    main(sys.argv[1:])
