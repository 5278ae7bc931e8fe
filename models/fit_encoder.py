"""Train svd-mini's VAE encoder onto latents fitted through its frozen decoder, on one GPU.

    python -m svdtool.models.fit_encoder --init .mini/c32k --out .mini/c32kf --fit-minutes 3 --minutes 4

The decoder draws held-out photos about 2.7 dB better from latents optimised for each photo than from the encoder's
(`models/training/mini_vae_check.py --fit-latents`), and training the encoder on the reconstruction loss through the frozen
decoder did not move it toward them (bench/results/mini_research.md). Here each rendered training frame's latent is
fitted once (Adam on the decoder's MSE from the encoder's latent, as mini_vae_check fits a photo's), then the encoder
regresses onto those targets: a direct target in place of a gradient through the decoder. The decoder stays; the
latents move, so the scaling factor is measured again and the UNet must be trained on them (`train_mini --init OUT`).
Written by hand: no library distils an encoder onto fitted latents.
"""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

import torch
import torch.nn.functional as F
import typer
from diffusers import AutoencoderKLTemporalDecoder

from .scenes import SceneMix
from .train_mini import (_train, build_models, load_init, measured_scaling_factor, optimizer_for, require_pipeline,
                         saved_vae_shape, save_pipeline, write_training_record)
from .training_data import clip_batches

FIT_LR = 0.02  # 150 steps from the encoder's latent reach the bound models/training/mini_vae_check.py --fit-latents reports

app = typer.Typer(add_completion=False)


def fit_latents(vae: AutoencoderKLTemporalDecoder, images: torch.Tensor, steps: int, autocast) -> torch.Tensor:
    """Each image's latent that minimises the frozen decoder's MSE to it, `steps` Adam steps from the encoder's."""
    with torch.no_grad(), autocast:
        latents = vae.encode(images).latent_dist.mode().float()
    latents.requires_grad_(True)
    optimizer = torch.optim.Adam([latents], lr=FIT_LR)
    for _ in range(steps):
        with autocast:
            decoded = vae.decode(latents, num_frames=1).sample
        error = F.mse_loss(decoded.float(), images, reduction="none")
        loss = error.mean(dim=(1, 2, 3)).sum()  # each image's own mean: its gradient does not shrink with the batch
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    return latents.detach()


def fitted_pool(vae: AutoencoderKLTemporalDecoder, minutes: float, batch: int, steps: int, seed: int, device: str,
                workers: int, autocast) -> tuple[torch.Tensor, torch.Tensor]:
    """(images, fitted latents) for rendered frames (the first and last of each clip), fitted `batch` at a time until
    `minutes` are spent (at least one batch)."""
    stream = clip_batches(max(1, batch // 2), seed, device, workers, "random", SceneMix())
    images, targets, end = [], [], time.time() + minutes * 60
    while not images or time.time() < end:
        frames = next(stream)[0][:, [0, -1]].flatten(0, 1)
        images.append(frames.to(torch.bfloat16))
        targets.append(fit_latents(vae, frames, steps, autocast))
    return torch.cat(images), torch.cat(targets)


@app.command()
def main(
    init: Path = typer.Option(..., exists=True, file_okay=False, help="saved svd-mini pipeline whose encoder is fitted"),
    out: Path = typer.Option(..., help="folder for the pipeline with the new encoder"),
    fit_minutes: float = typer.Option(3.0, min=0.0, help="time spent fitting latents of rendered frames (5.8 "
                                     "frames/s on the H200)"),
    fit_steps: int = typer.Option(150, min=1, help="Adam steps per fitted latent"),
    fit_batch: int = typer.Option(256, min=2, help="frames fitted together"),
    minutes: float = typer.Option(4.0, min=0.0, help="time spent training the encoder on them"),
    batch: int = typer.Option(64, min=1, help="frames per encoder step"),
    lr: float = typer.Option(2e-4, help="encoder learning rate, decayed linearly to 0"),
    workers: int = typer.Option(4, min=0, help="CPU processes rendering clips"),
) -> None:
    require_pipeline(init, "--init")
    device = "cuda" if torch.cuda.is_available() else "cpu"
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = True
    latent_channels, vae_shape = saved_vae_shape(None, init, 16)
    models = build_models(latent_channels, vae_shape)
    load_init(models, init)
    record = json.loads((init / "training.json").read_text()) if (init / "training.json").is_file() else {}
    log = json.loads((init / "loss.json").read_text()) if (init / "loss.json").is_file() else []
    vae = models["vae"].to(device).requires_grad_(False).eval()

    autocast = torch.autocast(device, dtype=torch.bfloat16, enabled=device == "cuda")
    start = time.time()
    images, targets = fitted_pool(vae, fit_minutes, fit_batch, fit_steps, 3_000_000, device, workers, autocast)
    print(f"fitted {len(images):,} frames' latents in {time.time() - start:.0f} s", flush=True)

    parameters = [p for module in (vae.encoder, vae.quant_conv) for p in module.requires_grad_(True).parameters()]
    optimizer = optimizer_for(parameters, lr, 0.0, device)
    generator = torch.Generator(device).manual_seed(0)
    variance = targets.var()

    def regression(index: torch.Tensor) -> torch.Tensor:
        predicted = vae.encode(images[index].float()).latent_dist.mode()
        return F.mse_loss(predicted.float(), targets[index]) / variance

    steps = {"vae": 0, "unet": 0, "encoder_fit": 0, **record.get("steps", {})}
    first = steps["encoder_fit"]
    batches = iter(lambda: torch.randint(0, len(images), (batch,), generator=generator, device=device), None)
    _train(regression, parameters, optimizer, None, batches, minutes, "encoder_fit", steps, log, autocast, anneal=True)
    vae.requires_grad_(False).eval()

    scaling_factor = measured_scaling_factor(vae, device, autocast)  # the latents moved
    runs = [*record.get("runs", []), f"VAE encoder onto latents fitted through its frozen decoder: {len(images):,} frames "
            f"x {fit_steps} Adam steps, then {first:,} -> {steps['encoder_fit']:,} regression steps of {batch} frames at "
            f"lr {lr:g} decayed to 0; scaling factor {scaling_factor:.4f}"]
    partial = out.with_name(out.name + ".partial")  # an interrupted save leaves no half-written --out
    shutil.rmtree(partial, ignore_errors=True)
    save_pipeline({name: model.cpu() for name, model in models.items()}, None, scaling_factor, partial)
    (partial / "loss.json").write_text(json.dumps(log))
    write_training_record(partial, steps, scaling_factor, torch.cuda.get_device_name() if device == "cuda" else "cpu", runs)
    shutil.rmtree(out, ignore_errors=True)
    partial.replace(out)
    last = [row["loss"] for row in log if row["phase"] == "encoder_fit"][-1:]
    print(f"saved {out} after {steps['encoder_fit']:,} encoder steps: scaling factor {scaling_factor:.4f}, "
          f"regression loss {last}", flush=True)


if __name__ == "__main__":
    app()
