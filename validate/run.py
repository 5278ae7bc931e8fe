"""`validate()`: the OpenVINO CPU runtime against a PyTorch reference (live on GPU/CPU, or a stored REF_DIR)."""

from __future__ import annotations

import json
from dataclasses import replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

from svdtool.console import console, progress_task
from svdtool.errors import SvdtoolError
from svdtool.models import Source
from svdtool.outputs import atomic_output_dir, read_manifest, write_manifest
from svdtool.runtime import GenerationSettings, generate, load_image, load_ov_pipeline
from svdtool.runtime.generate import GenerationResult
from svdtool.runtime.deepcache import DeepCacheSettings, check_available
from svdtool.runtime.loading import check_precision
from svdtool.runtime.session import ir_generation_defaults, own_sampling
from svdtool.runtime.speed import SpeedPreset, speed_preset

from .metrics import per_frame_fidelity, video_metrics
from .reference import (environment, list_images, load_frames, make_reference, read_reference, record_reference,
                        save_frames, settings_of, write_ray_reference)
from .report import write_html_report
from .thresholds import TEACHER_THRESHOLDS, Thresholds

SUMMARY_KEYS = ("temporal_mse", "sharpness", "brightness", "noise", "flicker", "colourfulness", "warp_error", "motion")


def validate(
    model_dir: str | Path,
    reference: str,
    out_dir: str | Path,
    *,
    images: str | Path | None = None,
    source: str | None = None,
    teacher: str | None = None,
    thresholds: Thresholds | None = None,
    settings: GenerationSettings = GenerationSettings(),
    reference_dtype: str = "fp16",
    precision: str = "auto",
    deepcache: DeepCacheSettings = DeepCacheSettings(),
    overwrite: bool = False,
    on_ray: Any = None,
) -> dict[str, Any]:
    """Generate with the IR on the reference's images and settings; compare metrics; write report.json/.html.

    `reference` is "gpu" or "cpu" (run diffusers live from `source`, default the manifest's source), "uncached" (the
    same IR on this CPU without DeepCache: what caching alone changes) or a folder made by `make_reference`;
    `deepcache` runs the IR with DeepCache. The reference runs the exact settings, the IR `settings.speed`'s share of
    their steps (svdtool.runtime.speed), so a preset is judged against the exact video. `on_ray` (a
    `svdtool.batch.RayOptions`, with gpu|cpu) runs the reference on Ray actors (one GPU each for gpu) and the IR on CPU
    actors, at the same time, in one Ray job. `teacher` (a source: the pipeline a few-step student was distilled from)
    makes the live reference the teacher at its own steps, sampler and guidance while the IR runs its own; the two
    sample different videos, so the checks compare the videos' metrics (TEACHER_THRESHOLDS by default), with no pixel
    gate. Returns the report; `report["pass"]` is the verdict.
    """
    check_precision(precision)
    if teacher is not None and (reference not in ("gpu", "cpu") or source is not None or on_ray is not None):
        raise SvdtoolError("--teacher runs the teacher live in this process: use it with --reference gpu or cpu, without "
                           "--source and --ray")
    thresholds = thresholds or (TEACHER_THRESHOLDS if teacher else Thresholds())
    preset = speed_preset(settings.speed)
    settings = replace(settings, speed="exact")  # the reference's; the runtime's steps follow from them below
    model_dir = Path(model_dir)
    check_available(model_dir, deepcache)
    manifest = read_manifest(model_dir)
    live = reference in ("gpu", "cpu", "uncached")
    if live and images is None:
        raise SvdtoolError(f"--images DIR is needed with --reference {reference}")
    if reference == "uncached" and not deepcache.enabled:
        raise SvdtoolError("--reference uncached compares DeepCache with the same IR without it: add --cache-interval 2 or more")
    if on_ray is not None and reference not in ("gpu", "cpu"):
        raise SvdtoolError("--ray/--ray-address runs the reference and the IR live on Ray: use --reference gpu or cpu")
    files = list_images(images) if live else []
    ray_runtime: dict[str, dict[str, Any]] | None = None
    with atomic_output_dir(Path(out_dir), overwrite) as tmp:
        ref_dir = tmp / "reference" if live else Path(reference)
        device, dtype = ("cuda", reference_dtype) if reference == "gpu" else ("cpu", "fp32")
        if reference in ("gpu", "cpu") and on_ray is not None:
            ray_runtime = _both_on_ray(model_dir, source or _manifest_source(manifest), files, ref_dir, settings, device, dtype,
                                       precision, deepcache, preset, on_ray)
        elif teacher is not None:  # the teacher's own steps and guidance (GenerationSettings leaves them unset)
            make_reference(teacher, images, ref_dir, device=device, dtype=dtype, settings=replace(settings, num_inference_steps=None))
        elif reference in ("gpu", "cpu"):
            make_reference(source or _manifest_source(manifest), images, ref_dir, device=device, dtype=dtype, settings=settings)
        pipeline = None if ray_runtime else load_ov_pipeline(model_dir, precision=precision)[0]
        if reference == "uncached":  # the same IR, this CPU, DeepCache off: what caching alone changes
            record_reference(pipeline, files, ref_dir, settings.resolved(ir_generation_defaults(model_dir)),
                             source={"ir": str(model_dir.resolve()), "deepcache": "off"}, device="cpu", dtype=precision)
        record = read_reference(ref_dir)
        run_settings = settings_of(record)
        if teacher:  # the teacher's size, frames, seed and conditioning; the student IR's own steps (or --steps) and guidance
            run_settings = own_sampling(run_settings, model_dir)
            run_settings = replace(run_settings, num_inference_steps=settings.num_inference_steps or run_settings.num_inference_steps)
        run_settings = preset.applied(run_settings)
        if pipeline is not None:
            pipeline.enable_deepcache(deepcache.interval, deepcache.branch, deepcache.schedule)
        results = []
        with progress_task("validate", len(record["images"])) as advance:
            for entry in record["images"]:
                reference_frames = load_frames(ref_dir / entry["frames"])
                name = Path(entry["image"]).stem
                if ray_runtime is not None:
                    run = GenerationResult(ray_runtime[name]["frames"], run_settings, ray_runtime[name]["timings"])
                else:
                    run = generate(pipeline, load_image(ref_dir / entry["image"]), run_settings, show_progress=False)
                save_frames(run.frames, tmp / "runtime" / name)
                runtime_metrics = video_metrics(run.frames, reference_frames)
                reference_metrics = video_metrics(reference_frames)
                results.append({
                    "image": name,
                    "reference": reference_metrics,
                    "runtime": runtime_metrics,
                    "per_frame": per_frame_fidelity(run.frames, reference_frames),
                    "checks": thresholds.check(runtime_metrics, reference_metrics, pixel_gate=teacher is None),
                    "timings_seconds": {"reference": entry["timings_seconds"], "runtime": run.timings},
                    "_frames": (reference_frames, run.frames, np.asarray(load_image(ref_dir / entry["image"]))),
                })
                advance()
        report = {
            "stage": "validate",
            "comparison": "student vs teacher" if teacher else "runtime vs reference",
            "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "model": {"path": str(model_dir.resolve()), "stage": manifest.get("stage"), "source": manifest.get("source"),
                      "weights": manifest.get("weights"), "mode": manifest.get("quantization", {}).get("mode", "fp")},
            "reference": {k: record[k] for k in ("source", "device", "dtype", "environment", "created")},
            "runtime": {"device": "CPU", "precision": precision, "deepcache": deepcache.as_dict(), "environment": environment("cpu"),
                        "engine": {"kind": "ray", "address": on_ray.address or "embedded"} if on_ray else {"kind": "in-process"}},
            "settings": run_settings.as_dict(),
            "thresholds": thresholds.as_dict(),
            "images": [{k: v for k, v in r.items() if k != "_frames"} for r in results],
            "summary": _summary(results),
            "pass": all(check["pass"] for r in results for check in r["checks"]),
        }
        (tmp / "report.json").write_text(json.dumps(report, indent=2))
        write_html_report(tmp / "report.html", report, {r["image"]: r["_frames"] for r in results}, run_settings.fps)
        write_manifest(tmp, {"stage": "validate", "model": report["model"], "pass": report["pass"], "summary": report["summary"]})
    verdict = "[green]PASS[/]" if report["pass"] else "[red]FAIL[/]"
    console.print(f"validate: {verdict} → {out_dir}/report.html")
    return report


def _both_on_ray(model_dir: Path, source: str | Source, files: list[Path], ref_dir: Path, settings: GenerationSettings, device: str,
                 dtype: str, precision: str, deepcache: DeepCacheSettings, preset: SpeedPreset, on_ray: Any) -> dict[str, dict[str, Any]]:
    """The reference (GPU or CPU actors) and the IR (CPU actors) at the same time on Ray, with the settings the
    reference resolves; writes the reference folder and returns the IR's frames per image."""
    from svdtool.batch.frames_on_ray import FramesJob, frames_on_ray
    from svdtool.models import generation_defaults, resolve_source

    resolved = resolve_source(source)
    resolved_settings = settings.resolved(generation_defaults(resolved))
    jobs = {"reference": FramesJob("reference", resolved_settings, source=source, device=device, dtype=dtype),
            "runtime": FramesJob("runtime", preset.applied(resolved_settings), model=str(model_dir), precision=precision, deepcache=deepcache,
                                 threads=max(1, int(on_ray.cpus_per_actor)))}
    console.print(f"validate on Ray: {resolved.label()} on {device} ({dtype}) actors and the IR on CPU actors, {len(files)} images")
    results = frames_on_ray(jobs, files, on_ray)
    write_ray_reference(ref_dir, results["reference"], files, resolved_settings, source=resolved.describe(), device=device, dtype=dtype)
    return results["runtime"]


def _manifest_source(manifest: dict[str, Any]) -> Source:
    """The source the IR was exported from, with its UNet and sampler."""
    source = manifest.get("source", {})
    if not source.get("ref"):
        raise SvdtoolError("the model's manifest names no source; pass --source")
    unet = source.get("unet")
    if unet:
        from svdtool.models.unets import check_unet_spec, unet_sha256

        if unet_sha256(check_unet_spec(unet["ref"])) != unet["sha256"]:
            raise SvdtoolError(f"the UNet {unet['ref']} changed since this IR was exported from it (its sha256 differs): "
                               "the reference would be another model; export again")
    return Source.from_record(source)


def _summary(results: list[dict[str, Any]]) -> dict[str, Any]:
    summary: dict[str, Any] = {}
    for side in ("reference", "runtime"):
        summary[side] = {key: round(float(np.mean([r[side][key] for r in results])), 4) for key in SUMMARY_KEYS}
    for key in ("psnr_mean", "psnr_min", "ssim_mean", "ssim_min"):
        reduce = np.min if key.endswith("min") else np.mean
        summary[key] = round(float(reduce([r["runtime"][key] for r in results])), 4)
    runtime_times = [r["timings_seconds"]["runtime"]["total"] for r in results]
    reference_times = [r["timings_seconds"]["reference"]["total"] for r in results]
    summary["seconds_per_video"] = {"reference": round(float(np.mean(reference_times)), 3),
                                    "runtime": round(float(np.mean(runtime_times)), 3)}
    return summary
