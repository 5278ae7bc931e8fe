"""Open an exported folder (or a Hub repo of one) as an `OVStableVideoDiffusionPipeline`, with clear errors."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from huggingface_hub import snapshot_download
from huggingface_hub.errors import HfHubHTTPError, LocalEntryNotFoundError, RepositoryNotFoundError

from svdtool.console import console
from svdtool.cpu import cpu_label, has_vnni
from svdtool.errors import SvdtoolError
from svdtool.outputs import read_manifest, verify_files

from .footprint import check_memory
from .generate import GenerationSettings
from .pipeline import OVStableVideoDiffusionPipeline

PRECISIONS = {"auto": None, "f32": "f32", "bf16": "bf16", "f16": "f16"}


def check_precision(precision: str) -> None:
    if precision not in PRECISIONS:
        raise SvdtoolError(f"--precision must be one of {', '.join(PRECISIONS)}, not {precision!r}")


def resolve_model_dir(model: str | Path) -> Path:
    """A local exported folder, or a Hub id downloaded into the HF cache."""
    path = Path(model).expanduser()
    if path.exists():
        if not path.is_dir():
            raise SvdtoolError(f"{path} is a file; give the folder made by `svdtool export`")
        return path
    text = str(model)
    if text.count("/") != 1 or not all(text.split("/")):
        raise SvdtoolError(f"model folder {path} does not exist (and it is not a Hub id like owner/name)")
    try:
        return Path(snapshot_download(text))
    except RepositoryNotFoundError as exc:
        raise SvdtoolError(f"Hub repo {text} not found (or private: set HF_TOKEN)") from exc
    except (LocalEntryNotFoundError, HfHubHTTPError, OSError) as exc:
        raise SvdtoolError(f"could not download {text} from the Hugging Face Hub: {_first_line(exc)}") from exc


def load_ov_pipeline(
    model: str | Path,
    device: str = "CPU",
    precision: str = "auto",
    ov_config: dict[str, Any] | None = None,
    cache_dir: str | Path | None = None,
    compile: bool = False,
    settings: GenerationSettings | None = None,
) -> tuple[OVStableVideoDiffusionPipeline, dict[str, Any]]:
    """Check the folder against its manifest (files present, sizes right), then load it. Returns (pipeline, manifest).
    With `settings` (resolved) on the CPU, a generation this machine's memory cannot hold is refused first, and the
    estimate is returned as the manifest's "memory_estimate" (footprint.py).

    Compilation waits for the first `generate()`, which shapes a dynamic IR for its settings first (`compile` forces
    it now, for the IR's own shapes)."""
    check_precision(precision)
    folder = resolve_model_dir(model)
    manifest = read_manifest(folder)
    verify_files(folder, manifest)
    warn_if_cpu_unfit(manifest)
    if settings is not None and device.upper() == "CPU":
        manifest = {**manifest, "memory_estimate": check_memory(folder, settings, precision)}
    config = {**(ov_config or {})}
    if PRECISIONS[precision]:
        config["INFERENCE_PRECISION_HINT"] = PRECISIONS[precision]
    if cache_dir:
        config["CACHE_DIR"] = str(cache_dir)
    try:
        pipeline = OVStableVideoDiffusionPipeline.from_pretrained(folder, device=device, ov_config=config, compile=compile)
    except RuntimeError as exc:
        raise SvdtoolError(f"OpenVINO could not load {folder}: {_first_line(exc)}") from exc
    return pipeline, manifest


def warn_if_cpu_unfit(manifest: dict[str, Any]) -> None:
    """One line when an IR quantized for VNNI/AMX CPUs (full 8-bit weights) runs on a CPU without VNNI."""
    if manifest.get("cpu_requirement", {}).get("target_cpu") == "vnni" and not has_vnni():
        console.print(f"[yellow]warning:[/] this IR was quantized for CPUs with VNNI or AMX; {cpu_label()} has neither, so its "
                      "int8 layers can saturate and lose accuracy: quantize with --target-cpu any for this CPU", soft_wrap=True)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
