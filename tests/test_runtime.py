import numpy as np
import pytest

from conftest import psnr
from svdtool.errors import SvdtoolError
from svdtool.runtime import GenerationSettings, OVStableVideoDiffusionPipeline, generate, load_image, load_ov_pipeline

DEFAULT = GenerationSettings()
SECOND = GenerationSettings(num_frames=3, height=128, width=192, num_inference_steps=3, decode_chunk_size=2, seed=7)


@pytest.fixture(scope="module")
def ov_f32(tiny_ir_fp32):
    pipeline, manifest = load_ov_pipeline(tiny_ir_fp32, precision="f32")
    return pipeline, manifest


@pytest.mark.parametrize("settings", [DEFAULT, SECOND], ids=["default-64x64x6", "128x192x3-chunk2"])
def test_parity_fp32_ir_vs_pytorch(ov_f32, tiny_torch, image_file, settings):
    pipeline, manifest = ov_f32
    settings = settings.resolved(manifest["generation_defaults"])
    image = load_image(image_file)
    ov_frames = generate(pipeline, image, settings, show_progress=False).frames
    torch_frames = generate(tiny_torch, image, settings, show_progress=False).frames
    assert ov_frames.shape == (settings.num_frames, settings.height, settings.width, 3)
    assert psnr(ov_frames, torch_frames) >= 60


def test_default_precision_stays_close(tiny_ir_fp16, tiny_torch, image_file):
    """fp16 weights and the plugin's default precision (bf16 on AMX CPUs) stay close to fp32 PyTorch."""
    pipeline, manifest = load_ov_pipeline(tiny_ir_fp16)
    settings = DEFAULT.resolved(manifest["generation_defaults"])
    image = load_image(image_file)
    ov_frames = generate(pipeline, image, settings, show_progress=False).frames
    assert psnr(ov_frames, generate(tiny_torch, image, settings, show_progress=False).frames) >= 35


def test_seed_changes_the_video(ov_f32, image_file):
    pipeline, manifest = ov_f32
    image = load_image(image_file)
    a = generate(pipeline, image, DEFAULT.resolved(manifest["generation_defaults"]), show_progress=False).frames
    b = generate(pipeline, image, GenerationSettings(seed=1).resolved(manifest["generation_defaults"]), show_progress=False).frames
    assert psnr(a, b) < 40


def test_stage_timings_are_recorded(ov_f32, image_file):
    pipeline, manifest = ov_f32
    settings = SECOND.resolved(manifest["generation_defaults"])
    result = generate(pipeline, load_image(image_file), settings, show_progress=False)
    assert result.timings["unet_calls"] == settings.num_inference_steps
    assert result.timings["vae_decoder_calls"] == 2  # 3 frames in chunks of 2
    assert 0 < result.timings["unet"] < result.timings["total"]


def test_reshape_to_static_and_back(tiny_ir_fp32, image_file):
    pipeline, manifest = load_ov_pipeline(tiny_ir_fp32, precision="f32")
    pipeline.reshape(batch_size=1, height=64, width=128, num_frames=4)
    assert (pipeline.height, pipeline.width, pipeline.num_frames) == (64, 128, 4)
    settings = GenerationSettings(num_frames=4, height=64, width=128).resolved(manifest["generation_defaults"])
    assert generate(pipeline, load_image(image_file), settings, show_progress=False).frames.shape == (4, 64, 128, 3)
    with pytest.raises(SvdtoolError, match="static width of 128"):
        generate(pipeline, load_image(image_file), GenerationSettings().resolved(manifest["generation_defaults"]))
    pipeline.reshape(-1, -1, -1)
    assert pipeline.num_frames == -1 and pipeline.height == -1


def test_save_pretrained_round_trip(ov_f32, tmp_path, image_file):
    pipeline, manifest = ov_f32
    pipeline.save_pretrained(tmp_path / "saved")
    reloaded = OVStableVideoDiffusionPipeline.from_pretrained(tmp_path / "saved", ov_config={"INFERENCE_PRECISION_HINT": "f32"})
    settings = DEFAULT.resolved(manifest["generation_defaults"])
    image = load_image(image_file)
    a = generate(pipeline, image, settings, show_progress=False).frames
    b = generate(reloaded, image, settings, show_progress=False).frames
    assert np.array_equal(a, b)


def test_model_cache_dir_and_to(tiny_ir_fp32, tmp_path, image_file):
    pipeline, manifest = load_ov_pipeline(tiny_ir_fp32, cache_dir=tmp_path / "cache", compile=False)
    pipeline.to("CPU").compile()
    assert any((tmp_path / "cache").iterdir())
    assert pipeline.image_encoder.request is not None


@pytest.mark.parametrize("field,value", [("height", 100), ("width", 0), ("num_frames", 0), ("num_inference_steps", 0)])
def test_impossible_settings(field, value):
    with pytest.raises(SvdtoolError):
        GenerationSettings(**{field: value}).resolved({"num_frames": 6, "height": 64, "width": 64, "num_inference_steps": 4,
                                                       "fps": 7, "motion_bucket_id": 127, "noise_aug_strength": 0.02,
                                                       "min_guidance_scale": 1.0, "max_guidance_scale": 3.0})
