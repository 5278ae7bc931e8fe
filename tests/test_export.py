import importlib
import json

import openvino as ov
import pytest

from svdtool.convert import EXPORTED, ExportShape, export
from svdtool.errors import SvdtoolError
from svdtool.outputs import sha256_file, verify_files

export_module = importlib.import_module("svdtool.convert.export")  # the module, not the function

LAYOUT = ["model_index.json", "svdtool.json", "scheduler/scheduler_config.json", "feature_extractor/preprocessor_config.json"]


def test_layout_matches_optimum_intel(tiny_ir_fp32):
    for name in EXPORTED:
        for file in ("openvino_model.xml", "openvino_model.bin", "config.json"):
            assert (tiny_ir_fp32 / name / file).is_file(), f"{name}/{file}"
    for file in LAYOUT:
        assert (tiny_ir_fp32 / file).is_file()
    index = json.loads((tiny_ir_fp32 / "model_index.json").read_text())
    assert index["_class_name"] == "StableVideoDiffusionPipeline"


def test_manifest_explains_the_folder(tiny_ir_fp32):
    manifest = json.loads((tiny_ir_fp32 / "svdtool.json").read_text())
    assert manifest["source"] == {"kind": "preset", "ref": "tiny", "random_weights": True,
                                  "description": manifest["source"]["description"], "sampler": "euler"}
    assert manifest["sampler"]["scheduler"] == "EulerDiscreteScheduler" and "num_inference_steps" not in manifest["sampler"]
    assert manifest["weights"] == "fp32" and manifest["shape"]["static"] is False
    assert manifest["generation_defaults"]["num_frames"] == 6
    assert {"openvino", "torch", "diffusers"} <= set(manifest["versions"])
    assert set(manifest["components"]) == set(EXPORTED)
    assert manifest["components"]["unet"]["inputs"]["sample"] == "[?,?,8,?,?]"
    for name, entry in manifest["files"].items():
        assert sha256_file(tiny_ir_fp32 / name) == entry["sha256"]
    verify_files(tiny_ir_fp32, manifest, checksums=True)


def test_fp16_weights_halve_the_bin(tiny_ir_fp32, tiny_ir_fp16):
    fp32 = (tiny_ir_fp32 / "unet/openvino_model.bin").stat().st_size
    fp16 = (tiny_ir_fp16 / "unet/openvino_model.bin").stat().st_size
    assert fp16 < 0.6 * fp32


def test_interrupted_export_leaves_nothing(tmp_path, monkeypatch):
    calls = []
    original = export_module._save_component

    def fail_on_the_vae_decoder(folder, *args):  # two components are written by then (the UNet would be a third)
        calls.append(folder.name)
        if folder.name == "vae_decoder":
            raise KeyboardInterrupt
        return original(folder, *args)

    monkeypatch.setattr(export_module, "_save_component", fail_on_the_vae_decoder)
    with pytest.raises(KeyboardInterrupt):
        export("tiny", tmp_path / "out")
    assert calls == ["image_encoder", "vae_encoder", "vae_decoder"]
    assert list(tmp_path.iterdir()) == []


def test_existing_output_needs_overwrite(tiny_ir_fp32, tmp_path):
    target = tmp_path / "out"
    target.mkdir()
    (target / "keep.txt").write_text("user data")
    with pytest.raises(SvdtoolError, match="--overwrite"):
        export("tiny", target)
    assert (target / "keep.txt").read_text() == "user data"


def test_static_export_bakes_the_shape(tmp_path):
    manifest = export("tiny", tmp_path / "static", shape=ExportShape(128, 64, 3, static=True))
    assert manifest["shape"] == {"static": True, "height": 128, "width": 64, "num_frames": 3, "batch_size": 1, "vae_scale": 8}
    unet = ov.Core().read_model(tmp_path / "static/unet/openvino_model.xml")
    assert unet.input("sample").get_partial_shape() == ov.PartialShape([2, 3, 8, 16, 8])


@pytest.mark.parametrize("height,width", [(100, 64), (64, 0), (72, 64)])
def test_impossible_shapes(tmp_path, height, width):
    with pytest.raises(SvdtoolError, match="multiple of 16"):  # tiny: VAE scale 8 x a two-level UNet
        export("tiny", tmp_path / "x", shape=ExportShape(height, width, 2, static=True))
    assert not (tmp_path / "x").exists()


def test_via_onnx_keeps_onnx_and_matches_pytorch(tmp_path, tiny_torch, image_file):
    from conftest import psnr
    from svdtool.runtime import GenerationSettings, generate, load_image, load_ov_pipeline

    manifest = export("tiny", tmp_path / "onnx-ir", weights="fp32", via="onnx")
    assert manifest["via"] == "onnx"
    for name in EXPORTED:
        assert (tmp_path / "onnx-ir" / "onnx" / name / "model.onnx").is_file()
    pipeline, manifest = load_ov_pipeline(tmp_path / "onnx-ir", precision="f32")
    settings = GenerationSettings().resolved(manifest["generation_defaults"])
    image = load_image(image_file)
    ov_frames = generate(pipeline, image, settings, show_progress=False).frames
    assert psnr(ov_frames, generate(tiny_torch, image, settings, show_progress=False).frames) >= 60
