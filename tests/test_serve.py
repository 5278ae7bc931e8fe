"""`svdtool serve` (serve/): a real Ray Serve on 127.0.0.1 with two replicas of the tiny IR, driven by a real HTTP
client — round trip (frames equal the library's for the same seed), async jobs with progress, both replicas used,
429 when a replica's queue is full, one-line JSON errors, the token, a replica killed mid-request, the page in headless
Chromium, and --autoscale adding a replica under load."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx
import pytest
from PIL import Image

from svdtool.runtime import GenerationSettings, generate
from svdtool.runtime.session import ir_generation_defaults, open_session, plan

from conftest import free_port

sys.path.insert(0, str(Path(__file__).parents[1] / "bench"))
from serve_abuse import CASES, SERVICE_OPTIONS, TOKEN, run_suite  # noqa: E402  (the abuse and fault suite, bench/)

SMALL = {"frames": "4", "steps": "3", "height": "64", "width": "64", "seed": "42"}
AUTH = {"Authorization": f"Bearer {TOKEN}"}


def _as_a_background_job() -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # what a non-interactive shell does to `svdtool serve &`


@contextlib.contextmanager
def running_service(model, *options: str, stop: int = signal.SIGTERM):
    """A real `svdtool serve` process on a free loopback port, up (health answers) until the block ends; started with
    SIGINT ignored, as a script's background job is, then stopped by `stop`, which must shut it down cleanly."""
    pytest.importorskip("ray.serve")
    port = free_port()
    # The console goes to a file: a pipe nobody reads fills up over a module's requests, and the server then blocks
    # on its next line ("stopping ...") until the teardown's timeout kills it.
    console = tempfile.TemporaryFile("w+")
    process = subprocess.Popen([sys.executable, "-m", "svdtool.cli", "serve", str(model), "--port", str(port), *options],
                               stdout=console, stderr=subprocess.STDOUT, text=True, preexec_fn=_as_a_background_job)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        assert process.poll() is None, console.seek(0) or console.read()
        try:
            if httpx.get(f"{url}/v1/health", timeout=5).status_code == 200:
                break
        except httpx.HTTPError:
            time.sleep(1)
    try:
        yield url
    finally:
        process.send_signal(stop)
        try:
            code = process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            process.kill()
            code = None
        console.seek(0)
        output = console.read()
        assert code == 0 and "stopped" in output, f"{signal.Signals(stop).name} did not stop the service: {output[-500:]}"
        console.close()


@pytest.fixture(scope="module")
def service(tiny_ir_fp32):
    with running_service(tiny_ir_fp32, *SERVICE_OPTIONS, "--token", TOKEN, stop=signal.SIGINT) as url:  # Ctrl-C; the autoscale case: SIGTERM
        yield url


def _png(image_file) -> bytes:
    return open(image_file, "rb").read()


def _post(url: str, image: bytes, fields: dict, headers=AUTH, timeout=300) -> httpx.Response:
    return httpx.post(f"{url}/v1/videos", files={"image": ("a.png", image, "image/png")}, data=fields, headers=headers,
                      timeout=timeout)


def test_round_trip_equals_the_library(service, tiny_ir_fp32, image_file):
    response = _post(service, _png(image_file), SMALL)
    assert response.status_code == 200 and response.headers["content-type"] == "video/mp4" and len(response.content) > 1000
    manifest = json.loads(response.headers["x-svdtool-manifest"])
    session = open_session(plan(str(tiny_ir_fp32), "openvino"), threads=1)
    settings = GenerationSettings(num_frames=4, num_inference_steps=3, height=64, width=64, seed=42)
    frames = generate(session.pipeline, Image.open(image_file).convert("RGB"),
                      settings.resolved(ir_generation_defaults(tiny_ir_fp32)), show_progress=False).frames
    assert manifest["frames_sha256"] == hashlib.sha256(frames.tobytes()).hexdigest()
    gif = _post(service, _png(image_file), {**SMALL}, headers={**AUTH, "Accept": "image/gif"})
    assert gif.headers["content-type"] == "image/gif" and gif.content[:3] == b"GIF"
    info = httpx.get(f"{service}/v1/model", headers=AUTH).json()
    assert info["defaults"]["size_multiple"] == 16 and info["limits"]["max_queue"] == 1


def test_async_job_reports_progress(service, image_file):
    job = _post(service, _png(image_file), {**SMALL, "steps": "12", "frames": "8", "async": "true"})
    assert job.status_code == 202
    seen = set()
    for _ in range(600):
        state = httpx.get(f"{service}{job.json()['status']}", headers=AUTH).json()
        seen.add(state["step"])
        if state["status"] not in ("queued", "running"):
            break
        time.sleep(0.05)
    assert state["status"] == "done" and state["step"] == state["steps"] == 12
    assert any(0 < step < 12 for step in seen), seen  # progress was visible on the way
    video = httpx.get(f"{service}{state['video']}", headers=AUTH)
    assert video.status_code == 200 and video.headers["content-type"] == "video/mp4"


def test_two_replicas_share_the_load_and_a_full_queue_is_429(service, image_file):
    results: list[httpx.Response] = []

    def one() -> None:
        results.append(_post(service, _png(image_file), {**SMALL, "steps": "10"}))

    threads = [threading.Thread(target=one) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    codes = sorted(r.status_code for r in results)
    assert set(codes) <= {200, 429} and 429 in codes and 200 in codes, codes
    refused = next(r for r in results if r.status_code == 429)
    assert int(refused.headers["retry-after"]) >= 1 and "waiting" in refused.json()["error"]
    pids = {json.loads(r.headers["x-svdtool-manifest"])["runtime"]["replica"]["pid"] for r in results if r.status_code == 200}
    assert len(pids) == 2


@pytest.mark.parametrize("fields, image, headers, status, fragment", [
    (SMALL, b"not an image", AUTH, 400, "could not be read"),
    ({**SMALL, "motion_bucket_id": "300"}, None, AUTH, 400, "motion-bucket-id 300 is outside 0-255"),
    ({**SMALL, "colour": "red"}, None, AUTH, 400, "unknown field(s) colour"),
    ({**SMALL, "steps": "40"}, None, AUTH, 413, "over this service's limit of 12"),
    ({**SMALL, "height": "100"}, None, AUTH, 400, "multiple of 16"),
    (SMALL, None, {}, 401, "bearer token"),
    (SMALL, None, {"Authorization": "Bearer wrong"}, 401, "bearer token"),
])
def test_refusals_are_json_errors(service, image_file, fields, image, headers, status, fragment):
    response = _post(service, image if image is not None else _png(image_file), fields, headers=headers)
    assert response.status_code == status and fragment in response.json()["error"], response.text
    assert "Traceback" not in response.text


# The suite's cases that render long videos on purpose (the async burst, clients disconnecting, a replica killed) take
# about a minute: they run with `pytest -m slow` and in `python bench/serve_abuse.py`, which wrote the committed table.
LONG_CASES = ("a burst of 8 async requests, --max-queue 1, 2 replicas", "clients disconnecting mid-render",
              "a replica killed (SIGKILL) mid-request")


def _suite(url: str, model: str, long_cases: bool) -> None:
    rows = run_suite(url, model, cases=[c for c in CASES if (c[1] in LONG_CASES) == long_cases])
    assert all(row["ok"] for row in rows), [row for row in rows if not row["ok"]]


def test_abuse_suite(service, tiny_ir_fp32):
    """#47: the quick cases of bench/serve_abuse.py against this real service, each refused with a JSON 4xx or handled;
    then health and a video equal to the library's. The committed table names every case of the suite."""
    assert set(LONG_CASES) < {case for _, case, _, _ in CASES}
    _suite(service, str(tiny_ir_fp32), long_cases=False)
    table = (Path(__file__).parents[1] / "bench" / "results" / "serve_abuse.md").read_text()
    assert all(f"| {case} |" in table for _, case, _, _ in CASES), "bench/results/serve_abuse.md is stale: run bench/serve_abuse.py"


@pytest.mark.slow
def test_fault_suite(service, tiny_ir_fp32):
    """#47: the long cases: an async burst stays within the queue, clients disconnecting never overlap renders on a
    replica (the old release-at-once ran up to 4 at once), a replica killed mid-request leaves the service rendering."""
    _suite(service, str(tiny_ir_fp32), long_cases=True)


def test_wrong_content_type_and_unknown_job(service):
    response = httpx.post(f"{service}/v1/videos", content=b"x", headers={**AUTH, "content-type": "text/plain"})
    assert response.status_code == 415 and "multipart" in response.json()["error"]
    assert httpx.get(f"{service}/v1/jobs/nope", headers=AUTH).status_code == 404


@pytest.mark.slow  # about 80 s: Serve waits 10 s of load before it adds a replica (run by `pytest -m slow`)
def test_autoscale_adds_a_replica_under_load(tiny_ir_fp32, image_file):
    """--autoscale 1:2 starts one replica; four clients that keep it busy for Serve's 10 s bring the second."""
    with running_service(tiny_ir_fp32, "--autoscale", "1:2", "--cpus-per-replica", "1", "--max-queue", "8") as url:
        pids: list[int] = []
        stop = threading.Event()

        def client() -> None:
            while not stop.is_set():
                response = _post(url, _png(image_file), {**SMALL, "steps": "10"}, headers={})
                if response.status_code == 200:
                    pids.append(json.loads(response.headers["x-svdtool-manifest"])["runtime"]["replica"]["pid"])
                else:
                    time.sleep(float(response.headers.get("retry-after", 1)))

        threads = [threading.Thread(target=client) for _ in range(4)]
        for thread in threads:
            thread.start()
        time.sleep(5)
        first_seconds = set(pids)
        deadline = time.monotonic() + 180
        while len(set(pids)) < 2 and time.monotonic() < deadline:
            time.sleep(1)
        stop.set()
        for thread in threads:
            thread.join(timeout=120)
    assert len(first_seconds) <= 1, "more than one replica before any load"
    assert len(set(pids)) == 2, f"no second replica after {len(pids)} videos"


def test_the_page_puts_no_server_text_into_html_and_the_pins_hold():
    """#47 item 11: the page used innerHTML for the video (with the manifest's format in it); the serve extra pins
    starlette and python-multipart above their multipart denial-of-service fixes."""
    import tomllib
    from importlib import resources

    assert "innerHTML" not in resources.files("svdtool.serve").joinpath("page.html").read_text()
    extras = tomllib.loads((Path(__file__).parents[1] / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    assert {"starlette>=0.40", "python-multipart>=0.0.18"} <= set(extras["serve"]) and "python-multipart>=0.0.18" in extras["test"]


def _chromium() -> str | None:
    import shutil

    return shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")


def test_page_in_headless_chromium(service, image_file, tmp_path):
    """The page at /: upload, progress, the video element plays; an oversized image shows the service's error."""
    browser = _chromium()
    if browser is None:
        pytest.skip("no Chromium here (apt-get install chromium)")
    import asyncio

    import websockets

    port = free_port()
    chrome = subprocess.Popen([browser, "--headless=new", "--no-sandbox", "--disable-gpu", "--mute-audio",
                               f"--remote-debugging-port={port}", "--remote-debugging-address=127.0.0.1",
                               f"--user-data-dir={tmp_path / 'profile'}", "about:blank"],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    huge = tmp_path / "huge.png"
    Image.new("RGB", (4200, 4100), (90, 120, 200)).save(huge)  # 17.2 MP: over the 16.8 MP limit, small on disk

    async def drive() -> dict:
        for _ in range(100):
            try:
                targets = httpx.get(f"http://127.0.0.1:{port}/json/list", timeout=2).json()
                page = next(t for t in targets if t["type"] == "page")
                break
            except (httpx.HTTPError, StopIteration):
                await asyncio.sleep(0.2)
        async with websockets.connect(page["webSocketDebuggerUrl"], max_size=None) as socket_:
            counter = iter(range(1, 10**6))

            async def call(method: str, **params) -> dict:
                ident = next(counter)
                await socket_.send(json.dumps({"id": ident, "method": method, "params": params}))
                while True:
                    message = json.loads(await socket_.recv())
                    if message.get("id") == ident:
                        return message.get("result", {})

            async def evaluate(expression: str):
                return (await call("Runtime.evaluate", expression=expression, returnByValue=True))["result"].get("value")

            async def wait_for(expression: str, seconds: float = 120):
                for _ in range(int(seconds * 10)):
                    value = await evaluate(expression)
                    if value:
                        return value
                    await asyncio.sleep(0.1)
                raise AssertionError(f"timed out waiting for {expression}")

            async def submit(path) -> None:
                await evaluate("document.getElementById('error').textContent = ''; document.getElementById('result').innerHTML = ''")
                document = await call("DOM.getDocument")
                node = await call("DOM.querySelector", nodeId=document["root"]["nodeId"], selector="#image")
                await call("DOM.setFileInputFiles", files=[str(path)], nodeId=node["nodeId"])
                await evaluate("document.getElementById('go').click()")

            await call("Page.enable")
            await call("Page.navigate", url=f"{service}/")
            await wait_for("document.readyState === 'complete' && !!document.getElementById('form')")
            await evaluate(f"document.getElementById('token').value = '{TOKEN}';"
                           "document.getElementById('token').dispatchEvent(new Event('change'));"
                           "document.querySelector('[name=frames]').value = 8; document.querySelector('[name=steps]').value = 12;"
                           "document.querySelector('[name=height]') === null")
            placeholders = await wait_for("document.querySelector('[name=steps]').placeholder && "
                                          "[document.querySelector('[name=frames]').placeholder, "
                                          "document.querySelector('[name=steps]').placeholder, document.getElementById('limits').textContent]")
            await submit(image_file)
            preview = await wait_for("document.getElementById('preview').src")
            progress = await wait_for("document.getElementById('progress').value > 0 && document.getElementById('progress').value")
            await wait_for("(() => { const v = document.getElementById('video'); return !!v && v.currentTime > 0 && !v.paused })()")
            download = await evaluate("document.getElementById('download').getAttribute('download')")
            facts = await wait_for("document.getElementById('facts').textContent")
            await call("Emulation.setDeviceMetricsOverride", width=1000, height=900, deviceScaleFactor=1, mobile=False)
            shot = await call("Page.captureScreenshot", format="png")
            (tmp_path / "page.png").write_bytes(__import__("base64").b64decode(shot["data"]))
            await submit(huge)
            error = await wait_for("document.getElementById('error').textContent")
            not_json = (await call("Runtime.evaluate", awaitPromise=True, returnByValue=True, expression=(
                "json(new Response('<html>busy</html>', {status: 503, statusText: 'Service Unavailable', "
                "headers: {'content-type': 'text/html'}})).then(() => 'parsed', (e) => e.message)")))["result"]["value"]
            return {"progress": progress, "download": download, "error": error, "placeholders": placeholders, "not_json": not_json,
                    "preview": preview, "facts": facts}

    try:
        outcome = asyncio.run(drive())
    finally:
        chrome.kill()
    assert outcome["progress"] >= 1 and outcome["download"] == "video.mp4"
    frames, steps, limits = outcome["placeholders"]
    assert (frames, steps) == ("6", "4") and "12 steps" in limits  # tiny's defaults; the fixture's --max-steps
    assert outcome["not_json"] == "the service answered 503 Service Unavailable"  # Serve's own 503 was a SyntaxError
    assert outcome["preview"].startswith("blob:")  # the chosen image is shown beside the video
    assert "64x64, 8 frames" in outcome["facts"] and "12 (exact)" in outcome["facts"] and " s (UNet " in outcome["facts"]
    if os.environ.get("SVDTOOL_PAGE_SHOT"):  # look at it: SVDTOOL_PAGE_SHOT=page.png pytest -k chromium
        __import__("shutil").copy(tmp_path / "page.png", os.environ["SVDTOOL_PAGE_SHOT"])
    assert "over this service's limit" in outcome["error"]
