"""`svdtool generate`: one image → a video, on the OpenVINO runtime or the PyTorch reference."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from svdtool.console import console
from svdtool.errors import SvdtoolError

from .common import (Actors, CacheBranch, CacheInterval, CacheSchedule, CpusPerActor, DecodeChunk, Fps, Frames, Height, MaxGuidance,
                     Memory, MinGuidance, MotionBucket, NoiseAug, Precision, RayAddress, RayEmbedded, Seed, Speed, Steps, Verbose, Width, deepcache,
                     ray_options, run_command, settings)


def generate(
    input: str = typer.Option(..., "--input", "-i", help="input image (JPEG/PNG/WebP); for a batch: a folder, a glob "
                                                         "(quoted) or a .txt list of paths/URLs"),
    output: Path = typer.Option(..., "--output", "-o", help="video.mp4, video.gif, or a folder for PNG frames; for a "
                                                           "batch: the folder for one video + manifest per image"),
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
    memory: Memory = "standard",
    speed: Speed = "exact",
    dtype: str = typer.Option("fp32", help="torch backend dtype: fp32 or fp16"),
    cache_interval: CacheInterval = 1,
    cache_branch: CacheBranch = 0,
    cache_schedule: CacheSchedule = "uniform",
    video_format: str = typer.Option("mp4", "--format", help="batch: mp4 or gif"),
    ray: RayEmbedded = False,
    ray_address: RayAddress = None,
    actors: Actors = None,
    cpus_per_actor: CpusPerActor = 2,
    verbose: Verbose = False,
) -> None:
    """Generate a video from one image, or one per image of a batch (in this process, or on Ray with --ray /
    --ray-address): the OpenVINO runtime, or `--backend torch` (one image) for the PyTorch reference."""
    def batch() -> bool:
        from svdtool.batch import BatchSpec, collect_inputs, generate_batch
        from svdtool.runtime.loading import check_precision
        from svdtool.runtime.session import plan

        if backend != "openvino":
            raise SvdtoolError("a batch runs on the OpenVINO runtime; --backend torch takes one image")
        if output.suffix:
            raise SvdtoolError(f"--output {output}: a batch writes one video per image into a folder; give a folder name")
        on_ray = ray_options(ray, ray_address, actors, cpus_per_actor)
        items = collect_inputs(input)
        check_precision(precision)
        cache = deepcache(cache_interval, cache_branch, cache_schedule)
        target = plan(model, backend, deepcache=cache)
        run_settings = settings(frames, height, width, steps, fps, motion_bucket_id, noise_aug_strength, decode_chunk_size,
                                min_guidance, max_guidance, seed, memory, speed).resolved(target.defaults)
        if Path(target.model).is_dir():  # an IR folder: its footprint is known now (a named model's after its export)
            from svdtool.outputs import read_manifest, verify_files
            from svdtool.runtime.footprint import check_memory

            verify_files(Path(target.model), read_manifest(Path(target.model)))
            check_memory(Path(target.model), run_settings, precision)
        spec = BatchSpec(target.model, run_settings, video_format, precision, cache,
                         threads=max(1, int(cpus_per_actor)) if on_ray else None)
        return generate_batch(spec, items, output, on_ray)["failed"] == 0

    def work() -> bool:
        from svdtool.batch.inputs import is_batch_input  # light: no runtime import

        if is_batch_input(input):
            return batch()
        from svdtool.runtime import generate as run_generation, load_image, output_kind
        from svdtool.runtime.loading import check_precision
        from svdtool.runtime.session import open_session, plan, write_generation

        # Everything cheap first: the output kind, the image, the model's defaults and size rule, the settings.
        output_kind(output)
        image = load_image(Path(input))
        check_precision(precision)
        cache = deepcache(cache_interval, cache_branch, cache_schedule)
        target = plan(model, backend, dtype, device, cache)
        run_settings = settings(frames, height, width, steps, fps, motion_bucket_id, noise_aug_strength, decode_chunk_size,
                                min_guidance, max_guidance, seed, memory, speed).resolved(target.defaults)
        session = open_session(target, device, precision, dtype, cache, settings=run_settings)
        console.print(f"Generating {run_settings.num_frames} frames at {run_settings.width}x{run_settings.height}, "
                      f"{run_settings.num_inference_steps} steps on {session.label}")
        result = run_generation(session.pipeline, image, run_settings)
        written = write_generation(result, output, session, Path(input))
        stages = ", ".join(f"{key} {value:.2f} s" for key, value in result.timings.items() if not key.endswith("_calls"))
        console.print(f"[green]wrote[/] {written} ({stages})")
        return True

    if not run_command(work, verbose):
        raise typer.Exit(1)
