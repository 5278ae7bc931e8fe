"""`svdtool generate`: one image → a video, on the OpenVINO runtime or the PyTorch reference."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from svdtool.console import console

from .common import (CacheBranch, CacheInterval, CacheSchedule, DecodeChunk, Fps, Frames, Height, MaxGuidance, MinGuidance, MotionBucket, NoiseAug, Precision, Seed,
                     Steps, Verbose, Width, deepcache, run_command, settings)


def generate(
    input: Path = typer.Option(..., "--input", "-i", help="input image (JPEG/PNG/WebP)"),
    output: Path = typer.Option(..., "--output", "-o", help="video.mp4, video.gif, or a folder for PNG frames"),
    model: str = typer.Option("mini", "--model", "-m", help="exported IR folder or Hub id (openvino); a source (torch)"),
    backend: str = typer.Option("openvino", help="openvino (the CPU runtime) or torch (the PyTorch reference)"),
    device: Optional[str] = typer.Option(None, help="openvino: CPU/GPU/AUTO (default CPU); torch: cpu/cuda (default cpu)"),
    precision: Precision = "auto",
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
    seed: Seed = 42,
    dtype: str = typer.Option("fp32", help="torch backend dtype: fp32 or fp16"),
    cache_interval: CacheInterval = 1,
    cache_branch: CacheBranch = 0,
    cache_schedule: CacheSchedule = "uniform",
    verbose: Verbose = False,
) -> None:
    """Generate a video from one image: the OpenVINO runtime, or `--backend torch` for the PyTorch reference."""

    def work() -> None:
        from svdtool.runtime import generate as run_generation, load_image, output_kind
        from svdtool.runtime.loading import check_precision
        from svdtool.runtime.session import open_session, plan, write_generation

        # Everything cheap first: the output kind, the image, the model's defaults and size rule, the settings.
        output_kind(output)
        image = load_image(input)
        check_precision(precision)
        cache = deepcache(cache_interval, cache_branch, cache_schedule)
        target = plan(model, backend, dtype, device, cache)
        run_settings = settings(frames, height, width, steps, fps, motion_bucket_id, noise_aug_strength, decode_chunk_size,
                                min_guidance, max_guidance, seed).resolved(target.defaults)
        session = open_session(target, device, precision, dtype, cache)
        console.print(f"Generating {run_settings.num_frames} frames at {run_settings.width}x{run_settings.height}, "
                      f"{run_settings.num_inference_steps} steps on {session.label}")
        result = run_generation(session.pipeline, image, run_settings)
        written = write_generation(result, output, session, input)
        stages = ", ".join(f"{key} {value:.2f} s" for key, value in result.timings.items() if not key.endswith("_calls"))
        console.print(f"[green]wrote[/] {written} ({stages})")

    run_command(work, verbose)
