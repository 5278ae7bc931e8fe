"""DeepCache (runtime/deepcache.py, convert/deepcache.py) on the tiny preset: exactness of the full path, the call
schedule, closeness to the uncached video, and one-line errors for impossible settings."""

from __future__ import annotations

import json

import numpy as np
import openvino as ov
import pytest
import torch
from typer.testing import CliRunner

from svdtool.cli import app
from svdtool.convert import export
from svdtool.models import load_component, resolve_source
from svdtool.runtime import GenerationSettings, generate
from svdtool.runtime.deepcache import DeepCacheSettings
from svdtool.runtime.loading import load_ov_pipeline

from conftest import psnr

SETTINGS = GenerationSettings(num_frames=4, num_inference_steps=6, height=64, width=64)


@pytest.fixture(scope="module")
def tiny_cached(tmp_path_factory):
    folder = tmp_path_factory.mktemp("deepcache") / "tiny"
    export("tiny", folder, weights="fp32", cache_branches=(0,))
    return folder


def _video(folder, image, interval: int = 1):
    pipeline, manifest = load_ov_pipeline(folder, precision="f32")
    pipeline.enable_deepcache(interval, 0)
    result = generate(pipeline, image, SETTINGS.resolved(manifest["generation_defaults"]), show_progress=False)
    return result, pipeline


def test_full_ir_returns_the_unets_output_and_the_feature(tiny_cached):
    """The full IR's first output is the plain UNet IR's, and its feature makes the shallow IR give the same output."""
    config = json.loads((tiny_cached / "unet" / "config.json").read_text())
    unet = load_component(resolve_source("tiny"), "unet").float().eval()
    torch.manual_seed(0)
    inputs = {"sample": np.random.default_rng(0).standard_normal((2, 3, config["in_channels"], 8, 8)).astype(np.float32),
              "timestep": np.array(0.3, dtype=np.float32),
              "encoder_hidden_states": np.random.default_rng(1).standard_normal((2, 1, config["cross_attention_dim"])).astype(np.float32),
              "added_time_ids": np.array([[6.0, 127.0, 0.02]] * 2, dtype=np.float32)}
    core, f32 = ov.Core(), {"INFERENCE_PRECISION_HINT": "f32"}
    plain = core.compile_model(tiny_cached / "unet" / "openvino_model.xml", "CPU", f32)(inputs)[0]
    full = core.compile_model(tiny_cached / "deepcache" / "branch_0" / "full" / "openvino_model.xml", "CPU", f32)(inputs)
    shallow = core.compile_model(tiny_cached / "deepcache" / "branch_0" / "shallow" / "openvino_model.xml", "CPU", f32)(
        {**inputs, "cached_feature": full[1]})[0]
    with torch.no_grad():
        reference = unet(*(torch.from_numpy(v) for v in inputs.values()), return_dict=False)[0].numpy()
    assert np.abs(full[0] - plain).max() < 1e-5
    assert np.abs(shallow - full[0]).max() < 1e-4
    assert np.abs(plain - reference).max() < 1e-3


def test_interval_one_is_todays_output(tiny_cached, image_file):
    from PIL import Image

    image = Image.open(image_file).convert("RGB")
    plain, _ = _video(tiny_cached, image, interval=1)
    pipeline, manifest = load_ov_pipeline(tiny_cached, precision="f32")
    today = generate(pipeline, image, SETTINGS.resolved(manifest["generation_defaults"]), show_progress=False)
    assert np.array_equal(plain.frames, today.frames)


@pytest.mark.parametrize("interval, full_calls", [(2, 3), (3, 2), (6, 1)])
def test_interval_calls_the_shallow_unet_in_between(tiny_cached, image_file, interval, full_calls):
    from PIL import Image

    image = Image.open(image_file).convert("RGB")
    plain, _ = _video(tiny_cached, image, interval=1)
    cached, pipeline = _video(tiny_cached, image, interval=interval)
    assert pipeline.deepcache.calls == {"full": full_calls, "shallow": SETTINGS.num_inference_steps - full_calls}
    assert psnr(cached.frames, plain.frames) > 20  # tiny has random weights; trained svd-mini is measured in bench/
    if interval == 2:
        assert not np.array_equal(cached.frames, plain.frames)  # the shallow UNet really ran on a stale feature


def test_front_schedule_keeps_the_count_and_starts_dense():
    uniform, front = DeepCacheSettings(3, 0, "uniform").full_steps(25), DeepCacheSettings(3, 0, "front").full_steps(25)
    assert 0 in front and len(front) >= len(uniform) - 2
    assert sum(1 for step in front if step < 12) > sum(1 for step in uniform if step < 12)


@pytest.mark.parametrize("options, fragment", [
    (["--cache-interval", "0"], "--cache-interval 0 is not possible"),
    (["--cache-interval", "2", "--cache-branch", "3"], "no DeepCache IRs for that branch"),
    (["--cache-interval", "2", "--cache-schedule", "random"], "--cache-schedule must be one of"),
])
def test_bad_values_are_one_line_errors(tiny_cached, image_file, tmp_path, options, fragment):
    result = CliRunner().invoke(app, ["generate", "-i", str(image_file), "-o", str(tmp_path / "v.gif"), "-m", str(tiny_cached), *options])
    assert result.exit_code == 2 and fragment in " ".join(result.output.split()) and "Traceback" not in result.output
    assert not (tmp_path / "v.gif").exists()


def test_missing_branch_and_torch_backend_are_refused(tiny_ir_fp32, image_file, tmp_path):
    runner = CliRunner()
    result = runner.invoke(app, ["generate", "-i", str(image_file), "-o", str(tmp_path / "v.gif"), "-m", str(tiny_ir_fp32),
                                 "--cache-interval", "2"])
    assert result.exit_code == 2 and "export with `svdtool export SOURCE -o DIR --cache-branch 0`" in " ".join(result.output.split())
    result = runner.invoke(app, ["generate", "-i", str(image_file), "-o", str(tmp_path / "v.gif"), "-m", "tiny",
                                 "--backend", "torch", "--cache-interval", "2"])
    assert result.exit_code == 2 and "runs on the OpenVINO runtime" in result.output
    result = runner.invoke(app, ["export", "tiny", "-o", str(tmp_path / "x"), "--cache-branch", "1"])
    assert result.exit_code == 2 and "branches 0-0" in result.output and not (tmp_path / "x").exists()


@pytest.mark.slow  # suite time (~1 min): run with `pytest -m slow`
def test_quantize_writes_the_quantized_pair(tiny_cached, calib_dir, image_file, tmp_path):
    """`svdtool quantize` quantizes DeepCache's pair too, reports it like a component (fusion table, sizes), and the
    quantized folder runs with caching on."""
    from PIL import Image

    result = CliRunner().invoke(app, ["quantize", str(tiny_cached), "--calib", str(calib_dir), "-o", str(tmp_path / "int8"),
                                      "--samples", "4", "--calib-frames", "4", "--calib-steps", "2"])
    assert result.exit_code == 0, result.output
    assert "DC 0 shallow" in result.output and "Traceback" not in result.output
    components = json.loads((tmp_path / "int8" / "svdtool.json").read_text())["quantization"]["components"]
    for kind in ("full", "shallow"):
        report = components[f"deepcache/branch_0/{kind}"]
        assert report["calibration_samples"] == 4 and report["bytes_after"] > 0
        assert report["fusion"]["conv_linear_int8"] > 0, kind  # int8 kernels execute in both
        assert (tmp_path / "int8" / "deepcache" / "branch_0" / kind / "openvino_model.xml").is_file()
    cached, pipeline = _video(tmp_path / "int8", Image.open(image_file).convert("RGB"), interval=2)
    assert pipeline.deepcache.calls == {"full": 3, "shallow": 3} and cached.frames.std() > 0


def test_validate_against_the_uncached_run(tiny_cached, image_file, tmp_path):
    """`validate --reference uncached`: the same IR without DeepCache is the reference; its PSNR is the one measured
    directly between the two videos; without caching there is nothing to compare, a one-line error."""
    import shutil

    from PIL import Image

    from svdtool.validate import video_metrics

    images = tmp_path / "images"
    images.mkdir()
    shutil.copy(image_file, images / "a.png")
    size = ["--frames", "4", "--steps", "6", "--height", "64", "--width", "64", "--precision", "f32"]
    runner = CliRunner()
    result = runner.invoke(app, ["validate", str(tiny_cached), "--reference", "uncached", "--images", str(images),
                                 "-o", str(tmp_path / "r0"), *size])
    assert result.exit_code == 2 and "add --cache-interval 2 or more" in " ".join(result.output.split())
    assert not (tmp_path / "r0").exists()
    result = runner.invoke(app, ["validate", str(tiny_cached), "--reference", "uncached", "--images", str(images),
                                 "-o", str(tmp_path / "r"), "--cache-interval", "2", "--min-psnr", "20", *size])
    report = json.loads((tmp_path / "r" / "report.json").read_text())
    assert report["reference"]["source"]["deepcache"] == "off" and report["runtime"]["deepcache"]["interval"] == 2
    plain, _ = _video(tiny_cached, Image.open(image_file).convert("RGB"), interval=1)
    cached, _ = _video(tiny_cached, Image.open(image_file).convert("RGB"), interval=2)
    assert report["images"][0]["runtime"]["psnr_mean"] == pytest.approx(video_metrics(cached.frames, plain.frames)["psnr_mean"], abs=1e-3)
    assert result.exit_code == (0 if report["pass"] else 1)
