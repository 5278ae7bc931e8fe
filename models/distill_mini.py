"""Distil svd-mini into a few-step consistency student (`mini-lcm`) on one GPU.

    python -m svdtool.models.distill_mini --teacher models/mini --out mini-lcm/ --state .distill/ --minutes 10

Consistency distillation (Song et al. 2023, Algorithm 2), guided as LCM and AnimateLCM distil theirs: a clip's
latents are noised to σₙ₊₁ of the consistency sampler's 40 Karras σ (models/samplers.py's CONSISTENCY_CONFIG); one
Euler step of the teacher's ODE, with the teacher's classifier-free guidance (its frame-wise ramp, 1.0 → 2.5), brings
them to σₙ; the student's denoised estimate at σₙ₊₁ is pulled (pseudo-Huber) towards the target network's at σₙ. The
target is an exponential average of the student (decay 0.95), both start as the teacher, and the student is SVD's
denoiser (v-prediction, EDM preconditioning; `train_mini.denoise`), so its UNet is a drop-in for the teacher's and the
sampler is SVDConsistencyScheduler. A tenth of the clips drop both conditions, as the teacher was trained, and are
distilled from the teacher's unconditional ODE: the student keeps a negative branch for guidance above 1.
Each call resumes from `--state` when that folder survived; it writes the target network's UNet (fp16) to
`--out/unet`, with training.json and loss.json: only the UNet is new (the VAE and image encoder stay the teacher's).

Written by hand: diffusers' consistency-distillation examples train Stable Diffusion's and SDXL's UNets (text
conditions, ε-prediction), not SVD's; their pieces (EMA update, pseudo-Huber loss) are a few lines each here.
"""

from __future__ import annotations

import copy
import json
import time
from pathlib import Path

import numpy as np
import torch
import typer
from diffusers import StableVideoDiffusionPipeline

from .samplers import CONSISTENCY_CONFIG, SVDConsistencyScheduler
from .train_mini import (CONDITION_DROP, _train, conditioning, denoise, optimizer_for, read_state, require_pipeline,
                         write_state)
from .training_data import LatentPool, build_pool

HUBER_C = 0.001  # LCM's pseudo-Huber constant
TARGET_DECAY = 0.95  # LCM's target-network EMA

app = typer.Typer(add_completion=False)


def karras_sigmas() -> torch.Tensor:
    """The consistency sampler's training σ grid, ascending (σ_min … σ_max): every σ its few steps visit is on it."""
    scheduler = SVDConsistencyScheduler(**CONSISTENCY_CONFIG)
    return torch.as_tensor(np.sort(np.asarray(scheduler.sigmas, dtype=np.float64)), dtype=torch.float32)


class TargetNetwork:
    """The target UNet, an exponential moving average of the student's weights (what `_train` calls `ema`)."""

    def __init__(self, unet: torch.nn.Module, decay: float = TARGET_DECAY) -> None:
        self.unet, self.decay = unet, decay

    @torch.no_grad()
    def step(self, parameters) -> None:
        torch._foreach_lerp_(list(self.unet.parameters()), list(parameters), 1 - self.decay)


def guided_ode_step(teacher: torch.nn.Module, noisy: torch.Tensor, sigma: torch.Tensor, sigma_next: torch.Tensor,
                    condition: dict, guidance: torch.Tensor) -> torch.Tensor:
    """One Euler step of the teacher's probability-flow ODE from σ to σ_next, with classifier-free guidance per frame
    (`guidance`, (F,)): the step SVD's 25-step sampler takes, as the pipeline guides it (both conditions zeroed)."""
    unconditional = {**condition, "condition_latents": torch.zeros_like(condition["condition_latents"]),
                     "embeddings": torch.zeros_like(condition["embeddings"])}
    both = {key: torch.cat([unconditional[key], condition[key]]) for key in condition}
    denoised_uncond, denoised_cond = denoise(teacher, noisy.repeat(2, 1, 1, 1, 1), sigma.repeat(2), **both).chunk(2)
    denoised = denoised_uncond + guidance[None, :, None, None, None] * (denoised_cond - denoised_uncond)
    s, s_next = sigma[:, None, None, None, None], sigma_next[:, None, None, None, None]
    return noisy + (s_next - s) * (noisy - denoised) / s


def distillation_loss(models: dict, sigmas: torch.Tensor, guidance: torch.Tensor, batch: LatentPool) -> torch.Tensor:
    """The consistency-distillation loss on one batch of encoded clips."""
    student, teacher, target = models["student"], models["teacher"], models["target"]
    latents = batch.latents
    size, device = len(latents), latents.device
    with torch.no_grad():  # the image encoder stays the teacher's
        condition = conditioning(models["image_encoder"], batch)
    index = torch.randint(0, len(sigmas) - 1, (size,), device=device)
    sigma, sigma_next = sigmas[index + 1], sigmas[index]
    noisy = latents + sigma[:, None, None, None, None] * torch.randn_like(latents)
    with torch.no_grad():
        stepped = guided_ode_step(teacher, noisy, sigma, sigma_next, condition, guidance)
        target_denoised = denoise(target, stepped, sigma_next, **condition).float()
    student_denoised = denoise(student, noisy, sigma, **condition).float()
    return (((student_denoised - target_denoised) ** 2 + HUBER_C ** 2).sqrt() - HUBER_C).mean()


def save_student(target: torch.nn.Module, folder: Path) -> None:
    """The target network's UNet as a diffusers folder in fp16, written next to `folder` and renamed into place."""
    from svdtool.outputs import atomic_output_dir

    with atomic_output_dir(folder, overwrite=True) as tmp:
        copy.deepcopy(target).half().save_pretrained(tmp, safe_serialization=True)


@app.command()
def main(
    teacher: Path = typer.Option(..., exists=True, file_okay=False, help="the teacher pipeline (svd-mini's folder)"),
    out: Path = typer.Option(..., help="folder for the student's UNet (unet/), training.json and loss.json"),
    state: Path = typer.Option(Path(".distill"), help="full-precision state to resume from and save to"),
    minutes: float = typer.Option(10.0, min=0.0),
    batch: int = typer.Option(64, min=1, help="clips per step (x8 frames)"),
    lr: float = typer.Option(5e-5),
    anneal: bool = typer.Option(False, help="decay the learning rate linearly to 0 over --minutes"),
    workers: int = typer.Option(4, min=0, help="CPU processes rendering training clips"),
    pool_clips: int = typer.Option(8192, min=1, help="clips encoded once per call"),
    max_guidance: float = typer.Option(2.5, help="the teacher's guidance ramp, 1.0 -> this over the frames (svd-mini's own)"),
) -> None:
    require_pipeline(teacher, "--teacher")
    saved = read_state(state, ("student", "target", "optimizer", "steps", "log", "runs"))
    device = "cuda" if torch.cuda.is_available() else "cpu"
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = True
    # low_cpu_mem_usage=False: a teacher carried without its VAE decoder (never used here) would otherwise load that
    # decoder as meta tensors where accelerate is installed (the GPU host), which .to(device) cannot move
    pipeline = StableVideoDiffusionPipeline.from_pretrained(teacher, torch_dtype=torch.float32, low_cpu_mem_usage=False)
    scaling_factor = float(pipeline.vae.config.scaling_factor)
    models = {"teacher": pipeline.unet, "student": copy.deepcopy(pipeline.unet), "target": copy.deepcopy(pipeline.unet),
              "image_encoder": pipeline.image_encoder, "vae": pipeline.vae}
    steps, log, runs = {"distill": 0}, [], []
    if saved:
        models["student"].load_state_dict(saved["student"])
        models["target"].load_state_dict(saved["target"])
        steps, log, runs = saved["steps"], saved["log"], saved["runs"]
    for model in models.values():
        model.to(device).requires_grad_(False).eval()
    student = models["student"].train().requires_grad_(True)
    optimizer = optimizer_for(student.parameters(), lr, 0.0, device)
    if saved:
        optimizer.load_state_dict(saved["optimizer"])
    autocast = torch.autocast(device, dtype=torch.bfloat16, enabled=device == "cuda")
    print(f"device {device}; resumed steps {steps}", flush=True)

    start = time.time()
    pool = build_pool(models["vae"], scaling_factor, pool_clips, 5_000_000 + steps["distill"] * 7919, device, workers, autocast, "zoom")
    print(f"encoded {pool_clips} clips in {time.time() - start:.0f} s", flush=True)
    del models["vae"]
    frames = pool.latents.shape[1]
    guidance = torch.linspace(1.0, max_guidance, frames, device=device)
    generator = torch.Generator(device).manual_seed(steps["distill"])
    first, sigmas = steps["distill"], karras_sigmas().to(device)
    _train(lambda clips: distillation_loss(models, sigmas, guidance, clips), student.parameters(),
           optimizer, TargetNetwork(models["target"]), iter(lambda: pool.sample(batch, generator), None), minutes,
           "distill", steps, log, autocast, list(student.parameters()), anneal=anneal)
    runs.append(f"consistency distillation: {first:,} -> {steps['distill']:,} steps at lr {lr:g}, {batch} clips a step (a pool "
                f"of {pool_clips:,}, motion=zoom), target EMA {TARGET_DECAY}, teacher guidance 1.0 -> {max_guidance:g}"
                f"{', lr decayed linearly to 0' if anneal else ''}")

    write_state(state, {"student": student.state_dict(), "target": models["target"].state_dict(),
                        "optimizer": optimizer.state_dict(), "steps": steps, "log": log, "runs": runs})
    out.mkdir(parents=True, exist_ok=True)
    save_student(models["target"].cpu(), out / "unet")
    (out / "loss.json").write_text(json.dumps(log))
    write_record(out, teacher, steps, runs, torch.cuda.get_device_name() if device == "cuda" else "cpu", max_guidance)
    print(f"saved {out} after steps {steps}", flush=True)


def write_record(out: Path, teacher: Path, steps: dict, runs: list[str], device: str, max_guidance: float) -> None:
    from svdtool.outputs import file_inventory, library_versions

    teacher_record = json.loads((teacher / "training.json").read_text()) if (teacher / "training.json").is_file() else {}
    record = {
        "model": "svd-mini consistency student", "teacher": {"folder": teacher.name, "steps": teacher_record.get("steps")},
        "trained_on": device, "steps": steps,
        "objective": {"method": "guided consistency distillation (Song et al. 2023, Algorithm 2; LCM/AnimateLCM)",
                      "sigmas": {key: CONSISTENCY_CONFIG[key] for key in ("num_train_timesteps", "sigma_min", "sigma_max", "rho")},
                      "ode_solver": "Euler (the teacher's sampler)", "teacher_guidance": [1.0, max_guidance],
                      "loss": f"pseudo-Huber, c={HUBER_C}", "target_ema": TARGET_DECAY, "condition_drop": CONDITION_DROP},
        "sampler": "consistency", "loss_log": "loss.json", "versions": library_versions(), "runs": runs,
    }
    record["files"] = file_inventory(out)
    (out / "training.json").write_text(json.dumps(record, indent=2))


if __name__ == "__main__":
    app()
