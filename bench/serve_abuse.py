"""The abuse and fault suite of docs/serve.md: every kind of abuse and fault of issue #47 sent to a real `svdtool serve`
on 127.0.0.1, each outcome checked, then `/v1/health` and a correct video (frames sha256 equal to the library's).
Bounded: every loop has a count, every request a timeout, and the service is stopped at the end.

    python bench/serve_abuse.py IR_DIR [--jobs 220] [--out serve_abuse]   -> results/serve_abuse.{json,md}

The service runs with SERVICE_OPTIONS (tests/test_serve.py starts its own with the same and runs `run_suite` on it,
without the long job-store case, and checks that the committed table names every case).
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import io
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Callable

import httpx
from PIL import Image

TOKEN = "abuse-suite-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
SERVICE_OPTIONS = ["--replicas", "2", "--cpus-per-replica", "1", "--max-queue", "1", "--max-steps", "12", "--max-image-mb", "1",
                   "--body-timeout", "3"]  # and --token TOKEN
SMALL = {"frames": "4", "steps": "3", "height": "64", "width": "64", "seed": "42"}
LONG = {**SMALL, "steps": "12", "frames": "14", "height": "512", "width": "512"}  # seconds on a small IR: long enough to interrupt
BODY_LIMIT = 2**20 * 4 // 3 + 4 + 64 * 2**10  # --max-image-mb 1: ServeLimits.max_body_bytes


def photo() -> bytes:
    y, x = (range(96), range(128))
    image = Image.new("RGB", (128, 96))
    image.putdata([(2 * i % 256, 2 * j % 256, 255 - i % 256) for j in y for i in x])
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def post(url: str, fields: dict, image: bytes | None = None, headers: dict | None = None, timeout: float = 300) -> httpx.Response:
    return httpx.post(f"{url}/v1/videos", files={"image": ("a.png", photo() if image is None else image, "image/png")},
                      data=fields, headers=AUTH if headers is None else headers, timeout=timeout)


def post_json(url: str, body: bytes, timeout: float = 60) -> httpx.Response:
    return httpx.post(f"{url}/v1/videos", content=body, headers={**AUTH, "content-type": "application/json"}, timeout=timeout)


def _status(response: httpx.Response, expected: int, fragment: str = "") -> tuple[str, bool]:
    try:
        error = response.json().get("error", "") if response.headers.get("content-type", "").startswith("application/json") else ""
    except ValueError:
        error = ""
    return f"{response.status_code} {error[:80]}".strip(), response.status_code == expected and fragment in error


def big_declared_body(url: str) -> tuple[str, bool]:
    return _status(post_json(url, b"{" + b" " * (BODY_LIMIT + 1)), 413, "limit")


def big_chunked_body(url: str) -> tuple[str, bool]:
    def chunks():
        for _ in range(64):
            yield b" " * 2**16
    return _status(post_json(url, chunks()), 413, "limit")  # type: ignore[arg-type]


def trickled_body(url: str) -> tuple[str, bool]:
    def trickle():
        for _ in range(10):
            time.sleep(0.5)
            yield b" "
    return _status(post_json(url, trickle()), 408, "did not arrive")  # type: ignore[arg-type]


def tiff_image(url: str) -> tuple[str, bool]:
    buffer = io.BytesIO()
    Image.open(io.BytesIO(photo())).save(buffer, format="TIFF")
    return _status(post(url, SMALL, buffer.getvalue()), 400, "could not be read")


def nan_guidance(url: str) -> tuple[str, bool]:
    return _status(post_json(url, b'{"image": "", "max_guidance": NaN}'), 400, "finite")


def infinite_frames(url: str) -> tuple[str, bool]:
    return _status(post_json(url, b'{"image": "", "frames": Infinity}'), 400, "finite number")


def seed_out_of_range(url: str) -> tuple[str, bool]:
    return _status(post(url, {**SMALL, "seed": str(2**64)}), 400, "seed")


def non_ascii_token(url: str) -> tuple[str, bool]:
    return _status(post(url, SMALL, headers={"Authorization": "Bearer t\u00f6ken".encode()}), 401, "bearer token")


def health_without_token(url: str) -> tuple[str, bool]:
    health = httpx.get(f"{url}/v1/health", timeout=30).json()
    return f"200, keys {sorted(health)}", "replica" not in health and health["status"] == "ok"


def server_paths(url: str) -> tuple[str, bool]:
    model = httpx.get(f"{url}/v1/model", headers=AUTH, timeout=30).json()
    response = post(url, SMALL)
    runtime = json.loads(response.headers["x-svdtool-manifest"])["runtime"]
    return f"model {model['model']['model']!r}, header {runtime['model']!r}", "/" not in model["model"]["model"] + runtime["model"]


def gif_refused_by_q0(url: str) -> tuple[str, bool]:
    response = post(url, SMALL, headers={**AUTH, "Accept": "image/gif;q=0, video/mp4"})
    return f"{response.status_code} {response.headers.get('content-type')}", response.headers.get("content-type") == "video/mp4"


def async_burst(url: str) -> tuple[str, bool]:
    results: list[httpx.Response] = []
    barrier = threading.Barrier(8)

    def one() -> None:
        barrier.wait()
        results.append(post(url, {**LONG, "async": "true"}))

    threads = [threading.Thread(target=one) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    accepted = [r.json()["status"] for r in results if r.status_code == 202]
    for status in accepted:  # let them finish before the next case
        for _ in range(900):
            if httpx.get(f"{url}{status}", headers=AUTH, timeout=30).json()["status"] not in ("queued", "running"):
                break
            time.sleep(0.2)
    codes = sorted(r.status_code for r in results)
    return f"{codes.count(202)} accepted, {codes.count(429)} refused (429)", len(accepted) <= 4 and set(codes) == {202, 429}


def clients_disconnecting(url: str) -> tuple[str, bool]:
    def dropped() -> None:
        with contextlib.suppress(httpx.TimeoutException):
            post(url, LONG, timeout=1.5)

    for _ in range(3):
        for group in ([threading.Thread(target=dropped) for _ in range(2)],
                      [threading.Thread(target=lambda: post(url, SMALL)) for _ in range(2)]):
            for thread in group:
                thread.start()
            for thread in group:
                thread.join()
    most, cancelled = {}, {}
    for _ in range(60):
        health = httpx.get(f"{url}/v1/health", headers=AUTH, timeout=30).json()
        most[health["replica"]["pid"]] = health["most_renders_at_once"]
        cancelled[health["replica"]["pid"]] = health["cancelled_renders"]
        if len(most) == 2:
            break
    return (f"renders at once per replica {sorted(most.values())}, cancelled {sum(cancelled.values())}",
            max(most.values()) == 1 and sum(cancelled.values()) >= 1)


def _busy_replica() -> int | None:
    import psutil

    replicas = [p for p in psutil.process_iter(["cmdline"]) if "ServeReplica:svdtool" in " ".join(p.info["cmdline"] or [])]
    for process in replicas:
        process.cpu_percent(None)
    time.sleep(0.3)
    usage = {process.pid: process.cpu_percent(None) for process in replicas}
    busiest = max(usage, key=usage.get, default=None)
    return busiest if busiest is not None and usage[busiest] > 30 else None


def replica_killed(url: str) -> tuple[str, bool]:
    outcome: list = []

    def long_request() -> None:
        try:
            outcome.append(post(url, LONG))
        except httpx.HTTPError as exc:
            outcome.append(exc)

    thread = threading.Thread(target=long_request)
    thread.start()
    busy = None
    for _ in range(100):
        busy = _busy_replica()
        if busy or outcome:
            break
    if not busy:
        thread.join(timeout=300)
        return "no replica was seen computing", False
    os.kill(busy, signal.SIGKILL)
    thread.join(timeout=300)
    client = type(outcome[0]).__name__ if isinstance(outcome[0], Exception) else str(outcome[0].status_code)
    for attempt in range(120):
        if post(url, SMALL).status_code == 200:
            return f"the client got {client}; a video again after {attempt} s", True
        time.sleep(1)
    return f"the client got {client}; no video within 120 s", False


def job_store_bounded(url: str, jobs: int) -> tuple[str, bool]:
    from svdtool.serve.jobs import KEEP

    for _ in range(jobs):
        for _ in range(100):  # bounded retries behind the queue limit
            response = post(url, {**SMALL, "frames": "2", "steps": "1", "async": "true"})
            if response.status_code == 202:
                break
            time.sleep(float(response.headers.get("retry-after", 1)) / 4)
    for _ in range(300):
        stats = httpx.get(f"{url}/v1/health", headers=AUTH, timeout=30).json()["jobs"]
        if stats["jobs"] == stats["finished"]:
            break
        time.sleep(0.2)
    return f"{jobs} async jobs: the store holds {stats['jobs']} ({stats['video_bytes'] / 2**20:.1f} MiB)", stats["jobs"] <= KEEP


CASES: list[tuple[str, str, str, Callable[[str], tuple[str, bool]]]] = [
    ("abuse", "a body over the limit, by Content-Length", "413 before it is read", big_declared_body),
    ("abuse", "a chunked body over the limit, no length", "413 once the limit is passed", big_chunked_body),
    ("abuse", "a body that trickles", "408 after --body-timeout", trickled_body),
    ("abuse", "a TIFF image", "400: only JPEG, PNG, WebP are decoded", tiff_image),
    ("abuse", "NaN guidance", "400", nan_guidance),
    ("abuse", "frames: Infinity", "400", infinite_frames),
    ("abuse", "a seed of 2**64", "400", seed_out_of_range),
    ("abuse", "a non-ASCII Authorization header", "401, not 500", non_ascii_token),
    ("abuse", "/v1/health without the token", "no host, process or Ray node", health_without_token),
    ("abuse", "/v1/model and the manifest header", "no server paths", server_paths),
    ("abuse", "Accept: image/gif;q=0", "MP4", gif_refused_by_q0),
    ("abuse", "a burst of 8 async requests, --max-queue 1, 2 replicas", "at most 4 accepted, the rest 429", async_burst),
    ("fault", "clients disconnecting mid-render", "at most 1 render at once on a replica", clients_disconnecting),
    ("fault", "a replica killed (SIGKILL) mid-request", "the service renders again", replica_killed),
]


def library_frames_sha256(model: str) -> str:
    from svdtool.runtime import GenerationSettings, generate
    from svdtool.runtime.session import ir_generation_defaults, open_session, plan

    session = open_session(plan(model, "openvino"), threads=1)
    settings = GenerationSettings(num_frames=4, num_inference_steps=3, height=64, width=64, seed=42)
    frames = generate(session.pipeline, Image.open(io.BytesIO(photo())).convert("RGB"),
                      settings.resolved(ir_generation_defaults(Path(model))), show_progress=False).frames
    return hashlib.sha256(frames.tobytes()).hexdigest()


def run_suite(url: str, model: str, jobs: int = 0, cases: list | None = None) -> list[dict]:
    """Every case (or `cases`), then /v1/health and a video equal to the library's; `jobs` > 0 adds the job-store case."""
    cases = (CASES if cases is None else cases) + (
        [("abuse", f"{jobs} async jobs", "the job store stays bounded", lambda u: job_store_bounded(u, jobs))] if jobs else [])
    rows = []
    for kind, case, expected, check in cases:
        observed, ok = check(url)
        rows.append({"kind": kind, "case": case, "expected": expected, "observed": observed, "ok": ok})
    health = httpx.get(f"{url}/v1/health", timeout=30)
    video = post(url, SMALL)
    same = json.loads(video.headers["x-svdtool-manifest"])["frames_sha256"] == library_frames_sha256(model)
    rows.append({"kind": "after", "case": "/v1/health, then a video", "expected": "200; frames sha256 equal to the library's",
                 "observed": f"health {health.status_code}, video {video.status_code}, frames {'equal' if same else 'differ'}",
                 "ok": health.status_code == 200 and video.status_code == 200 and same})
    return rows


def free_port() -> int:
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@contextlib.contextmanager
def service(model: str):
    port = free_port()
    log = open(Path(os.environ.get("TMPDIR", "/tmp")) / f"serve-abuse-{port}.log", "w+")
    process = subprocess.Popen([sys.executable, "-m", "svdtool.cli", "serve", model, "--port", str(port), "--token", TOKEN,
                                *SERVICE_OPTIONS], stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        for _ in range(300):
            if process.poll() is not None:
                raise SystemExit(f"svdtool serve exited: see {log.name}")
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{url}/v1/health", timeout=5).status_code == 200:
                    break
            time.sleep(1)
        yield url
    finally:
        process.send_signal(signal.SIGINT)
        try:
            process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            process.kill()
        log.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("model", help="IR folder (the tiny IR is enough: svdtool export tiny -o out/tiny-ov)")
    parser.add_argument("--jobs", type=int, default=220, help="async jobs of the job-store case (0: leave it out)")
    parser.add_argument("--out", default="serve_abuse")
    args = parser.parse_args()
    sys.path.insert(0, str(Path(__file__).parent))
    from common import machine, save

    with service(args.model) as url:
        rows = run_suite(url, args.model, args.jobs)
    abuse, faults = (sum(row["kind"] == kind for row in rows) for kind in ("abuse", "fault"))
    verdict = "all refused with JSON 4xx or handled; nothing lost" if all(r["ok"] for r in rows) else "NOT ALL HANDLED"
    lines = [f"# Abuse and faults: {abuse} kinds of abuse, {faults} faults; {verdict}", "",
             f"A real `svdtool serve` on 127.0.0.1 ({' '.join(SERVICE_OPTIONS)}, a token) of `{Path(args.model).name}`, "
             f"{machine()['cpu']}, {machine()['cores']} cores, {time.strftime('%Y-%m-%d')}; `python bench/serve_abuse.py "
             f"IR_DIR`.", "", "| kind | what was sent | expected | observed | ok |", "|---|---|---|---|---|"]
    lines += [f"| {r['kind']} | {r['case']} | {r['expected']} | {r['observed']} | {'yes' if r['ok'] else '**no**'} |" for r in rows]
    save(args.out, {"machine": machine(), "service": SERVICE_OPTIONS, "rows": rows}, "\n".join(lines))
    raise SystemExit(0 if all(r["ok"] for r in rows) else 1)


if __name__ == "__main__":
    main()
