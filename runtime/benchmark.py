"""`benchmark()`: time IR folders (and optionally diffusers eager) stage by stage on the same shapes.

Per component (image encoder, UNet step, VAE decode per frame) and per video: median and spread over N runs
after a warm-up; load+compile time and first-video time; the peak RSS each configuration adds; the OpenVINO performance hint and thread count.
`unet_flops` counts the UNet's multiply-adds from the IR's Convolution/MatMul shapes, and `matmul_peak_gflops`
measures this CPU's fp32 matmul rate once, so achieved FLOP/s can be read as a fraction of it.
"""

from __future__ import annotations

import math
import statistics
import time
from pathlib import Path
from typing import Any

import numpy as np
import openvino as ov
import torch
from PIL import Image

from svdtool.cpu import cpu_info
from svdtool.errors import SvdtoolError
from svdtool.memory import PeakRSS, release_memory

from .deepcache import DeepCacheSettings
from .generate import GenerationSettings, generate


def _spread(values: list[float]) -> dict[str, float]:
    return {"median": round(statistics.median(values), 4), "min": round(min(values), 4), "max": round(max(values), 4)}


def _time_runs(pipeline: Any, image: Image.Image, settings: GenerationSettings, repeat: int) -> dict[str, Any]:
    start = time.perf_counter()
    generate(pipeline, image, settings, show_progress=False)
    first = time.perf_counter() - start
    runs = [generate(pipeline, image, settings, show_progress=False).timings for _ in range(repeat)]
    return {
        "first_video_s": round(first, 3),
        "video_s": _spread([r["total"] for r in runs]),
        "image_encoder_s": _spread([r["image_encoder"] for r in runs]),
        "unet_step_s": _spread([r["unet"] / r["unet_calls"] for r in runs]),
        "vae_decode_per_frame_s": _spread([r["vae_decoder"] / settings.num_frames for r in runs]),
    }


def benchmark_folder(folder: str | Path, image: Image.Image, settings: GenerationSettings, repeat: int,
                     hint: str = "LATENCY", threads: int | None = None, deepcache: DeepCacheSettings = DeepCacheSettings()
                     ) -> dict[str, Any]:
    from .loading import load_ov_pipeline

    if threads == 1:
        # Seen here: OpenVINO 2026.4's CPU plugin dies with SIGFPE on INFERENCE_NUM_THREADS=1 (2-core Xeon VM).
        raise SvdtoolError("--threads 1 crashes OpenVINO's CPU plugin on this machine (SIGFPE); use 2 or more, or leave it unset")
    config = {"PERFORMANCE_HINT": hint}
    if threads:
        config["INFERENCE_NUM_THREADS"] = threads
    with PeakRSS() as peak:
        start = time.perf_counter()
        pipeline, manifest = load_ov_pipeline(folder, ov_config=config)
        pipeline.enable_deepcache(deepcache.interval, deepcache.branch, deepcache.schedule)
        pipeline.fit(settings.height, settings.width, settings.num_frames, settings.decode_chunk_size,
                     guided=settings.max_guidance_scale > 1)
        compile_s = time.perf_counter() - start
        result = _time_runs(pipeline, image, settings, repeat)
    mode = manifest.get("quantization", {}).get("mode", manifest.get("weights"))
    cached = f" DeepCache {deepcache.interval}/{deepcache.branch}" if deepcache.enabled else ""
    return {"label": f"OV {mode}{cached} ({Path(folder).name})", "backend": "openvino", "hint": hint, "threads": threads or "auto",
            "deepcache": deepcache.as_dict(),
            "load_compile_s": round(compile_s, 2), "peak_rss_added_gb": round(peak.added_gb, 2), **result}


def benchmark_torch(source: str, image: Image.Image, settings: GenerationSettings, repeat: int, device: str = "cpu",
                    threads: int | None = None) -> dict[str, Any]:
    from svdtool.models import load_pipeline

    if threads:
        torch.set_num_threads(threads)
    with PeakRSS() as peak:
        start = time.perf_counter()
        pipeline = load_pipeline(source, torch.float16 if device.startswith("cuda") else torch.float32).to(device)
        load_s = time.perf_counter() - start
        result = _time_runs(pipeline, image, settings, repeat)
    return {"label": f"PyTorch {device} ({source})", "backend": "torch", "threads": torch.get_num_threads(),
            "load_compile_s": round(load_s, 2), "peak_rss_added_gb": round(peak.added_gb, 2), **result}


def unet_flops(folder: str | Path, settings: GenerationSettings) -> float:
    """Multiply-adds × 2 of one UNet call (both guidance halves) at `settings`' shape, from the IR's ops."""
    model = ov.Core().read_model(Path(folder) / "unet" / "openvino_model.xml")
    h, w = settings.height // 8, settings.width // 8
    channels = model.input("sample").get_partial_shape()[2].get_length()
    model.reshape({"sample": [2, settings.num_frames, channels, h, w], "timestep": [],
                   "encoder_hidden_states": [2, 1, model.input("encoder_hidden_states").get_partial_shape()[2].get_length()],
                   "added_time_ids": [2, 3]})
    flops = 0.0
    for op in model.get_ops():
        kind = op.get_type_name()
        if kind == "Convolution":
            out = op.get_output_shape(0)
            weight = op.get_input_shape(1)  # [O, I, kh, kw]
            flops += 2.0 * math.prod(out) * math.prod(weight[1:])
        elif kind == "MatMul":
            a, b = list(op.get_input_shape(0)), list(op.get_input_shape(1))
            if op.get_attributes().get("transpose_a"):
                a[-1], a[-2] = a[-2], a[-1]
            if op.get_attributes().get("transpose_b"):
                b[-1], b[-2] = b[-2], b[-1]
            flops += 2.0 * math.prod(op.get_output_shape(0)) * a[-1]
    return flops


def matmul_peak_gflops(size: int = 2048, repeat: int = 5) -> float:
    """This CPU's fp32 matmul rate through PyTorch (oneDNN/MKL), best of `repeat`."""
    a, b = torch.randn(size, size), torch.randn(size, size)
    torch.mm(a, b)
    best = min(_timed(lambda: torch.mm(a, b)) for _ in range(repeat))
    return 2 * size**3 / best / 1e9


def _timed(function) -> float:
    start = time.perf_counter()
    function()
    return time.perf_counter() - start


def benchmark(folders: list[str | Path], image: Image.Image, settings: GenerationSettings, *, repeat: int = 3,
              hint: str = "LATENCY", threads: int | None = None, torch_source: str | None = None,
              torch_device: str = "cpu", deepcache: DeepCacheSettings = DeepCacheSettings(),
              each_own_steps: bool = False) -> dict[str, Any]:
    """Every folder (and the PyTorch source) on the same image and settings; plus the FLOP-rate view of the UNet.
    With `deepcache` enabled, each folder also runs with DeepCache (the UNet figures are then per mixed call). With
    `each_own_steps`, each folder takes its own sampler's steps and guidance (`own_sampling`)."""
    from .session import own_sampling

    results = []
    for folder in folders:
        folder_settings = own_sampling(settings, folder) if each_own_steps else settings
        for cache in ([DeepCacheSettings(), deepcache] if deepcache.enabled else [deepcache]):
            result = benchmark_folder(folder, image, folder_settings, repeat, hint, threads, cache)
            results.append({**result, "steps": folder_settings.num_inference_steps,
                            "guidance": [folder_settings.min_guidance_scale, folder_settings.max_guidance_scale]})
        release_memory()  # each configuration's peak is measured from a lean start
    if torch_source:
        results.append(benchmark_torch(torch_source, image, settings, repeat, torch_device, threads))
    flops = unet_flops(folders[0], settings) if folders else None
    peak = matmul_peak_gflops()
    for result in results:
        if flops:
            achieved = flops / result["unet_step_s"]["median"] / 1e9
            result["unet_gflops"] = round(achieved, 1)
            result["unet_fraction_of_fp32_matmul_peak"] = round(achieved / peak, 3)
    return {"settings": settings.as_dict(), "repeat": repeat, "cpu": cpu_info(),
            "unet_gflop_per_step": round(flops / 1e9, 1) if flops else None,
            "fp32_matmul_peak_gflops": round(peak, 1), "results": results}


def bar_chart(report: dict[str, Any], path: Path) -> None:
    """UNet step and per-video seconds per configuration, as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels = [r["label"] for r in report["results"]]
    figure, axes = plt.subplots(1, 2, figsize=(11, 0.6 * len(labels) + 1.8), dpi=100)
    for axis, key, title in ((axes[0], "unet_step_s", "UNet step (s)"), (axes[1], "video_s", "video (s)")):
        values = [r[key]["median"] for r in report["results"]]
        errors = np.array([[r[key]["median"] - r[key]["min"], r[key]["max"] - r[key]["median"]] for r in report["results"]]).T
        axis.barh(labels, values, xerr=errors, color="#4c72b0")
        axis.set_title(title)
        axis.invert_yaxis()
    axes[1].set_yticklabels([])
    s = report["settings"]
    steps = sorted({r.get("steps", s["num_inference_steps"]) for r in report["results"]})
    figure.suptitle(f"{s['width']}×{s['height']}, {s['num_frames']} frames, {'/'.join(map(str, steps))} steps; median of {report['repeat']}")
    figure.tight_layout()
    figure.savefig(path)
    plt.close(figure)
