import json

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from conftest import FAST, synthetic_images
from svdtool.cli import app
from svdtool.errors import SvdtoolError
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
    assert components["unet"]["bytes_after"] < components["unet"]["bytes_before"]
    quality = manifest["quantization"]["quality_check"]
    assert quality["images"] == 2 and 10 < quality["mean"]["psnr_mean"] <= 100
    assert {"temporal_mse", "sharpness", "brightness", "ssim_mean"} <= set(quality["mean"])


def test_int8_folder_generates(int8_dir, image_file):
    pipeline, manifest = load_ov_pipeline(int8_dir)
    frames = generate(pipeline, load_image(image_file), FAST.resolved(manifest["generation_defaults"]), show_progress=False).frames
    assert frames.shape == (4, 64, 64, 3) and frames.std() > 0


@pytest.mark.parametrize("mode,unet_class", [("hybrid", "int8"), ("w8", "int8-weights"), ("w4", "int4-weights")])
def test_other_modes(tiny_ir_fp16, calib_dir, tmp_path, image_file, mode, unet_class):
    manifest = quantize(tiny_ir_fp16, tmp_path / mode, str(calib_dir), options=QuantizeOptions(mode=mode), samples=4,
                        calib_settings=FAST)
    unet = manifest["quantization"]["components"]["unet"]
    executed = unet["fusion"]["executed"]
    assert any(counts.get(unet_class, 0) > 0 for counts in executed.values()), executed
    assert unet["bytes_after"] < unet["bytes_before"]
    pipeline, _ = load_ov_pipeline(tmp_path / mode)
    assert generate(pipeline, load_image(image_file), FAST.resolved(manifest["generation_defaults"]), show_progress=False).frames.std() > 0


def test_hybrid_keeps_matmul_activations_float(tiny_ir_fp16, calib_dir, tmp_path):
    manifest = quantize(tiny_ir_fp16, tmp_path / "h", str(calib_dir), options=QuantizeOptions(mode="hybrid"), samples=4,
                        calib_settings=FAST)
    executed = manifest["quantization"]["components"]["unet"]["fusion"]["executed"]
    assert executed["Convolution"].get("int8", 0) > 0
    assert executed["FullyConnected"].get("int8-weights", 0) > executed["FullyConnected"].get("int8", 0)


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
