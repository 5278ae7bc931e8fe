import json
import shutil

import imageio.v3 as iio
import pytest
from typer.testing import CliRunner

from svdtool.cli import app

runner = CliRunner()


def run(*args: str):
    result = runner.invoke(app, [str(a) for a in args])
    assert "Traceback" not in result.output
    return result


def test_help_lists_commands():
    result = run("--help")
    assert result.exit_code == 0 and "export" in result.output and "generate" in result.output


def test_version_is_the_packages():
    from importlib import metadata

    result = run("--version")
    assert result.exit_code == 0 and result.output.strip() == f"svdtool {metadata.version('svdtool')}"


def test_export_then_generate_mp4(tmp_path, image_file):
    ir = tmp_path / "ir"
    assert run("export", "tiny", "-o", ir, "--weights", "fp32").exit_code == 0
    assert (ir / "svdtool.json").is_file()
    video = tmp_path / "video.mp4"
    result = run("generate", "--input", image_file, "--output", video, "--model", ir, "--frames", "4", "--steps", "2", "--fps", "5")
    assert result.exit_code == 0, result.output
    frames = iio.imread(video, index=None)
    assert frames.shape == (4, 64, 64, 3)
    sidecar = json.loads((tmp_path / "video.mp4.json").read_text())
    assert sidecar["settings"]["num_frames"] == 4 and sidecar["settings"]["fps"] == 5
    assert sidecar["runtime"]["backend"] == "openvino" and sidecar["timings_seconds"]["unet_calls"] == 2


def test_generate_default_model_gif_and_png_folder(tmp_path, image_file):
    gif = tmp_path / "video.gif"
    assert run("generate", "-i", image_file, "-o", gif, "--steps", "3").exit_code == 0  # the shipped `mini` model
    assert iio.imread(gif, index=None).shape == (8, 128, 128, 3)
    assert json.loads((tmp_path / "video.gif.json").read_text())["runtime"]["source"]["ref"] == "mini"
    folder = tmp_path / "frames"
    assert run("generate", "-i", image_file, "-o", folder, "--steps", "2").exit_code == 0
    assert len(list(folder.glob("frame_*.png"))) == 8 and (folder / "svdtool.json").is_file()


def test_generate_torch_backend(tmp_path, image_file):
    result = run("generate", "-i", image_file, "-o", tmp_path / "v.gif", "--backend", "torch", "--model", "tiny", "--steps", "2")
    assert result.exit_code == 0, result.output
    assert json.loads((tmp_path / "v.gif.json").read_text())["runtime"]["backend"] == "torch"


def test_export_static_from_cli(tmp_path, monkeypatch):
    """The CLI hands export() the static shape asked for (test_export.py exports and checks a static IR itself)."""
    import svdtool.convert
    from svdtool.convert import ExportShape

    calls = []
    monkeypatch.setattr(svdtool.convert, "export", lambda source, output, **options: calls.append(options) or {"files": {}})
    result = run("export", "tiny", "-o", tmp_path / "s", "--static", "--height", "64", "--width", "128", "--frames", "2")
    assert result.exit_code == 0, result.output
    assert calls[0]["shape"] == ExportShape(64, 128, 2, static=True)


def bad(result, *fragments: str) -> None:
    assert result.exit_code == 2, result.output
    text = " ".join(result.output.split())
    assert "error:" in text
    for fragment in fragments:
        assert fragment in text


def test_bad_missing_image(tmp_path, tiny_ir_fp32):
    bad(run("generate", "-i", tmp_path / "nope.jpg", "-o", tmp_path / "v.mp4", "-m", tiny_ir_fp32), "does not exist")


def test_bad_unreadable_image(tmp_path, tiny_ir_fp32):
    fake = tmp_path / "fake.jpg"
    fake.write_text("not an image")
    bad(run("generate", "-i", fake, "-o", tmp_path / "v.mp4", "-m", tiny_ir_fp32), "cannot read")


def test_bad_size(tmp_path, image_file, tiny_ir_fp32):
    bad(run("generate", "-i", image_file, "-o", tmp_path / "v.mp4", "-m", tiny_ir_fp32, "--height", "100"), "multiple of 16")


def test_bad_output_suffix(tmp_path, image_file, tiny_ir_fp32):
    bad(run("generate", "-i", image_file, "-o", tmp_path / "v.avi", "-m", tiny_ir_fp32), ".mp4")


def test_bad_model_folder(tmp_path, image_file):
    (tmp_path / "empty").mkdir()
    bad(run("generate", "-i", image_file, "-o", tmp_path / "v.mp4", "-m", tmp_path / "empty"), "not an svdtool model folder")
    bad(run("generate", "-i", image_file, "-o", tmp_path / "v.mp4", "-m", tmp_path / "missing"), "does not exist")


def test_bad_truncated_bin(tmp_path, image_file, tiny_ir_fp32):
    broken = tmp_path / "broken"
    shutil.copytree(tiny_ir_fp32, broken)
    with open(broken / "unet/openvino_model.bin", "r+b") as handle:
        handle.truncate(1000)
    bad(run("generate", "-i", image_file, "-o", tmp_path / "v.mp4", "-m", broken), "truncated")
    assert not (tmp_path / "v.mp4").exists()


def test_bad_corrupt_xml(tmp_path, image_file, tiny_ir_fp32):
    broken = tmp_path / "broken"
    shutil.copytree(tiny_ir_fp32, broken)
    manifest = json.loads((broken / "svdtool.json").read_text())
    xml = broken / "vae_decoder/openvino_model.xml"
    xml.write_bytes(b"x" * manifest["files"]["vae_decoder/openvino_model.xml"]["bytes"])  # same size, garbage
    bad(run("generate", "-i", image_file, "-o", tmp_path / "v.mp4", "-m", broken), "OpenVINO could not load")


def test_bad_cuda_without_gpu(tmp_path, image_file):
    pytest.importorskip("torch")
    import torch

    if torch.cuda.is_available():
        pytest.skip("this host has a GPU")
    bad(run("generate", "-i", image_file, "-o", tmp_path / "v.mp4", "--backend", "torch", "--device", "cuda"), "no CUDA")


def test_bad_export_source_and_overwrite(tmp_path):
    bad(run("export", "no-such-model", "-o", tmp_path / "x"), "unknown model source")
    (tmp_path / "x").mkdir()
    bad(run("export", "tiny", "-o", tmp_path / "x"), "--overwrite")
    bad(run("export", "tiny", "-o", tmp_path / "y", "--height", "64"), "--static")
