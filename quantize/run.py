"""`quantize()`: calibrate on real component inputs, quantize every IR, prove fusion, check quality, write the folder."""

from __future__ import annotations

import multiprocessing
import pickle
import shutil
import tempfile
import time
from dataclasses import replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import openvino as ov

from svdtool import logs
from svdtool.console import console, progress_task
from svdtool.cpu import cpu_info
from svdtool.convert import OV_XML
from svdtool.errors import SvdtoolError
from svdtool.memory import PeakRSS, release_memory
from svdtool.outputs import atomic_output_dir, read_manifest, verify_files, write_manifest
from svdtool.runtime import GenerationSettings, generate, load_ov_pipeline

from .calibration import load_calibration_images
from .deepcache import ir_bytes, quantize_deepcache
from .fusion import fusion_report
from .headroom import check_headroom
from .accuracy import quantize_to_target
from .modes import CPU_TARGETS, MODES, QuantizeOptions, quantize_component
from .record import collect_calibration_data, held_out_unet_calls

# The UNet goes first, while the process holds nothing else: nncf's statistics model of the full SVD UNet is compiled
# at f32 (modes.quantize_unet_stepwise keeps its peak down; DeepCache's UNets and --accuracy-target's tries go through
# it too).
COMPONENTS = ("unet", "image_encoder", "vae_encoder", "vae_decoder")
# Calibration runs the FP pipeline; at full SVD size that is slow and nncf's statistics need memory in proportion
# to the activations, so by default it runs at no more than this (statistics transfer across resolutions).
CALIB_CAP = {"height": 256, "width": 256, "num_frames": 8, "num_inference_steps": 10}


def calibration_settings(defaults: dict[str, Any], overrides: GenerationSettings) -> GenerationSettings:
    capped = {key: min(value, CALIB_CAP[key]) if key in CALIB_CAP else value for key, value in defaults.items()}
    return overrides.resolved(capped)


def quantize(
    model_dir: str | Path,
    out_dir: str | Path,
    calib: str,
    *,
    options: QuantizeOptions = QuantizeOptions(),
    samples: int = 64,
    calib_settings: GenerationSettings = GenerationSettings(),
    max_images: int = 16,
    accuracy_target: float | None = None,
    keep_best: bool = False,
    overwrite: bool = False,
) -> dict[str, Any]:
    """Quantize an exported folder with `options.mode` (int8, hybrid, w8, w4), calibrated on `calib` images.

    With `accuracy_target` (int8 only), a search over layer classes picks the UNet layers kept in float (accuracy.py);
    a target it cannot meet raises SvdtoolError and writes nothing, unless `keep_best`: then the best IR is written,
    its manifest says the target was missed (`quantization.accuracy_control.met`), and the caller exits non-zero."""
    if options.mode not in MODES:
        raise SvdtoolError(f"--mode must be one of {', '.join(MODES)}, not {options.mode!r}")
    if options.target_cpu not in CPU_TARGETS:
        raise SvdtoolError(f"--target-cpu must be one of {', '.join(CPU_TARGETS)}, not {options.target_cpu!r}")
    if samples < 1:
        raise SvdtoolError("--samples must be 1 or more")
    if accuracy_target is not None and options.mode != "int8":
        raise SvdtoolError("--accuracy-target works with --mode int8 (the other modes keep the UNet's activations or weights' layout fixed)")
    if Path(out_dir).exists() and not overwrite:
        raise SvdtoolError(f"{out_dir} already exists; pass --overwrite to replace it")
    model_dir = Path(model_dir)
    source_manifest = read_manifest(model_dir)
    if source_manifest.get("stage") == "quantize":
        raise SvdtoolError(f"{model_dir} is already quantized ({source_manifest['quantization']['mode']}); quantize the exported FP folder")
    memory = check_headroom(model_dir, options.mode)
    verify_files(model_dir, source_manifest)
    calibration = load_calibration_images(calib, limit=max_images)
    settings = calibration_settings(source_manifest["generation_defaults"], calib_settings)
    images = calibration.images
    holdout = images[-2:] if len(images) >= 3 else images
    calibrate_on = images[:-2] if len(images) >= 3 else images
    if options.data_free:  # nncf.compress_weights takes no data: only the quality check uses the images
        calibrate_on = []
        plan = (f"{options.mode}, weights only: no calibration run); quality check on {len(holdout)} images from {calib}"
                f" ({calibration.skipped} unreadable skipped) at")
    else:
        plan = (f"{options.mode}) on {len(calibrate_on)} calibration images from {calib} ({calibration.skipped} unreadable"
                f" skipped); calibration at")
    console.print(f"Quantizing {model_dir} ({plan} {settings.width}x{settings.height}, {settings.num_frames} frames,"
                  f" {settings.num_inference_steps} steps; memory: about {memory['estimated_peak_gb']:g} GB at the peak,"
                  f" {memory['available_gb']:g} GB available")

    start = time.perf_counter()
    data, collect_peak_gb = (({name: [] for name in COMPONENTS}, 0.0) if options.data_free
                             else collect_in_subprocess(model_dir, calibrate_on, holdout, settings, samples))
    collect_seconds = time.perf_counter() - start

    report: dict[str, Any] = {}
    accuracy_control = None
    with atomic_output_dir(Path(out_dir), overwrite) as tmp:
        _copy_non_ir_files(model_dir, tmp)
        compress_to_fp16 = source_manifest.get("weights") == "fp16"
        with progress_task(f"quantize ({options.mode})", len(COMPONENTS)) as advance:
            for name in COMPONENTS:
                with PeakRSS() as peak, tempfile.TemporaryDirectory(prefix="svdtool-ptq-") as scratch:
                    xml = model_dir / name / OV_XML
                    if name == "unet" and accuracy_target is not None:
                        quantized, accuracy_control = quantize_to_target(xml, data["unet"], data["unet_held_out"], options,
                                                                         accuracy_target, Path(scratch), compress_to_fp16)
                    else:
                        quantized = quantize_component(name, xml, data[name], options, Path(scratch), compress_to_fp16)
                    (tmp / name).mkdir(exist_ok=True)
                    ov.save_model(quantized, tmp / name / OV_XML, compress_to_fp16=compress_to_fp16)
                    fusion = fusion_report(quantized)
                    del quantized
                    release_memory()
                if accuracy_control is not None and name == "unet":
                    accuracy_control["kept_in_float"] = fusion["not_int8"]
                    if not accuracy_control["met"] and not keep_best:
                        raise SvdtoolError(f"--accuracy-target {accuracy_target} dB not met: the best UNet nncf found reaches "
                                           f"{accuracy_control['reached_db']} dB; nothing written (--keep-best writes it)")
                report[name] = {
                    "nncf": options.nncf_parameters(name) if name != "unet" or accuracy_control is None
                    else {"method": "nncf.quantize_with_accuracy_control", **accuracy_control},
                    "calibration_samples": len(data[name]),
                    "bytes_before": ir_bytes(model_dir / name),
                    "bytes_after": ir_bytes(tmp / name),
                    "seconds": round(peak.seconds, 1),
                    "peak_rss_gb": round(peak.peak_gb, 2),
                    "fusion": fusion,
                }
                advance()
        if (model_dir / "deepcache").is_dir():
            with progress_task(f"quantize DeepCache UNets ({options.mode})", 1) as advance:
                report.update(quantize_deepcache(model_dir, tmp, data["unet"], options, compress_to_fp16))
                advance()
        quality, quality_peak_gb = quality_check(model_dir, tmp, holdout, settings)
        manifest = {
            **{k: v for k, v in source_manifest.items() if k not in ("files", "versions", "components")},
            "stage": "quantize",
            "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "quantized_from": {"path": str(model_dir.resolve()), "created": source_manifest.get("created"),
                               "weights": source_manifest.get("weights")},
            "components": {name: {**source_manifest["components"][name], "quantization": report[name]["nncf"]}
                           for name in COMPONENTS},
            "cpu_requirement": options.cpu_requirement(),
            "quantization": {
                "mode": options.mode,
                "quantized_on": cpu_info(),
                "calibration": {**calibration.describe(), "used_for_calibration": len(calibrate_on),
                                "held_out": len(holdout) if len(images) >= 3 else 0,
                                "settings": settings.as_dict(), **_calibration_schedule(source_manifest, data["unet"]),
                                "collect_seconds": round(collect_seconds, 1),
                                "collect_peak_rss_gb": round(collect_peak_gb, 2)},
                "components": report,
                "accuracy_control": accuracy_control,
                "memory": {**memory, "peak_rss_gb": round(max([collect_peak_gb, quality_peak_gb,
                                                                        *(r["peak_rss_gb"] for r in report.values())]), 2)},
                "quality_check": quality,
            },
        }
        manifest = write_manifest(tmp, manifest)
    return manifest


def _calibration_schedule(source_manifest: dict[str, Any], unet_inputs: list[dict[str, np.ndarray]]) -> dict[str, Any]:
    """The sampler the calibration run used (the IR's own) and the UNet timesteps its samples came from: a few-step
    sampler visits other noise levels than SVD's 25 Euler steps, and the activation ranges follow them."""
    timesteps = sorted({round(float(np.asarray(inputs["timestep"]).ravel()[0]), 4) for inputs in unet_inputs}, reverse=True)
    return {"sampler": source_manifest.get("source", {}).get("sampler", "euler"), "timesteps": timesteps}


def _child(target: str, args: tuple, path: str, verbose: bool) -> None:
    logs.configure(verbose, append=True)
    with PeakRSS() as peak:
        result = globals()[target](*args)
    with open(path, "wb") as handle:
        pickle.dump((result, peak.peak_gb), handle, protocol=pickle.HIGHEST_PROTOCOL)


def in_child_process(target: str, *args: Any, what: str) -> tuple[Any, float]:
    """Run this module's function `target` in a spawned process and return its result and peak RSS: a pipeline's
    memory goes back to the system when the process ends (freed memory inside one process does not, and the UNet
    pass needs it all; the quality check's two pipelines then never share one process)."""
    context = multiprocessing.get_context("spawn")
    with tempfile.TemporaryDirectory(prefix="svdtool-child-") as folder:
        path = Path(folder) / "result.pkl"
        process = context.Process(target=_child, args=(target, args, str(path), logs.verbose()))
        process.start()
        process.join()
        if process.exitcode != 0 or not path.is_file():
            hint = " (killed: out of memory? lower --calib-height/--calib-width/--calib-frames)" if process.exitcode == -9 else ""
            raise SvdtoolError(f"the {what} failed with exit code {process.exitcode}{hint}")
        with open(path, "rb") as handle:
            return pickle.load(handle)


def _record_calibration(model_dir: str, images: list, holdout: list, settings: GenerationSettings, samples: int) -> dict:
    pipeline, _ = load_ov_pipeline(model_dir, precision="f32")
    data = collect_calibration_data(pipeline, images, settings, samples)
    data["unet_held_out"] = held_out_unet_calls(pipeline, holdout, settings)
    return data


def collect_in_subprocess(model_dir: Path, images: list, holdout: list, settings: GenerationSettings, samples: int) -> tuple[dict, float]:
    """Record calibration inputs (the FP pipeline at f32) in a child process; returns them and its peak RSS."""
    return in_child_process("_record_calibration", str(model_dir), images, holdout, settings, samples, what="calibration run")


def _held_out_frames(folder: Path, images: list, settings: GenerationSettings, verified: bool) -> list[np.ndarray]:
    pipeline, _ = load_ov_pipeline(folder) if verified else _load_unverified(folder)
    return [generate(pipeline, image, replace(settings, seed=1000 + i), show_progress=False).frames for i, image in enumerate(images)]


def quality_check(fp_dir: Path, quantized_dir: Path, images: list, settings: GenerationSettings) -> tuple[dict[str, Any], float]:
    """FP vs quantized frames on held-out images, same seed, both at the CPU plugin's default precision, each pipeline
    in its own child process; returns the metrics and the higher of the two peaks."""
    from svdtool.validate.metrics import video_metrics

    fp_frames, fp_peak = in_child_process("_held_out_frames", fp_dir, images, settings, True, what="quality check (FP)")
    frames, peak = in_child_process("_held_out_frames", quantized_dir, images, settings, False, what="quality check (quantized)")
    results = [video_metrics(video, reference) for video, reference in zip(frames, fp_frames)]
    summary = {key: round(float(np.mean([r[key] for r in results])), 3) for key in results[0]}
    return {"images": len(images), "settings": settings.as_dict(), "mean": summary, "per_image": results}, max(fp_peak, peak)


def _load_unverified(folder: Path):
    """The folder being written has no manifest yet; load the pipeline directly."""
    from svdtool.runtime import OVStableVideoDiffusionPipeline

    return OVStableVideoDiffusionPipeline.from_pretrained(folder), None


def _copy_non_ir_files(source: Path, target: Path) -> None:
    for item in source.iterdir():
        if item.name == "deepcache":
            continue  # quantized by quantize_deepcache
        if item.name in COMPONENTS:
            (target / item.name).mkdir()
            shutil.copy2(item / "config.json", target / item.name / "config.json")
        elif item.is_dir():
            shutil.copytree(item, target / item.name)
        elif item.name != "svdtool.json":
            shutil.copy2(item, target / item.name)
