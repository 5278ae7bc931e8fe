"""What `svdtool generate` needs around `generate()`: open a backend, and write the video with its sidecar manifest."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import torch

from svdtool.console import console
from svdtool.errors import SvdtoolError
from svdtool.models import BUILTIN_MODELS, PRESETS, generation_defaults, load_pipeline, resolve_source
from svdtool.outputs import MANIFEST_NAME, library_versions, sha256_file

from .generate import GenerationResult
from .media import write_video

TORCH_DTYPES = {"fp32": torch.float32, "fp16": torch.float16}


@dataclass
class Session:
    pipeline: Any
    defaults: dict[str, Any]
    label: str
    info: dict[str, Any] = field(default_factory=dict)


def cache_root() -> Path:
    return Path(os.environ.get("SVDTOOL_CACHE", Path.home() / ".cache" / "svdtool"))


def preset_ir(preset: str) -> Path:
    """The IR of a named model, exported once into the svdtool cache (so `generate` works with no setup)."""
    from svdtool.convert import export

    folder = cache_root() / "ir" / f"{preset}-fp16"
    if not (folder / MANIFEST_NAME).is_file():
        console.print(f"First use of {preset!r} on OpenVINO: exporting it to {folder}")
        export(preset, folder, overwrite=folder.exists())
    return folder


def cuda_or_error(device: str) -> None:
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise SvdtoolError("--device cuda asked for, but torch sees no CUDA GPU here; use --device cpu or run on a GPU host")


def open_generator(model: str, backend: str, device: str | None, precision: str, dtype: str) -> Session:
    """Load the pipeline for `backend` ("openvino" or "torch") and its default generation settings."""
    if backend == "openvino":
        from .loading import load_ov_pipeline

        folder = preset_ir(model) if model in PRESETS or model in BUILTIN_MODELS else model
        pipeline, manifest = load_ov_pipeline(folder, device=(device or "CPU").upper(), precision=precision)
        source = manifest.get("source", {})
        label = f"OpenVINO {pipeline._device} ({precision}) — {source.get('kind', '?')} {source.get('ref', '?')}"
        if source.get("random_weights"):
            label += " (random weights)"
        info = {"backend": "openvino", "model": str(folder), "device": pipeline._device, "precision": precision,
                "source": source, "model_weights": manifest.get("weights"), "model_stage": manifest.get("stage")}
        return Session(pipeline, manifest["generation_defaults"], label, info)
    if backend == "torch":
        if dtype not in TORCH_DTYPES:
            raise SvdtoolError(f"--dtype must be fp32 or fp16, not {dtype!r}")
        device = (device or "cpu").lower()
        cuda_or_error(device)
        if Path(model).is_dir() and (Path(model) / MANIFEST_NAME).is_file():
            raise SvdtoolError(f"{model} is an OpenVINO IR folder; --backend torch needs a PyTorch source (preset, diffusers folder, Hub id)")
        source = resolve_source(model)
        pipeline = load_pipeline(source, TORCH_DTYPES[dtype]).to(device)
        label = f"PyTorch {device} ({dtype}) — {source.label()}"
        info = {"backend": "torch", "device": device, "dtype": dtype, "source": source.describe()}
        if device.startswith("cuda"):
            info["gpu"] = torch.cuda.get_device_name(device)
        return Session(pipeline, generation_defaults(source).as_dict(), label, info)
    raise SvdtoolError(f"--backend must be openvino or torch, not {backend!r}")


def write_generation(result: GenerationResult, output: Path, session: Session, input_image: Path) -> Path:
    """Write the video and a manifest beside it (`video.mp4.json`, or `svdtool.json` inside a PNG folder)."""
    written = write_video(result.frames, output, result.settings.fps)
    manifest = {
        "stage": "generate",
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "input": {"path": str(input_image), "sha256": sha256_file(input_image)},
        "output": {"path": str(written), "frames": list(result.frames.shape)},
        "runtime": session.info,
        "settings": result.settings.as_dict(),
        "timings_seconds": result.timings,
        "versions": library_versions(),
    }
    sidecar = written / MANIFEST_NAME if written.is_dir() else written.with_name(written.name + ".json")
    sidecar.write_text(json.dumps(manifest, indent=2, default=str))
    return written
