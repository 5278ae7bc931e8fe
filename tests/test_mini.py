"""The shipped svd-mini model, its procedural training data, and its training script."""

from __future__ import annotations

import contextlib
import importlib.util
import json
import shutil

import numpy as np
import pytest
import torch
from diffusers import AutoencoderKLTemporalDecoder
from PIL import Image
from scipy.stats import spearmanr
from typer.testing import CliRunner

from svdtool.models import BUILTIN_MODELS, generation_defaults, load_pipeline, resolve_source
from svdtool.models.scenes import MAX_FLOW, MOSAIC_SHARE, SceneMix, photo_bank, render_clips, to_uint8
from svdtool.models.scenes import _camera_flow, _camera_strength
from svdtool.models.fit_encoder import app as fit_encoder_app
from svdtool.models.fit_encoder import fit_latents
from svdtool.models.train_mini import app as train_mini_app
from svdtool.models.train_mini import _train, grow_vae, lab_chroma, widen_vae
from svdtool.models.train_mini import main as train_mini
from svdtool.runtime import GenerationSettings, generate
from svdtool.validate.metrics import colourfulness, grayscale, psnr_per_frame, video_metrics, warp_error_and_motion

EXAMPLE = BUILTIN_MODELS["mini"].folder.parents[1] / "examples" / "chelsea.jpg"
MEAN_RADIUS = float(np.hypot(*(np.mgrid[:128, :128] - 63.5)).mean())  # mean distance of a 128 px frame's pixels from
# its centre: a zoom of log-rate r per frame moves them r * MEAN_RADIUS px/frame on average


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


def _video(pipeline, bucket: int, steps: int = 8, image: Image.Image | None = None) -> np.ndarray:
    settings = GenerationSettings(num_frames=8, height=128, width=128, num_inference_steps=steps, motion_bucket_id=bucket)
    image = image or Image.open(EXAMPLE)
    return generate(pipeline, image, settings.resolved(BUILTIN_MODELS["mini"].defaults), show_progress=False).frames


@pytest.fixture(scope="module")
def mini_goals():
    """models/training/mini_goals.py, whose colour measures the goals table and these tests share."""
    spec = importlib.util.spec_from_file_location("mini_goals", EXAMPLE.parents[1] / "models" / "training" / "mini_goals.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("name,steps", [("chelsea", 8), ("coffee", 8), ("grace_hopper", 25)])
def test_mini_video_starts_at_the_photo_keeps_its_colour_and_moves_the_scene(mini_torch, mini_goals, name, steps):
    """Issue #12's goals on held-out photos at bucket 127, as models/training/mini_goals.py measures them: frame 0 is the
    conditioning photo (>= 22 dB, as the pipeline resizes it); every frame keeps the colourfulness of the photo as that
    frame's camera shows it within 15 %; the last frame, warped back by its camera motion, keeps SSIM >= 0.7 with frame
    0 where it still shows it (v1: 14-19 dB, x0.44-0.76, SSIM 0.32-0.46; v7 0.77-0.81 here). The issue's wording of
    the last two (against the whole photo; warped pixel by pixel) is failed by a perfect zoom (the test below).
    grace_hopper at 25 steps: guidance ramped to SVD's 3.0 reddened her face to x1.16 there on v6, which fails this,
    where svd-mini's default 2.5 kept x1.12 (v7: x1.09, and x1.14 at 3.0; at 8 steps both stay within)."""
    image = Image.open(mini_goals.PHOTOS[name]).convert("RGB")
    photo = mini_goals.to_uint8(mini_goals.held_out_pixels()[name])  # as the pipeline resizes it
    frames = _video(mini_torch, 127, steps, image=image)
    assert psnr_per_frame(frames[:1], photo[None])[0] >= 22
    motions = mini_goals.camera_motions(frames)
    ratios = mini_goals.colour_in_view(frames, photo, motions)
    assert all(abs(ratio - 1) <= 0.15 for ratio in ratios), ratios
    assert mini_goals.camera_warped_ssim(frames, motions[-1]) >= 0.7


def test_mini_vae_keeps_unseen_photos_and_their_colour(mini_goals):
    """Issue #12's VAE goals on the five held-out photos (bench/heldout), PyTorch fp32: >= 26 dB on average, and each
    photo's colourfulness within 10 %. v5's decoder failed the second (china x0.846): it pulled faint colour to grey."""
    summary, _ = mini_goals.check(BUILTIN_MODELS["mini"].folder, "cpu")
    assert summary["mean_psnr"] >= 26, summary
    assert all(abs(row["colourfulness_ratio"] - 1) <= 0.10 for row in summary["photos"].values()), summary["photos"]


def test_mini_moves_more_with_higher_motion_bucket(mini_torch):
    still, moving = video_metrics(_video(mini_torch, 1)), video_metrics(_video(mini_torch, 255))
    assert moving["motion"] > 3 * still["motion"], (still, moving)


def test_mini_is_far_steadier_than_random_tiny(mini_torch, tiny_torch):
    mini = video_metrics(_video(mini_torch, 127))
    tiny = video_metrics(_video(tiny_torch, 127))
    # temporal MSE counts the intended motion too (v2 zooms at ~1.9 px/frame here, v1 moved 0.4); warp error removes it
    assert mini["temporal_mse"] < tiny["temporal_mse"] / 5 and mini["warp_error"] < tiny["warp_error"] / 3, (mini, tiny)


def test_mini_lcm_ships_only_its_unet_and_samples_in_four_steps(mini_torch):
    """mini-lcm (issue #46): its own UNet and consistency scheduler, mini's VAE and image encoder files, and defaults
    of 4 steps without guidance (distilled in)."""
    source = resolve_source("mini-lcm")
    assert source.kind == "builtin" and source.sampler_name == "consistency"
    own = sorted(p.relative_to(BUILTIN_MODELS["mini-lcm"].folder).as_posix() for p in BUILTIN_MODELS["mini-lcm"].folder.rglob("*.safetensors"))
    assert own == ["unet/diffusion_pytorch_model.safetensors"]
    defaults = generation_defaults(source)
    assert (defaults.num_inference_steps, defaults.min_guidance_scale, defaults.max_guidance_scale) == (4, 1.0, 1.0)
    assert generation_defaults(resolve_source("mini", sampler="consistency")).max_guidance_scale == 1.2  # the sampler's own
    student = load_pipeline(source)
    assert type(student.scheduler).__name__ == "SVDConsistencyScheduler"
    assert all(torch.equal(a, b) for a, b in zip(student.vae.state_dict().values(), mini_torch.vae.state_dict().values()))
    assert not torch.equal(student.unet.conv_in.weight, mini_torch.unet.conv_in.weight)
    assert source.describe()["weights_sha256"] != resolve_source("mini").describe()["weights_sha256"]


@pytest.fixture(scope="module")
def mini_lcm_torch():
    return load_pipeline("mini-lcm")


def test_mini_lcm_meets_the_goals_in_four_steps(mini_lcm_torch, mini_goals):
    """Issue #46's student goals on a held-out photo at its defaults (bench/results/mini_goals_lcm.md has all five):
    frame 0 >= 22 dB, colour in view within 15 %, the camera-warped SSIM >= 0.7, and more motion at a higher bucket.
    svd-mini's own UNet under this sampler (no distillation) passes these too: the distillation's gain, sharpness and
    temporal MSE within 20 % of the teacher's, is a five-photo mean that mini_goals_lcm.md records."""
    defaults = generation_defaults(resolve_source("mini-lcm"))
    image = Image.open(mini_goals.PHOTOS["flower"]).convert("RGB")
    photo = mini_goals.to_uint8(mini_goals.held_out_pixels()["flower"])

    def video(bucket: int) -> np.ndarray:
        settings = GenerationSettings(motion_bucket_id=bucket).resolved(defaults)
        return generate(mini_lcm_torch, image, settings, show_progress=False).frames

    frames = video(127)
    assert psnr_per_frame(frames[:1], photo[None])[0] >= 22
    motions = mini_goals.camera_motions(frames)
    assert all(abs(ratio - 1) <= 0.15 for ratio in mini_goals.colour_in_view(frames, photo, motions))
    assert mini_goals.camera_warped_ssim(frames, motions[-1]) >= 0.7
    assert video_metrics(video(255))["motion"] > 3 * video_metrics(video(1))["motion"]


@pytest.mark.parametrize("motion", ["random", "zoom"])
def test_scenes_are_reproducible_and_labelled_by_motion(motion):
    first, again = render_clips(7, 24, 8, motion=motion), render_clips(7, 24, 8, motion=motion)
    assert torch.equal(first.frames, again.frames) and torch.equal(first.motion_bucket_id, again.motion_bucket_id)
    assert first.frames.shape == (24, 8, 3, 128, 128) and first.frames.abs().max() <= 1
    assert int(first.motion_bucket_id.min()) >= 0 and int(first.motion_bucket_id.max()) <= 255
    expected = (first.mean_flow / MAX_FLOW).clamp(0, 1) * 255
    assert torch.allclose(first.motion_bucket_id.float(), expected.round())
    if motion == "random":  # Farneback sees little of a zoom over flat textures: the zoom test below checks those clips
        measured = [warp_error_and_motion(grayscale(to_uint8(clip)))[1] for clip in first.frames]
        assert spearmanr(measured, first.motion_bucket_id.numpy()).statistic > 0.5  # Farneback underestimates flat textures


@pytest.mark.parametrize("mix", [SceneMix(mosaics=1.0), SceneMix(leaves=1.0), SceneMix(casts=1.0)])
def test_other_scene_mixes_are_drawn_only_when_asked(mix):
    """--vae-mosaics, --vae-leaves and --colour-casts: the default mix renders the stream earlier runs trained on;
    another mix renders other, still reproducible, clips."""
    photos = photo_bank()
    default = render_clips(5, 8, 8, photos).frames
    assert torch.equal(render_clips(5, 8, 8, photos, mix=SceneMix(MOSAIC_SHARE, 0.0)).frames, default)
    other = render_clips(5, 8, 8, photos, mix=mix).frames
    assert torch.equal(render_clips(5, 8, 8, photos, mix=mix).frames, other) and not torch.equal(other, default)


def test_colour_casts_tint_grey_photos_and_keep_their_brightness():
    """--colour-casts: the grey photos' clips take faint tints, from none to clear (mean Lab chroma 0-30), their
    brightness kept; the clips that are not photos (textures, patterns) are left as they were."""
    from svdtool.validate.metrics import colourfulness

    photos = photo_bank()
    grey = photos[(photos - photos.mean(1, keepdim=True)).abs().mean((1, 2, 3)) < 0.01]
    plain, cast = (render_clips(3, 32, 1, grey, motion="zoom", mix=mix).frames[:, 0] for mix in (SceneMix(), SceneMix(casts=1.0)))
    photo = (plain - plain.mean(1, keepdim=True)).abs().amax((1, 2, 3)) < 1e-6  # grey crops and mosaics; the rest coloured
    assert 5 <= int(photo.sum()) < 32
    chroma = np.array([colourfulness(to_uint8(clip[None])) for clip in cast[photo]])
    assert chroma.max() < 30 and np.mean(chroma > 2) > 0.6 and chroma.min() < 8, chroma.round(1)
    assert torch.allclose(cast[photo].mean((1, 2, 3)), plain[photo].mean((1, 2, 3)), atol=0.03)  # clips' brightness
    assert torch.equal(cast[~photo], plain[~photo])


def test_dead_leaves_are_colourful_occluding_shapes_of_every_size():
    """Dead-leaves clips: colour from the colour photos (not the grey ones), and edges at every scale -- the share of
    their variance in the finest detail close to that of whole photos resized to the clip (0.049; the leaves 0.045,
    photo crops 0.029 and the noise textures 0.022)."""
    photos = photo_bank()
    leaves = render_clips(11, 6, 2, photos, motion="zoom", mix=SceneMix(leaves=1.0)).frames[:, 0]
    chroma = (leaves - leaves.mean(1, keepdim=True)).abs().mean()
    assert chroma > 0.05

    def fine_share(frames):  # energy of the difference from a 2x-blurred copy, over the total deviation from the mean
        blurred = torch.nn.functional.avg_pool2d(frames, 3, 1, 1)
        return float((frames - blurred).pow(2).mean() / (frames - frames.mean((2, 3), keepdim=True)).pow(2).mean())

    whole_photos = torch.nn.functional.interpolate(photos, size=leaves.shape[-2:], mode="bilinear", antialias=True)
    assert fine_share(leaves) > 0.7 * fine_share(whole_photos)
    assert leaves.std(dim=(2, 3)).mean() > 0.2  # a scene is not one flat colour


def test_zoom_scenes_zoom_in_on_the_centre():
    """motion="zoom" (svd-mini v2's training data): no shape moves on its own and the camera only magnifies, so the
    centre stays put while every frame shows less of the scene than the one before (finer detail spreads out)."""
    clips = render_clips(3, 16, 8, motion="zoom")
    moving = clips.motion_bucket_id > 64
    centre = clips.frames[moving][..., 60:68, 60:68]
    assert (centre[:, -1] - centre[:, 0]).abs().mean() < 0.25 * (clips.frames[moving][:, -1] - clips.frames[moving][:, 0]).abs().mean()
    detail = clips.frames[moving].diff(dim=-1).abs().mean(dim=(2, 3, 4))  # (clips, frames)
    assert bool((detail[:, -1] < detail[:, 0]).all())


def test_zoom_scenes_reach_every_motion_bucket():
    """A zoom's strength is aimed by the whole clip's mean flow: aimed by its first step, zoom clips never passed
    bucket 196. Aimed by the whole clip, they reach 255."""
    camera = torch.tensor([[0.0, 0.0, 0.02, 0.0]]).repeat(3, 1)  # (direction, pan, zoom, spin): a zoom in
    target = torch.tensor([0.5, 2.0, MAX_FLOW])
    reached = _camera_flow(camera, _camera_strength(camera, target, 8), 8).mean(dim=(1, 2, 3))
    assert torch.allclose(reached, target, rtol=0.01), reached
    assert int(render_clips(2, 64, 8, motion="zoom").motion_bucket_id.max()) >= 230
    still = render_clips(2, 4, 1, motion="zoom").frames  # one frame (fit_encoder's) has no steps to aim by
    assert bool((still.std(dim=(-2, -1)) > 1e-3).all())  # aimed at NaN, each frame was one flat colour


def test_a_zoom_clips_bucket_is_the_flow_its_video_shows(mini_goals):
    """The label is the flow in the clip's pixels, as SVD's buckets are optical flow: measured on the canvas (whose
    steps shrink as the camera zooms in), bucket 127's clips moved 1.21x and bucket 255's 1.58x their label. Here each
    step's magnification, fitted on the video (models/training/mini_goals.camera_motion), gives the flow the zoom shows; the
    median over clips, as a fit can miss on a flat centre."""
    clips = render_clips(5, 12, 8, photo_bank(), motion="zoom", mix=SceneMix(mosaics=1.0))
    ratios = []
    for clip, labelled in zip(clips.frames, clips.mean_flow.tolist()):
        if labelled >= 1.0:
            gray = grayscale(to_uint8(clip))
            steps = [np.sqrt(np.linalg.det(mini_goals.camera_motion(a, b)[:, :2])) for a, b in zip(gray, gray[1:])]
            ratios.append(MEAN_RADIUS * (np.mean(steps) - 1) / labelled)
    assert len(ratios) >= 4 and abs(np.median(ratios) - 1) < 0.03, ratios


def test_anneal_starts_its_clock_after_the_first_step():
    """The learning rate decays linearly to 0 over what the first step (which compiles under --compile; here a 1.5 s
    sleep) leaves of the budget, not over the whole budget: right after the 200 warm-up steps it is still near full."""
    import time

    weight = torch.nn.Parameter(torch.ones(1))
    optimizer = torch.optim.SGD([weight], lr=1.0)
    rates = []

    def step_loss(batch: torch.Tensor) -> torch.Tensor:
        if not rates:
            time.sleep(1.5)
        rates.append(optimizer.param_groups[0]["lr"])
        return (weight * batch).sum() * 0.0

    _train(step_loss, [weight], optimizer, None, iter(lambda: torch.ones(1), None), 4 / 60, "unet", {"unet": 0}, [],
           contextlib.nullcontext(), anneal=True)
    assert len(rates) > 400, len(rates)
    # an anneal over the whole 4 s would be at 0.6 by step 200
    assert rates[200] > 0.8 and rates[-1] < 0.1, (rates[200], rates[-1])


@pytest.mark.slow  # suite time (~1 min): run with `pytest -m slow`
def test_training_script_resumes_from_the_shipped_model(tmp_path):
    out = tmp_path / "mini"
    # the first call grows the VAE one resnet deeper per block and draws its VAE batches from clips rendered once
    train_mini(out=out, state=tmp_path / "state", init=BUILTIN_MODELS["mini"].folder, vae_minutes=0.01, unet_minutes=0.01,
               vae_batch=1, vae_crop=64, unet_batch=1, lr=1e-4, vae_lr=1e-4, vae_part="decoder", latent_channels=4,
               vae_layers=3, vae_pool=2, workers=0, pool_clips=4, motion="zoom", vae_anneal=True, vae_mse=1.0, vae_chroma=1.0,
               unet_anneal=True, vae_mosaics=0.75, vae_leaves=0.5, colour_casts=0.5, vae_channels=None, unet_from=None,
               compile_mode=None)
    trained, shipped = load_pipeline(str(out)), load_pipeline("mini")
    assert trained.vae.config.scaling_factor == shipped.vae.config.scaling_factor  # decoder-only keeps the latents
    assert trained.vae.config.layers_per_block == shipped.vae.config.layers_per_block + 1
    image = torch.rand(1, 3, 64, 64, dtype=trained.vae.dtype) * 2 - 1
    with torch.no_grad():  # the grown encoder's added resnets are identities, so it encodes as the shipped one does
        assert torch.equal(trained.vae.encode(image).latent_dist.mode(), shipped.vae.encode(image).latent_dist.mode())
    changed = trained.image_encoder.visual_projection.weight, shipped.image_encoder.visual_projection.weight
    assert not torch.equal(*changed)  # the UNet is saved as its EMA, which one step barely moves
    assert (tmp_path / "state" / "state.pt").is_file() and isinstance(json.loads((out / "loss.json").read_text()), list)
    steps = json.loads((out / "training.json").read_text())["steps"]
    # a second call resumes from the state, optimisers and EMA included (the EMA is loaded to the CPU, moved to the device);
    # encoder-only training keeps the decoder and the scaling factor
    train_mini(out=out, state=tmp_path / "state", init=None, vae_minutes=0.01, unet_minutes=0.01, vae_batch=1, vae_crop=64,
               unet_batch=1, lr=1e-4, vae_lr=1e-4, vae_part="encoder", latent_channels=4, vae_layers=None, vae_pool=0,
               workers=0, pool_clips=4, motion="zoom", vae_anneal=False, vae_mse=0.0, vae_chroma=0.0, vae_mosaics=MOSAIC_SHARE,
               unet_anneal=False, vae_leaves=0.0, colour_casts=0.0, vae_channels=None, unet_from=None, compile_mode=None)
    retrained = load_pipeline(str(out))
    assert retrained.vae.config.scaling_factor == shipped.vae.config.scaling_factor
    assert torch.equal(retrained.vae.decoder.conv_in.weight, trained.vae.decoder.conv_in.weight)
    assert not torch.equal(retrained.vae.encoder.conv_in.weight, shipped.vae.encoder.conv_in.weight)
    record = json.loads((out / "training.json").read_text())
    assert record["steps"]["vae"] > steps["vae"] and record["steps"]["unet"] > steps["unet"]
    shipped_runs = json.loads((BUILTIN_MODELS["mini"].folder / "training.json").read_text())["runs"]
    assert record["runs"][:len(shipped_runs)] == shipped_runs and len(record["runs"]) == len(shipped_runs) + 4  # 2 per call
    assert record["runs"][-4].startswith("VAE decoder only") and record["runs"][-2].startswith("VAE encoder only")
    assert "(from 2 clips rendered once)" in record["runs"][-4] and "3 layers per block (grown from 2)" in record["runs"][-4]
    assert ("mosaics 0.75, dead leaves 0.5, colour casts on 0.5 of photo clips, lr decayed linearly to 0, loss + 1 x MSE, "
            "loss + 1 x local Lab chroma L1") in record["runs"][-4]
    assert "mosaics" not in record["runs"][-2] and "leaves" not in record["runs"][-2] and "MSE" not in record["runs"][-2]
    assert "chroma" not in record["runs"][-2] and "casts" not in record["runs"][-2]
    assert record["runs"][-3].endswith("motion=zoom, colour casts on 0.5 of photo clips, lr decayed linearly to 0")
    assert record["runs"][-1].endswith("motion=zoom")


@pytest.mark.slow  # a research-log experiment's tool, 15-55 s: `pytest -m slow`
def test_fitted_latents_decode_closer_than_the_encoders():
    vae = load_pipeline("mini", torch_dtype=torch.float32).vae.eval().requires_grad_(False)
    frames = render_clips(7, 2, 1, photo_bank()).frames[:, 0]

    def error(latents: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            return ((vae.decode(latents, num_frames=1).sample - frames) ** 2).mean(dim=(1, 2, 3))

    with torch.no_grad():
        encoded = vae.encode(frames).latent_dist.mode()
    assert (error(fit_latents(vae, frames, 4, contextlib.nullcontext())) < error(encoded)).all()  # each frame's own


@pytest.mark.slow  # a research-log experiment's tool, 15-55 s: `pytest -m slow`
def test_encoder_fit_keeps_the_decoder_and_records_the_run(tmp_path):
    out = tmp_path / "fitted"
    result = CliRunner().invoke(fit_encoder_app, ["--init", str(BUILTIN_MODELS["mini"].folder), "--out", str(out),
                                                  "--fit-minutes", "0", "--fit-steps", "2", "--fit-batch", "2",
                                                  "--minutes", "0.02", "--batch", "2", "--workers", "0"])
    assert result.exit_code == 0, result.output
    fitted, shipped = load_pipeline(str(out)), load_pipeline("mini")
    assert torch.equal(fitted.vae.decoder.conv_in.weight, shipped.vae.decoder.conv_in.weight)
    assert not torch.equal(fitted.vae.encoder.conv_in.weight, shipped.vae.encoder.conv_in.weight)
    assert torch.equal(fitted.unet.conv_in.weight, shipped.unet.conv_in.weight)
    record = json.loads((out / "training.json").read_text())
    assert record["steps"]["encoder_fit"] > 0 and record["runs"][-1].startswith("VAE encoder onto latents fitted")
    assert record["vae_scaling_factor"] == fitted.vae.config.scaling_factor and not (tmp_path / "fitted.partial").exists()
    refused = CliRunner().invoke(fit_encoder_app, ["--init", str(tmp_path), "--out", str(tmp_path / "again")])
    message = " ".join(refused.output.replace("│", " ").split())  # rich wraps the error in a box
    assert refused.exit_code == 2 and "is not a saved pipeline" in message and not (tmp_path / "again").exists()


@pytest.mark.parametrize("option", [["--motion", "pan"], ["--vae-part", "both"], ["--compile", "max"]])
def test_training_script_refuses_unknown_choices_before_loading(tmp_path, option):
    result = CliRunner().invoke(train_mini_app, ["--out", str(tmp_path / "out"), "--state", str(tmp_path / "state"), *option])
    assert result.exit_code == 2 and f"{option[0]} is one of" in result.output and not (tmp_path / "state").exists()


def test_grown_vae_computes_what_the_saved_one_did():
    shipped = load_pipeline("mini", torch_dtype=torch.float32).vae.eval()
    grown = grow_vae(AutoencoderKLTemporalDecoder(**{**shipped.config, "layers_per_block": 3}).eval(), shipped.state_dict())
    clip = torch.rand(2, 3, 64, 64) * 2 - 1
    with torch.no_grad():
        latents = shipped.encode(clip).latent_dist.mode()
        assert torch.equal(grown.encode(clip).latent_dist.mode(), latents)
        assert torch.allclose(grown.decode(latents, num_frames=2).sample, shipped.decode(latents, num_frames=2).sample, atol=1e-6)
    assert sum(p.numel() for p in grown.parameters()) > sum(p.numel() for p in shipped.parameters())


@pytest.mark.parametrize("widths", [(64, 128, 256, 512), (128, 256, 512, 512)])  # the shipped VAE: 64, 128, 256, 256
def test_widened_vae_computes_what_the_saved_one_did(widths):
    """Widening keeps the latents and the decoding (new shortcuts, the attention's doubled head width included), and
    the copies of each query and key differ, so that training can pull them apart."""
    shipped = load_pipeline("mini", torch_dtype=torch.float32).vae.eval()
    wide = widen_vae(AutoencoderKLTemporalDecoder(**{**shipped.config, "block_out_channels": widths}).eval(), shipped.state_dict())
    clip = torch.rand(2, 3, 64, 64, generator=torch.Generator().manual_seed(0)) * 2 - 1
    with torch.no_grad():
        latents = shipped.encode(clip).latent_dist.mode()
        assert torch.allclose(wide.encode(clip).latent_dist.mode(), latents, atol=1e-4)
        assert torch.allclose(wide.decode(latents, num_frames=2).sample, shipped.decode(latents, num_frames=2).sample, atol=1e-4)
    queries = wide.encoder.mid_block.attentions[0].to_q.weight
    assert not torch.allclose(queries[0::2], queries[1::2], atol=1e-3)
    assert sum(p.numel() for p in wide.parameters()) > sum(p.numel() for p in shipped.parameters())


def test_widening_keeps_or_doubles_each_width(tmp_path):
    shipped = load_pipeline("mini", torch_dtype=torch.float32).vae
    with pytest.raises(ValueError, match="kept or doubled"):
        widen_vae(AutoencoderKLTemporalDecoder(**{**shipped.config, "block_out_channels": (64, 128, 192, 256)}), shipped.state_dict())
    # 64,128,256,256 -> 128,256,256,256: the third block's resnet had a learned shortcut (128 -> 256) and would lose it
    with pytest.raises(ValueError, match="double the block after a doubled one too"):
        widen_vae(AutoencoderKLTemporalDecoder(**{**shipped.config, "block_out_channels": (128, 256, 256, 256)}), shipped.state_dict())
    result = CliRunner().invoke(train_mini_app, ["--out", str(tmp_path / "out"), "--state", str(tmp_path / "state"), "--init",
                                                 str(BUILTIN_MODELS["mini"].folder), "--vae-channels", "128,256,256,256"])
    message = " ".join(result.output.replace("│", " ").split())
    assert result.exit_code == 2 and "learned shortcut would be lost" in message and "Traceback" not in result.output
    assert not (tmp_path / "out").exists()


def test_training_script_refuses_an_init_that_is_not_a_pipeline(tmp_path):
    result = CliRunner().invoke(train_mini_app, ["--out", str(tmp_path / "out"), "--state", str(tmp_path / "state"),
                                                 "--init", str(tmp_path), "--vae-channels", "64,128,256,256"])
    message = " ".join(result.output.replace("│", " ").split())  # rich wraps the error in a box
    assert result.exit_code == 2 and "is not a saved pipeline" in message and "Traceback" not in result.output


def test_training_script_widens_the_vae_of_init(tmp_path):
    shipped = BUILTIN_MODELS["mini"].folder
    result = CliRunner().invoke(train_mini_app, ["--out", str(tmp_path / "out"), "--state", str(tmp_path / "state"),
                                                 "--init", str(shipped), "--vae-channels", "64,128,256,512"])
    assert result.exit_code == 0, result.output
    widened, original = load_pipeline(str(tmp_path / "out")).vae, load_pipeline("mini").vae
    assert widened.config.block_out_channels == [64, 128, 256, 512]
    clip = torch.rand(2, 3, 64, 64, generator=torch.Generator().manual_seed(0)) * 2 - 1
    with torch.no_grad():  # both fp16 on disk
        assert torch.allclose(widened.encode(clip).latent_dist.mode(), original.encode(clip).latent_dist.mode(), atol=2e-2)
    runs = json.loads((tmp_path / "out" / "training.json").read_text())["runs"]
    assert runs[-1].startswith("VAE widened from mini's: block_out_channels (64, 128, 256, 256) -> (64, 128, 256, 512)")


def test_training_chroma_is_the_colourfulness_validate_measures():
    images = torch.rand(2, 3, 16, 16, generator=torch.Generator().manual_seed(0)) * 2.4 - 1.2  # some out of range
    pixels = ((images.clamp(-1, 1) + 1) * 127.5).permute(0, 2, 3, 1).numpy()
    chroma = lab_chroma(images.requires_grad_(True))
    assert chroma.shape == (2, 16, 16)
    assert chroma.mean().item() == pytest.approx(colourfulness(pixels), rel=1e-4)
    chroma.mean().backward()
    assert torch.isfinite(images.grad).all() and images.grad.abs().sum() > 0
    assert lab_chroma(torch.zeros(1, 3, 4, 4)).max() < 1e-2  # grey has no chroma


@pytest.mark.parametrize("option", [["--vae-channels", "96,192,192"], ["--vae-channels", "96,192,192,200"],
                                    ["--vae-channels", "96,192,192,192", "--init", "models/mini"]])
def test_training_script_checks_vae_channels_before_loading(tmp_path, option):
    option = [str(BUILTIN_MODELS["mini"].folder) if value == "models/mini" else value for value in option]
    result = CliRunner().invoke(train_mini_app, ["--out", str(tmp_path / "out"), "--state", str(tmp_path / "state"), *option])
    assert result.exit_code == 2 and "--vae-channels" in result.output and not (tmp_path / "state").exists()
    assert "Traceback" not in result.output


@pytest.mark.slow  # a research-log experiment's tool, 15-55 s: `pytest -m slow`
def test_training_script_builds_a_vae_of_other_widths(tmp_path):
    result = CliRunner().invoke(train_mini_app, ["--out", str(tmp_path / "out"), "--state", str(tmp_path / "state"),
                                                 "--vae-channels", "32,64,64,64", "--vae-minutes", "0.001",
                                                 "--vae-batch", "1", "--workers", "0"])
    assert result.exit_code == 0, result.output
    config = json.loads((tmp_path / "out" / "vae" / "config.json").read_text())
    assert config["block_out_channels"] == [32, 64, 64, 64] and config["layers_per_block"] == 2


@pytest.mark.slow  # a research-log experiment's tool, 15-55 s: `pytest -m slow`
def test_a_new_vae_of_more_latent_channels_starts_its_unet_from_the_shipped_one(tmp_path):
    """--unet-from: every UNet and image-encoder weight of the shipped model is copied but those that read or write the
    64-channel latents (the shipped model's: 32); a UNet that has trained is refused with one line."""
    shipped = BUILTIN_MODELS["mini"].folder
    result = CliRunner().invoke(train_mini_app, ["--out", str(tmp_path / "out"), "--state", str(tmp_path / "state"),
                                                 "--latent-channels", "64", "--unet-from", str(shipped), "--vae-minutes",
                                                 "0.001", "--vae-batch", "1", "--workers", "0"])
    assert result.exit_code == 0, result.output
    trained, original = load_pipeline(str(tmp_path / "out")), load_pipeline("mini")
    assert trained.unet.conv_in.in_channels == 128 and trained.unet.conv_out.out_channels == 64
    assert torch.equal(trained.unet.conv_in.bias, original.unet.conv_in.bias)
    assert torch.equal(trained.unet.mid_block.resnets[0].spatial_res_block.conv1.weight,
                       original.unet.mid_block.resnets[0].spatial_res_block.conv1.weight)
    assert torch.equal(trained.image_encoder.visual_projection.weight, original.image_encoder.visual_projection.weight)
    runs = json.loads((tmp_path / "out" / "training.json").read_text())["runs"]
    assert runs[0] == "UNet + image encoder started from mini's, but unet.conv_in.weight, unet.conv_out.weight, unet.conv_out.bias"
    refused = CliRunner().invoke(train_mini_app, ["--out", str(tmp_path / "again"), "--state", str(tmp_path / "none"),
                                                  "--init", str(shipped), "--unet-from", str(shipped)])
    assert refused.exit_code == 2 and "--unet-from starts an untrained UNet" in refused.output
    assert "Traceback" not in refused.output and not (tmp_path / "again").exists()


@pytest.mark.slow  # a research-log experiment's tool, 15-55 s: `pytest -m slow`
def test_a_unet_run_and_a_decoder_run_from_one_model_are_merged(tmp_path):
    """models/training/mini_merge.py (`train_mini_gpu.sh split`): the UNet of one run, the VAE of a decoder-only run from the same
    model, one training record; a VAE whose encoder differs is refused before anything is written."""
    from safetensors.torch import load_file, save_file

    spec = importlib.util.spec_from_file_location("mini_merge", EXAMPLE.parents[1] / "models" / "training" / "mini_merge.py")
    mini_merge = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mini_merge)
    shipped = BUILTIN_MODELS["mini"].folder
    options = dict(init=shipped, vae_batch=1, vae_crop=64, unet_batch=1, lr=1e-4, vae_lr=1e-4, latent_channels=4,
                   vae_layers=None, vae_pool=0, workers=0, pool_clips=4, motion="zoom", vae_anneal=True, vae_mse=0.0, vae_chroma=0.0,
                   unet_anneal=False, vae_mosaics=MOSAIC_SHARE, vae_leaves=0.0, colour_casts=0.0, vae_channels=None,
                   unet_from=None, compile_mode=None)
    train_mini(out=tmp_path / "unet", state=tmp_path / "unet_state", vae_minutes=0, unet_minutes=0.01, vae_part="all", **options)
    train_mini(out=tmp_path / "decoder", state=tmp_path / "decoder_state", vae_minutes=0.01, unet_minutes=0,
               vae_part="decoder", **options)
    mini_merge.merge(tmp_path / "unet", tmp_path / "decoder", tmp_path / "merged")
    merged, unet_run, decoder_run = (load_pipeline(str(tmp_path / name)) for name in ("merged", "unet", "decoder"))
    assert torch.equal(merged.unet.conv_in.weight, unet_run.unet.conv_in.weight)
    assert torch.equal(merged.vae.decoder.conv_in.weight, decoder_run.vae.decoder.conv_in.weight)
    assert not torch.equal(merged.vae.decoder.conv_in.weight, unet_run.vae.decoder.conv_in.weight)
    record, shipped_record = (json.loads((folder / "training.json").read_text()) for folder in (tmp_path / "merged", shipped))
    records = [json.loads((tmp_path / name / "training.json").read_text()) for name in ("decoder", "unet")]
    assert record["steps"] == {"vae": records[0]["steps"]["vae"], "unet": records[1]["steps"]["unet"]}
    assert record["steps"]["vae"] > shipped_record["steps"]["vae"] and record["steps"]["unet"] > shipped_record["steps"]["unet"]
    assert record["runs"] == shipped_record["runs"] + records[0]["runs"][-1:] + records[1]["runs"][-1:]
    assert record["files"]["vae/diffusion_pytorch_model.safetensors"] == records[0]["files"]["vae/diffusion_pytorch_model.safetensors"]

    shutil.copytree(tmp_path / "decoder", tmp_path / "encoder")
    weights = tmp_path / "encoder" / mini_merge.WEIGHTS
    tensors = load_file(weights)
    tensors["encoder.conv_in.bias"] = tensors["encoder.conv_in.bias"] + 1e-2
    save_file(tensors, weights)
    with pytest.raises(SystemExit, match="latents are not"):
        mini_merge.merge(tmp_path / "unet", tmp_path / "encoder", tmp_path / "refused")
    assert not (tmp_path / "refused").exists() and not (tmp_path / "refused.partial").exists()


def test_training_script_only_deepens_the_vae(tmp_path):
    result = CliRunner().invoke(train_mini_app, ["--out", str(tmp_path / "out"), "--state", str(tmp_path / "state"),
                                                 "--init", str(BUILTIN_MODELS["mini"].folder), "--vae-layers", "1"])
    assert result.exit_code == 2 and "--vae-layers deepens the VAE" in result.output and not (tmp_path / "out").exists()


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


def test_camera_motion_follows_a_deep_zoom(mini_goals):
    """models/training/mini_goals.py's camera, fitted between consecutive frames and chained: fitted from frame 0 directly, a
    perfect zoom into grace_hopper of x1.41 over the clip (bucket 153's flow) read as x1.44 across and x1.06 down with
    shear, and such a failed fit scored v6's video 0.32 where the chained fit gives 0.78."""
    photo = mini_goals.to_uint8(mini_goals.held_out_pixels()["grace_hopper"])
    for mean_flow in (2.4, 4.0):
        magnification = np.exp(mean_flow / MEAN_RADIUS * 7)  # mini_goals.zoomed's rate, over 7 steps
        matrix = mini_goals.camera_motions(mini_goals.zoomed(photo, mean_flow, frames=8))[-1]
        assert np.allclose(matrix[:, :2], magnification * np.eye(2), atol=0.01), (mean_flow, matrix)


def test_colour_in_view_tells_a_zoom_from_a_colour_drift(mini_goals):
    """models/training/mini_goals.py's colour-over-time beside the issue's: a perfect zoom into chelsea's colourful centre raises
    the frames' colourfulness against the whole photo's, not against what the camera shows; a fading colour does both."""
    photo = np.asarray(Image.open(EXAMPLE).convert("RGB").resize((128, 128), Image.LANCZOS))
    zoom = mini_goals.zoomed(photo, mean_flow=2.0, frames=8)
    assert mini_goals.worst(mini_goals.colour_against_input(zoom, photo)) > 1.1
    assert abs(mini_goals.worst(mini_goals.colour_in_view(zoom, photo)) - 1) < 0.02
    grey = zoom.mean(axis=-1, keepdims=True)
    fading = np.stack([g + (1 - 0.06 * t) * (f - g) for t, (f, g) in enumerate(zip(zoom.astype(float), grey))])
    assert mini_goals.worst(mini_goals.colour_in_view(fading.round().astype(np.uint8), photo)) < 0.7


def test_camera_warped_ssim_tells_a_moving_scene_from_a_melting_one(mini_goals):
    """models/training/mini_goals.py's motion goal: a perfect zoom into chelsea at bucket 127's flow keeps SSIM > 0.85 with frame
    0 warped back by its camera motion; the same zoom losing its detail (blurred 2 px by the last frame) or its shapes
    (smeared 2 px) falls below the goal's 0.7. Warped pixel by pixel by Farneback flow over the whole frame (the
    issue's wording), the perfect zoom itself fails 0.7."""
    photo = mini_goals.to_uint8(mini_goals.held_out_pixels()["chelsea"])
    zoom = mini_goals.zoomed(photo, mean_flow=2.0, frames=8)
    assert mini_goals.camera_warped_ssim(zoom) > 0.85
    assert mini_goals.camera_warped_ssim(mini_goals.melted(zoom, blur=2.0)) < 0.7
    assert mini_goals.camera_warped_ssim(mini_goals.melted(zoom, smear=2.0)) < 0.7
    assert mini_goals.warped_last_frame_ssim(zoom) < 0.7
