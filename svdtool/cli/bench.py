"""`svdtool bench`: stage-by-stage speed of IR folders (and PyTorch) on the same shapes."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import typer

from svdtool.console import console
from svdtool.errors import SvdtoolError

from .common import (CacheBranch, CacheInterval, CacheSchedule, Frames, Height, Speed, Steps, Verbose, Width, deepcache, existing,
                     run_command, settings)

DEFAULT_IMAGE = Path(__file__).resolve().parents[2] / "examples" / "astronaut.jpg"


def bench(
    model_dirs: list[Path] = typer.Argument(..., help="IR folders to compare (FP32, FP16, INT8, hybrid, w8 ...)"),
    torch_source: Optional[str] = typer.Option(None, "--torch", help="also run diffusers eager from this source"),
    device: str = typer.Option("cpu", help="device of the --torch run: cpu or cuda"),
    image: Path = typer.Option(DEFAULT_IMAGE, "--image", "-i", help="input image",
                               show_default="examples/astronaut.jpg"),
    frames: Frames = None,
    height: Height = None,
    width: Width = None,
    steps: Steps = None,
    repeat: int = typer.Option(3, help="timed runs after one warm-up"),
    threads: Optional[int] = typer.Option(None, help="CPU threads (default: all)"),
    hint: str = typer.Option("LATENCY", help="OpenVINO PERFORMANCE_HINT: LATENCY or THROUGHPUT"),
    output: Path = typer.Option(Path("bench.json"), "-o", "--output", help="results JSON; a PNG chart is written beside it"),
    speed: Speed = "exact",
    cache_interval: CacheInterval = 1,
    cache_branch: CacheBranch = 0,
    cache_schedule: CacheSchedule = "uniform",
    verbose: Verbose = False,
) -> None:
    """Stage-by-stage speed of IR folders (and PyTorch) on the same shapes: table, JSON and a PNG chart; with
    --cache-interval N, each folder also with DeepCache."""

    def work() -> None:
        from rich.table import Table

        from svdtool.cpu import cpu_label
        from svdtool.runtime import load_image
        from svdtool.runtime.benchmark import bar_chart, benchmark
        from svdtool.runtime.deepcache import check_available
        from svdtool.runtime.session import cuda_or_error, ir_generation_defaults

        if hint not in ("LATENCY", "THROUGHPUT"):
            raise SvdtoolError(f"--hint must be LATENCY or THROUGHPUT, not {hint!r}")
        if repeat < 1:
            raise SvdtoolError("--repeat must be 1 or more")
        cuda_or_error(device)
        cache = deepcache(cache_interval, cache_branch, cache_schedule)
        for folder in model_dirs:
            existing(folder, "model folder")
            check_available(folder, cache)
        defaults = ir_generation_defaults(model_dirs[0])
        run_settings = settings(frames, height, width, steps, speed=speed).resolved(defaults)
        report = benchmark(model_dirs, load_image(image), run_settings, repeat=repeat, hint=hint, threads=threads,
                           torch_source=torch_source, torch_device=device, deepcache=cache, each_own_steps=steps is None)
        steps_seen = sorted({r.get("steps", run_settings.num_inference_steps) for r in report["results"]})
        output.write_text(json.dumps(report, indent=2))
        bar_chart(report, output.with_suffix(".png"))
        table = Table(title=f"{run_settings.width}x{run_settings.height}, {run_settings.num_frames} frames, "
                            f"{'/'.join(map(str, steps_seen))} steps, median of {repeat} (seconds)", title_justify="left",
                      caption=f"UNet {report['unet_gflop_per_step']} GFLOP/step; fp32 matmul peak {report['fp32_matmul_peak_gflops']} "
                              f"GFLOP/s; {cpu_label(report['cpu'])}", caption_justify="left")
        for column in ("configuration", "steps", "load", "1st video", "video", "UNet step", "VAE/frame", "GFLOP/s", "+RSS GB"):
            table.add_column(column, justify="left" if column == "configuration" else "right", no_wrap=column != "configuration")
        for r in report["results"]:
            table.add_row(r["label"], str(r.get("steps", "")), f"{r['load_compile_s']:.1f}", f"{r['first_video_s']:.2f}", f"{r['video_s']['median']:.2f}",
                          f"{r['unet_step_s']['median']:.3f}", f"{r['vae_decode_per_frame_s']['median']:.3f}",
                          f"{r.get('unet_gflops', '')}", f"{r['peak_rss_added_gb']:.2f}")
        console.print(table)
        console.print(f"[green]wrote[/] {output} and {output.with_suffix('.png')}")

    run_command(work, verbose)
