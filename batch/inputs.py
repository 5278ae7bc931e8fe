"""What a batch reads: `--input` as a folder, a glob or a text file of paths/URLs, turned into uniquely named items."""

from __future__ import annotations

import glob
import hashlib
import io
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from PIL import Image, UnidentifiedImageError

from svdtool.errors import SvdtoolError
from svdtool.runtime.media import IMAGE_SUFFIXES

LIST_SUFFIXES = (".txt", ".lst")
URL_TIMEOUT_S = 60


@dataclass(frozen=True)
class BatchItem:
    name: str  # the output's stem, unique in the batch
    source: str  # a local path or an http(s) URL

    @property
    def is_url(self) -> bool:
        return self.source.startswith(("http://", "https://"))


def is_batch_input(spec: str | Path) -> bool:
    """A folder, a glob or a list file is a batch; a single image is not."""
    text = str(spec)
    return Path(text).is_dir() or any(c in text for c in "*?[") or Path(text).suffix.lower() in LIST_SUFFIXES


def collect_inputs(spec: str | Path) -> list[BatchItem]:
    """The batch's items in a stable order: a folder's images, a glob's matches (recursive `**`), or a list file's lines
    (paths relative to the file, or URLs; blank lines and `#` comments skipped). Checks only names, not contents."""
    text = str(spec)
    path = Path(text)
    if path.is_dir():
        sources = [str(p) for p in sorted(path.iterdir()) if p.suffix.lower() in IMAGE_SUFFIXES]
        where = f"folder {path}"
    elif path.suffix.lower() in LIST_SUFFIXES:
        if not path.is_file():
            raise SvdtoolError(f"--input {path}: no such list file")
        lines = [line.strip() for line in path.read_text().splitlines()]
        sources = [line if line.startswith(("http://", "https://")) else str((path.parent / line).resolve())
                   for line in lines if line and not line.startswith("#")]
        where = f"list {path}"
    else:
        sources = [p for p in sorted(glob.glob(text, recursive=True)) if Path(p).is_file()]
        where = f"pattern {text!r}"
    if not sources:
        raise SvdtoolError(f"--input {where} names no images (.jpg/.png/.webp/.bmp files, or URLs in a list file)")
    return _named(sources)


def _named(sources: list[str]) -> list[BatchItem]:
    """Items named after their inputs' stems, each name reserved before the next is chosen: a name already taken (by an
    input's stem or an earlier suffix, compared without case, as case-insensitive filesystems do) gets -2, -3, ...
    in input order, so no video overwrites another (`a-2.png, a.jpg, a.png` -> a-2, a, a-3)."""
    taken: set[str] = set()
    items = []
    for source in sources:
        stem = Path(source.split("?")[0].rstrip("/")).stem or "image"
        name, count = stem, 1
        while name.lower() in taken:
            count += 1
            name = f"{stem}-{count}"
        taken.add(name.lower())
        items.append(BatchItem(name, source))
    return items


def read_bytes(item: BatchItem) -> bytes:
    """The input's bytes (a URL is fetched once, by whichever process needs them)."""
    try:
        if item.is_url:
            with urllib.request.urlopen(item.source, timeout=URL_TIMEOUT_S) as response:  # noqa: S310 (http/https only)
                return response.read()
        return Path(item.source).read_bytes()
    except OSError as exc:
        raise SvdtoolError(f"cannot read {item.source}: {exc}") from exc


def decode_image(data: bytes, source: str) -> Image.Image:
    try:
        with Image.open(io.BytesIO(data)) as image:
            return image.convert("RGB")
    except (UnidentifiedImageError, OSError, ValueError) as exc:
        raise SvdtoolError(f"cannot read {source} as an image ({type(exc).__name__})") from exc


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()
