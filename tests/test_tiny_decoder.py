"""`--vae-decoder`: a tiny decoder (AutoencoderTiny, TAESD's architecture) replaces the temporal VAE decoder at export,
taking the pipeline's latents at the scale it was trained on; `svdtool.models.tiny_decoder` trains one for a pipeline."""

from __future__ import annotations

import json
from types import SimpleNamespace

import cv2
import numpy as np
import openvino as ov
import pytest
import torch
from diffusers import AutoencoderTiny
from typer.testing import CliRunner

from svdtool.cli import app
from svdtool.models import component_config, resolve_source
from svdtool.models.decoders import with_neighbours
from svdtool.models.tiny_decoder import CLIP_FRAMES, decoder_loss, pool_latents, widen_to_context
from svdtool.models.tiny_decoder import app as train_app

runner = CliRunner()


def small_tiny_decoder(folder, latent_channels: int = 4, levels: int = 4) -> AutoencoderTiny:
    tiny = AutoencoderTiny(latent_channels=latent_channels, encoder_block_out_channels=(16,) * levels,
                           decoder_block_out_channels=(16,) * levels, num_encoder_blocks=(1,) * levels,
                           num_decoder_blocks=(1,) * levels, scaling_factor=1.0)
    tiny.save_pretrained(folder)
    return tiny.eval()


@pytest.fixture(scope="module")
def tiny_decoder_ir(tmp_path_factory):
    folder = tmp_path_factory.mktemp("tinydec")
    tiny = small_tiny_decoder(folder / "decoder")
    result = runner.invoke(app, ["export", "tiny", "-o", str(folder / "ir"), "--vae-decoder", str(folder / "decoder")])
    assert result.exit_code == 0, result.output
    return tiny, folder / "ir"


def test_the_ir_decodes_as_the_tiny_model_does_at_the_vaes_latent_scale(tiny_decoder_ir):
    tiny, ir = tiny_decoder_ir
    vae_config = component_config(resolve_source("tiny"), "vae")
    manifest = json.loads((ir / "svdtool.json").read_text())
    record = manifest["vae_decoder"]
    assert record["name"] == "tiny" and record["latent_scale"] == pytest.approx(vae_config["scaling_factor"])
    assert set(record["sha256"]) == {"diffusion_pytorch_model.safetensors"}
    compiled = ov.Core().compile_model(ir / "vae_decoder" / "openvino_model.xml", "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
    latents = torch.randn(3, vae_config["latent_channels"], 8, 12, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        expected = tiny.decode(latents * vae_config["scaling_factor"]).sample.numpy()
    decoded = compiled(latents.numpy())[0]
    assert decoded.shape == (3, 3, 64, 96)
    assert np.abs(decoded - expected).max() < 2e-3  # fp16 weights


def test_generate_runs_the_tiny_decoder_and_says_so(tiny_decoder_ir, image_file, tmp_path):
    _, ir = tiny_decoder_ir
    out = tmp_path / "video.gif"
    result = runner.invoke(app, ["generate", "-m", str(ir), "-i", str(image_file), "-o", str(out), "--steps", "2"])
    assert result.exit_code == 0, result.output
    assert out.is_file() and json.loads((tmp_path / "video.gif.json").read_text())["runtime"]["vae_decoder"] == "tiny"
    from svdtool.push import model_card

    assert "- VAE decoder: **tiny** (AutoencoderTiny" in model_card(json.loads((ir / "svdtool.json").read_text()), "me/tiny-taesd")


@pytest.mark.slow  # quantize's calibration (~45 s): `pytest -m slow`; bench/tiny_decoder.py quality quantizes one too
def test_quantize_keeps_the_tiny_decoder(tiny_decoder_ir, image_file, calib_dir, tmp_path):
    _, ir = tiny_decoder_ir
    result = runner.invoke(app, ["quantize", str(ir), "--calib", str(calib_dir), "-o", str(tmp_path / "int8"), "--samples", "2"])
    assert result.exit_code == 0, result.output
    assert json.loads((tmp_path / "int8" / "svdtool.json").read_text())["vae_decoder"]["name"] == "tiny"
    result = runner.invoke(app, ["generate", "-m", str(tmp_path / "int8"), "-i", str(image_file), "-o", str(tmp_path / "v.gif"),
                                 "--steps", "2"])
    assert result.exit_code == 0, result.output


def test_a_decoder_with_context_sees_the_frames_beside_each_within_the_chunk_it_is_given(tmp_path):
    vae_config = component_config(resolve_source("tiny"), "vae")
    tiny = small_tiny_decoder(tmp_path / "decoder", latent_channels=3 * vae_config["latent_channels"])
    result = runner.invoke(app, ["export", "tiny", "-o", str(tmp_path / "ir"), "--vae-decoder", str(tmp_path / "decoder")])
    assert result.exit_code == 0, result.output
    assert json.loads((tmp_path / "ir" / "svdtool.json").read_text())["vae_decoder"]["context_frames"] == 1
    compiled = ov.Core().compile_model(tmp_path / "ir" / "vae_decoder" / "openvino_model.xml", "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
    latents = torch.randn(4, vae_config["latent_channels"], 8, 8, generator=torch.Generator().manual_seed(0))
    for chunk in (latents, latents[:1]):  # one frame stands in for both of its neighbours
        with torch.no_grad():
            expected = tiny.decode(with_neighbours(chunk * vae_config["scaling_factor"], 1)).sample.numpy()
        assert np.abs(compiled(chunk.numpy())[0] - expected).max() < 2e-3  # fp16 weights
    shuffled = latents[[1, 0, 2, 3]]  # frame 0's neighbours changed: so does its decoded frame, and frame 3's does not
    decoded, again = compiled(latents.numpy())[0], compiled(shuffled.numpy())[0]
    assert np.abs(decoded[2] - again[2]).max() > 1e-3 and np.abs(decoded[3] - again[3]).max() < 1e-5


def test_widening_to_context_keeps_the_decoding_and_the_pool_gives_each_frame_its_clips_neighbours(tmp_path):
    tiny = small_tiny_decoder(tmp_path / "decoder")
    wide = widen_to_context(tiny, 1).eval()
    assert wide.config.latent_channels == 12
    latents = torch.randn(5, 4, 8, 8, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        assert torch.allclose(wide.decode(with_neighbours(latents, 1)).sample, tiny.decode(latents).sample, atol=1e-6)
    pool = torch.randn(2 * CLIP_FRAMES, 4, 2, 2)
    index = torch.tensor([0, 3, CLIP_FRAMES - 1, CLIP_FRAMES, 2 * CLIP_FRAMES - 1])
    by_clip = torch.cat([with_neighbours(clip, 2) for clip in pool.split(CLIP_FRAMES)])
    assert torch.equal(pool_latents(pool, index, 2), by_clip[index])  # no frame sees the other clip's


@pytest.mark.parametrize("case, message", [
    ("channels", "decodes 8-channel latents, but this pipeline's VAE makes 4 (12 with a frame's neighbours)"),
    ("upscale", "upscales latents 4x, but this pipeline's VAE downscales frames 8x"),
    ("missing", "does not exist"),
    ("not-tiny", "not an AutoencoderTiny"),
])
def test_a_decoder_that_does_not_fit_is_refused_before_export(case, message, tmp_path):
    folder = tmp_path / "decoder"
    if case == "channels":
        small_tiny_decoder(folder, latent_channels=8)
    elif case == "upscale":
        small_tiny_decoder(folder, levels=3)
    elif case == "not-tiny":
        folder.mkdir()
        (folder / "config.json").write_text(json.dumps({"_class_name": "UNetSpatioTemporalConditionModel"}))
    result = runner.invoke(app, ["export", "tiny", "-o", str(tmp_path / "ir"), "--vae-decoder", str(folder)])
    assert result.exit_code == 2 and message in result.output, result.output
    assert len(result.output.strip().splitlines()) == 1 and not (tmp_path / "ir").exists()


class OffsetDecoder:
    """Stands in for a tiny decoder: decodes the pool's frame i (its latent holds i) as the teacher's frame plus offset[i],
    recording which frames it was given."""

    def __init__(self, offsets: torch.Tensor):
        self.offsets, self.seen = offsets, []

    def decode(self, latents: torch.Tensor) -> SimpleNamespace:
        index = latents[:, 0, 0, 0].long()
        self.seen.append(index)
        return SimpleNamespace(sample=torch.full((len(index), 3, 4, 4), -1.0) + self.offsets[index].view(-1, 1, 1, 1))


def test_the_temporal_loss_takes_whole_clips_and_adds_the_error_of_each_frame_to_frame_change():
    frames = 6 * CLIP_FRAMES
    pool = {"latents": torch.arange(frames, dtype=torch.float32).view(-1, 1, 1, 1).expand(-1, 4, 2, 2),
            "frames": torch.zeros(frames, 3, 4, 4, dtype=torch.uint8)}  # the teacher's frames: all -1 in [-1, 1]
    steady = OffsetDecoder(torch.full((frames,), 0.1))  # every frame off by 0.1: the change between frames is right
    flicker = OffsetDecoder(0.1 * (1 - 2 * (torch.arange(frames) % 2)))  # off by +0.1, -0.1, ...: each change off by 0.2
    for decoder, temporal_error in ((steady, 0.0), (flicker, 0.2)):
        for weight in (0.0, 2.0):
            loss = decoder_loss(decoder, pool, 2 * CLIP_FRAMES, torch.Generator().manual_seed(0), weight)
            assert loss.item() == pytest.approx(0.1 + 0.01 + weight * temporal_error, abs=1e-6)
    clips = torch.stack(steady.seen[-1].split(CLIP_FRAMES))
    assert (clips[:, 0] % CLIP_FRAMES == 0).all() and (clips - clips[:, :1] == torch.arange(CLIP_FRAMES)).all()


def test_the_edge_loss_adds_the_error_of_the_change_between_neighbouring_pixels():
    frames = 4
    latents = torch.arange(frames, dtype=torch.float32).view(-1, 1, 1, 1).expand(-1, 4, 2, 2)
    checkerboard = ((torch.arange(4)[:, None] + torch.arange(4)) % 2 * 255).to(torch.uint8).expand(frames, 3, 4, 4)
    flat = {"latents": latents, "frames": torch.zeros(frames, 3, 4, 4, dtype=torch.uint8)}
    grey = SimpleNamespace(decode=lambda lat: SimpleNamespace(sample=torch.zeros(len(lat), 3, 4, 4)))
    for weight in (0.0, 2.0):  # a grey frame against a checkerboard of -1 and 1: off by 1, and by 2 at every edge
        loss = decoder_loss(grey, {**flat, "frames": checkerboard}, 4, torch.Generator().manual_seed(0), edges=weight)
        assert loss.item() == pytest.approx(1 + 1 + weight * (2 + 2), abs=1e-6)
        offset = decoder_loss(OffsetDecoder(torch.full((frames,), 0.1)), flat, 4, torch.Generator().manual_seed(0), edges=weight)
        assert offset.item() == pytest.approx(0.1 + 0.01, abs=1e-6)  # an error without edges costs nothing more


def test_the_laplacian_loss_adds_the_error_of_each_pixels_laplacian_as_opencv_computes_it():
    frames = 4
    latents = torch.arange(frames, dtype=torch.float32).view(-1, 1, 1, 1).expand(-1, 4, 2, 2)
    checkerboard = ((torch.arange(4)[:, None] + torch.arange(4)) % 2 * 255).to(torch.uint8).expand(frames, 3, 4, 4)
    grey = SimpleNamespace(decode=lambda lat: SimpleNamespace(sample=torch.zeros(len(lat), 3, 4, 4)))
    target = checkerboard.float().numpy()[0, 0] / 127.5 - 1
    laplacian = np.abs(cv2.Laplacian(target, cv2.CV_32F)[1:-1, 1:-1]).mean()  # 8 inside a checkerboard of -1 and 1
    for weight in (0.0, 2.0):
        loss = decoder_loss(grey, {"latents": latents, "frames": checkerboard}, 4, torch.Generator().manual_seed(0),
                            laplacian=weight)
        assert loss.item() == pytest.approx(1 + 1 + weight * laplacian, abs=1e-5) and laplacian == pytest.approx(8)
    flat = {"latents": latents, "frames": torch.zeros(frames, 3, 4, 4, dtype=torch.uint8)}
    offset = decoder_loss(OffsetDecoder(torch.full((frames,), 0.1)), flat, 4, torch.Generator().manual_seed(0), laplacian=2.0)
    assert offset.item() == pytest.approx(0.1 + 0.01, abs=1e-6)  # a flat error has no Laplacian


@pytest.mark.parametrize("case, message", [("not-tiny", "give a diffusers AutoencoderTiny folder (with config.json)"),
                                           ("corrupt", "config.json is not readable JSON"),
                                           ("channels", "decodes 8-channel latents, but this pipeline's VAE makes 4"),
                                           ("context", "sees 1 frame on each side: leave --context out")])
def test_a_decoder_to_fine_tune_that_does_not_fit_is_refused_in_one_line(case, message, tiny_torch, tmp_path):
    teacher, init = tmp_path / "teacher", tmp_path / "init"
    tiny_torch.save_pretrained(teacher)
    if case in ("channels", "context"):
        small_tiny_decoder(init, latent_channels={"channels": 8, "context": 12}[case])
    else:
        init.mkdir()
    if case == "corrupt":
        (init / "config.json").write_text("{half a file")
    result = runner.invoke(train_app, ["--teacher", str(teacher), "--out", str(tmp_path / "out"), "--state", str(tmp_path / "state"),
                                       "--init", str(init), *(["--context", "2"] if case == "context" else [])])
    assert result.exit_code == 2 and message in " ".join(result.output.replace("│", " ").split()), result.output
    assert "Traceback" not in result.output and not (tmp_path / "out").exists()


@pytest.mark.slow  # renders and encodes clips three times (~50 s): `pytest -m slow`
def test_training_resumes_and_leaves_a_decoder_export_takes(tiny_torch, tmp_path):
    teacher = tmp_path / "teacher"
    tiny_torch.save_pretrained(teacher)
    out, state = tmp_path / "decoder", tmp_path / "state"
    arguments = ["--teacher", str(teacher), "--out", str(out), "--state", str(state), "--minutes", "0.01", "--batch", "2",
                 "--pool-clips", "2", "--workers", "0"]
    steps = []
    for run in range(2):  # a narrower decoder than TAESD's; the resumed run keeps its width without being told
        result = runner.invoke(train_app, [*arguments, *(["--channels", "16"] if run == 0 else [])])
        assert result.exit_code == 0, result.output
        steps.append(json.loads((out / "training.json").read_text())["steps"]["decoder"])
    assert 0 < steps[0] < steps[1]
    assert json.loads((out / "config.json").read_text())["decoder_block_out_channels"] == [16] * 4
    tuned = tmp_path / "tuned"  # fine-tuning that decoder with the temporal loss and its neighbours, from a fresh state
    result = runner.invoke(train_app, [*arguments[:2], "--out", str(tuned), "--state", str(tmp_path / "state2"), *arguments[6:],
                                       "--init", str(out), "--temporal", "1", "--context", "1", "--leaves", "0.5",
                                       "--mosaics", "0.5", "--laplacian", "1"])
    assert result.exit_code == 0, result.output
    record = json.loads((tuned / "training.json").read_text())
    assert record["steps"]["decoder"] > steps[1] and "fine-tuned from decoder, widened to see 1 frame on each side" in record["runs"][-2]
    assert "neighbouring frames" in record["runs"][-1] and record["context_frames"] == 1
    assert "mosaics 0.5, dead leaves 0.5" in record["runs"][-1] and "1 x L1 of the Laplacian" in record["runs"][-1]
    config = json.loads((tuned / "config.json").read_text())
    assert config["decoder_block_out_channels"] == [16] * 4 and config["latent_channels"] == 3 * tiny_torch.vae.config.latent_channels
    result = runner.invoke(app, ["export", str(teacher), "-o", str(tmp_path / "ir"), "--vae-decoder", str(tuned)])
    assert result.exit_code == 0, result.output
