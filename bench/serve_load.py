"""Load on `svdtool serve`: requests per minute and p50/p95 latency at 1..N replicas, a bounded load generator on
loopback. Each configuration starts its own service (a real `svdtool serve` process) and sends `--requests` requests
from `--clients` concurrent clients (a 429 is retried after its Retry-After, and counted).

python bench/serve_load.py IR_DIR [--replicas 1,2] [--requests 16] [--clients 4] [--per-replica] [--out NAME]
  -> results/NAME.json/.md   (--per-replica: requests and clients are per replica, so that every row saturates)
"""

from __future__ import annotations

import argparse
import os
import signal
import socket
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).parent))
from common import machine, save  # noqa: E402

PHOTO = Path(__file__).parent / "heldout" / "chelsea.jpg"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def load(url: str, requests: int, clients: int, video_format: str) -> dict:
    latencies, refused, lock = [], 0, threading.Lock()
    todo = list(range(requests))

    def client() -> None:
        nonlocal refused
        while True:
            with lock:
                if not todo:
                    return
                todo.pop()
            start = time.perf_counter()
            while True:
                response = httpx.post(f"{url}/v1/videos", files={"image": PHOTO.read_bytes()}, data={"format": video_format},
                                      timeout=600)
                if response.status_code != 429:
                    break
                with lock:
                    refused += 1
                time.sleep(float(response.headers.get("retry-after", 1)))
            response.raise_for_status()
            with lock:
                latencies.append(time.perf_counter() - start)

    start = time.perf_counter()
    threads = [threading.Thread(target=client) for _ in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    wall = time.perf_counter() - start
    ordered = sorted(latencies)
    return {"requests": len(latencies), "wall_s": round(wall, 1), "requests_per_minute": round(60 * len(latencies) / wall, 1),
            "p50_s": round(statistics.median(ordered), 2), "p95_s": round(ordered[max(0, round(0.95 * len(ordered)) - 1)], 2),
            "refused_429": refused}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("model")
    parser.add_argument("--replicas", default="1,2")
    parser.add_argument("--requests", type=int, default=16)
    parser.add_argument("--clients", type=int, default=4)
    parser.add_argument("--per-replica", action="store_true", help="scale requests and clients with the replicas")
    parser.add_argument("--format", default="mp4", choices=["mp4", "gif"])
    parser.add_argument("--out", default="serve_load")
    args = parser.parse_args()
    cores = os.cpu_count() or 1
    rows = []
    for replicas in map(int, args.replicas.split(",")):
        port, cpus = free_port(), max(1, cores // replicas)
        scale = replicas if args.per_replica else 1
        requests, clients = args.requests * scale, args.clients * scale
        log = Path(f"/tmp/serve_load_{replicas}.log")
        process = subprocess.Popen([sys.executable, "-m", "svdtool.cli", "serve", args.model, "--port", str(port), "--replicas",
                                    str(replicas), "--cpus-per-replica", str(cpus), "--max-queue", "8"],
                                   stdout=log.open("w"), stderr=subprocess.STDOUT)
        url = f"http://127.0.0.1:{port}"
        try:
            for _ in range(600):
                if process.poll() is not None:
                    sys.exit(f"svdtool serve exited with {process.returncode}:\n{log.read_text()[-3000:]}")
                try:
                    if httpx.get(f"{url}/v1/health", timeout=5).status_code == 200:
                        break
                except httpx.HTTPError:
                    time.sleep(1)
            load(url, replicas, replicas, args.format)  # warm-up: every replica compiles at the request's shape
            rows.append({"replicas": replicas, "cpus_per_replica": cpus, "clients": clients, **load(url, requests, clients, args.format)})
            print(rows[-1], flush=True)
        finally:
            process.send_signal(signal.SIGINT)
            process.wait(timeout=120)
    m = machine()
    result = {"machine": m, "model": args.model, "rows": rows}
    lines = ["# `svdtool serve` under load", "",
             f"{m['cpu']} ({', '.join(m['isa'])}), {m['cores']} cores; model `{Path(args.model).name}` at its default settings, "
             f"{args.format} out; "
             f"{args.requests} requests from {args.clients} concurrent clients{' per replica' if args.per_replica else ''} on "
             "loopback after one warm-up request per replica; one run per row.", "",
             "| replicas | CPUs per replica | clients | requests | requests/min | p50 latency s | p95 latency s | 429s (retried) |",
             "|---|---|---|---|---|---|---|---|"]
    lines += [f"| {r['replicas']} | {r['cpus_per_replica']} | {r['clients']} | {r['requests']} | {r['requests_per_minute']} | "
              f"{r['p50_s']} | {r['p95_s']} | {r['refused_429']} |" for r in rows]
    save(args.out, result, "\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
