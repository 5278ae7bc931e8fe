"""What a request body may carry (issue #47): values that used to pass the checks and break later are refused with a
400, and the bearer-token comparison takes any header a client sends. Pure functions: no service is started."""

from __future__ import annotations

import json

import pytest

from svdtool.models import GenerationDefaults
from svdtool.serve.limits import ApiError, ServeLimits, parse_settings, token_matches

DEFAULTS = GenerationDefaults(num_frames=4, height=64, width=64, num_inference_steps=3).as_dict()


@pytest.mark.parametrize("body,message", [
    ('{"max_guidance": NaN}', "max-guidance nan is not a finite number"),        # rendered a black video
    ('{"noise_aug_strength": NaN}', "noise-aug-strength nan is not a finite number"),
    ('{"min_guidance": Infinity}', "min-guidance inf is not a finite number"),
    ('{"frames": Infinity}', "frames must be a finite number"),                   # an uncaught OverflowError (500)
    ('{"seed": 1180591620717411303424}', "seed 1180591620717411303424 is outside"),  # overflowed torch's generator
    ('{"seed": -1}', "seed -1 is outside"),
    ('{"fps": 100000}', "fps 100000 is over 240"),                               # failed in the encoder after the render
])
def test_values_that_broke_later_are_a_400(body, message):
    with pytest.raises(ApiError) as error:
        parse_settings(json.loads(body), DEFAULTS, ServeLimits())
    assert error.value.status == 400 and message in error.value.message


def test_sane_values_still_pass():
    settings, _ = parse_settings({"seed": 2**63 - 1, "fps": 30, "max_guidance": 2.5}, DEFAULTS, ServeLimits())
    assert settings.seed == 2**63 - 1 and settings.fps == 30


@pytest.mark.parametrize("header,expected", [
    ("Bearer s3cret", True), ("Bearer wrong", False), ("", False),
    ("Bearer s3crét", False),  # non-ASCII: compare_digest on str raised TypeError, a 500 instead of a 401
    ("Bearer \udcff", False),  # a lone surrogate, as a mis-decoded header may carry
])
def test_token_comparison_takes_any_header(header, expected):
    assert token_matches(header, "s3cret") is expected


@pytest.mark.parametrize("host", ["0.0.0.0", "::", "192.168.1.20", "example.org"])
def test_serving_beyond_loopback_without_a_token_is_refused_before_starting(host, monkeypatch):
    from typer.testing import CliRunner

    from svdtool.cli import app

    monkeypatch.delenv("SVDTOOL_TOKEN", raising=False)
    result = CliRunner().invoke(app, ["serve", "tiny", "--host", host])
    assert result.exit_code == 2 and "Traceback" not in result.output
    line = " ".join(result.output.split())
    assert f"--host {host} listens beyond this machine without a token" in line and "--insecure" in line
    assert "SVDTOOL_TOKEN=" in line  # a random token is offered


@pytest.mark.parametrize("host,loopback", [("127.0.0.1", True), ("127.0.0.2", True), ("::1", True), ("localhost", True),
                                           ("0.0.0.0", False), ("10.0.0.1", False), ("myhost", False)])
def test_loopback_hosts(host, loopback):
    from svdtool.cli.serve import _loopback

    assert _loopback(host) is loopback
