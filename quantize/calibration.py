"""Calibration images from a folder (recursive) or a 🤗 datasets source (`hf:NAME[:split][:column]` or a
folder written by `Dataset.save_to_disk`)."""

from __future__ import annotations

import hashlib
import io
from dataclasses import dataclass, field
from pathlib import Path

from PIL import Image, UnidentifiedImageError

from svdtool.errors import SvdtoolError
from svdtool.runtime.media import IMAGE_SUFFIXES


@dataclass
class CalibrationImages:
    source: str
    images: list[Image.Image] = field(default_factory=list)
    sha256: list[str] = field(default_factory=list)
    skipped: int = 0

    def describe(self) -> dict:
        return {"source": self.source, "count": len(self.images), "skipped_unreadable": self.skipped, "sha256": self.sha256}


def load_calibration_images(spec: str, limit: int | None = None) -> CalibrationImages:
    """Read up to `limit` RGB images; unreadable ones are counted and skipped; none at all is an error."""
    path = Path(spec).expanduser()
    if spec.startswith("hf:"):
        found = _from_dataset(spec, _load_hub_dataset(spec), limit)
    elif path.is_dir() and ((path / "dataset_info.json").is_file() or (path / "state.json").is_file()):
        import datasets

        found = _from_dataset(spec, datasets.load_from_disk(str(path)), limit)
    elif path.is_dir():
        found = _from_folder(path, limit)
    else:
        raise SvdtoolError(f"--calib {spec}: no such folder (give a folder of images, a save_to_disk folder, or hf:NAME[:split][:column])")
    if not found.images:
        raise SvdtoolError(f"--calib {spec}: no readable images found ({found.skipped} unreadable files skipped)")
    return found


def _add(found: CalibrationImages, data: bytes | Image.Image) -> None:
    try:
        image = data if isinstance(data, Image.Image) else Image.open(io.BytesIO(data))
        image = image.convert("RGB")
    except (UnidentifiedImageError, OSError, ValueError):
        found.skipped += 1
        return
    found.images.append(image)
    found.sha256.append(hashlib.sha256(image.tobytes()).hexdigest())


def _from_folder(folder: Path, limit: int | None) -> CalibrationImages:
    found = CalibrationImages(str(folder))
    for file in sorted(p for p in folder.rglob("*") if p.is_file()):
        if limit is not None and len(found.images) >= limit:
            break
        if file.suffix.lower() in IMAGE_SUFFIXES:
            _add(found, file.read_bytes())
    return found


def _load_hub_dataset(spec: str):
    import datasets

    parts = spec[3:].split(":")
    name, split = parts[0], parts[1] if len(parts) > 1 and parts[1] else "train"
    try:
        return datasets.load_dataset(name, split=split)
    except Exception as exc:  # datasets raises many types for network, auth and naming problems
        raise SvdtoolError(f"--calib {spec}: could not load dataset {name!r} split {split!r}: {str(exc).splitlines()[0]}") from exc


def _from_dataset(spec: str, dataset, limit: int | None) -> CalibrationImages:
    import datasets

    parts = spec[3:].split(":") if spec.startswith("hf:") else []
    column = parts[2] if len(parts) > 2 else next(
        (name for name, feature in dataset.features.items() if isinstance(feature, datasets.Image)), None
    )
    if column is None or column not in dataset.column_names:
        raise SvdtoolError(f"--calib {spec}: no image column (columns: {', '.join(dataset.column_names)}); name one as hf:NAME:split:column")
    found = CalibrationImages(spec)
    for row in dataset.select(range(min(limit or len(dataset), len(dataset)))):
        value = row[column]
        if isinstance(value, dict) and value.get("bytes"):
            value = value["bytes"]
        if isinstance(value, (bytes, Image.Image)):
            _add(found, value)
        else:
            found.skipped += 1
    return found
