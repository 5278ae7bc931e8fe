"""Fewer steps, which sampler: SVD's Euler at fewer steps against a higher-order EDM solver from diffusers
(DPM-Solver++ 2M and 3M, `EDMDPMSolverMultistepScheduler` with SVD's sigmas and its σ_data = 1 v-prediction), each
against the exact run (Euler, 25 steps), on svd-mini in PyTorch fp32 on this CPU, same seeds.

    python bench/samplers_mini.py [--photos chelsea,coffee] -> bench/results/samplers_mini.{json,md}

EDMDPMSolverMultistepScheduler's preconditioning equals SVD's Euler's at σ_data = 1 (c_in = 1/√(σ²+1),
c_noise = ¼ ln σ, c_skip/c_out of v-prediction), so the pipeline runs it unchanged.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch
from diffusers import EDMDPMSolverMultistepScheduler

from common import machine, save

from svdtool.models import generation_defaults, load_pipeline, resolve_source
from svdtool.runtime import GenerationSettings, generate, load_image
from svdtool.validate.metrics import video_metrics

HELD_OUT = Path(__file__).parent / "heldout"
STEPS = (8, 10, 12, 15, 20)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--photos", default="chelsea,coffee")
    args = parser.parse_args()
    pipeline = load_pipeline("mini")
    euler, config = pipeline.scheduler, pipeline.scheduler.config
    samplers = {"Euler": euler, **{f"DPM-Solver++ {order}M": EDMDPMSolverMultistepScheduler(
        sigma_min=config.sigma_min, sigma_max=config.sigma_max, sigma_data=1.0, prediction_type="v_prediction", rho=7.0,
        solver_order=order) for order in (2, 3)}}
    defaults = generation_defaults(resolve_source("mini"))
    results = {"machine": machine(), "date": time.strftime("%Y-%m-%d"), "threads": torch.get_num_threads(), "rows": []}
    for photo in args.photos.split(","):
        image = load_image(HELD_OUT / f"{photo}.jpg")

        def run(scheduler, steps):
            pipeline.scheduler = scheduler
            settings = GenerationSettings(num_inference_steps=steps).resolved(defaults)
            return generate(pipeline, image, settings, show_progress=False).frames

        exact = run(euler, 25)
        exact_metrics = video_metrics(exact)
        for name, scheduler in samplers.items():
            for steps in STEPS:
                metrics = video_metrics(run(scheduler, steps), exact)
                results["rows"].append({
                    "photo": photo, "sampler": name, "steps": steps, "psnr_mean": metrics["psnr_mean"],
                    "temporal_mse_change": round(metrics["temporal_mse"] / exact_metrics["temporal_mse"] - 1, 3),
                    "sharpness_change": round(metrics["sharpness"] / exact_metrics["sharpness"] - 1, 3)})
                print(results["rows"][-1], flush=True)
    lines = ["| sampler | steps | " + " | ".join(f"{photo}: PSNR dB, Δ temporal MSE" for photo in args.photos.split(",")) + " |",
             "|---|---|" + "---|" * len(args.photos.split(","))]
    for name in samplers:
        for steps in STEPS:
            cells = [f"{row['psnr_mean']:.1f}, {row['temporal_mse_change']:+.0%}" for row in results["rows"]
                     if row["sampler"] == name and row["steps"] == steps]
            lines.append(f"| {name} | {steps} | " + " | ".join(cells) + " |")
    markdown = "\n".join([
        "# Fewer steps on svd-mini: which sampler",
        "",
        f"{results['machine']['cpu']} ({results['machine']['cores']} cores), {results['date']}; svd-mini in PyTorch fp32, "
        "128×128×8, seed 42, the held-out photos named; each video against the exact run (Euler, 25 steps): mean PSNR "
        "and the relative change of temporal MSE (validate's limits: ≥ 30 dB, within ±15 %). Command: "
        "`python bench/samplers_mini.py`.",
        "",
        *lines,
        "",
    ])
    save("samplers_mini", results, markdown)


if __name__ == "__main__":
    main()
