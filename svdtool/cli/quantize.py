"""`svdtool quantize` and `svdtool inspect`: NNCF post-training quantization and what the CPU plugin executes."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import typer

from svdtool.console import console

from .common import Overwrite, Verbose, run_command


def quantize(
    model_dir: Path = typer.Argument(..., help="exported FP IR folder"),
    calib: str = typer.Option(..., "--calib", help="folder of images, a save_to_disk dataset folder, or hf:NAME[:split][:column]"),
    output: Path = typer.Option(..., "-o", "--output", help="folder for the quantized IR pipeline"),
    mode: str = typer.Option("int8", help="int8 (UNet full PTQ), hybrid (optimum-intel's), w8 or w4 (weight-only)"),
    target_cpu: str = typer.Option("any", help="any: accurate on every x86 CPU (7-bit weights where int8 activations "
                                              "meet them); vnni: only for CPUs with VNNI or AMX (full 8-bit weights)"),
    samples: int = typer.Option(64, help="UNet calibration samples (spread over images × timesteps, one guidance half each)"),
    max_images: int = typer.Option(16, help="calibration images read at most (the last 2 are held out for the quality check)"),
    calib_frames: Optional[int] = typer.Option(None, help="frames during calibration (default: model's, at most 8)"),
    calib_height: Optional[int] = typer.Option(None, help="height during calibration (default: model's, at most 256)"),
    calib_width: Optional[int] = typer.Option(None, help="width during calibration (default: model's, at most 256)"),
    calib_steps: Optional[int] = typer.Option(None, help="denoising steps during calibration (default: model's, at most 10)"),
    smooth_quant_alpha: float = typer.Option(0.95, help="SmoothQuant alpha for MatMuls in int8 mode (-1 disables)"),
    ignored_scope: list[str] = typer.Option([], "--ignored-scope", help="regex of node names to keep in float (repeatable)"),
    accuracy_target: Optional[float] = typer.Option(None, "--accuracy-target", help="int8: the minimum mean SNR (dB) of the "
                                                    "UNet's denoised estimate vs FP on held-out steps; a bisection over layer "
                                                    "classes keeps the most harmful ones in float until it holds (higher: closer "
                                                    "to FP, slower; default: svdtool's measured recipe)"),
    keep_best: bool = typer.Option(False, "--keep-best", help="with --accuracy-target: write the best IR even when the "
                                                             "target is missed (the command still exits 1)"),
    seed: int = typer.Option(42, help="seed of the calibration generations"),
    overwrite: Overwrite = False,
    verbose: Verbose = False,
) -> None:
    """Post-training quantization with nncf, calibrated on real component inputs; prints the fusion proof."""

    def work() -> None:
        from svdtool.quantize import QuantizeOptions, quantize as run_quantize
        from svdtool.runtime import GenerationSettings
        from svdtool.tables import fusion_table

        options = QuantizeOptions(mode=mode, target_cpu=target_cpu, smooth_quant_alpha=smooth_quant_alpha,
                                  ignored_scope=tuple(ignored_scope))
        calib_settings = GenerationSettings(num_frames=calib_frames, height=calib_height, width=calib_width,
                                            num_inference_steps=calib_steps, seed=seed)
        manifest = run_quantize(model_dir, output, calib, options=options, samples=samples, calib_settings=calib_settings,
                                max_images=max_images, accuracy_target=accuracy_target, keep_best=keep_best, overwrite=overwrite)
        report = manifest["quantization"]
        console.print(fusion_table({k: v["fusion"] for k, v in report["components"].items()}, f"CPU execution after {mode}"))
        before = sum(c["bytes_before"] for c in report["components"].values()) / 2**20
        after = sum(c["bytes_after"] for c in report["components"].values()) / 2**20
        quality = report["quality_check"]["mean"]
        console.print(f"[green]quantized[/] → {output}: IR {before:.1f} → {after:.1f} MiB; FP vs {mode} on "
                      f"{report['quality_check']['images']} held-out images: PSNR {quality['psnr_mean']:.2f} dB, SSIM {quality['ssim_mean']:.3f}; "
                      f"accurate on {manifest['cpu_requirement']['runs_accurately_on']}")
        control = report.get("accuracy_control")
        if control:
            floats = sum(len(names) for names in control["kept_in_float"].values())
            console.print(f"accuracy target: {control['reached_db']} dB reached (target {control['target_db']}, FP IR "
                          f"{control['fp_ir_db']}) with {', '.join(control['kept_in_float_classes']) or 'no layer class'} "
                          f"in float: {floats} UNet conv/linear layers")
            return control["met"]
        return True

    if not run_command(work, verbose):
        console.print(f"[bold red]error:[/] --accuracy-target not met; the best IR is in {output} (--keep-best)")
        raise typer.Exit(1)


def inspect(
    model_dir: Path = typer.Argument(..., help="exported or quantized IR folder"),
    device: str = typer.Option("CPU", help="OpenVINO device to compile for"),
    as_json: bool = typer.Option(False, "--json", help="print the report as JSON"),
    verbose: Verbose = False,
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

    run_command(work, verbose)
