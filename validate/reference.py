"""`make_reference()`: run diffusers' PyTorch pipeline (GPU or CPU) on a set of images and store everything a
later CPU validation needs to reproduce the run: inputs, frames, settings, seeds, environment, timings."""

from __future__ import annotations

import json
import platform
import shutil
from dataclasses import dataclass, field, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from svdtool.console import console, progress_task
from svdtool.cpu import cpu_info
from svdtool.errors import SvdtoolError
from svdtool.models import TORCH_DTYPES, Source, generation_defaults, load_pipeline, resolve_source
from svdtool.outputs import atomic_output_dir, library_versions, sha256_file, write_manifest
from svdtool.runtime import GenerationSettings, generate, load_image
from svdtool.runtime.media import IMAGE_SUFFIXES

from .metrics import video_metrics

REFERENCE_JSON = "reference.json"


def list_images(folder: str | Path) -> list[Path]:
    folder = Path(folder)
    if not folder.is_dir():
        raise SvdtoolError(f"--images {folder}: no such folder")
    files = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise SvdtoolError(f"--images {folder}: no .jpg/.png/.webp/.bmp images in it")
    return files


def cuda_or_error(device: str) -> None:
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise SvdtoolError(
            "no CUDA GPU here: on a GPU host run `svdtool reference SOURCE --images DIR -o REF_DIR --device cuda`, "
            "copy REF_DIR to this machine and pass `--reference REF_DIR` (or use `--reference cpu`)"
        )


def save_frames(frames: np.ndarray, folder: Path) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for index, frame in enumerate(frames):
        Image.fromarray(frame).save(folder / f"frame_{index:04d}.png")


def load_frames(folder: Path) -> np.ndarray:
    return np.stack([np.asarray(Image.open(f).convert("RGB")) for f in sorted(folder.glob("frame_*.png"))])


def environment(device: str) -> dict[str, Any]:
    env = {"host": platform.node(), "platform": platform.platform(), "device": device, **library_versions()}
    if device.startswith("cuda"):
        env.update(gpu=torch.cuda.get_device_name(device), cuda=torch.version.cuda,
                   tf32=torch.backends.cudnn.allow_tf32 or torch.backends.cuda.matmul.allow_tf32)
    else:
        env["cpu"] = cpu_info()
    return env


def make_reference(
    source: str | Source,
    images: str | Path,
    out_dir: str | Path,
    *,
    device: str = "cuda",
    dtype: str = "fp16",
    settings: GenerationSettings = GenerationSettings(),
    overwrite: bool = False,
    on_ray: Any = None,
) -> dict[str, Any]:
    """Generate with PyTorch for every image of `images`; noise from a CPU generator, so the OpenVINO CPU run with
    the same seed starts identically; `on_ray` (a `svdtool.batch.RayOptions`) spreads the images over Ray actors (one
    GPU each for cuda). Returns the reference record (also written as reference.json)."""
    if dtype not in TORCH_DTYPES:
        raise SvdtoolError(f"--dtype must be fp16 or fp32, not {dtype!r}")
    cuda_or_error(device)
    if dtype == "fp32":  # CUDA runs fp32 convolutions as TF32 by default: an fp32 reference must be fp32
        torch.backends.cuda.matmul.allow_tf32 = False
        torch.backends.cudnn.allow_tf32 = False
    files = list_images(images)
    resolved = resolve_source(source)
    settings = settings.resolved(generation_defaults(resolved))
    if on_ray is not None:
        from svdtool.batch.frames_on_ray import FramesJob, frames_on_ray

        console.print(f"Reference: {resolved.label()} on Ray ({device}, {dtype}), {len(files)} images")
        with atomic_output_dir(Path(out_dir), overwrite) as tmp:
            job = FramesJob("reference", settings, source=source, device=device, dtype=dtype)
            return write_ray_reference(tmp, frames_on_ray({"reference": job}, files, on_ray)["reference"], files, settings,
                                       source=resolved.describe(), device=device, dtype=dtype)
    pipeline = load_pipeline(resolved, TORCH_DTYPES[dtype]).to(device)
    console.print(f"Reference: {resolved.label()} on {device} ({dtype}), {len(files)} images")
    with atomic_output_dir(Path(out_dir), overwrite) as tmp:
        return record_reference(pipeline, files, tmp, settings, source=resolved.describe(), device=device, dtype=dtype)


def record_reference(pipeline: Any, files: list[Path], folder: Path, settings: GenerationSettings, *, source: dict[str, Any],
                     device: str, dtype: str) -> dict[str, Any]:
    """Generate with `pipeline` (PyTorch, or an IR for `validate --reference uncached`) for every file and write the
    reference folder's inputs, frames and reference.json into `folder`. Returns the record."""
    videos = []
    with progress_task("reference", len(files)) as advance:
        for file in files:
            if device.startswith("cuda"):
                torch.cuda.reset_peak_memory_stats()
            result = generate(pipeline, load_image(file), settings, show_progress=False)
            extra = {"peak_gpu_memory_gb": round(torch.cuda.max_memory_allocated() / 2**30, 3)} if device.startswith("cuda") else {}
            videos.append(ReferenceVideo(file, result.frames, result.timings, extra))
            advance()
    return write_reference(folder, videos, settings, source=source, device=device, dtype=dtype)


@dataclass
class ReferenceVideo:
    file: Path
    frames: np.ndarray
    timings: dict[str, float]
    extra: dict[str, Any] = field(default_factory=dict)


def write_reference(folder: Path, videos: list[ReferenceVideo], settings: GenerationSettings, *, source: dict[str, Any],
                    device: str, dtype: str, environment_info: dict[str, Any] | None = None) -> dict[str, Any]:
    """The reference folder (inputs, frames, reference.json, manifest) for videos generated here or on Ray actors."""
    entries = []
    for video in videos:
        (folder / "inputs").mkdir(parents=True, exist_ok=True)
        shutil.copy2(video.file, folder / "inputs" / video.file.name)
        save_frames(video.frames, folder / "frames" / video.file.stem)
        entries.append({"image": f"inputs/{video.file.name}", "sha256": sha256_file(video.file),
                        "frames": f"frames/{video.file.stem}", "timings_seconds": video.timings,
                        "metrics": video_metrics(video.frames), **video.extra})
    record = {
        "stage": "reference",
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "source": source,
        "device": device,
        "dtype": dtype,
        "settings": settings.as_dict(),
        "environment": environment_info or environment(device),
        "images": entries,
    }
    (folder / REFERENCE_JSON).write_text(json.dumps(record, indent=2))
    write_manifest(folder, {"stage": "reference", "source": source, "reference": REFERENCE_JSON})
    return record


def write_ray_reference(folder: Path, results: dict[str, dict[str, Any]], files: list[Path], settings: GenerationSettings,
                        **record: Any) -> dict[str, Any]:
    """`write_reference` for frames that Ray actors made (`batch.frames_on_ray`), with the first actor's environment."""
    videos = [ReferenceVideo(file, results[file.stem]["frames"], results[file.stem]["timings"],
                             {"worker": results[file.stem]["environment"]["worker"]}) for file in files]
    return write_reference(folder, videos, settings, environment_info=results[files[0].stem]["environment"], **record)


def read_reference(folder: str | Path) -> dict[str, Any]:
    path = Path(folder) / REFERENCE_JSON
    if not path.is_file():
        raise SvdtoolError(f"{folder} is not a reference folder (no {REFERENCE_JSON}); make one with `svdtool reference`")
    return json.loads(path.read_text())


def settings_of(record: dict[str, Any], seed: int | None = None) -> GenerationSettings:
    settings = GenerationSettings(**record["settings"])
    return settings if seed is None else replace(settings, seed=seed)
