"""What a batch reads: `--input` as a folder, a glob or a text file of paths/URLs, turned into uniquely named items."""

from __future__ import annotations

import glob
import hashlib
import io
import time
from dataclasses import dataclass
from pathlib import Path

from PIL import Image, UnidentifiedImageError

from svdtool.errors import SvdtoolError
from svdtool.runtime.media import IMAGE_SUFFIXES

LIST_SUFFIXES = (".txt", ".lst")
URL_TIMEOUT_S = 60  # a whole download, not one socket read
URL_MAX_BYTES = 50 * 2**20  # an input photo; a larger download is refused
URL_MAX_REDIRECTS = 5


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
            return fetch_url(item.source)
        return Path(item.source).read_bytes()
    except OSError as exc:
        raise SvdtoolError(f"cannot read {item.source}: {exc}") from exc


def fetch_url(url: str) -> bytes:
    """An http(s) URL's body: redirects followed only to http(s), at most URL_MAX_REDIRECTS; at most URL_MAX_BYTES;
    the whole download within URL_TIMEOUT_S. Written out because urllib follows redirects to ftp:// and times out per
    socket read only, and httpx caps neither the size nor the total time."""
    import httpx

    deadline = time.monotonic() + URL_TIMEOUT_S
    with httpx.Client(follow_redirects=False, timeout=URL_TIMEOUT_S) as client:
        for _ in range(URL_MAX_REDIRECTS + 1):
            if not url.startswith(("http://", "https://")):
                raise SvdtoolError(f"refused a redirect to {url}: only http and https are fetched")
            try:
                with client.stream("GET", url) as response:
                    if response.is_redirect:
                        url = str(response.url.join(response.headers["location"]))
                        continue
                    response.raise_for_status()
                    chunks, size = [], 0
                    for chunk in response.iter_bytes():
                        size += len(chunk)
                        if size > URL_MAX_BYTES:
                            raise SvdtoolError(f"{url} is larger than {URL_MAX_BYTES // 2**20} MiB: not an input photo")
                        if time.monotonic() > deadline:
                            raise SvdtoolError(f"{url} did not download within {URL_TIMEOUT_S} s")
                        chunks.append(chunk)
                    return b"".join(chunks)
            except httpx.HTTPError as exc:
                raise SvdtoolError(f"cannot read {url}: {exc}") from exc
    raise SvdtoolError(f"{url}: more than {URL_MAX_REDIRECTS} redirects")


def decode_image(data: bytes, source: str) -> Image.Image:
    try:
        with Image.open(io.BytesIO(data)) as image:
            return image.convert("RGB")
    except (UnidentifiedImageError, OSError, ValueError) as exc:
        raise SvdtoolError(f"cannot read {source} as an image ({type(exc).__name__})") from exc


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()
