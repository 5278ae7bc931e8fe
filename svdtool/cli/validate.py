"""`svdtool validate`, `svdtool reference` and `svdtool metrics`: the CPU runtime against the PyTorch reference."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import typer

from svdtool.console import console
from svdtool.errors import SvdtoolError

from .common import (Actors, CacheBranch, CacheInterval, CacheSchedule, CpusPerActor, DecodeChunk, Fps, Frames, Height, MaxGuidance,
                     MinGuidance, MotionBucket, NoiseAug, Overwrite, Precision, RayAddress, RayEmbedded, SamplerName, Seed, Speed, Steps,
                     UnetFile, Verbose, Width,
                     deepcache, ray_options, run_command, settings)


MAX_ROWS = 20  # images listed on the console; report.html has all


def validate(
    model_dir: Path = typer.Argument(..., help="exported or quantized IR folder"),
    reference: str = typer.Option(..., "--reference", help="gpu, cpu (run PyTorch live), uncached (the same IR without DeepCache) or a REF_DIR from `svdtool reference`"),
    output: Path = typer.Option(Path("validation"), "-o", "--output", help="report folder"),
    images: Optional[Path] = typer.Option(None, "--images", help="input images (with --reference gpu|cpu|uncached)"),
    source: Optional[str] = typer.Option(None, "--source", help="PyTorch source for a live reference (default: the manifest's)"),
    teacher: Optional[str] = typer.Option(None, "--teacher", help="compare a few-step student with the PyTorch teacher it was "
                                                                  "distilled from (a source, e.g. svd-xt), each at its own steps "
                                                                  "and guidance: metrics checks, no pixel gate"),
    reference_dtype: str = typer.Option("fp16", help="dtype of a live GPU reference"),
    precision: Precision = "auto",
    speed: Speed = "exact",
    cache_interval: CacheInterval = 1,
    cache_branch: CacheBranch = 0,
    cache_schedule: CacheSchedule = "uniform",
    thresholds: Optional[Path] = typer.Option(None, "--thresholds", help="TOML file with a [thresholds] table"),
    min_psnr: Optional[float] = typer.Option(None, help="minimum mean PSNR vs reference, dB (default 30)"),
    max_temporal_mse_change: Optional[float] = typer.Option(None, help="max |Δ temporal MSE| relative (default 0.15)"),
    max_sharpness_change: Optional[float] = typer.Option(None, help="max |Δ sharpness| relative (default 0.20)"),
    max_brightness_change: Optional[float] = typer.Option(None, help="max |Δ brightness| in levels (default 3)"),
    max_noise_increase: Optional[float] = typer.Option(None, help="max relative noise increase (default 0.20)"),
    max_colourfulness_change: Optional[float] = typer.Option(None, help="max |Δ colourfulness| relative (default 0.15)"),
    max_motion_change: Optional[float] = typer.Option(None, help="max |Δ motion| relative, with --teacher (default 0.30)"),
    frames: Frames = None,
    height: Height = None,
    width: Width = None,
    steps: Steps = None,
    seed: Seed = 42,
    ray: RayEmbedded = False,
    ray_address: RayAddress = None,
    actors: Actors = None,
    cpus_per_actor: CpusPerActor = 2,
    overwrite: Overwrite = False,
    verbose: Verbose = False,
) -> None:
    """Validate the CPU runtime against the PyTorch reference; exit 0 pass, 1 fail, 2 bad input. With --ray or
    --ray-address (and --reference gpu|cpu), the reference runs on GPU (or CPU) actors and the IR on CPU actors."""

    def work() -> bool:
        from rich.table import Table

        from svdtool.validate import Thresholds, validate as run_validate
        from svdtool.validate.thresholds import TEACHER_THRESHOLDS

        limits = Thresholds.load(thresholds, TEACHER_THRESHOLDS if teacher else None, min_psnr=min_psnr,
                                 max_motion_change=max_motion_change, max_temporal_mse_change=max_temporal_mse_change,
                                 max_sharpness_change=max_sharpness_change, max_brightness_change=max_brightness_change,
                                 max_noise_increase=max_noise_increase, max_colourfulness_change=max_colourfulness_change)
        run_settings = settings(frames, height, width, steps, seed=seed, speed=speed)
        cache = deepcache(cache_interval, cache_branch, cache_schedule)
        report = run_validate(model_dir, reference, output, images=images, source=source, teacher=teacher, thresholds=limits,
                              settings=run_settings, reference_dtype=reference_dtype, precision=precision, deepcache=cache,
                              overwrite=overwrite, on_ray=ray_options(ray, ray_address, actors, cpus_per_actor))
        from svdtool.validate.report import worst_first

        table = Table(title=f"{model_dir} vs {report['reference']['device']} reference, worst first")
        for column in ("image", "PSNR dB", "SSIM", "failed checks"):
            table.add_column(column)
        ordered = worst_first(report["images"])
        for image in ordered[:MAX_ROWS]:
            failed = [c["check"] for c in image["checks"] if not c["pass"]]
            table.add_row(image["image"], f"{image['runtime']['psnr_mean']:.2f}", f"{image['runtime']['ssim_mean']:.3f}",
                          f"[red]{', '.join(failed)}[/]" if failed else "[green]none[/]")
        if len(ordered) > MAX_ROWS:
            table.caption = f"{len(ordered) - MAX_ROWS} more images in {output}/report.html"
        console.print(table)
        return report["pass"]

    if not run_command(work, verbose):
        raise typer.Exit(1)


def reference(
    source: str = typer.Argument(..., help="PyTorch source: named model, diffusers folder, or Hub id"),
    images: Path = typer.Option(..., "--images", help="folder of input images"),
    output: Path = typer.Option(..., "-o", "--output", help="reference folder to write (REF_DIR)"),
    device: str = typer.Option("cuda", help="cuda or cpu"),
    dtype: str = typer.Option("fp16", help="fp16 or fp32"),
    frames: Frames = None,
    height: Height = None,
    width: Width = None,
    steps: Steps = None,
    fps: Fps = None,
    motion_bucket_id: MotionBucket = None,
    noise_aug_strength: NoiseAug = None,
    decode_chunk_size: DecodeChunk = None,
    min_guidance: MinGuidance = None,
    max_guidance: MaxGuidance = None,
    unet: UnetFile = None,
    sampler: SamplerName = None,
    seed: Seed = 42,
    ray: RayEmbedded = False,
    ray_address: RayAddress = None,
    actors: Actors = None,
    cpus_per_actor: CpusPerActor = 2,
    overwrite: Overwrite = False,
    verbose: Verbose = False,
) -> None:
    """Make a PyTorch reference (normally on a GPU host) that `svdtool validate --reference REF_DIR` reuses; with --ray
    or --ray-address its images are spread over Ray actors (one GPU each with --device cuda)."""

    def work() -> None:
        from svdtool.models import resolve_source
        from svdtool.validate import make_reference

        resolved = resolve_source(source, unet=unet, sampler=sampler)
        run_settings = settings(frames, height, width, steps, fps, motion_bucket_id, noise_aug_strength, decode_chunk_size,
                                min_guidance, max_guidance, seed)
        record = make_reference(resolved, images, output, device=device, dtype=dtype, settings=run_settings, overwrite=overwrite,
                                on_ray=ray_options(ray, ray_address, actors, cpus_per_actor))
        seconds = [entry["timings_seconds"]["total"] for entry in record["images"]]
        console.print(f"[green]reference[/] → {output}: {len(seconds)} videos, {sum(seconds) / len(seconds):.2f} s per video on {device}")

    run_command(work, verbose)


def metrics(
    video: Path = typer.Argument(..., help="video (.mp4/.gif/.webm) or a folder of frames"),
    reference: Optional[Path] = typer.Option(None, "--reference", help="reference video of the same shape: adds PSNR/SSIM"),
    as_json: bool = typer.Option(False, "--json", help="print JSON"),
    verbose: Verbose = False,
) -> None:
    """Temporal MSE, sharpness, brightness, noise, flicker, colourfulness, warp error, motion (+ PSNR/SSIM vs a reference)."""

    def work() -> None:
        from rich.table import Table

        from svdtool.runtime import read_video
        from svdtool.validate import video_metrics

        frames = read_video(video)
        reference_frames = read_video(reference) if reference else None
        if reference_frames is not None and reference_frames.shape != frames.shape:
            raise SvdtoolError(f"--reference has shape {reference_frames.shape}, the video {frames.shape}: they must match")
        values = video_metrics(frames, reference_frames)
        if as_json:
            print(json.dumps(values, indent=2))
            return
        table = Table(title=f"{video} ({frames.shape[0]} frames, {frames.shape[2]}x{frames.shape[1]})")
        table.add_column("metric")
        table.add_column("value", justify="right")
        for key, value in values.items():
            table.add_row(key, f"{value:.4f}")
        console.print(table)

    run_command(work, verbose)
