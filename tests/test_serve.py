"""`svdtool serve` (serve/): a real Ray Serve on 127.0.0.1 with two replicas of the tiny IR, driven by a real HTTP
client — round trip (frames equal the library's for the same seed), async jobs with progress, both replicas used,
429 when a replica's queue is full, one-line JSON errors, the token, a replica killed mid-request, the page in headless
Chromium, and --autoscale adding a replica under load."""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time

import httpx
import pytest
from PIL import Image

from svdtool.runtime import GenerationSettings, generate
from svdtool.runtime.session import ir_generation_defaults, open_session, plan

from conftest import free_port

TOKEN = "test-token"
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
    with running_service(tiny_ir_fp32, "--replicas", "2", "--cpus-per-replica", "1", "--token", TOKEN, "--max-queue", "1",
                         "--max-steps", "12", "--max-image-mb", "1", "--body-timeout", "3", stop=signal.SIGINT) as url:  # Ctrl-C; the autoscale case: SIGTERM
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


def _tiff(image_file) -> bytes:
    buffer = io.BytesIO()
    Image.open(image_file).save(buffer, format="TIFF")
    return buffer.getvalue()


def test_abuse_is_refused_while_reading_and_the_service_still_renders(service, image_file):
    """#47 items 3, 8, 9, 11: bodies over the limit (declared, or chunked without a length) are 413 before they are
    read whole; a trickling body is a 408; TIFF is not decoded; `Accept: image/gif;q=0` gets no GIF; /v1/health
    without the token, /v1/model and the manifest header show no host, process or server path. Then a correct video."""
    limit = 2**20 * 4 // 3 + 4 + 64 * 2**10  # --max-image-mb 1: ServeLimits.max_body_bytes
    big = httpx.post(f"{service}/v1/videos", content=b"{" + b" " * (limit + 1), timeout=60,
                     headers={**AUTH, "content-type": "application/json"})
    assert big.status_code == 413 and "limit" in big.json()["error"], big.text

    def chunks():
        for _ in range(64):
            yield b" " * 2**16  # 4 MiB in all, no Content-Length: refused once the limit is passed
    chunked = httpx.post(f"{service}/v1/videos", content=chunks(), timeout=60, headers={**AUTH, "content-type": "application/json"})
    assert chunked.status_code == 413, chunked.text

    def trickle():
        for _ in range(10):
            time.sleep(0.5)
            yield b" "
    slow = httpx.post(f"{service}/v1/videos", content=trickle(), timeout=60, headers={**AUTH, "content-type": "application/json"})
    assert slow.status_code == 408 and "did not arrive within 3 s" in slow.json()["error"], slow.text
    tiff = _post(service, _tiff(image_file), SMALL)
    assert tiff.status_code == 400 and "could not be read" in tiff.json()["error"]
    not_gif = _post(service, _png(image_file), SMALL, headers={**AUTH, "Accept": "image/gif;q=0, video/mp4"})
    assert not_gif.status_code == 200 and not_gif.headers["content-type"] == "video/mp4"
    assert "replica" not in httpx.get(f"{service}/v1/health").json()
    assert "pid" in httpx.get(f"{service}/v1/health", headers=AUTH).json()["replica"]
    model = httpx.get(f"{service}/v1/model", headers=AUTH).json()
    manifest = json.loads(not_gif.headers["x-svdtool-manifest"])
    assert "/" not in model["model"]["model"] and "/" not in manifest["runtime"]["model"]
    assert _post(service, _png(image_file), SMALL).status_code == 200  # the service still renders


def test_disconnected_clients_never_overlap_renders(service, image_file):
    """#47 item 1: a client that gives up mid-render used to free its replica while the render went on, so the next
    request rendered beside it on one pipeline. Each replica counts the renders running at once; it never passes 1."""
    long = {**SMALL, "steps": "12", "frames": "14", "height": "512", "width": "512"}

    def dropped() -> None:
        with contextlib.suppress(httpx.TimeoutException):
            _post(service, _png(image_file), long, timeout=1.5)

    for _ in range(3):
        threads = [threading.Thread(target=dropped) for _ in range(2)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        follow = [threading.Thread(target=lambda: _post(service, _png(image_file), SMALL)) for _ in range(2)]
        for thread in follow:
            thread.start()
        for thread in follow:
            thread.join()
    most: dict[int, int] = {}
    cancelled: dict[int, int] = {}
    for _ in range(60):
        health = httpx.get(f"{service}/v1/health", headers=AUTH).json()
        most[health["replica"]["pid"]] = health["most_renders_at_once"]
        cancelled[health["replica"]["pid"]] = health["cancelled_renders"]
        if len(most) == 2:
            break
    assert sum(cancelled.values()) >= 1, cancelled  # the case happened: Serve cancelled a render whose client left
    assert most and max(most.values()) == 1, most
    assert _post(service, _png(image_file), SMALL).status_code == 200


def test_an_async_burst_stays_within_the_queue(service, image_file):
    """#47 item 11: async requests took their queue slot only when their task started, so a burst passed the 429
    check together. With --max-queue 1 and 2 replicas, a replica holds one render and one waiting request."""
    long = {**SMALL, "steps": "12", "frames": "14", "height": "512", "width": "512", "async": "true"}
    results: list[httpx.Response] = []
    barrier = threading.Barrier(8)

    def one() -> None:
        barrier.wait()
        results.append(_post(service, _png(image_file), long))

    threads = [threading.Thread(target=one) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    accepted = [r.json()["status"] for r in results if r.status_code == 202]
    assert sorted({r.status_code for r in results}) == [202, 429] and len(accepted) <= 4, [r.status_code for r in results]
    for status in accepted:  # let them finish: the module's other tests share the replicas
        for _ in range(600):
            if httpx.get(f"{service}{status}", headers=AUTH).json()["status"] not in ("queued", "running"):
                break
            time.sleep(0.2)


def test_wrong_content_type_and_unknown_job(service):
    response = httpx.post(f"{service}/v1/videos", content=b"x", headers={**AUTH, "content-type": "text/plain"})
    assert response.status_code == 415 and "multipart" in response.json()["error"]
    assert httpx.get(f"{service}/v1/jobs/nope", headers=AUTH).status_code == 404


def _busy_replica() -> int | None:
    """The Serve replica process that is computing (Ray titles them `ray::ServeReplica:...`): the one using a CPU.
    (A health check cannot find it: Serve routes it to the least busy replica.)"""
    import psutil

    replicas = [p for p in psutil.process_iter(["cmdline"]) if "ServeReplica:svdtool" in " ".join(p.info["cmdline"] or [])]
    for process in replicas:
        process.cpu_percent(None)
    time.sleep(0.3)
    usage = {process.pid: process.cpu_percent(None) for process in replicas}
    busiest = max(usage, key=usage.get, default=None)
    return busiest if busiest is not None and usage[busiest] > 30 else None


def test_a_killed_replica_leaves_the_service_up(service, image_file):
    """SIGKILL the replica computing a long request: its client gets an error or Serve's retried result, and the
    service answers again once Serve has replaced the replica."""
    outcome: list = []

    def long_request() -> None:
        try:
            outcome.append(_post(service, _png(image_file), {**SMALL, "steps": "12", "frames": "8", "height": "128",
                                                              "width": "128"}))
        except httpx.HTTPError as exc:
            outcome.append(exc)

    thread = threading.Thread(target=long_request)
    thread.start()
    busy = None
    for _ in range(100):
        busy = _busy_replica()
        if busy or outcome:
            break
    assert busy and not outcome, "no replica was seen computing the request"
    os.kill(busy, signal.SIGKILL)
    thread.join(timeout=300)
    assert isinstance(outcome[0], httpx.HTTPError) or outcome[0].status_code in (200, 500, 502, 503)
    for _ in range(120):  # the service stays up and Serve replaces the replica
        if _post(service, _png(image_file), SMALL).status_code == 200:
            break
        time.sleep(1)
    else:
        pytest.fail("the service did not answer after a replica was killed")


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
            return {"progress": progress, "download": download, "error": error, "placeholders": placeholders,
                    "preview": preview, "facts": facts}

    try:
        outcome = asyncio.run(drive())
    finally:
        chrome.kill()
    assert outcome["progress"] >= 1 and outcome["download"] == "video.mp4"
    frames, steps, limits = outcome["placeholders"]
    assert (frames, steps) == ("6", "4") and "12 steps" in limits  # tiny's defaults; the fixture's --max-steps
    assert outcome["preview"].startswith("blob:")  # the chosen image is shown beside the video
    assert "64x64, 8 frames" in outcome["facts"] and "12 (exact)" in outcome["facts"] and " s (UNet " in outcome["facts"]
    if os.environ.get("SVDTOOL_PAGE_SHOT"):  # look at it: SVDTOOL_PAGE_SHOT=page.png pytest -k chromium
        __import__("shutil").copy(tmp_path / "page.png", os.environ["SVDTOOL_PAGE_SHOT"])
    assert "over this service's limit" in outcome["error"]
