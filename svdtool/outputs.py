"""Atomic output folders and the `svdtool.json` manifest every output folder carries."""

from __future__ import annotations

import hashlib
import json
import platform
import shutil
import tempfile
from contextlib import contextmanager
from importlib import metadata
from pathlib import Path
from typing import Any, Iterator

from .errors import SvdtoolError

MANIFEST_NAME = "svdtool.json"
_VERSIONED_PACKAGES = ("svdtool", "openvino", "nncf", "optimum-intel", "diffusers", "transformers", "torch")


@contextmanager
def atomic_output_dir(out_dir: Path, overwrite: bool = False) -> Iterator[Path]:
    """Yield a temporary sibling folder; rename it to `out_dir` only if the block finishes.

    An interrupted run leaves at most a `.tmp-*` folder that no loader recognises, never a half-written model.
    """
    out_dir = Path(out_dir)
    if out_dir.exists() and not overwrite:
        raise SvdtoolError(f"{out_dir} already exists; pass --overwrite to replace it")
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".tmp-{out_dir.name}-", dir=out_dir.parent))
    try:
        yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    tmp.chmod(0o755)  # mkdtemp makes it private; the result is an ordinary folder
    if out_dir.exists():
        old = out_dir.with_name(f".old-{out_dir.name}")
        shutil.rmtree(old, ignore_errors=True)
        out_dir.rename(old)
        tmp.rename(out_dir)
        shutil.rmtree(old, ignore_errors=True)
    else:
        tmp.rename(out_dir)


def sha256_file(path: Path, chunk: int = 1 << 22) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def file_inventory(folder: Path) -> dict[str, dict[str, Any]]:
    """Size and sha256 of every file under `folder` except the manifest itself."""
    return {
        str(path.relative_to(folder)): {"bytes": path.stat().st_size, "sha256": sha256_file(path)}
        for path in sorted(folder.rglob("*"))
        if path.is_file() and path.name != MANIFEST_NAME
    }


def library_versions() -> dict[str, str]:
    versions = {"python": platform.python_version()}
    for name in _VERSIONED_PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return versions


def write_manifest(folder: Path, manifest: dict[str, Any]) -> dict[str, Any]:
    """Add versions and the file inventory, then write `svdtool.json` into `folder`."""
    manifest = {**manifest, "versions": library_versions(), "files": file_inventory(folder)}
    (folder / MANIFEST_NAME).write_text(json.dumps(manifest, indent=2, default=str))
    return manifest


def read_manifest(folder: Path) -> dict[str, Any]:
    path = Path(folder) / MANIFEST_NAME
    if not path.is_file():
        raise SvdtoolError(f"{folder} has no {MANIFEST_NAME}: it is not an svdtool model folder (make one with `svdtool export`)")
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise SvdtoolError(f"{path} is not valid JSON ({exc.msg}); re-export the folder") from exc


def verify_files(folder: Path, manifest: dict[str, Any], checksums: bool = False) -> None:
    """Check every file the manifest lists is present with its size (and sha256 when `checksums`)."""
    folder = Path(folder)
    for name, entry in manifest.get("files", {}).items():
        path = folder / name
        if not path.is_file():
            raise SvdtoolError(f"{path} is missing; the folder is incomplete, re-export it")
        size = path.stat().st_size
        if size != entry["bytes"]:
            raise SvdtoolError(f"{path} is {size} bytes, the manifest says {entry['bytes']}: the file is truncated or changed")
        if checksums and sha256_file(path) != entry["sha256"]:
            raise SvdtoolError(f"{path} does not match its sha256 in {MANIFEST_NAME}: the file is corrupt")
