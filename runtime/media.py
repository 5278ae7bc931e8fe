"""Reading input images and writing videos (.mp4, .gif, or a folder of PNGs), each written atomically."""

from __future__ import annotations

import importlib.util
import os
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from svdtool.errors import SvdtoolError

VIDEO_SUFFIXES = (".mp4", ".gif")
IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".webp", ".bmp"}


def load_image(path: str | Path) -> Image.Image:
    """Open an image as RGB, or fail with one line saying what is wrong with the file."""
    path = Path(path)
    if not path.is_file():
        raise SvdtoolError(f"input image {path} does not exist")
    try:
        with Image.open(path) as image:
            return image.convert("RGB")
    except (UnidentifiedImageError, OSError, ValueError) as exc:
        raise SvdtoolError(f"cannot read {path} as an image ({type(exc).__name__}); give a JPEG/PNG/WebP file") from exc


def output_kind(path: str | Path) -> str:
    """"mp4", "gif" or "png" (a folder); anything else, or an .mp4 without an encoder, is refused before any work."""
    suffix = Path(path).suffix.lower()
    if suffix == ".mp4" and importlib.util.find_spec("imageio_ffmpeg") is None:  # imageio would pick another plugin
        raise SvdtoolError(f"cannot write {path}: .mp4 needs imageio-ffmpeg (pip install imageio-ffmpeg); or write a .gif")
    if suffix in VIDEO_SUFFIXES:
        return suffix[1:]
    if suffix == "":
        return "png"
    raise SvdtoolError(f"cannot write {path}: use a .mp4 or .gif file, or a folder name (no suffix) for PNG frames")


def write_video(frames: np.ndarray, path: str | Path, fps: int) -> Path:
    """Write uint8 frames [F, H, W, 3]; the file (or folder) appears only when complete."""
    path = Path(path)
    kind = output_kind(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if kind == "png":
        tmp = Path(tempfile.mkdtemp(prefix=f".tmp-{path.name}-", dir=path.parent))
        for index, frame in enumerate(frames):
            Image.fromarray(frame).save(tmp / f"frame_{index:04d}.png")
        if path.exists():
            raise SvdtoolError(f"{path} already exists; remove it or choose another output")
        tmp.rename(path)
        return path
    import imageio.v3 as iio

    handle, tmp_name = tempfile.mkstemp(prefix=f".tmp-{path.stem}-", suffix=path.suffix, dir=path.parent)
    os.close(handle)
    try:
        if kind == "mp4":
            iio.imwrite(tmp_name, frames, extension=".mp4", fps=fps, codec="libx264", quality=9, macro_block_size=1)
        else:
            iio.imwrite(tmp_name, frames, extension=".gif", duration=1000 / fps, loop=0)
        os.chmod(tmp_name, 0o644)
        os.replace(tmp_name, path)
    finally:
        if os.path.exists(tmp_name):
            os.unlink(tmp_name)
    return path


def read_video(path: str | Path) -> np.ndarray:
    """uint8 frames [F, H, W, 3] from an .mp4/.gif/.webm file or a folder of images (sorted by name)."""
    path = Path(path)
    if path.is_dir():
        files = sorted(p for p in path.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        if not files:
            raise SvdtoolError(f"{path} holds no image frames")
        return np.stack([np.asarray(load_image(file)) for file in files])
    if not path.is_file():
        raise SvdtoolError(f"video {path} does not exist")
    import imageio.v3 as iio

    try:
        frames = iio.imread(path, index=None)
    except Exception as exc:  # imageio raises plugin-specific types
        raise SvdtoolError(f"cannot read {path} as a video ({type(exc).__name__})") from exc
    frames = np.asarray(frames)
    if frames.ndim == 3:
        frames = frames[None]
    return np.ascontiguousarray(frames[..., :3])
