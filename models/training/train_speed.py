"""Training steps a second of svd-mini's two stages on one GPU: eager against torch.compile (`train_mini --compile`).

    python models/training/train_speed.py --json bench/results/mini_train_speed_h200.json [--seconds 15]

Random weights in svd-mini v2's shapes and random batches in the training's shapes (speed depends on neither). Each
case runs train_mini's own step (`_train`: the loss, backward, gradient clipping, fused AdamW and, for the UNet, the
EMA) once to compile, a few seconds to warm up (CUDA graphs record there), then for --seconds. About 13 minutes on
the H200, most of it compiling (the UNet's first compiled step: 251 s): run it as a job, as the training runs.
"""

from __future__ import annotations

import functools
import itertools
import json
import os
import time
from pathlib import Path

import torch
import typer

from svdtool.models.scenes import CLIP_SIZE
from svdtool.models.train_mini import _train, build_models, compiled, ema_for, optimizer_for, unet_loss, vae_step
from svdtool.models.training_data import FRAMES, LatentPool

CASES = [  # stage, clips a step, compile mode
    ("vae", 16, None), ("vae", 16, "default"),
    ("unet", 64, None), ("unet", 128, None), ("unet", 128, "default"), ("unet", 128, "reduce-overhead"),
]


def vae_case(models: dict, clips: int, mode: str | None, device: str) -> tuple:
    """(step, parameters, optimizer, EMA, batch) for `_train`, as train_mini's VAE stage builds them."""
    vae = models["vae"].train().requires_grad_(True)
    frames = torch.rand(clips, FRAMES, 3, CLIP_SIZE, CLIP_SIZE, device=device) * 2 - 1
    parameters = list(vae.parameters())
    return vae_step(vae, 64, mode), parameters, optimizer_for(parameters, 4e-4, 0.0, device), None, (frames, None)


def unet_case(models: dict, clips: int, mode: str | None, device: str) -> tuple:
    """The same for its UNet stage."""
    unet, encoder = models["unet"].train().requires_grad_(True), models["image_encoder"].train().requires_grad_(True)
    channels, size = unet.config.out_channels, unet.config.sample_size
    batch = LatentPool(torch.randn(clips, FRAMES, channels, size, size, device=device),
                       torch.randn(clips, channels, size, size, device=device), torch.rand(clips, device=device) * 0.1,
                       torch.rand(clips, 3, CLIP_SIZE, CLIP_SIZE, device=device) * 2 - 1,
                       torch.randint(1, 256, (clips,), device=device))
    parameters = list(unet.parameters()) + list(encoder.parameters())
    ema = ema_for(unet.parameters())
    return compiled(functools.partial(unet_loss, models), mode), parameters, optimizer_for(parameters, 2e-4, 0.01, device), ema, batch


def measure(stage: str, clips: int, mode: str | None, seconds: float, device: str = "cuda") -> dict:
    torch._dynamo.reset()
    models = {name: model.to(device) for name, model in build_models().items()}
    step, parameters, optimizer, ema, batch = (vae_case if stage == "vae" else unet_case)(models, clips, mode, device)
    ema_parameters = list(models["unet"].parameters()) if ema else None
    autocast = torch.autocast(device, dtype=torch.bfloat16)
    steps, log = {stage: 0}, []
    run = functools.partial(_train, step, parameters, optimizer, ema, itertools.repeat(batch), phase=stage, steps=steps,
                            log=log, autocast=autocast, ema_parameters=ema_parameters)
    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    start = time.time()
    run(minutes=1e-3)  # one step: compiles
    first_step = time.time() - start
    run(minutes=5 / 60)
    done = steps[stage]
    start = time.time()
    run(minutes=seconds / 60)
    elapsed = time.time() - start
    rate = (steps[stage] - done) / elapsed
    return {"stage": stage, "clips_per_step": clips, "compile": mode or "eager", "first_step_s": round(first_step, 1),
            "steps_per_s": round(rate, 2), "clips_per_s": round(rate * clips, 1),
            "peak_gib": round(torch.cuda.max_memory_allocated() / 2 ** 30, 1) if device == "cuda" else None}


def main(json_path: Path = typer.Option(..., "--json"), seconds: float = typer.Option(15.0, min=1.0)) -> None:
    if not torch.cuda.is_available():
        raise typer.BadParameter("needs a CUDA GPU (the device tool's)")
    torch.backends.cudnn.benchmark = True
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = True
    record = {"what": __doc__.split("\n")[0], "gpu": torch.cuda.get_device_name(), "torch": torch.__version__,
              "host_cpus": len(os.sched_getaffinity(0)), "seconds_per_case": seconds, "cases": []}
    json_path.parent.mkdir(parents=True, exist_ok=True)
    for stage, clips, mode in CASES:  # compiling takes minutes: the file is rewritten after each case
        try:
            row = measure(stage, clips, mode, seconds)
        except Exception as error:  # a mode that fails to compile is a result too
            row = {"stage": stage, "clips_per_step": clips, "compile": mode or "eager", "error": f"{type(error).__name__}: {str(error)[:300]}"}
        print(json.dumps(row), flush=True)
        record["cases"].append(row)
        partial = json_path.with_suffix(".partial")
        partial.write_text(json.dumps(record, indent=1) + "\n")
        partial.replace(json_path)


if __name__ == "__main__":
    typer.run(main)
