"""Few-step students: a replacement UNet file (AnimateLCM-SVD-xt's layout) and the consistency sampler through export,
generate, quantize and validate (student vs its own reference, and student vs teacher)."""

from __future__ import annotations

import json
import math
import shutil

import numpy as np
import pytest
import torch
from diffusers import CMStochasticIterativeScheduler, EulerDiscreteScheduler
from safetensors.torch import save_file
from typer.testing import CliRunner

from svdtool.cli import app
from svdtool.convert import export
from svdtool.models import SAMPLERS, PRESETS, Source, SVDConsistencyScheduler, generation_defaults, load_component, load_pipeline, resolve_source
from svdtool.models.presets import SVD_SCHEDULER_CONFIG
from svdtool.outputs import read_manifest, sha256_file
from svdtool.runtime import GenerationSettings, generate, load_image, load_ov_pipeline

from conftest import FAST, psnr

runner = CliRunner()


def student_file(folder, preset: str = "tiny", dtype: torch.dtype = torch.float16) -> str:
    """A random-weight "student" in AnimateLCM-SVD-xt's format: a bare UNet state dict (no prefix) in safetensors."""
    unet = load_component(resolve_source(preset), "unet")
    generator = torch.Generator().manual_seed(7)
    with torch.no_grad():
        for parameter in unet.parameters():
            parameter.add_(0.02 * torch.randn(parameter.shape, generator=generator))
    path = folder / f"{preset}-student.safetensors"
    save_file({key: value.to(dtype).contiguous() for key, value in unet.state_dict().items()}, str(path))
    return str(path)


@pytest.fixture(scope="module")
def image(image_file):
    return load_image(image_file)


@pytest.fixture(scope="module")
def images_dir(tmp_path_factory, image_file):
    folder = tmp_path_factory.mktemp("images")
    shutil.copy(image_file, folder / "a.png")
    return folder


@pytest.fixture(scope="module")
def student(tmp_path_factory):
    folder = tmp_path_factory.mktemp("student")
    path = student_file(folder)
    ir = folder / "ir"
    export(resolve_source("tiny", unet=path, sampler="consistency"), ir)
    return path, ir


def test_scheduler_is_svd_preconditioning_with_consistency_steps():
    scheduler = SVDConsistencyScheduler(**SAMPLERS["consistency"].scheduler(SVD_SCHEDULER_CONFIG).config)
    scheduler.set_timesteps(4)
    sigmas = scheduler.sigmas.double()
    # Karras σ over 40 training steps (ρ 7, 0.002-700) at indices 0, 10, 20, 30, then σ_min; SVD's c_noise = 0.25 ln σ
    ramp = np.array([0, 10, 20, 30]) / 39
    expected = (700 ** (1 / 7) + ramp * (0.002 ** (1 / 7) - 700 ** (1 / 7))) ** 7
    np.testing.assert_allclose(sigmas[:4].numpy(), expected, rtol=1e-5)
    np.testing.assert_allclose(scheduler.timesteps.numpy(), 0.25 * np.log(expected), rtol=1e-5)
    assert scheduler.timesteps.dtype == torch.float32 and math.isclose(scheduler.init_noise_sigma, math.sqrt(700**2 + 1))
    # one step: x0 by SVD's Euler (v-prediction) preconditioning, then noise of the next σ
    sample, v = torch.randn(1, 2, 4, 8, 8), torch.randn(1, 2, 4, 8, 8)
    scheduler.reseed(3)
    noise = torch.randn(sample.shape, generator=torch.Generator().manual_seed(
        (3 * 6364136223846793005 + 1442695040888963407) % 2**63))
    sigma, sigma_next = float(sigmas[0]), float(sigmas[1])
    denoised = sample / (sigma**2 + 1) - v * sigma / math.sqrt(sigma**2 + 1)
    stepped = scheduler.step(v, scheduler.timesteps[0], sample).prev_sample
    torch.testing.assert_close(stepped, denoised + noise * math.sqrt(sigma_next**2 - 0.002**2), rtol=1e-4, atol=1e-3)
    # SVD's Euler reaches the same x0 from the same output: the two samplers share the UNet's parameterization
    euler = EulerDiscreteScheduler.from_config(SVD_SCHEDULER_CONFIG)
    euler.set_timesteps(25)
    euler_sigma = float(euler.sigmas[0])
    x0 = sample / (euler_sigma**2 + 1) - v * euler_sigma / math.sqrt(euler_sigma**2 + 1)
    derivative = (sample - x0) / euler_sigma
    torch.testing.assert_close(euler.step(v, euler.timesteps[0], sample).prev_sample,
                               sample + derivative * (float(euler.sigmas[1]) - euler_sigma), rtol=1e-4, atol=1e-3)
    assert not isinstance(CMStochasticIterativeScheduler(), SVDConsistencyScheduler)


def test_sampler_sets_defaults_and_manifest(student):
    path, ir = student
    manifest = read_manifest(ir)
    assert manifest["source"]["unet"] == {"ref": path, "sha256": sha256_file(path)}
    assert manifest["source"]["sampler"] == "consistency"
    assert manifest["sampler"]["scheduler"] == "SVDConsistencyScheduler" and manifest["sampler"]["config"]["sigma_max"] == 700.0
    defaults = manifest["generation_defaults"]
    assert (defaults["num_inference_steps"], defaults["min_guidance_scale"], defaults["max_guidance_scale"]) == (4, 1.0, 1.2)
    assert json.loads((ir / "model_index.json").read_text())["scheduler"] == ["svdtool.models", "SVDConsistencyScheduler"]
    # the plain preset keeps SVD's Euler and its own defaults
    assert generation_defaults(resolve_source("tiny")).num_inference_steps == PRESETS["tiny"].defaults.num_inference_steps
    assert isinstance(load_component(resolve_source("tiny"), "scheduler"), EulerDiscreteScheduler)


def test_student_ir_matches_its_pytorch_reference(student, image):
    path, ir = student
    pipeline, _ = load_ov_pipeline(ir)
    assert isinstance(pipeline.scheduler, SVDConsistencyScheduler)
    settings = GenerationSettings(seed=5).resolved(read_manifest(ir)["generation_defaults"])
    runtime = generate(pipeline, image, settings, show_progress=False)
    torch_student = load_pipeline(Source.from_record(read_manifest(ir)["source"]))
    reference = generate(torch_student, image, settings, show_progress=False)
    again = generate(torch_student, image, settings, show_progress=False)
    assert np.array_equal(reference.frames, again.frames)  # the noise between steps is seeded per video
    assert psnr(runtime.frames, reference.frames) > 35
    # the student's own weights and sampler matter: the source's UNet, or Euler, give other videos
    for other in (load_pipeline("tiny"), load_pipeline(Source.from_record({**read_manifest(ir)["source"], "sampler": "euler"}))):
        assert psnr(generate(other, image, settings, show_progress=False).frames, reference.frames) < 30


def test_unet_that_does_not_fit_is_one_line(tmp_path):
    state = load_component(resolve_source("tiny"), "unet").state_dict()
    state.pop(next(iter(state)))
    state["unet.extra"] = torch.zeros(1)
    save_file({k: v.contiguous() for k, v in state.items()}, str(tmp_path / "bad.safetensors"))
    result = runner.invoke(app, ["export", "tiny", "-o", str(tmp_path / "ir"), "--unet", str(tmp_path / "bad.safetensors")])
    assert result.exit_code == 2, result.output
    assert "does not fit this pipeline's UNet: keys 1 missing" in result.output and "1 unexpected (e.g. unet.extra)" in result.output
    assert "Traceback" not in result.output and not (tmp_path / "ir").exists()


@pytest.mark.parametrize("args, message", [
    (["--sampler", "lcm"], "--sampler must be one of euler, consistency"),
    (["--unet", "missing.safetensors"], "does not exist"),
    (["--unet", "owner/name"], "does not exist"),
    (["--sampler", "consistency", "--cache-branch", "0"], "does not go with the consistency sampler"),
])
def test_bad_student_options_are_refused_before_loading(tmp_path, args, message):
    result = runner.invoke(app, ["export", "tiny", "-o", str(tmp_path / "ir"), *args])
    assert result.exit_code == 2 and message in result.output, result.output


def test_calibration_records_the_consistency_schedule(student, calib_dir):
    """quantize's calibration run uses the IR's own sampler: its UNet samples come from the consistency steps' σ."""
    from svdtool.quantize.calibration import load_calibration_images
    from svdtool.quantize.record import collect_calibration_data
    from svdtool.quantize.run import _calibration_schedule, calibration_settings

    _, ir = student
    manifest = read_manifest(ir)
    settings = calibration_settings(manifest["generation_defaults"], FAST)
    pipeline, _ = load_ov_pipeline(ir, precision="f32")
    data = collect_calibration_data(pipeline, load_calibration_images(str(calib_dir), limit=2).images, settings, 8)
    schedule = SVDConsistencyScheduler(**manifest["sampler"]["config"])
    schedule.set_timesteps(settings.num_inference_steps)
    recorded = _calibration_schedule(manifest, data["unet"])
    assert recorded["sampler"] == "consistency"
    assert recorded["timesteps"] == pytest.approx(schedule.timesteps.tolist(), abs=1e-4)


@pytest.mark.slow  # quantize's calibration and quality check run in child processes (~50 s): `pytest -m slow`
def test_quantize_calibrates_on_the_consistency_schedule(student, tmp_path, calib_dir):
    from svdtool.quantize import quantize

    _, ir = student
    manifest = quantize(ir, tmp_path / "int8", str(calib_dir), samples=8, calib_settings=FAST)
    calibration = manifest["quantization"]["calibration"]
    schedule = SVDConsistencyScheduler(**read_manifest(ir)["sampler"]["config"])
    schedule.set_timesteps(FAST.num_inference_steps)
    assert calibration["sampler"] == "consistency"
    assert calibration["timesteps"] == pytest.approx(schedule.timesteps.tolist(), abs=1e-4)
    assert manifest["generation_defaults"]["num_inference_steps"] == 4 and manifest["sampler"]["name"] == "consistency"
    pipeline, _ = load_ov_pipeline(tmp_path / "int8")
    assert isinstance(pipeline.scheduler, SVDConsistencyScheduler)


def test_validate_student_against_its_reference_and_its_teacher(student, tmp_path, images_dir):
    _, ir = student
    own = runner.invoke(app, ["validate", str(ir), "--reference", "cpu", "--images", str(images_dir), "-o", str(tmp_path / "own")])
    assert own.exit_code == 0, own.output
    own_report = json.loads((tmp_path / "own" / "report.json").read_text())
    assert own_report["comparison"] == "runtime vs reference" and own_report["settings"]["num_inference_steps"] == 4
    assert own_report["reference"]["source"]["sampler"] == "consistency" and "unet" in own_report["reference"]["source"]
    teacher = runner.invoke(app, ["validate", str(ir), "--reference", "cpu", "--teacher", "tiny", "--images", str(images_dir),
                                  "-o", str(tmp_path / "teacher"), "--max-motion-change", "1e9", "--max-sharpness-change", "1e9",
                                  "--max-temporal-mse-change", "1e9", "--max-brightness-change", "1e9",
                                  "--max-colourfulness-change", "1e9", "--max-noise-increase", "1e9"])
    report = json.loads((tmp_path / "teacher" / "report.json").read_text())
    assert report["comparison"] == "student vs teacher", teacher.output
    assert report["reference"]["source"] == {**report["reference"]["source"], "ref": "tiny", "sampler": "euler"}
    assert report["settings"]["num_inference_steps"] == 4 and report["settings"]["max_guidance_scale"] == 1.2
    teacher_steps = json.loads((tmp_path / "teacher" / "reference" / "reference.json").read_text())["settings"]["num_inference_steps"]
    assert teacher_steps == PRESETS["tiny"].defaults.num_inference_steps
    checks = {c["check"] for c in report["images"][0]["checks"]}
    assert "|Δ motion| (relative)" in checks and not any("PSNR" in c for c in checks)
    assert teacher.exit_code == 0, teacher.output
    strict = runner.invoke(app, ["validate", str(ir), "--reference", "cpu", "--teacher", "tiny", "--images", str(images_dir),
                                 "-o", str(tmp_path / "strict"), "--max-sharpness-change", "0"])
    assert strict.exit_code == 1, strict.output  # a check that cannot pass fails the run: the gate is real


def test_a_changed_unet_file_is_refused_as_a_reference(student, tmp_path, images_dir):
    original, ir = student
    path = tmp_path / "student.safetensors"  # a copy of the student's IR whose manifest names a copy of its UNet file
    shutil.copy(original, path)
    shutil.copytree(ir, tmp_path / "ir")
    manifest = read_manifest(tmp_path / "ir")
    manifest["source"]["unet"]["ref"] = str(path)
    (tmp_path / "ir" / "svdtool.json").write_text(json.dumps(manifest))
    save_file({k: v.contiguous() for k, v in load_component(resolve_source("tiny"), "unet").state_dict().items()}, str(path))
    result = runner.invoke(app, ["validate", str(tmp_path / "ir"), "--reference", "cpu", "--images", str(images_dir),
                                 "-o", str(tmp_path / "val")])
    assert result.exit_code == 2 and "changed since this IR was exported" in result.output, result.output


def test_teacher_needs_a_live_reference(student, tmp_path, images_dir):
    _, ir = student
    result = runner.invoke(app, ["validate", str(ir), "--reference", str(tmp_path), "--teacher", "tiny", "-o", str(tmp_path / "r")])
    assert result.exit_code == 2 and "--teacher runs the teacher live" in result.output, result.output


@pytest.mark.slow
def test_animatelcm_svd_xt_layout_exports(tmp_path):
    """AnimateLCM-SVD-xt.safetensors is a bare fp16 state dict of SVD-XT's UNet: one of the same format (random weights,
    3 GB) loads strictly into svd-xt and exports with the consistency sampler."""
    path = student_file(tmp_path, "svd-xt")
    manifest = export(resolve_source("svd-xt", unet=path, sampler="consistency"), tmp_path / "ir")
    assert manifest["source"]["unet"]["sha256"] == sha256_file(path)
    assert manifest["generation_defaults"]["num_inference_steps"] == 4


def test_model_card_names_the_student_and_its_sampler(student):
    from svdtool.push import model_card

    path, ir = student
    card = model_card(read_manifest(ir), "me/tiny-student")
    assert "## Sampler" in card and f"replaced by `{path}`" in card and sha256_file(path) in card
    assert "**consistency**" in card and "4 steps, guidance 1.0 → 1.2" in card
    assert "num_inference_steps=4, min_guidance_scale=1.0, max_guidance_scale=1.2" in card


def test_bench_runs_each_folder_at_its_own_steps(student, tiny_ir_fp16, tmp_path, image_file):
    _, ir = student
    out = tmp_path / "bench.json"
    result = runner.invoke(app, ["bench", str(tiny_ir_fp16), str(ir), "--image", str(image_file), "--repeat", "1", "-o", str(out)])
    assert result.exit_code == 0, result.output
    rows = json.loads(out.read_text())["results"]
    assert [(r["steps"], r["guidance"]) for r in rows] == [(PRESETS["tiny"].defaults.num_inference_steps, [1.0, 3.0]), (4, [1.0, 1.2])]
    from svdtool.runtime.session import own_sampling  # --speed takes its share of each folder's own steps (4 and 4: 2)

    given = GenerationSettings(num_inference_steps=2, speed="fast").resolved(read_manifest(ir)["generation_defaults"])
    assert (own_sampling(given, ir).num_inference_steps, own_sampling(given, tiny_ir_fp16).num_inference_steps) == (2, 2)
