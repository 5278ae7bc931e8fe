"""The shipped svd-mini model, its procedural training data, and its training script."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image
from scipy.stats import spearmanr

from svdtool.models import BUILTIN_MODELS, generation_defaults, load_pipeline, resolve_source
from svdtool.models.scenes import MAX_FLOW, render_clips, to_uint8
from svdtool.models.train_mini import main as train_mini
from svdtool.runtime import GenerationSettings, generate
from svdtool.validate.metrics import grayscale, video_metrics, warp_error_and_motion

EXAMPLE = BUILTIN_MODELS["mini"].folder.parents[1] / "examples" / "chelsea.jpg"


def test_mini_is_builtin_trained_and_small():
    source = resolve_source("mini")
    assert source.kind == "builtin" and not source.random_weights and "trained" in source.describe()["description"]
    weights = sum(p.stat().st_size for p in BUILTIN_MODELS["mini"].folder.rglob("*.safetensors"))
    assert weights <= 100 * 10**6  # issue #12's bound for a model that ships inside the package
    defaults = generation_defaults(source)
    assert (defaults.num_frames, defaults.height, defaults.width) == (8, 128, 128)


@pytest.fixture(scope="module")
def mini_torch():
    return load_pipeline("mini")  # HF_HUB_OFFLINE=1 (conftest): loads from the package folder only


def _video(pipeline, bucket: int, steps: int = 8) -> np.ndarray:
    settings = GenerationSettings(num_frames=8, height=128, width=128, num_inference_steps=steps, motion_bucket_id=bucket)
    return generate(pipeline, Image.open(EXAMPLE), settings.resolved(BUILTIN_MODELS["mini"].defaults), show_progress=False).frames


def test_mini_moves_more_with_higher_motion_bucket(mini_torch):
    still, moving = video_metrics(_video(mini_torch, 1)), video_metrics(_video(mini_torch, 255))
    assert moving["motion"] > 3 * still["motion"], (still, moving)


def test_mini_is_far_steadier_than_random_tiny(mini_torch, tiny_torch):
    mini = video_metrics(_video(mini_torch, 127))
    tiny = video_metrics(_video(tiny_torch, 127))
    assert mini["temporal_mse"] < tiny["temporal_mse"] / 10 and mini["warp_error"] < tiny["warp_error"] / 3, (mini, tiny)


def test_scenes_are_reproducible_and_labelled_by_motion():
    first, again = render_clips(7, 24, 8), render_clips(7, 24, 8)
    assert torch.equal(first.frames, again.frames) and torch.equal(first.motion_bucket_id, again.motion_bucket_id)
    assert first.frames.shape == (24, 8, 3, 128, 128) and first.frames.abs().max() <= 1
    assert int(first.motion_bucket_id.min()) >= 0 and int(first.motion_bucket_id.max()) <= 255
    expected = (first.mean_flow / MAX_FLOW).clamp(0, 1) * 255
    assert torch.allclose(first.motion_bucket_id.float(), expected.round())
    measured = [warp_error_and_motion(grayscale(to_uint8(clip)))[1] for clip in first.frames]
    assert spearmanr(measured, first.motion_bucket_id.numpy()).statistic > 0.5  # Farneback underestimates flat textures


def test_training_script_resumes_from_the_shipped_model(tmp_path):
    out = tmp_path / "mini"
    train_mini(out=out, state=tmp_path / "state", init=BUILTIN_MODELS["mini"].folder, vae_minutes=0.01, unet_minutes=0.01,
               vae_batch=1, vae_crop=64, unet_batch=1, lr=1e-4, vae_lr=1e-4, decoder_only=True, latent_channels=4, workers=0,
               pool_clips=4)
    trained, shipped = load_pipeline(str(out)), load_pipeline("mini")
    assert trained.vae.config.scaling_factor == shipped.vae.config.scaling_factor  # decoder-only keeps the latents
    assert torch.equal(trained.vae.encoder.conv_in.weight, shipped.vae.encoder.conv_in.weight)
    changed = trained.image_encoder.visual_projection.weight, shipped.image_encoder.visual_projection.weight
    assert not torch.equal(*changed)  # the UNet is saved as its EMA, which one step barely moves
    assert (tmp_path / "state" / "state.pt").is_file() and isinstance(json.loads((out / "loss.json").read_text()), list)
    steps = json.loads((out / "training.json").read_text())["steps"]
    # a second call resumes from the state, optimisers and EMA included (the EMA is loaded to the CPU, moved to the device)
    train_mini(out=out, state=tmp_path / "state", init=None, vae_minutes=0.01, unet_minutes=0.01, vae_batch=1, vae_crop=64,
               unet_batch=1, lr=1e-4, vae_lr=1e-4, decoder_only=True, latent_channels=4, workers=0, pool_clips=4)
    resumed = json.loads((out / "training.json").read_text())["steps"]
    assert resumed["vae"] > steps["vae"] and resumed["unet"] > steps["unet"]


def test_a_cached_ir_of_other_mini_weights_is_exported_again(tmp_path, monkeypatch):
    """`generate -m mini` exports the shipped model into svdtool's cache once; after an upgrade that ships new weights
    the cached IR (its manifest records the weights' sha256) is exported again instead of silently used."""
    import svdtool.convert
    from svdtool.outputs import MANIFEST_NAME
    from svdtool.runtime.session import named_model_ir

    monkeypatch.setenv("SVDTOOL_CACHE", str(tmp_path))
    exports = []
    monkeypatch.setattr(svdtool.convert, "export", lambda source, folder, **options: exports.append((source, options)))
    folder = tmp_path / "ir" / "mini-fp16"
    folder.mkdir(parents=True)
    source = resolve_source("mini").describe()
    for recorded, exported in ((source, 0), ({**source, "weights_sha256": "0" * 64}, 1), ({"kind": "builtin", "ref": "mini"}, 2)):
        (folder / MANIFEST_NAME).write_text(json.dumps({"source": recorded}))
        assert named_model_ir("mini") == folder and len(exports) == exported
    assert exports[-1] == ("mini", {"overwrite": True, "cache_branches": ()})
