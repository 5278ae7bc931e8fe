"""A newcomer's paper cuts: cheap checks before expensive work, ranges SVD can mean, help that shows what it says,
a console with only svdtool's output, the cache, and the size rule taken from the model."""

import os
import re
import subprocess
import sys

import click
import pytest
from typer.main import get_command
from typer.testing import CliRunner

from svdtool.cli import app

runner = CliRunner()
LIBRARY_CHATTER = ("Loading weights", "No CUDA runtime", "Multiple distributions", "is deprecated", "TracerWarning",
                   "Could not infer", "INFO:nncf", "Writing model shards")


def run(*args, env: dict | None = None):
    result = runner.invoke(app, [str(a) for a in args], env=env)
    assert "Traceback" not in result.output
    return result


def one_line_error(result, fragment: str) -> None:
    assert result.exit_code == 2, result.output
    assert "error:" in result.output and fragment in " ".join(result.output.split())


def test_generate_checks_settings_before_exporting_the_default_model(image_file, tmp_path):
    """The default model is exported on first use; an impossible height is refused before that (no cache written)."""
    env = {"SVDTOOL_CACHE": str(tmp_path / "cache")}
    one_line_error(run("generate", "-i", image_file, "-o", tmp_path / "v.gif", "--height", "100", env=env), "multiple of 32")
    one_line_error(run("generate", "-i", image_file, "-o", tmp_path / "v.avi", env=env), ".mp4")
    one_line_error(run("generate", "-i", image_file, "-o", tmp_path / "v.gif", "--precision", "f8", env=env), "--precision")
    assert not (tmp_path / "cache" / "ir").exists()


def test_mp4_without_its_encoder_is_refused_up_front(image_file, tmp_path, monkeypatch):
    """Without imageio-ffmpeg, imageio would hand an .mp4 to another plugin and fail after the whole generation (the
    service answered 'internal error: TypeError'): refused before any work, and a .gif still works."""
    from svdtool.runtime.media import output_kind

    monkeypatch.setitem(sys.modules, "imageio_ffmpeg", None)
    env = {"SVDTOOL_CACHE": str(tmp_path / "cache")}
    one_line_error(run("generate", "-i", image_file, "-o", tmp_path / "v.mp4", env=env), "needs imageio-ffmpeg")
    assert not (tmp_path / "cache" / "ir").exists()
    assert output_kind(tmp_path / "v.gif") == "gif"


@pytest.mark.parametrize("option,value,message", [
    ("--motion-bucket-id", "-5", "0-255"), ("--motion-bucket-id", "256", "0-255"), ("--noise-aug-strength", "-0.1", "negative"),
    ("--min-guidance", "0.5", "below 1"), ("--fps", "0", "1 or more"), ("--decode-chunk-size", "0", "1 or more")])
def test_out_of_range_settings(tiny_ir_fp32, image_file, tmp_path, option, value, message):
    one_line_error(run("generate", "-i", image_file, "-o", tmp_path / "v.gif", "-m", tiny_ir_fp32, option, value), message)
    assert not (tmp_path / "v.gif").exists()


def test_size_rule_comes_from_the_model(tiny_ir_fp32, image_file, tmp_path):
    """tiny's UNet has two levels over a VAE downscale of 8: multiples of 16, so 48x80 runs; 40 is refused with the rule."""
    result = run("generate", "-i", image_file, "-o", tmp_path / "v.gif", "-m", tiny_ir_fp32, "--height", "48", "--width", "80",
                 "--steps", "2")
    assert result.exit_code == 0, result.output
    one_line_error(run("generate", "-i", image_file, "-o", tmp_path / "w.gif", "-m", tiny_ir_fp32, "--height", "40"), "multiple of 16")
    one_line_error(run("generate", "-i", image_file, "-o", tmp_path / "w.gif", "--backend", "torch", "-m", "svd", "--height", "96"),
                   "multiple of 64")


def test_other_commands_check_before_working(tiny_ir_fp16, tmp_path, image_file):
    (tmp_path / "taken").mkdir()
    one_line_error(run("quantize", tiny_ir_fp16, "--calib", tmp_path, "-o", tmp_path / "taken"), "already exists")
    one_line_error(run("export", "tiny", "-o", tmp_path / "taken"), "already exists")
    one_line_error(run("export", "tiny", "-o", tmp_path / "x", "--weights", "int3"), "--weights")
    one_line_error(run("export", "tiny", "-o", tmp_path / "x", "--static", "--height", "40"), "multiple of 16")
    one_line_error(run("validate", tiny_ir_fp16, "--reference", "cpu", "--images", tmp_path, "--precision", "f8",
                       "-o", tmp_path / "r"), "--precision")
    one_line_error(run("bench", tmp_path / "missing"), "does not exist")
    assert not (tmp_path / "r").exists() and not (tmp_path / "x").exists()


def _help_strings(command: click.Command, path: tuple[str, ...] = ()):
    if isinstance(command, click.Group):
        for name, sub in command.commands.items():
            yield from _help_strings(sub, path + (name,))
        return
    for param in command.params:
        if getattr(param, "help", None):
            yield path, param.help


def test_help_keeps_brackets():
    """Help text is printed as written: no rich markup eats `[thresholds]` or `hf:NAME[:split][:column]`."""
    bracketed = [(path, text) for path, text in _help_strings(get_command(app)) if "[" in text]
    assert len(bracketed) >= 2
    for path, text in bracketed:
        shown = " ".join(run(*path, "--help").output.split())
        assert " ".join(text.split()) in shown, (path, text)


def test_console_shows_only_svdtool_output(tmp_path):
    """Library logs, warnings and progress bars go to the log file; `--verbose` shows them too."""
    env = {**os.environ, "SVDTOOL_CACHE": str(tmp_path / "cache")}
    quiet = subprocess.run([sys.executable, "-m", "svdtool.cli", "export", "tiny", "-o", str(tmp_path / "a")],
                           capture_output=True, text=True, env=env)
    assert quiet.returncode == 0, quiet.stderr
    shown = quiet.stdout + quiet.stderr
    assert "exported" in shown and not [text for text in LIBRARY_CHATTER if text in shown], shown
    log = (tmp_path / "cache" / "logs" / "last-run.log").read_text()
    assert "TracerWarning" in log  # what was hidden is kept
    loud = subprocess.run([sys.executable, "-m", "svdtool.cli", "export", "tiny", "-o", str(tmp_path / "b"), "--verbose"],
                          capture_output=True, text=True, env=env)
    assert loud.returncode == 0 and "TracerWarning" in loud.stdout + loud.stderr


def test_cache_lists_and_clears_named_models(tmp_path, image_file):
    env = {"SVDTOOL_CACHE": str(tmp_path / "cache")}
    first = run("generate", "-i", image_file, "-o", tmp_path / "v.gif", "-m", "tiny", "--steps", "2", env=env)
    assert first.exit_code == 0, first.output
    assert re.search(r"First use of 'tiny' with OpenVINO: exporting it once to .*tiny-fp16", " ".join(first.output.split()))
    listed = " ".join(run("cache", "list", env=env).output.split())
    assert "tiny-fp16" in listed and "MiB" in listed
    again = run("generate", "-i", image_file, "-o", tmp_path / "w.gif", "-m", "tiny", "--steps", "2", env=env)
    assert "First use" not in again.output
    assert "removed 1 items" in run("cache", "clear", "tiny", env=env).output
    assert not (tmp_path / "cache" / "ir" / "tiny-fp16").exists()
