"""How much svd-mini's colour over time depends on the seed: mini_goals' in-view measure over several seeds.

python models/training/mini_colour_seeds.py NAME=FOLDER [NAME=FOLDER ...] [--seeds 5] [--guidance 1,2,3] [--out mini_colour_seeds]
    (CPU, ~3 min per model and guidance)

mini_goals measures each held-out photo at one seed (42); this measures the worst frame's colourfulness against the
input in the camera's view (`colour_in_view`) at seeds 0..N-1, same settings, so a goal met or missed at one seed can
be told from one met or missed at most. `--guidance` repeats it per max_guidance_scale (the ramp's last frame; svd-mini's
default otherwise). Writes bench/results/OUT.{json,md}.
"""

from __future__ import annotations

import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

sys.path[:0] = [str(Path(__file__).parent), str(Path(__file__).parents[2] / "bench")]  # these tools, and bench/common
from common import machine, save  # noqa: E402
from mini_goals import GOALS, SETTINGS, colour_in_view  # noqa: E402
from mini_vae_check import PHOTOS, held_out_pixels, to_uint8, worst  # noqa: E402

from svdtool.models import load_pipeline  # noqa: E402
from svdtool.runtime import GenerationSettings, generate, load_image  # noqa: E402


def measure(folder: str, seeds: int, settings: GenerationSettings) -> dict[str, list[float]]:
    """Per held-out photo, the worst frame's in-view colour ratio at each seed."""
    pipeline = load_pipeline(folder, torch.float32)
    sources = {name: to_uint8(pixels) for name, pixels in held_out_pixels().items()}
    ratios: dict[str, list[float]] = {}
    for name, path in PHOTOS.items():
        image = load_image(path)
        for seed in range(seeds):
            frames = generate(pipeline, image, replace(settings, seed=seed), show_progress=False).frames
            ratios.setdefault(name, []).append(round(worst(colour_in_view(frames, sources[name])), 3))
    return ratios


def markdown(results: dict[str, dict[str, list[float]]], seeds: int, info: dict) -> str:
    bound = GOALS["colour_over_time"]
    lines = [f"# svd-mini colour over time against the input in the camera's view, seeds 0-{seeds - 1}",
             "", f"128x128x8, 25 steps, bucket 127, guidance 1.0 -> {SETTINGS.max_guidance_scale:g} unless named, "
             f"PyTorch fp32 on {info['cpu']}. Each cell: the worst frame's ratio, lowest-highest over the seeds, and how "
             f"many seeds keep it within ±{bound:.0%}.", "",
             "| model | " + " | ".join(PHOTOS) + " |", "|---|" + "---|" * len(PHOTOS)]
    for name, photos in results.items():
        cells = [f"×{min(r)}–×{max(r)} ({sum(abs(v - 1) <= bound for v in r)}/{seeds})" for r in photos.values()]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def main(argv: list[str]) -> None:
    out = argv[argv.index("--out") + 1] if "--out" in argv else "mini_colour_seeds"
    seeds = int(argv[argv.index("--seeds") + 1]) if "--seeds" in argv else 5
    models = dict(arg.split("=", 1) for arg in argv if "=" in arg)
    if not models:
        raise SystemExit(__doc__)
    info = machine()
    guidances = [float(g) for g in argv[argv.index("--guidance") + 1].split(",")] if "--guidance" in argv else [None]
    results = {f"{name}, max guidance {g:g}" if g else name:
               measure(folder, seeds, replace(SETTINGS, max_guidance_scale=g or SETTINGS.max_guidance_scale))
               for name, folder in models.items() for g in guidances}
    means = {name: {photo: round(float(np.mean(r)), 3) for photo, r in photos.items()} for name, photos in results.items()}
    save(out, {"machine": info, "settings": SETTINGS.as_dict(), "guidance": guidances, "seeds": list(range(seeds)),
               "models": results, "means": means}, markdown(results, seeds, info))


if __name__ == "__main__":
    main(sys.argv[1:])
