"""`svdtool push` against a Hub-compatible server on 127.0.0.1 (tests/hub_server.py)."""

import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
from huggingface_hub import constants
from PIL import Image

from hub_server import LocalHub
from svdtool.errors import SvdtoolError
from svdtool.push import model_card, push
from svdtool.outputs import read_manifest


@pytest.fixture
def hub(monkeypatch):
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    with LocalHub() as server:
        yield server


def cli(env_hub: LocalHub, home, *args):
    env = {**os.environ, "HF_ENDPOINT": env_hub.url, "HF_HUB_OFFLINE": "0", "HF_HOME": str(home), "HF_TOKEN": env_hub.state.token}
    return subprocess.run([sys.executable, "-m", "svdtool.cli", *map(str, args)], capture_output=True, text=True, env=env, cwd=home)


def frames_of(folder):
    return np.stack([np.asarray(Image.open(p)) for p in sorted(folder.glob("frame_*.png"))])


def test_round_trip_push_download_generate(hub, w8_dir, image_file, tmp_path):
    pushed = cli(hub, tmp_path, "push", w8_dir, "--repo-id", "alice/tiny-w8")
    assert pushed.returncode == 0, pushed.stderr
    files = hub.state.repos["alice/tiny-w8"]["branches"]["main"]["files"]
    assert "README.md" in files and "unet/openvino_model.bin" in files and "svdtool.json" in files
    card = files["README.md"].decode()
    assert "pipeline_tag: image-to-video" in card and "- nncf" in card and "mode: **w8**" in card and "Random weights" in card
    remote = cli(hub, tmp_path, "generate", "--model", "alice/tiny-w8", "-i", image_file, "-o", tmp_path / "remote", "--steps", "2")
    assert remote.returncode == 0, remote.stderr
    local = cli(hub, tmp_path, "generate", "--model", w8_dir, "-i", image_file, "-o", tmp_path / "local", "--steps", "2")
    assert local.returncode == 0, local.stderr
    assert np.array_equal(frames_of(tmp_path / "remote"), frames_of(tmp_path / "local"))
    assert any((tmp_path / "hub").rglob("openvino_model.xml"))  # it came from a fresh HF cache


def test_dry_run_uploads_nothing(hub, w8_dir):
    plan = push(w8_dir, "alice/x", dry_run=True, token=hub.state.token, endpoint=hub.url)
    assert "unet/openvino_model.bin" in plan["files"] and plan["card"].startswith("---")
    assert hub.state.requests == [] and hub.state.repos == {}


def test_card_includes_validation(w8_dir):
    report = {"pass": True, "reference": {"device": "cuda", "dtype": "fp16"},
              "summary": {"reference": {"sharpness": 1.0}, "runtime": {"sharpness": 1.1}, "psnr_mean": 40.0, "psnr_min": 35.0,
                          "ssim_mean": 0.99, "ssim_min": 0.98}}
    card = model_card(read_manifest(w8_dir), "alice/x", report)
    assert "## Validation" in card and "**PASS**" in card and "40.0 / 35.0" in card


def test_bad_token_is_401(hub, w8_dir):
    with pytest.raises(SvdtoolError, match="401"):
        push(w8_dir, "alice/x", token="wrong", endpoint=hub.url)


def test_failure_midway_commits_nothing(hub, w8_dir):
    hub.state.fail["commit"] = 500
    with pytest.raises(SvdtoolError, match="nothing was committed"):
        push(w8_dir, "alice/x", token=hub.state.token, endpoint=hub.url)
    assert hub.state.repos["alice/x"]["branches"]["main"]["files"] == {}
    del hub.state.fail["commit"]
    push(w8_dir, "alice/x", token=hub.state.token, endpoint=hub.url)  # the retry lands whole
    assert len(hub.state.repos["alice/x"]["branches"]["main"]["files"]) == len(read_manifest(w8_dir)["files"]) + 2


def test_forbidden_and_rate_limited(hub, w8_dir):
    hub.state.fail["create"] = 403
    with pytest.raises(SvdtoolError, match="403"):
        push(w8_dir, "bob/x", token=hub.state.token, endpoint=hub.url)
    hub.state.fail["create"] = 429
    with pytest.raises(SvdtoolError, match="rate-limiting"):
        push(w8_dir, "bob/x", token=hub.state.token, endpoint=hub.url)


def test_network_down(w8_dir, monkeypatch):
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setenv("HF_HUB_ETAG_TIMEOUT", "1")
    with pytest.raises(SvdtoolError, match="could not reach the Hub"):
        push(w8_dir, "alice/x", token="t", endpoint="http://127.0.0.1:9")


def test_broken_folder_is_refused(w8_dir, tmp_path):
    broken = tmp_path / "broken"
    shutil.copytree(w8_dir, broken)
    data = bytearray((broken / "vae_decoder/openvino_model.bin").read_bytes())
    data[100] ^= 0xFF  # same size, different bytes: only the sha256 catches it
    (broken / "vae_decoder/openvino_model.bin").write_bytes(bytes(data))
    with pytest.raises(SvdtoolError, match="sha256"):
        push(broken, "alice/x", dry_run=True)


def test_bad_repo_id(w8_dir):
    with pytest.raises(SvdtoolError, match="USER/NAME"):
        push(w8_dir, "no-slash", dry_run=True)
