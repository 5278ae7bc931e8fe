"""What `svdtool generate` needs around `generate()`: open a backend, and write the video with its sidecar manifest."""

from __future__ import annotations

import json
from dataclasses import dataclass, field, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import torch

from svdtool import cache
from svdtool.console import console
from svdtool.cpu import cpu_info
from svdtool.errors import SvdtoolError
from svdtool.models import BUILTIN_MODELS, PRESETS, TORCH_DTYPES, component_config, generation_defaults, load_pipeline, resolve_source, size_multiple
from svdtool.outputs import MANIFEST_NAME, library_versions, read_manifest, sha256_file

from .deepcache import DeepCacheSettings, check_available, check_branch
from .generate import GenerationResult, GenerationSettings
from .media import write_video
from .speed import speed_preset


@dataclass
class Session:
    pipeline: Any
    defaults: dict[str, Any]
    label: str
    info: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Plan:
    """What a run will load, and the model's generation defaults (with its size multiple), known before anything heavy
    happens: settings, paths and outputs are checked against it first."""

    backend: str
    model: str  # a named model, an IR folder or Hub id (openvino); a PyTorch source (torch)
    defaults: dict[str, Any]


def cuda_or_error(device: str) -> None:
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise SvdtoolError("--device cuda asked for, but torch sees no CUDA GPU here; use --device cpu or run on a GPU host")


def plan(model: str, backend: str, dtype: str = "fp32", device: str | None = None,
         deepcache: DeepCacheSettings | None = None) -> Plan:
    """Resolve `model` for `backend` from names, manifests and configs only (nothing is exported or loaded)."""
    if backend == "openvino":
        if model in PRESETS or model in BUILTIN_MODELS:
            source = resolve_source(model)
            if deepcache is not None and deepcache.enabled:
                check_branch(component_config(source, "unet"), deepcache.branch)
            return Plan(backend, model, generation_defaults(source).as_dict())
        from .loading import resolve_model_dir

        folder = resolve_model_dir(model)
        if deepcache is not None:
            check_available(folder, deepcache)
        return Plan(backend, str(folder), ir_generation_defaults(folder))
    if deepcache is not None and deepcache.enabled:
        raise SvdtoolError("--cache-interval above 1 (DeepCache) runs on the OpenVINO runtime, not --backend torch")
    if backend == "torch":
        if dtype not in TORCH_DTYPES:
            raise SvdtoolError(f"--dtype must be fp32 or fp16, not {dtype!r}")
        cuda_or_error((device or "cpu").lower())
        if Path(model).is_dir() and (Path(model) / MANIFEST_NAME).is_file():
            raise SvdtoolError(f"{model} is an OpenVINO IR folder; --backend torch needs a PyTorch source (preset, diffusers folder, Hub id)")
        return Plan(backend, model, generation_defaults(resolve_source(model)).as_dict())
    raise SvdtoolError(f"--backend must be openvino or torch, not {backend!r}")


def ir_generation_defaults(folder: Path) -> dict[str, Any]:
    """An IR folder's generation defaults, with the size multiple read from its UNet and VAE configs."""
    manifest = read_manifest(folder)
    configs = [json.loads((folder / part / "config.json").read_text()) for part in ("unet", "vae_decoder")]
    return {**manifest["generation_defaults"], "size_multiple": size_multiple(*configs)}


def own_sampling(settings: GenerationSettings, folder: str | Path) -> GenerationSettings:
    """`settings` with an IR folder's own steps (at the settings' speed preset) and guidance: a few-step student's 4
    steps at guidance 1.0-1.2 beside its teacher's 25 at 1-3 (models/samplers.py), as bench and validate --teacher run them."""
    defaults = ir_generation_defaults(Path(folder))
    return replace(settings, num_inference_steps=speed_preset(settings.speed).steps(defaults["num_inference_steps"]),
                   min_guidance_scale=defaults["min_guidance_scale"], max_guidance_scale=defaults["max_guidance_scale"])


def named_model_ir(name: str, deepcache: DeepCacheSettings | None = None) -> Path:
    """The IR of a named model, exported once into svdtool's cache on first use (so `generate` needs no setup); exported
    again with DeepCache's IRs when a run asks for a branch the cached IR lacks."""
    from filelock import FileLock

    folder, locks = cache.named_model_ir(name), cache.cache_root() / "locks"
    locks.mkdir(parents=True, exist_ok=True)
    with FileLock(locks / f"{folder.name}.lock"):  # batch workers on one machine export it once
        return _named_model_ir(name, folder, deepcache)


def _named_model_ir(name: str, folder: Path, deepcache: DeepCacheSettings | None) -> Path:
    from svdtool.convert import export

    from .deepcache import available_branches

    exists = (folder / MANIFEST_NAME).is_file()
    branches = available_branches(folder) if exists else []
    shipped = resolve_source(name).describe().get("weights_sha256")
    if exists and read_manifest(folder)["source"].get("weights_sha256") != shipped:
        console.print(f"The cached IR of {name!r} was exported from other weights than this svdtool ships: exporting it again to {folder}")
    elif exists and deepcache is not None and deepcache.enabled and deepcache.branch not in branches:
        console.print(f"Adding DeepCache branch {deepcache.branch} to the cached IR of {name!r}: exporting it again to {folder}")
    elif not exists:
        console.print(f"First use of {name!r} with OpenVINO: exporting it once to {folder} (`svdtool cache` lists and clears it)")
    else:
        return folder
    if deepcache is not None and deepcache.enabled:
        branches = sorted({*branches, deepcache.branch})
    export(name, folder, overwrite=folder.exists(), cache_branches=tuple(branches))
    return folder


def open_session(target: Plan, device: str | None = None, precision: str = "auto", dtype: str = "fp32",
                 deepcache: DeepCacheSettings | None = None, threads: int | None = None,
                 settings: GenerationSettings | None = None, cache_compiled: bool = False) -> Session:
    """Load (and for a named model on OpenVINO, export on first use) the pipeline `target` names; `threads` caps
    OpenVINO's inference threads (a batch actor's share of the CPUs). With `settings` (resolved), an OpenVINO run that
    this machine's memory cannot hold is refused before loading (footprint.py). `cache_compiled` keeps OpenVINO's
    compiled shapes in svdtool's cache (cache.compiled_models), for a service whose shapes --sizes bounds."""
    if target.backend == "openvino":
        from .loading import load_ov_pipeline

        named = target.model in PRESETS or target.model in BUILTIN_MODELS
        folder = named_model_ir(target.model, deepcache) if named else target.model
        compiled = cache.compiled_models(sha256_file(Path(folder) / MANIFEST_NAME)) if cache_compiled else None
        pipeline, manifest = load_ov_pipeline(folder, device=(device or "CPU").upper(), precision=precision,
                                              ov_config=_share_of_cpus(threads) if threads else None, settings=settings,
                                              cache_dir=compiled)
        memory = manifest.get("memory_estimate")
        if deepcache is not None and deepcache.enabled:
            pipeline.enable_deepcache(deepcache.interval, deepcache.branch, deepcache.schedule)
        source = manifest.get("source", {})
        label = f"OpenVINO {pipeline._device} ({precision}) — {source.get('kind', '?')} {source.get('ref', '?')}"
        if source.get("random_weights"):
            label += " (random weights)"
        info = {"backend": "openvino", "model": str(folder), "device": pipeline._device, "precision": precision,
                "source": source, "model_weights": manifest.get("weights"), "model_stage": manifest.get("stage"),
                "vae_decoder": manifest.get("vae_decoder", {}).get("name", "temporal"), "cpu": cpu_info(), "threads": threads or "auto", "deepcache": (deepcache or DeepCacheSettings()).as_dict(),
                **({"memory_estimate": memory} if memory else {})}
        return Session(pipeline, target.defaults, label, info)
    device = (device or "cpu").lower()
    source = resolve_source(target.model)
    pipeline = load_pipeline(source, TORCH_DTYPES[dtype]).to(device)
    label = f"PyTorch {device} ({dtype}) — {source.label()}"
    info = {"backend": "torch", "device": device, "dtype": dtype, "source": source.describe()}
    if device.startswith("cuda"):
        info["gpu"] = torch.cuda.get_device_name(device)
    else:
        info["cpu"] = cpu_info()
    return Session(pipeline, target.defaults, label, info)


def _share_of_cpus(threads: int) -> dict[str, Any]:
    """A process that owns `threads` of this machine's CPUs beside others (a batch actor): that many OpenVINO and torch
    threads, and no CPU pinning — OpenVINO pins a process's threads to the first cores, so that processes sharing a
    machine would all run on the same cores (measured: 8 actors of 2 threads on 16 cores, 29 s per video instead of
    about 3)."""
    torch.set_num_threads(threads)
    return {"INFERENCE_NUM_THREADS": threads, "ENABLE_CPU_PINNING": False}


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
        "peak_rss_gb": result.peak_rss_gb,
        "versions": library_versions(),
    }
    sidecar = written / MANIFEST_NAME if written.is_dir() else written.with_name(written.name + ".json")
    sidecar.write_text(json.dumps(manifest, indent=2, default=str))
    return written
