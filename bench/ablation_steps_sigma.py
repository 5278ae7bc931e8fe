"""Ablation: denoising steps and the scheduler's sigma_max (speed vs quality) on svd-mini's FP16 IR on this CPU.

python bench/ablation_steps_sigma.py -> bench/results/ablation_steps_sigma_mini.{json,md,png}

Quality is measured against the slowest setting (50 steps, SVD's sigma_max 700), same seed and inputs: PSNR and
SSIM, plus the reference-free metrics (temporal MSE, warp error, motion, sharpness). Time is seconds per video.
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

import matplotlib
import numpy as np
from diffusers import EulerDiscreteScheduler
from PIL import Image

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

sys.path.insert(0, str(Path(__file__).parent))
from common import RESULTS, machine, save, usage  # noqa: E402

from svdtool.convert import export  # noqa: E402
from svdtool.models import BUILTIN_MODELS  # noqa: E402
from svdtool.runtime import GenerationSettings, generate  # noqa: E402
from svdtool.runtime.loading import load_ov_pipeline  # noqa: E402
from svdtool.validate.metrics import video_metrics  # noqa: E402

STEPS = (4, 8, 12, 25, 50)
SIGMA_MAX = (700.0, 80.0, 20.0)
INPUTS = ("astronaut", "chelsea", "coffee")
EXAMPLES = Path(__file__).parents[1] / "examples"


def main() -> None:
    folder = Path(tempfile.mkdtemp(prefix="svdtool-sweep-")) / "mini-fp16"
    export("mini", folder)
    pipeline, _ = load_ov_pipeline(folder)
    base_config = dict(pipeline.scheduler.config)
    images = {name: Image.open(EXAMPLES / f"{name}.jpg").convert("RGB") for name in INPUTS}
    defaults = BUILTIN_MODELS["mini"].defaults

    def run(steps: int, sigma_max: float) -> dict[str, dict]:
        pipeline.scheduler = EulerDiscreteScheduler.from_config({**base_config, "sigma_max": sigma_max})
        settings = GenerationSettings(num_inference_steps=steps).resolved(defaults)
        return {name: generate(pipeline, image, settings, show_progress=False) for name, image in images.items()}

    generate(pipeline, images["chelsea"], GenerationSettings(num_inference_steps=2).resolved(defaults), show_progress=False)  # compile
    best = run(50, 700.0)
    rows = []
    for sigma_max in SIGMA_MAX:
        for steps in STEPS:
            videos = best if (steps, sigma_max) == (50, 700.0) else run(steps, sigma_max)
            metrics = [video_metrics(videos[name].frames, best[name].frames) for name in INPUTS]
            row = {"steps": steps, "sigma_max": sigma_max,
                   "seconds_per_video": round(float(np.mean([v.timings["total"] for v in videos.values()])), 3)}
            for key in ("psnr_mean", "ssim_mean", "temporal_mse", "warp_error", "motion", "sharpness"):
                row[key] = round(float(np.mean([m[key] for m in metrics])), 3)
            rows.append(row)
            print(row, flush=True)
    plot(rows)
    result = {"machine": machine(), "model": "mini FP16 IR, OpenVINO CPU default precision", "inputs": list(INPUTS),
              "settings": GenerationSettings().resolved(defaults).as_dict(), "baseline": "50 steps, sigma_max 700", "rows": rows}
    save("ablation_steps_sigma_mini", result, markdown(rows))


def plot(rows: list[dict]) -> None:
    figure, axis = plt.subplots(figsize=(6, 4))
    for sigma_max in SIGMA_MAX:
        chosen = [r for r in rows if r["sigma_max"] == sigma_max and r["psnr_mean"] < 100]
        axis.plot([r["seconds_per_video"] for r in chosen], [r["psnr_mean"] for r in chosen], marker="o", label=f"sigma_max {sigma_max:g}")
        for r in chosen:
            axis.annotate(str(r["steps"]), (r["seconds_per_video"], r["psnr_mean"]), fontsize=7)
    axis.set_xlabel("seconds per video (8 frames, 128x128, this CPU)")
    axis.set_ylabel("PSNR vs 50 steps / sigma_max 700 (dB)")
    axis.set_title("svd-mini: steps and sigma_max, speed vs fidelity")
    axis.legend()
    figure.tight_layout()
    figure.savefig(RESULTS / "ablation_steps_sigma_mini.png", dpi=110)


def markdown(rows: list[dict]) -> str:
    lines = ["# Steps and sigma_max: speed vs quality (svd-mini FP16 IR, this CPU)", "",
             "8 frames at 128x128, seed 42, inputs astronaut/chelsea/coffee; baseline = 50 steps, sigma_max 700 (SVD's).", "",
             "| sigma_max | steps | s per video | PSNR vs baseline (dB) | SSIM | temporal MSE | warp error | motion | sharpness |",
             "|---|---|---|---|---|---|---|---|---|"]
    lines += [f"| {r['sigma_max']:g} | {r['steps']} | {r['seconds_per_video']} | {r['psnr_mean']} | {r['ssim_mean']} | "
              f"{r['temporal_mse']} | {r['warp_error']} | {r['motion']} | {r['sharpness']} |" for r in rows]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    usage(__doc__)
    main()
