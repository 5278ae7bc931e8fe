import json

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from conftest import FAST, synthetic_images
from svdtool.cli import app
from svdtool.errors import SvdtoolError
from svdtool.outputs import read_manifest
from svdtool.quantize import QuantizeOptions, load_calibration_images, quantize
from svdtool.runtime import generate, load_image, load_ov_pipeline


FLOAT_BY_DESIGN = ("conv_in", "conv_out", "time_embedding", "add_embedding", "time_emb_proj", "attn2", "time_pos_embed")


def test_int8_unet_executes_in_int8(int8_dir):
    """What must hold on every CPU: every convolution and linear layer outside the recipe's float set runs int8 kernels
    (attention score MatMuls may stay float where the CPU lacks int8 attention kernels)."""
    manifest = json.loads((int8_dir / "svdtool.json").read_text())
    unet = manifest["quantization"]["components"]["unet"]
    fusion = unet["fusion"]
    assert unet["nncf"]["method"] == "nncf.quantize" and unet["nncf"]["model_type"] == "transformer"
    assert unet["nncf"]["overflow_fix"] == "enable" and manifest["cpu_requirement"]["target_cpu"] == "any"
    convolutions = fusion["executed"]["Convolution"]
    assert convolutions.get("int8", 0) == sum(convolutions.values()) - 2  # all but conv_in and conv_out
    for layer_type in ("Convolution", "FullyConnected"):
        for name in fusion["not_int8"].get(layer_type, []):
            assert any(key in name for key in FLOAT_BY_DESIGN), name
    assert fusion["fake_quantize_fused"] > 0.9 * fusion["fake_quantize_in_ir"]


def test_int8_manifest(int8_dir, tiny_ir_fp16):
    manifest = json.loads((int8_dir / "svdtool.json").read_text())
    assert manifest["stage"] == "quantize" and manifest["quantization"]["mode"] == "int8"
    assert manifest["source"]["ref"] == "tiny" and manifest["quantized_from"]["path"] == str(tiny_ir_fp16.resolve())
    calibration = manifest["quantization"]["calibration"]
    assert calibration["count"] == 5 and calibration["skipped_unreadable"] == 1 and len(calibration["sha256"]) == 5
    assert calibration["used_for_calibration"] == 3 and calibration["held_out"] == 2
    assert calibration["settings"]["num_inference_steps"] == 2
    components = manifest["quantization"]["components"]
    assert components["unet"]["calibration_samples"] == 8
    # every calibration image's inputs are recorded (the first one's were lost when generate's reshape recompiled)
    assert components["image_encoder"]["calibration_samples"] == components["vae_encoder"]["calibration_samples"] == 3
    assert components["unet"]["bytes_after"] < components["unet"]["bytes_before"]
    quality = manifest["quantization"]["quality_check"]
    assert quality["images"] == 2 and 10 < quality["mean"]["psnr_mean"] <= 100
    assert {"temporal_mse", "sharpness", "brightness", "ssim_mean"} <= set(quality["mean"])
    memory = manifest["quantization"]["memory"]  # the up-front estimate holds for a fresh process (the calibration child;
    # this one is the test session, which holds what earlier tests left)
    assert 0 < calibration["collect_peak_rss_gb"] <= memory["estimated_peak_gb"] <= memory["available_gb"]
    assert memory["peak_rss_gb"] >= calibration["collect_peak_rss_gb"]


def test_int8_folder_generates(int8_dir, image_file):
    pipeline, manifest = load_ov_pipeline(int8_dir)
    frames = generate(pipeline, load_image(image_file), FAST.resolved(manifest["generation_defaults"]), show_progress=False).frames
    assert frames.shape == (4, 64, 64, 3) and frames.std() > 0


@pytest.mark.slow  # about 50 and 35 s: `pytest -m slow`; w8 runs by default (below)
@pytest.mark.parametrize("mode,unet_class", [("hybrid", "int8"), ("w4", "int4-weights")])
def test_other_modes(tiny_ir_fp16, calib_dir, tmp_path, image_file, mode, unet_class):
    quantize(tiny_ir_fp16, tmp_path / mode, str(calib_dir), options=QuantizeOptions(mode=mode), samples=4, calib_settings=FAST)
    check_mode(tmp_path / mode, mode, unet_class, image_file)


def test_w8_mode(w8_dir, image_file):
    check_mode(w8_dir, "w8", "int8-weights", image_file)


def check_mode(folder, mode: str, unet_class: str, image_file) -> None:
    """The quantized UNet executes in `unet_class`, is smaller, and the folder generates."""
    manifest = read_manifest(folder)
    unet = manifest["quantization"]["components"]["unet"]
    executed = unet["fusion"]["executed"]
    assert any(counts.get(unet_class, 0) > 0 for counts in executed.values()), executed
    assert unet["bytes_after"] < unet["bytes_before"]
    if mode in ("w8", "w4"):  # weight-only: nncf.compress_weights takes no data, so no calibration run
        assert unet["calibration_samples"] == 0 and manifest["quantization"]["calibration"]["used_for_calibration"] == 0
    if mode == "hybrid":  # convolutions int8; attention and linear layers int8 weights on float activations
        assert executed["Convolution"].get("int8", 0) > 0
        assert executed["FullyConnected"].get("int8-weights", 0) > executed["FullyConnected"].get("int8", 0)
    pipeline, _ = load_ov_pipeline(folder)
    assert generate(pipeline, load_image(image_file), FAST.resolved(manifest["generation_defaults"]), show_progress=False).frames.std() > 0


def test_calibration_from_saved_dataset(tmp_path):
    import datasets

    images = synthetic_images(3)
    dataset = datasets.Dataset.from_dict({"image": images, "label": [0, 1, 2]}).cast_column("image", datasets.Image())
    dataset.save_to_disk(str(tmp_path / "ds"))
    found = load_calibration_images(str(tmp_path / "ds"))
    assert len(found.images) == 3 and found.skipped == 0
    assert np.array_equal(np.asarray(found.images[1]), np.asarray(images[1]))


def test_calibration_hub_dataset_offline_is_one_line():
    with pytest.raises(SvdtoolError, match="could not load dataset"):
        load_calibration_images("hf:no-such-user/no-such-dataset:train:image")


@pytest.mark.parametrize("setup,message", [("empty", "no readable images"), ("bad", "no readable images"),
                                           ("missing", "no such folder")])
def test_bad_calibration_sources(tmp_path, tiny_ir_fp16, setup, message):
    folder = tmp_path / "calib"
    if setup != "missing":
        folder.mkdir()
    if setup == "bad":
        (folder / "a.png").write_bytes(b"\\x89PNG broken")
    result = CliRunner().invoke(app, ["quantize", str(tiny_ir_fp16), "--calib", str(folder), "-o", str(tmp_path / "out")])
    assert result.exit_code == 2 and message in " ".join(result.output.split()) and "Traceback" not in result.output
    assert not (tmp_path / "out").exists()


def test_requantizing_is_refused(int8_dir, calib_dir, tmp_path):
    with pytest.raises(SvdtoolError, match="already quantized"):
        quantize(int8_dir, tmp_path / "again", str(calib_dir))


def test_inspect_cli(tiny_ir_fp32, int8_dir):
    fp = CliRunner().invoke(app, ["inspect", str(tiny_ir_fp32), "--json"])
    assert fp.exit_code == 0
    assert json.loads(fp.output[fp.output.index("{"):])["unet"]["conv_linear_int8"] == 0
    quantized = CliRunner().invoke(app, ["inspect", str(int8_dir)])
    assert quantized.exit_code == 0 and "unet" in quantized.output


def test_stepwise_unet_quantization_equals_nncf_quantize(tiny_ir_fp16, tmp_path):
    """The memory-saving path (nncf's pipeline run step by step, statistics collected a few points per pass, the model
    saved and read back between steps) gives nncf.quantize's UNet: bit for bit when the model is kept at f32 in between,
    and as close to the FP UNet when it goes back to fp16 between the steps (what an fp16 IR gets)."""
    import nncf
    import openvino as ov

    from svdtool.convert import OV_XML
    from svdtool.quantize.modes import UNET_FLOAT_LAYERS, quantize_unet_stepwise, unet_int8_parameters

    xml = tiny_ir_fp16 / "unet" / OV_XML
    model = ov.Core().read_model(xml)
    rng = np.random.default_rng(0)
    width = model.input("encoder_hidden_states").get_partial_shape()[-1].get_length()
    dims = {"sample": (2, 2, 8, 8, 8), "timestep": (), "encoder_hidden_states": (2, 1, width), "added_time_ids": (2, 3)}
    samples = [{name: rng.standard_normal(shape).astype(np.float32) for name, shape in dims.items()} for _ in range(3)]
    options, layers = QuantizeOptions(), list(UNET_FLOAT_LAYERS)
    models = [nncf.quantize(model, nncf.Dataset(samples), **unet_int8_parameters(len(samples), options, layers)),
              quantize_unet_stepwise(xml, samples, options, layers, tmp_path / "f32", compress_to_fp16=False, statistics_per_pass=40),
              quantize_unet_stepwise(xml, samples, options, layers, tmp_path / "f16", compress_to_fp16=True)]
    fp, whole, exact, rounded = (ov.Core().compile_model(m, "CPU", {"INFERENCE_PRECISION_HINT": "f32"})(samples[0])[0]
                                 for m in (model, *models))
    assert np.array_equal(whole, exact)

    def snr(x: np.ndarray) -> float:
        return float(10 * np.log10(np.mean(fp**2) / np.mean((fp - x) ** 2)))

    assert abs(snr(rounded) - snr(whole)) < 1.5, (snr(rounded), snr(whole))  # as close to the FP UNet
    assert sum(op.get_type_name() == "FakeQuantize" for op in models[1].get_ops()) > 10


def test_quantize_refuses_what_memory_cannot_hold(tiny_ir_fp16, calib_dir, tmp_path, monkeypatch):
    """The peak is estimated from the IR sizes before any work; beyond the available memory: one line, exit 2, nothing
    written. The estimate is recorded with the measured peak when it fits."""
    import psutil

    from svdtool.quantize.headroom import estimate_peak_gb

    needed = estimate_peak_gb(tiny_ir_fp16, "int8")
    assert needed > 1.5  # more than the libraries alone
    real = psutil.virtual_memory()
    monkeypatch.setattr(psutil, "virtual_memory", lambda: real._replace(available=int((needed - 0.5) * 1e9)))
    result = CliRunner().invoke(app, ["quantize", str(tiny_ir_fp16), "--calib", str(calib_dir), "-o", str(tmp_path / "q")])
    assert result.exit_code == 2 and "needs about" in result.output and "Traceback" not in result.output
    assert "calibration" not in result.output.lower() and not (tmp_path / "q").exists()
