"""`--speed exact|balanced|fast`: the steps each preset takes, what every manifest and report records, the one-line
refusal of an unknown preset, and validate judging a preset against the exact reference."""

from __future__ import annotations

import json
import shutil

import pytest
from typer.testing import CliRunner

from svdtool.cli import app
from svdtool.errors import SvdtoolError
from svdtool.models import GenerationDefaults
from svdtool.runtime import GenerationSettings
from svdtool.runtime.speed import SPEEDS
from svdtool.validate import make_reference, validate

runner = CliRunner()
SVD_DEFAULTS = GenerationDefaults(num_frames=14, height=576, width=1024, num_inference_steps=25, decode_chunk_size=8)


@pytest.mark.parametrize("speed,steps", [("exact", 25), ("balanced", 15), ("fast", 10)])
def test_a_preset_sets_the_share_of_the_models_steps(speed, steps):
    settings = GenerationSettings(speed=speed).resolved(SVD_DEFAULTS)
    assert settings.num_inference_steps == steps and settings.speed == speed
    assert "speed" not in settings.pipeline_kwargs()  # diffusers never sees it


def test_given_steps_win_over_the_preset_and_a_preset_never_reaches_zero_steps():
    assert GenerationSettings(speed="fast", num_inference_steps=7).resolved(SVD_DEFAULTS).num_inference_steps == 7
    one_step = GenerationDefaults(num_frames=2, height=64, width=64, num_inference_steps=1)
    assert GenerationSettings(speed="fast").resolved(one_step).num_inference_steps == 1


def test_an_unknown_preset_is_refused():
    with pytest.raises(SvdtoolError, match="--speed must be one of exact, balanced, fast"):
        GenerationSettings(speed="turbo").resolved(SVD_DEFAULTS)


@pytest.mark.parametrize("command", ["generate", "validate", "bench"])
def test_an_unknown_preset_is_one_line_before_any_model_is_loaded(command, tiny_ir_fp32, image_file, tmp_path):
    args = {"generate": ["generate", "-m", str(tiny_ir_fp32), "-i", str(image_file), "-o", str(tmp_path / "v.gif")],
            "validate": ["validate", str(tiny_ir_fp32), "--reference", "cpu", "--images", str(image_file.parent), "-o",
                         str(tmp_path / "report")],
            "bench": ["bench", str(tiny_ir_fp32), "-o", str(tmp_path / "bench.json")]}[command]
    result = runner.invoke(app, [*args, "--speed", "turbo"])
    assert result.exit_code == 2 and "Traceback" not in result.output
    assert "--speed must be one of exact, balanced, fast, not 'turbo'" in " ".join(result.output.split())
    assert not (tmp_path / "v.gif").exists() and not (tmp_path / "report").exists() and not (tmp_path / "bench.json").exists()


@pytest.mark.parametrize("speed", list(SPEEDS))
def test_each_preset_runs_on_tiny_and_its_manifest_records_it(speed, tiny_ir_fp32, image_file, tmp_path):
    result = runner.invoke(app, ["generate", "-m", str(tiny_ir_fp32), "-i", str(image_file), "-o", str(tmp_path / "v.gif"),
                                 "--speed", speed, "--frames", "2"])
    assert result.exit_code == 0, result.output
    manifest = json.loads((tmp_path / "v.gif.json").read_text())
    default_steps = json.loads((tiny_ir_fp32 / "svdtool.json").read_text())["generation_defaults"]["num_inference_steps"]
    assert manifest["settings"]["speed"] == speed
    assert manifest["settings"]["num_inference_steps"] == SPEEDS[speed].steps(default_steps)
    assert f"{SPEEDS[speed].steps(default_steps)} steps" in result.output


def test_validate_runs_the_preset_against_the_exact_reference(tiny_ir_fp32, image_file, tmp_path):
    images = tmp_path / "images"
    images.mkdir()
    shutil.copy(image_file, images / "a.png")
    reference = tmp_path / "ref"
    exact = GenerationSettings(num_frames=2, num_inference_steps=10)
    make_reference("tiny", images, reference, device="cpu", dtype="fp32", settings=exact)
    report = validate(tiny_ir_fp32, str(reference), tmp_path / "fast", settings=GenerationSettings(speed="fast"),
                      precision="f32")
    assert report["settings"]["speed"] == "fast" and report["settings"]["num_inference_steps"] == 4
    assert json.loads((reference / "reference.json").read_text())["settings"]["num_inference_steps"] == 10
    same = validate(tiny_ir_fp32, str(reference), tmp_path / "exact", precision="f32")
    # the exact run reproduces the reference; four steps of ten do not (a preset is judged, not excused)
    assert same["summary"]["psnr_mean"] > report["summary"]["psnr_mean"]


def test_a_service_request_may_ask_for_a_preset():
    from svdtool.serve.limits import ApiError, ServeLimits, parse_settings

    settings, _ = parse_settings({"speed": "balanced", "frames": "2"}, SVD_DEFAULTS.as_dict(), ServeLimits())
    assert settings.speed == "balanced" and settings.num_inference_steps == 15
    with pytest.raises(ApiError, match="speed must be one of exact, balanced, fast") as error:
        parse_settings({"speed": "turbo"}, SVD_DEFAULTS.as_dict(), ServeLimits())
    assert error.value.status == 400
