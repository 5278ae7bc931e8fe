"""The `svdtool` command: a thin typer layer over the library. Heavy imports happen inside each command."""

from __future__ import annotations

import json
import logging
import os
import sys
import warnings
from pathlib import Path
from typing import Any, Callable, Optional

import typer

from .console import console
from .errors import SvdtoolError

app = typer.Typer(add_completion=False, no_args_is_help=True, help="Stable Video Diffusion → OpenVINO on CPU: export, quantize, generate, validate, push.")


def _run(work: Callable[[], Any]) -> Any:
    """Run a command body: SvdtoolError → one red line and exit 2; Ctrl-C → exit 130. No tracebacks."""
    try:
        return work()
    except SvdtoolError as exc:
        console.print(f"[bold red]error:[/] {exc}")
        raise typer.Exit(exc.exit_code) from None
    except KeyboardInterrupt:
        console.print("[yellow]interrupted[/]: nothing was written")
        raise typer.Exit(130) from None
    except MemoryError:
        console.print("[bold red]error:[/] out of memory; use a smaller --height/--width/--frames or --decode-chunk-size")
        raise typer.Exit(2) from None


@app.command()
def export(
    source: str = typer.Argument(..., help="preset (tiny, svd, svd-xt), local diffusers folder, or Hub id"),
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
    model: str = typer.Option("tiny", "--model", "-m", help="exported IR folder or Hub id (openvino); a source (torch)"),
    backend: str = typer.Option("openvino", help="openvino (the CPU runtime) or torch (the PyTorch reference)"),
    device: Optional[str] = typer.Option(None, help="openvino: CPU/GPU/AUTO (default CPU); torch: cpu/cuda (default cpu)"),
    precision: str = typer.Option("auto", help="openvino execution precision: auto (plugin's choice), f32, bf16, f16"),
    frames: Optional[int] = typer.Option(None, help="frames to generate"),
    height: Optional[int] = typer.Option(None, help="video height (multiple of 64)"),
    width: Optional[int] = typer.Option(None, help="video width (multiple of 64)"),
    steps: Optional[int] = typer.Option(None, help="denoising steps"),
    fps: Optional[int] = typer.Option(None, help="frames per second (conditioning and output)"),
    motion_bucket_id: Optional[int] = typer.Option(None, help="amount of motion (SVD conditioning, default 127)"),
    noise_aug_strength: Optional[float] = typer.Option(None, help="noise added to the conditioning image"),
    decode_chunk_size: Optional[int] = typer.Option(None, help="frames decoded at once (lower = less memory)"),
    min_guidance: Optional[float] = typer.Option(None, help="guidance scale at the first frame"),
    max_guidance: Optional[float] = typer.Option(None, help="guidance scale at the last frame"),
    seed: int = typer.Option(42, help="seed of the CPU generator for latents and noise augmentation"),
    dtype: str = typer.Option("fp32", help="torch backend dtype: fp32 or fp16"),
) -> None:
    """Generate a video from one image: the OpenVINO runtime, or `--backend torch` for the PyTorch reference."""

    def work() -> None:
        from svdtool.runtime import GenerationSettings, generate as run_generation, load_image, output_kind
        from svdtool.runtime.session import open_generator, write_generation

        output_kind(output)
        load_image(input)
        settings = GenerationSettings(frames, height, width, steps, fps, motion_bucket_id, noise_aug_strength,
                                      min_guidance, max_guidance, decode_chunk_size, seed)
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
