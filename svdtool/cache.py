"""svdtool's own cache (`SVDTOOL_CACHE`, default ~/.cache/svdtool): named models exported once, OpenVINO's compiled
pipelines of services run with `--sizes`, and the last run's library log. `svdtool cache` lists and clears it."""

from __future__ import annotations

import os
import shutil
from pathlib import Path


def cache_root() -> Path:
    return Path(os.environ.get("SVDTOOL_CACHE", Path.home() / ".cache" / "svdtool"))


def named_model_ir(name: str) -> Path:
    """Where the OpenVINO IR of a named model (mini, tiny, svd, svd-xt) is exported on first use."""
    return cache_root() / "ir" / f"{name}-fp16"


def compiled_models(ir_sha256: str) -> Path:
    """OpenVINO's CACHE_DIR for one IR (by its manifest's sha256): a compiled shape seen before loads instead of
    compiling again (a service replica switching between its --sizes)."""
    return cache_root() / "compiled" / ir_sha256[:16]


def folder_bytes(folder: Path) -> int:
    return sum(path.stat().st_size for path in folder.rglob("*") if path.is_file())


def cached_entries() -> list[tuple[Path, int]]:
    """Every cached item (exported IRs, the log folder) with its size in bytes."""
    root = cache_root()
    entries = sorted((root / "ir").iterdir()) if (root / "ir").is_dir() else []
    entries += sorted((root / "compiled").iterdir()) if (root / "compiled").is_dir() else []
    if (root / "logs").is_dir():
        entries.append(root / "logs")
    return [(entry, folder_bytes(entry) if entry.is_dir() else entry.stat().st_size) for entry in entries]


def clear(names: list[str] | None = None) -> list[Path]:
    """Remove the cached IRs of `names` (all, and the logs, when None); returns what was removed."""
    removed = []
    for entry, _ in cached_entries():
        if names is None or entry.name.removesuffix("-fp16") in names:
            shutil.rmtree(entry, ignore_errors=True) if entry.is_dir() else entry.unlink()
            removed.append(entry)
    return removed
