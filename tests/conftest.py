"""Shared fixtures: the tiny preset as PyTorch pipeline and as FP32 / FP16 IR, exported once per session."""

from __future__ import annotations

import os
import tempfile

# Before anything imports huggingface_hub (it reads these once): no test touches the user's caches or the network.
_SANDBOX = tempfile.mkdtemp(prefix="svdtool-tests-")
os.environ["SVDTOOL_CACHE"] = os.path.join(_SANDBOX, "svdtool-cache")
os.environ["HF_HOME"] = os.path.join(_SANDBOX, "hf-home")
os.environ["HF_HUB_OFFLINE"] = "1"

import numpy as np  # noqa: E402
import pytest  # noqa: E402
from PIL import Image  # noqa: E402

from svdtool.convert import export  # noqa: E402
from svdtool.models import load_pipeline  # noqa: E402
from svdtool.quantize import QuantizeOptions, quantize  # noqa: E402
from svdtool.runtime import GenerationSettings  # noqa: E402

FAST = GenerationSettings(num_inference_steps=2, num_frames=4)  # calibration settings small enough for tests


def psnr(a: np.ndarray, b: np.ndarray, peak: float = 255.0) -> float:
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    return float("inf") if mse == 0 else 10 * np.log10(peak**2 / mse)


@pytest.fixture(scope="session")
def tiny_torch():
    return load_pipeline("tiny")


@pytest.fixture(scope="session")
def tiny_ir_fp32(tmp_path_factory: pytest.TempPathFactory):
    folder = tmp_path_factory.mktemp("ir") / "tiny-fp32"
    export("tiny", folder, weights="fp32")
    return folder


@pytest.fixture(scope="session")
def tiny_ir_fp16(tmp_path_factory: pytest.TempPathFactory):
    folder = tmp_path_factory.mktemp("ir") / "tiny-fp16"
    export("tiny", folder, weights="fp16")
    return folder


@pytest.fixture(scope="session")
def image_file(tmp_path_factory: pytest.TempPathFactory):
    """A smooth synthetic photo-like image (gradient + disc), not square, to exercise resizing."""
    y, x = np.mgrid[0:96, 0:128]
    rgb = np.stack([x * 2, y * 2, 255 - x], axis=-1).clip(0, 255).astype(np.uint8)
    rgb[(x - 64) ** 2 + (y - 48) ** 2 < 400] = (250, 220, 40)
    path = tmp_path_factory.mktemp("img") / "input.png"
    Image.fromarray(rgb).save(path)
    return path


def synthetic_images(count: int, size=(96, 80)) -> list[Image.Image]:
    rng = np.random.default_rng(0)
    images = []
    for index in range(count):
        y, x = np.mgrid[0 : size[1], 0 : size[0]]
        base = np.stack([(x * (index + 1)) % 256, (y * 3) % 256, np.full_like(x, 40 * index)], -1)
        images.append(Image.fromarray((base + rng.integers(0, 30, base.shape)).clip(0, 255).astype(np.uint8)))
    return images


@pytest.fixture(scope="session")
def calib_dir(tmp_path_factory):
    folder = tmp_path_factory.mktemp("calib")
    (folder / "nested").mkdir()
    for index, image in enumerate(synthetic_images(5)):
        image.save(folder / ("nested" if index % 2 else ".") / f"img{index}.png")
    (folder / "broken.jpg").write_text("not an image")
    (folder / "notes.txt").write_text("ignored")
    return folder


@pytest.fixture(scope="session")
def int8_dir(tiny_ir_fp16, calib_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("q") / "int8"
    quantize(tiny_ir_fp16, out, str(calib_dir), samples=8, calib_settings=FAST)
    return out


@pytest.fixture(scope="session")
def w8_dir(tiny_ir_fp16, calib_dir, tmp_path_factory):
    """tiny quantized weight-only (w8): no calibration run, so two samples do (test_quantize, test_push)."""
    out = tmp_path_factory.mktemp("w8") / "tiny-w8"
    quantize(tiny_ir_fp16, out, str(calib_dir), options=QuantizeOptions(mode="w8"), samples=2, calib_settings=FAST)
    return out


def free_port() -> int:
    """A free TCP port on 127.0.0.1, for the servers tests start (Ray, Serve, Chromium's DevTools)."""
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]
