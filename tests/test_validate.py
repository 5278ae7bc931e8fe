import json
import shutil
import subprocess
import sys

import numpy as np
import openvino as ov
import pytest
import torch
from typer.testing import CliRunner

from svdtool.cli import app
from svdtool.outputs import write_manifest
from svdtool.runtime import GenerationSettings
from svdtool.validate import Thresholds, make_reference, read_reference, validate

SMALL = GenerationSettings(num_frames=4, num_inference_steps=3)


@pytest.fixture(scope="module")
def images_dir(tmp_path_factory, image_file):
    folder = tmp_path_factory.mktemp("images")
    shutil.copy(image_file, folder / "a.png")
    rgb = np.asarray(__import__("PIL.Image", fromlist=["Image"]).open(image_file))[:, ::-1]
    __import__("PIL.Image", fromlist=["Image"]).fromarray(rgb.copy()).save(folder / "b.png")
    return folder


@pytest.fixture(scope="module")
def cpu_reference(images_dir, tmp_path_factory):
    folder = tmp_path_factory.mktemp("ref") / "ref"
    make_reference("tiny", images_dir, folder, device="cpu", dtype="fp32", settings=SMALL)
    return folder


def run(*args):
    result = CliRunner().invoke(app, [str(a) for a in args])
    assert "Traceback" not in result.output
    return result


def test_reference_round_trip(cpu_reference):
    record = read_reference(cpu_reference)
    assert record["settings"]["num_frames"] == 4 and record["settings"]["seed"] == 42
    assert record["device"] == "cpu" and record["source"]["ref"] == "tiny"
    assert len(record["images"]) == 2 and (cpu_reference / "inputs" / "a.png").is_file()
    assert len(list((cpu_reference / record["images"][0]["frames"]).glob("frame_*.png"))) == 4
    assert {"temporal_mse", "sharpness", "brightness"} <= set(record["images"][0]["metrics"])


def test_fp32_ir_passes_against_cpu_reference(tiny_ir_fp32, cpu_reference, tmp_path):
    result = run("validate", tiny_ir_fp32, "--reference", cpu_reference, "-o", tmp_path / "report", "--precision", "f32")
    assert result.exit_code == 0, result.output
    report = json.loads((tmp_path / "report" / "report.json").read_text())
    assert report["pass"] and report["settings"]["num_frames"] == 4  # the reference's settings were reused
    assert report["summary"]["psnr_mean"] >= 60
    assert len(report["images"][0]["per_frame"]["psnr"]) == 4
    html = (tmp_path / "report" / "report.html").read_text()
    assert html.count("data:image/gif;base64") == 4 and "PASS" in html and "per-frame PSNR" in html


def test_broken_ir_fails(tiny_ir_fp32, cpu_reference, tmp_path):
    """A consistent folder (manifest rewritten) whose UNet convolution weights carry 30 % multiplicative noise."""
    broken = tmp_path / "broken"
    shutil.copytree(tiny_ir_fp32, broken)
    unet = ov.Core().read_model(tiny_ir_fp32 / "unet/openvino_model.xml")  # not the copy: its .bin is mmapped
    rng = np.random.default_rng(0)
    for op in unet.get_ops():
        if op.get_type_name() == "Convolution":
            weight = op.input_value(1).get_node()
            if weight.get_type_name() == "Constant":
                data = weight.get_data().astype(np.float32)
                noisy = ov.op.Constant(data * (1 + 0.3 * rng.standard_normal(data.shape)).astype(np.float32))
                op.input(1).replace_source_output(noisy.output(0))
    ov.save_model(unet, broken / "unet/openvino_model.xml", compress_to_fp16=False)
    manifest = json.loads((broken / "svdtool.json").read_text())
    write_manifest(broken, {k: v for k, v in manifest.items() if k != "files"})
    result = run("validate", broken, "--reference", cpu_reference, "-o", tmp_path / "report", "--precision", "f32")
    assert result.exit_code == 1, result.output
    assert not json.loads((tmp_path / "report" / "report.json").read_text())["pass"]
    assert "FAIL" in (tmp_path / "report" / "report.html").read_text()


def test_reference_runs_without_openvino(images_dir, tmp_path):
    """A GPU host has diffusers but not OpenVINO: `svdtool reference` must not import the CPU runtime."""
    blocked = "import sys, runpy; sys.modules.update(dict.fromkeys(('openvino', 'optimum', 'optimum.intel', 'nncf')))"
    script = f"{blocked}; sys.argv = ['svdtool', *sys.argv[1:]]; runpy.run_module('svdtool.cli', run_name='__main__')"
    result = subprocess.run([sys.executable, "-c", script, "reference", "tiny", "--images", str(images_dir), "-o", str(tmp_path / "ref"),
                             "--device", "cpu", "--frames", "2", "--steps", "1"], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
    assert read_reference(tmp_path / "ref")["device"] == "cpu"


def test_live_cpu_reference(tiny_ir_fp32, images_dir, tmp_path):
    report = validate(tiny_ir_fp32, "cpu", tmp_path / "live", images=images_dir, settings=SMALL, precision="f32")
    assert report["pass"] and report["reference"]["device"] == "cpu"
    assert (tmp_path / "live" / "reference" / "reference.json").is_file()


def test_reference_gpu_without_cuda(tiny_ir_fp32, images_dir, tmp_path):
    if torch.cuda.is_available():
        pytest.skip("this host has a GPU")
    result = run("validate", tiny_ir_fp32, "--reference", "gpu", "--images", images_dir, "-o", tmp_path / "r")
    assert result.exit_code == 2 and "svdtool reference" in " ".join(result.output.split())
    assert not (tmp_path / "r").exists()


def test_thresholds_from_toml_and_flags(tiny_ir_fp32, cpu_reference, tmp_path):
    toml = tmp_path / "strict.toml"
    toml.write_text("[thresholds]\nmin_psnr = 200\n")
    assert Thresholds.load(toml).min_psnr == 200 and Thresholds.load(toml, min_psnr=20).min_psnr == 20
    result = run("validate", tiny_ir_fp32, "--reference", cpu_reference, "-o", tmp_path / "r", "--thresholds", toml)
    assert result.exit_code == 1
    toml.write_text("[thresholds]\nmin_pnsr = 20\n")
    result = run("validate", tiny_ir_fp32, "--reference", cpu_reference, "-o", tmp_path / "r2", "--thresholds", toml)
    assert result.exit_code == 2 and "unknown keys" in result.output


def test_bad_reference_folder(tiny_ir_fp32, tmp_path):
    result = run("validate", tiny_ir_fp32, "--reference", tmp_path, "-o", tmp_path / "r")
    assert result.exit_code == 2 and "not a reference folder" in result.output


def test_metrics_cli(tmp_path, image_file, tiny_ir_fp32):
    video = tmp_path / "v.gif"
    assert run("generate", "-i", image_file, "-o", video, "-m", tiny_ir_fp32).exit_code == 0
    result = run("metrics", video, "--reference", video, "--json")
    assert result.exit_code == 0
    values = json.loads(result.output[result.output.index("{"):])
    assert values["psnr_mean"] == 100.0 and values["temporal_mse"] > 0
    assert run("metrics", tmp_path / "missing.mp4").exit_code == 2
