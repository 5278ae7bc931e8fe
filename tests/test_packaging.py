"""What a release ships: the wheel holds exactly one model, svd-mini's three weight files (CONTRIBUTING.md's weights
policy: candidates stay out of git and out of the package)."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).parents[1]


@pytest.mark.slow  # builds the wheel (~80 MB of weights copied): `pytest -m slow`
def test_the_wheel_holds_exactly_one_model(tmp_path):
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(tmp_path), str(ROOT)],
                   check=True)
    [wheel] = tmp_path.glob("svdtool-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    weights = sorted(name for name in names if name.endswith((".safetensors", ".bin", ".pt", ".pth", ".onnx")))
    assert weights == ["svdtool/models/mini/image_encoder/model.safetensors",
                       "svdtool/models/mini/unet/diffusion_pytorch_model.safetensors",
                       "svdtool/models/mini/vae/diffusion_pytorch_model.safetensors"], weights
    assert [name for name in names if name.endswith("model_index.json")] == ["svdtool/models/mini/model_index.json"]
