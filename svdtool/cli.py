"""The `svdtool` command: a thin typer layer over the library. Heavy imports happen inside each command."""

from __future__ import annotations

import json
import logging
import os
import sys
import warnings
from pathlib import Path
from typing import Annotated, Any, Callable, Optional

import typer

from .console import console
from .errors import SvdtoolError

app = typer.Typer(add_completion=False, no_args_is_help=True, help="Stable Video Diffusion → OpenVINO on CPU: export, quantize, generate, validate, push.")


# Generation options shared by generate, reference and validate.
Frames = Annotated[Optional[int], typer.Option("--frames", help="frames to generate")]
Height = Annotated[Optional[int], typer.Option("--height", help="video height (multiple of 64)")]
Width = Annotated[Optional[int], typer.Option("--width", help="video width (multiple of 64)")]
Steps = Annotated[Optional[int], typer.Option("--steps", help="denoising steps")]
Fps = Annotated[Optional[int], typer.Option("--fps", help="frames per second (conditioning and output)")]
MotionBucket = Annotated[Optional[int], typer.Option("--motion-bucket-id", help="amount of motion (SVD conditioning, default 127)")]
NoiseAug = Annotated[Optional[float], typer.Option("--noise-aug-strength", help="noise added to the conditioning image")]
DecodeChunk = Annotated[Optional[int], typer.Option("--decode-chunk-size", help="frames decoded at once (lower = less memory)")]
MinGuidance = Annotated[Optional[float], typer.Option("--min-guidance", help="guidance scale at the first frame")]
MaxGuidance = Annotated[Optional[float], typer.Option("--max-guidance", help="guidance scale at the last frame")]
Seed = Annotated[int, typer.Option("--seed", help="seed of the CPU generator for latents and noise augmentation")]


def _settings(frames: int | None, height: int | None, width: int | None, steps: int | None, fps: int | None,
              motion_bucket_id: int | None, noise_aug_strength: float | None, decode_chunk_size: int | None,
              min_guidance: float | None, max_guidance: float | None, seed: int) -> Any:
    """The CLI's generation options as `GenerationSettings` (unset ones are filled from the model's defaults later)."""
    from svdtool.runtime import GenerationSettings

    return GenerationSettings(num_frames=frames, height=height, width=width, num_inference_steps=steps, fps=fps,
                              motion_bucket_id=motion_bucket_id, noise_aug_strength=noise_aug_strength,
                              min_guidance_scale=min_guidance, max_guidance_scale=max_guidance,
                              decode_chunk_size=decode_chunk_size, seed=seed)


def _run(work: Callable[[], Any]) -> Any:
    """Run a command body: SvdtoolError → one red line and exit 2; Ctrl-C → exit 130. No tracebacks."""
    try:
        return work()
    except SvdtoolError as exc:
        console.print(f"[bold red]error:[/] {exc}", soft_wrap=True)  # one line, even when not a terminal
        raise typer.Exit(exc.exit_code) from None
    except KeyboardInterrupt:
        console.print("[yellow]interrupted[/]: nothing was written")
        raise typer.Exit(130) from None
    except MemoryError:
        console.print("[bold red]error:[/] out of memory; use a smaller --height/--width/--frames or --decode-chunk-size")
        raise typer.Exit(2) from None


@app.command()
def export(
    source: str = typer.Argument(..., help="named model (mini; random-weight tiny, svd, svd-xt), local diffusers folder, or Hub id"),
    output: Path = typer.Option(..., "-o", "--output", help="folder to write the OpenVINO IR pipeline into"),
    weights: str = typer.Option("fp16", help="IR weight precision: fp16 or fp32"),
    static: bool = typer.Option(False, "--static", help="bake --height/--width/--frames into the IR"),
    height: Optional[int] = typer.Option(None, help="static height (with --static)"),
    width: Optional[int] = typer.Option(None, help="static width (with --static)"),
    frames: Optional[int] = typer.Option(None, help="static frame count (with --static)"),
    via: str = typer.Option("openvino", help="openvino (direct) or onnx (torch → ONNX → OpenVINO, ONNX kept)"),
    variant: Optional[str] = typer.Option(None, help="weights variant of a diffusers source, e.g. fp16"),
    revision: Optional[str] = typer.Option(None, help="Hub revision of the source"),
    overwrite: bool = typer.Option(False, "--overwrite", help="replace an existing output folder"),
) -> None:
    """Export image encoder, UNet, VAE encoder and VAE temporal decoder to OpenVINO IR."""

    def work() -> None:
        from svdtool.convert import ExportShape, export as export_pipeline
        from svdtool.models import generation_defaults, resolve_source

        resolved = resolve_source(source, variant, revision)
        shape = None
        if static:
            defaults = generation_defaults(resolved)
            shape = ExportShape(height or defaults.height, width or defaults.width, frames or defaults.num_frames, static=True)
        elif any(v is not None for v in (height, width, frames)):
            raise SvdtoolError("--height/--width/--frames need --static (a dynamic IR takes any shape at run time)")
        manifest = export_pipeline(resolved, output, weights=weights, shape=shape, via=via, overwrite=overwrite)
        size = sum(entry["bytes"] for entry in manifest["files"].values()) / 2**20
        console.print(f"[green]exported[/] {resolved.label()} → {output} ({size:.1f} MiB)")

    _run(work)


@app.command()
def generate(
    input: Path = typer.Option(..., "--input", "-i", help="input image (JPEG/PNG/WebP)"),
    output: Path = typer.Option(..., "--output", "-o", help="video.mp4, video.gif, or a folder for PNG frames"),
    model: str = typer.Option("mini", "--model", "-m", help="exported IR folder or Hub id (openvino); a source (torch)"),
    backend: str = typer.Option("openvino", help="openvino (the CPU runtime) or torch (the PyTorch reference)"),
    device: Optional[str] = typer.Option(None, help="openvino: CPU/GPU/AUTO (default CPU); torch: cpu/cuda (default cpu)"),
    precision: str = typer.Option("auto", help="openvino execution precision: auto (plugin's choice), f32, bf16, f16"),
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
) -> None:
    """Generate a video from one image: the OpenVINO runtime, or `--backend torch` for the PyTorch reference."""

    def work() -> None:
        from svdtool.runtime import generate as run_generation, load_image, output_kind
        from svdtool.runtime.session import open_generator, write_generation

        output_kind(output)
        load_image(input)
        settings = _settings(frames, height, width, steps, fps, motion_bucket_id, noise_aug_strength, decode_chunk_size,
                             min_guidance, max_guidance, seed)
        session = open_generator(model, backend, device, precision, dtype)
        settings = settings.resolved(session.defaults)
        image = load_image(input)
        console.print(f"Generating {settings.num_frames} frames at {settings.width}x{settings.height}, "
                      f"{settings.num_inference_steps} steps on {session.label}")
        result = run_generation(session.pipeline, image, settings)
        written = write_generation(result, output, session, input)
        stages = ", ".join(f"{key} {value:.2f} s" for key, value in result.timings.items() if not key.endswith("_calls"))
        console.print(f"[green]wrote[/] {written} ({stages})")

    _run(work)


@app.command()
def quantize(
    model_dir: Path = typer.Argument(..., help="exported FP IR folder"),
    calib: str = typer.Option(..., "--calib", help="folder of images, a save_to_disk dataset folder, or hf:NAME[:split][:column]"),
    output: Path = typer.Option(..., "-o", "--output", help="folder for the quantized IR pipeline"),
    mode: str = typer.Option("int8", help="int8 (UNet full PTQ), hybrid (optimum-intel's), w8 or w4 (weight-only)"),
    samples: int = typer.Option(16, help="UNet calibration samples (spread over images × timesteps, one guidance half each)"),
    max_images: int = typer.Option(16, help="calibration images read at most (the last 2 are held out for the quality check)"),
    calib_frames: Optional[int] = typer.Option(None, help="frames during calibration (default: model's, at most 8)"),
    calib_height: Optional[int] = typer.Option(None, help="height during calibration (default: model's, at most 256)"),
    calib_width: Optional[int] = typer.Option(None, help="width during calibration (default: model's, at most 256)"),
    calib_steps: Optional[int] = typer.Option(None, help="denoising steps during calibration (default: model's, at most 10)"),
    smooth_quant_alpha: float = typer.Option(0.95, help="SmoothQuant alpha for MatMuls in int8 mode (-1 disables)"),
    ignored_scope: list[str] = typer.Option([], "--ignored-scope", help="regex of node names to keep in float (repeatable)"),
    seed: int = typer.Option(42, help="seed of the calibration generations"),
    overwrite: bool = typer.Option(False, "--overwrite", help="replace an existing output folder"),
) -> None:
    """Post-training quantization with nncf, calibrated on real component inputs; prints the fusion proof."""

    def work() -> None:
        from svdtool.quantize import QuantizeOptions, quantize as run_quantize
        from svdtool.runtime import GenerationSettings
        from svdtool.tables import fusion_table

        options = QuantizeOptions(mode=mode, smooth_quant_alpha=smooth_quant_alpha, ignored_scope=tuple(ignored_scope))
        settings = GenerationSettings(num_frames=calib_frames, height=calib_height, width=calib_width,
                                      num_inference_steps=calib_steps, seed=seed)
        manifest = run_quantize(model_dir, output, calib, options=options, samples=samples, calib_settings=settings,
                                max_images=max_images, overwrite=overwrite)
        report = manifest["quantization"]
        console.print(fusion_table({k: v["fusion"] for k, v in report["components"].items()}, f"CPU execution after {mode}"))
        before = sum(c["bytes_before"] for c in report["components"].values()) / 2**20
        after = sum(c["bytes_after"] for c in report["components"].values()) / 2**20
        quality = report["quality_check"]["mean"]
        console.print(f"[green]quantized[/] → {output}: IR {before:.1f} → {after:.1f} MiB; FP vs {mode} on "
                      f"{report['quality_check']['images']} held-out images: PSNR {quality['psnr_mean']:.2f} dB, SSIM {quality['ssim_mean']:.3f}")

    _run(work)


@app.command()
def inspect(
    model_dir: Path = typer.Argument(..., help="exported or quantized IR folder"),
    device: str = typer.Option("CPU", help="OpenVINO device to compile for"),
    as_json: bool = typer.Option(False, "--json", help="print the report as JSON"),
) -> None:
    """Compile each component and report what the plugin executes (int8 kernels, fused FakeQuantize)."""

    def work() -> None:
        from svdtool.outputs import read_manifest, verify_files
        from svdtool.quantize import inspect_folder
        from svdtool.tables import fusion_table

        verify_files(model_dir, read_manifest(model_dir))
        reports = inspect_folder(model_dir, device)
        if as_json:
            print(json.dumps(reports, indent=2))
        else:
            console.print(fusion_table(reports, f"{model_dir} on {device}"))

    _run(work)


@app.command()
def metrics(
    video: Path = typer.Argument(..., help="video (.mp4/.gif/.webm) or a folder of frames"),
    reference: Optional[Path] = typer.Option(None, "--reference", help="reference video of the same shape: adds PSNR/SSIM"),
    as_json: bool = typer.Option(False, "--json", help="print JSON"),
) -> None:
    """Temporal MSE, sharpness, brightness, noise, flicker, warp error, motion (+ PSNR/SSIM vs a reference)."""

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

    _run(work)


@app.command()
def reference(
    source: str = typer.Argument(..., help="PyTorch source: preset, diffusers folder, or Hub id"),
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
    seed: Seed = 42,
    overwrite: bool = typer.Option(False, "--overwrite", help="replace an existing folder"),
) -> None:
    """Make a PyTorch reference (normally on a GPU host) that `svdtool validate --reference REF_DIR` reuses."""

    def work() -> None:
        from svdtool.validate import make_reference

        settings = _settings(frames, height, width, steps, fps, motion_bucket_id, noise_aug_strength, decode_chunk_size,
                             min_guidance, max_guidance, seed)
        record = make_reference(source, images, output, device=device, dtype=dtype, settings=settings, overwrite=overwrite)
        seconds = [entry["timings_seconds"]["total"] for entry in record["images"]]
        console.print(f"[green]reference[/] → {output}: {len(seconds)} videos, {sum(seconds) / len(seconds):.2f} s per video on {device}")

    _run(work)


@app.command()
def validate(
    model_dir: Path = typer.Argument(..., help="exported or quantized IR folder"),
    reference: str = typer.Option(..., "--reference", help="gpu, cpu (run PyTorch live) or a REF_DIR from `svdtool reference`"),
    output: Path = typer.Option(Path("validation"), "-o", "--output", help="report folder"),
    images: Optional[Path] = typer.Option(None, "--images", help="input images (with --reference gpu|cpu)"),
    source: Optional[str] = typer.Option(None, "--source", help="PyTorch source for a live reference (default: the manifest's)"),
    reference_dtype: str = typer.Option("fp16", help="dtype of a live GPU reference"),
    precision: str = typer.Option("auto", help="OpenVINO execution precision: auto, f32, bf16, f16"),
    thresholds: Optional[Path] = typer.Option(None, "--thresholds", help="TOML file with a [thresholds] table"),
    min_psnr: Optional[float] = typer.Option(None, help="minimum mean PSNR vs reference, dB (default 30)"),
    max_temporal_mse_change: Optional[float] = typer.Option(None, help="max |Δ temporal MSE| relative (default 0.15)"),
    max_sharpness_change: Optional[float] = typer.Option(None, help="max |Δ sharpness| relative (default 0.20)"),
    max_brightness_change: Optional[float] = typer.Option(None, help="max |Δ brightness| in levels (default 3)"),
    max_noise_increase: Optional[float] = typer.Option(None, help="max relative noise increase (default 0.20)"),
    frames: Frames = None,
    height: Height = None,
    width: Width = None,
    steps: Steps = None,
    seed: Seed = 42,
    overwrite: bool = typer.Option(False, "--overwrite", help="replace an existing report folder"),
) -> None:
    """Validate the CPU runtime against the PyTorch reference; exit 0 pass, 1 fail, 2 bad input."""

    def work() -> bool:
        from rich.table import Table

        from svdtool.validate import Thresholds, validate as run_validate

        limits = Thresholds.load(thresholds, min_psnr=min_psnr, max_temporal_mse_change=max_temporal_mse_change,
                                 max_sharpness_change=max_sharpness_change, max_brightness_change=max_brightness_change,
                                 max_noise_increase=max_noise_increase)
        settings = _settings(frames, height, width, steps, None, None, None, None, None, None, seed)
        report = run_validate(model_dir, reference, output, images=images, source=source, thresholds=limits,
                              settings=settings, reference_dtype=reference_dtype, precision=precision, overwrite=overwrite)
        table = Table(title=f"{model_dir} vs {report['reference']['device']} reference")
        for column in ("image", "check", "value", "limit", "result"):
            table.add_column(column)
        for image in report["images"]:
            for check in image["checks"]:
                table.add_row(image["image"], check["check"], f"{check['value']:.3f}", check["limit"],
                              "[green]pass[/]" if check["pass"] else "[red]fail[/]")
        console.print(table)
        return report["pass"]

    if not _run(work):
        raise typer.Exit(1)


@app.command()
def push(
    model_dir: Path = typer.Argument(..., help="exported or quantized IR folder"),
    repo_id: str = typer.Option(..., "--repo-id", help="USER/NAME on the Hub"),
    private: bool = typer.Option(False, "--private", help="create the repo private"),
    revision: Optional[str] = typer.Option(None, "--revision", help="branch to push to (created if missing)"),
    commit_message: Optional[str] = typer.Option(None, "--commit-message"),
    token: Optional[str] = typer.Option(None, "--token", help="Hub token (default: HF_TOKEN or the saved login)"),
    create_pr: bool = typer.Option(False, "--create-pr", help="open a pull request instead of committing"),
    validation: Optional[Path] = typer.Option(None, "--validation", help="a `svdtool validate` report folder to show in the card"),
    dry_run: bool = typer.Option(False, "--dry-run", help="show files, sizes and the model card; upload nothing"),
) -> None:
    """Publish the folder and a generated model card to the Hugging Face Hub, in one commit."""

    def work() -> None:
        from rich.markdown import Markdown

        from svdtool.push import push as run_push

        plan = run_push(model_dir, repo_id, private=private, revision=revision, commit_message=commit_message, token=token,
                        create_pr=create_pr, dry_run=dry_run, validation_dir=validation)
        if dry_run:
            for name, size in plan["files"].items():
                console.print(f"  {size / 2**20:10.2f} MiB  {name}", soft_wrap=True)
            console.print(f"[bold]dry run[/]: {len(plan['files']) + 1} files (with README.md) would go to {repo_id}; model card:")
            console.print(Markdown(plan["card"]))

    _run(work)


@app.command()
def bench(
    model_dirs: list[Path] = typer.Argument(..., help="IR folders to compare (FP32, FP16, INT8, hybrid, w8 ...)"),
    torch_source: Optional[str] = typer.Option(None, "--torch", help="also run diffusers eager from this source"),
    device: str = typer.Option("cpu", help="device of the --torch run: cpu or cuda"),
    image: Path = typer.Option(Path(__file__).resolve().parent.parent / "examples" / "astronaut.jpg", "--image", "-i",
                               help="input image"),
    frames: Frames = None,
    height: Height = None,
    width: Width = None,
    steps: Steps = None,
    repeat: int = typer.Option(3, help="timed runs after one warm-up"),
    threads: Optional[int] = typer.Option(None, help="CPU threads (default: all)"),
    hint: str = typer.Option("LATENCY", help="OpenVINO PERFORMANCE_HINT: LATENCY or THROUGHPUT"),
    output: Path = typer.Option(Path("bench.json"), "-o", "--output", help="results JSON; a PNG chart is written beside it"),
) -> None:
    """Stage-by-stage speed of IR folders (and PyTorch) on the same shapes: table, JSON and a PNG chart."""

    def work() -> None:
        from rich.table import Table

        from svdtool.outputs import read_manifest
        from svdtool.runtime import load_image
        from svdtool.runtime.benchmark import bar_chart, benchmark
        from svdtool.runtime.session import cuda_or_error

        if hint not in ("LATENCY", "THROUGHPUT"):
            raise SvdtoolError(f"--hint must be LATENCY or THROUGHPUT, not {hint!r}")
        if repeat < 1:
            raise SvdtoolError("--repeat must be 1 or more")
        cuda_or_error(device)
        defaults = read_manifest(model_dirs[0])["generation_defaults"]
        settings = _settings(frames, height, width, steps, None, None, None, None, None, None, 42).resolved(defaults)
        report = benchmark(model_dirs, load_image(image), settings, repeat=repeat, hint=hint, threads=threads,
                           torch_source=torch_source, torch_device=device)
        output.write_text(json.dumps(report, indent=2))
        bar_chart(report, output.with_suffix(".png"))
        table = Table(title=f"{settings.width}x{settings.height}, {settings.num_frames} frames, {settings.num_inference_steps} steps "
                            f"(median of {repeat}; UNet {report['unet_gflop_per_step']} GFLOP/step, fp32 matmul peak {report['fp32_matmul_peak_gflops']} GFLOP/s)")
        for column in ("configuration", "load+compile s", "first video s", "video s", "image enc s", "UNet step s",
                       "VAE dec s/frame", "UNet GFLOP/s", "peak RSS added GB"):
            table.add_column(column)
        for r in report["results"]:
            table.add_row(r["label"], f"{r['load_compile_s']:.1f}", f"{r['first_video_s']:.2f}", f"{r['video_s']['median']:.2f}",
                          f"{r['image_encoder_s']['median']:.3f}", f"{r['unet_step_s']['median']:.3f}",
                          f"{r['vae_decode_per_frame_s']['median']:.4f}", str(r.get("unet_gflops", "")), f"{r['peak_rss_added_gb']:.2f}")
        console.print(table)
        console.print(f"[green]wrote[/] {output} and {output.with_suffix('.png')}")

    _run(work)


def main() -> None:
    """Console entry point. Library chatter (tracer warnings, deprecation notices) is hidden unless SVDTOOL_DEBUG=1."""
    if not os.environ.get("SVDTOOL_DEBUG"):
        for library in ("DIFFUSERS", "TRANSFORMERS"):
            os.environ.setdefault(f"{library}_VERBOSITY", "error")
        warnings.simplefilter("ignore")
        logging.getLogger("optimum").setLevel(logging.ERROR)
        logging.getLogger("nncf").setLevel(logging.ERROR)
    app()


if __name__ == "__main__":
    sys.exit(main())
