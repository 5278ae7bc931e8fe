"""What a request body may carry (issue #47): values that used to pass the checks and break later are refused with a
400, and the bearer-token comparison takes any header a client sends. Pure functions: no service is started."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from svdtool.models import GenerationDefaults
from svdtool.serve import jobs
from svdtool.serve.jobs import JobStore
from svdtool.serve.limits import ApiError, ServeLimits, decode_image, negotiate_format, parse_settings, token_matches

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


@pytest.mark.parametrize("accept, expected", [
    ("image/gif", "gif"), ("image/gif;q=0", None), ("image/gif;q=0, video/mp4", "mp4"), ("video/mp4, image/gif;q=0.5", "mp4"),
    ("image/gif, video/mp4;q=0.9", "gif"), ("IMAGE/GIF", "gif"), ("text/html, image/gif;q=bad", None), ("", None),
    ("image/gifx", None), ("video/mp4; q=1, image/gif; q=1", "mp4"),
])
def test_accept_is_parsed_with_q_values(accept, expected):
    assert negotiate_format(accept) == expected


def test_only_jpeg_png_webp_are_decoded(tmp_path):
    import io

    from PIL import Image

    for image_format, ok in (("PNG", True), ("JPEG", True), ("WEBP", True), ("TIFF", False), ("BMP", False), ("EPS", False)):
        buffer = io.BytesIO()
        Image.new("RGB", (8, 8), (200, 10, 10)).save(buffer, format=image_format)
        if ok:
            assert decode_image(buffer.getvalue(), ServeLimits()).size == (8, 8)
        else:
            with pytest.raises(ApiError, match="could not be read"):
                decode_image(buffer.getvalue(), ServeLimits())


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_job_store_never_drops_running_jobs_and_stays_bounded():
    clock = Clock()
    store = JobStore(clock)
    store.create("running", 10)
    store.update("running", status="running", step=1)
    for index in range(jobs.KEEP + 50):
        store.create(f"job{index}", 10)
        store.finish(f"job{index}", b"v" * 100, {"format": "mp4"})
    assert store.get("running")["status"] == "running"  # the old store evicted it as the oldest of 200
    assert store.stats()["finished"] == jobs.KEEP and store.get("job0") is None and store.video("job0") is None
    store.finish("running", b"video", {"format": "mp4"})
    assert store.get("running")["status"] == "done" and store.video("running") == b"video"
    store.finish("forgotten", b"x" * 10, {})  # a job the store no longer knows leaves no video behind
    assert store.video("forgotten") is None
    big = b"x" * (jobs.MAX_VIDEO_BYTES // 3 + 1)
    for index in range(4):
        store.create(f"big{index}", 1)
        store.finish(f"big{index}", big, {})
    assert store.stats()["video_bytes"] <= jobs.MAX_VIDEO_BYTES and store.video("big3") == big and store.video("big0") is None
    clock.now += jobs.MAX_AGE_S + 1
    store.create("new", 1)
    assert store.stats() == {"jobs": 1, "finished": 0, "video_bytes": 0}  # every finished job aged out


def test_a_job_without_progress_is_reported_failed():
    clock = Clock()
    store = JobStore(clock)
    store.create("stuck", 10)
    store.update("stuck", status="running", step=3)
    clock.now += jobs.STALE_S - 1
    assert store.get("stuck")["status"] == "running"
    clock.now += 2
    state = store.get("stuck")
    assert state["status"] == "failed" and "replica stopped" in state["error"]


def test_a_request_the_replica_cannot_hold_is_refused(tiny_ir_fp32, monkeypatch):
    from svdtool.errors import SvdtoolError
    from svdtool.runtime import GenerationSettings
    from svdtool.runtime.footprint import check_working_memory
    from svdtool.runtime.session import ir_generation_defaults

    settings = GenerationSettings(num_frames=14, height=512, width=512).resolved(ir_generation_defaults(tiny_ir_fp32))
    working = check_working_memory(tiny_ir_fp32, settings)
    assert working > 0.2
    monkeypatch.setenv("SVDTOOL_MEMORY_GB", str(working / 2))
    with pytest.raises(SvdtoolError, match="working memory and .* GB is available: ask for fewer frames"):
        check_working_memory(tiny_ir_fp32, settings)
    small = GenerationSettings(num_frames=2, height=64, width=64).resolved(ir_generation_defaults(tiny_ir_fp32))
    assert check_working_memory(tiny_ir_fp32, small) < working / 2  # a smaller video still fits


def test_serve_refuses_replicas_that_do_not_fit_before_ray_starts(tiny_ir_fp32, monkeypatch):
    from typer.testing import CliRunner

    from svdtool.cli import app

    monkeypatch.setenv("SVDTOOL_MEMORY_GB", "2")
    result = CliRunner().invoke(app, ["serve", str(tiny_ir_fp32), "--replicas", "4", "--port", "1"])
    assert result.exit_code == 2 and "4 replicas need about" in result.output and "use --replicas 1 or fewer" in result.output, result.output


def test_sizes_bound_the_shapes_a_replica_compiles():
    from svdtool.errors import SvdtoolError
    from svdtool.serve.limits import parse_sizes

    limits = ServeLimits(sizes=parse_sizes("64x64x4, 128x128x8"))
    assert limits.sizes == ((64, 64, 4), (128, 128, 8))
    settings, _ = parse_settings({"height": "128", "width": "128", "frames": "8"}, DEFAULTS, limits)
    assert (settings.height, settings.width, settings.num_frames) == (128, 128, 8)
    for fields, fragment in (({"height": "128", "width": "64", "frames": "8"}, "128x64x8 (height x width x frames) is not served"),
                             ({"height": "64", "width": "64", "frames": "4", "decode_chunk_size": "2"}, "decode_chunk_size is fixed")):
        with pytest.raises(ApiError, match=fragment.replace("(", r"\(").replace(")", r"\)")) as refused:
            parse_settings(fields, DEFAULTS, limits)
        assert refused.value.status == 400
    for text in ("64x64", "axbxc", "0x64x4", ","):
        with pytest.raises(SvdtoolError, match="--sizes"):
            parse_sizes(text)


def test_serve_refuses_a_size_the_model_cannot_make(tiny_ir_fp32):
    from typer.testing import CliRunner

    from svdtool.cli import app

    result = CliRunner().invoke(app, ["serve", str(tiny_ir_fp32), "--sizes", "64x64x4,100x64x4"])
    assert result.exit_code == 2 and "--height 100 is not possible" in result.output, result.output


def test_a_service_with_sizes_keeps_compiled_shapes(tiny_ir_fp32, monkeypatch, tmp_path):
    from svdtool import cache
    from svdtool.runtime import GenerationSettings, generate, load_image
    from svdtool.runtime.session import ir_generation_defaults, open_session, plan

    monkeypatch.setenv("SVDTOOL_CACHE", str(tmp_path))
    session = open_session(plan(str(tiny_ir_fp32), "openvino"), threads=2, cache_compiled=True)
    image = load_image(Path(__file__).parents[1] / "examples" / "astronaut.jpg")
    for size in (64, 128):
        generate(session.pipeline, image, GenerationSettings(num_frames=2, height=size, width=size, num_inference_steps=1)
                 .resolved(ir_generation_defaults(tiny_ir_fp32)), show_progress=False)
    [(folder, size_bytes)] = [(entry, size) for entry, size in cache.cached_entries() if entry.parent.name == "compiled"]
    assert size_bytes > 0 and len([f for f in folder.iterdir() if f.suffix == ".blob"]) >= 2  # a blob per compiled shape


def test_stopping_the_service_ends_the_detached_job_store():
    """#47 item 6: the store is a detached actor, which serve.shutdown() leaves running on a cluster; stop_jobs ends it."""
    ray = pytest.importorskip("ray")
    from svdtool.serve.jobs import JOBS_ACTOR, JOBS_NAMESPACE, job_store, stop_jobs

    ray.init(num_cpus=1, include_dashboard=False, namespace=JOBS_NAMESPACE)
    try:
        store = job_store()
        ray.get(store.create.remote("a", 1))
        assert ray.get_actor(JOBS_ACTOR, namespace=JOBS_NAMESPACE)
        stop_jobs()
        for _ in range(50):
            try:
                ray.get_actor(JOBS_ACTOR, namespace=JOBS_NAMESPACE)
            except ValueError:
                break
            __import__("time").sleep(0.2)
        else:
            pytest.fail("the job store outlived stop_jobs")
        stop_jobs()  # a second stop (nothing left) is no error
    finally:
        ray.shutdown()
