"""`generate_batch()`: one video (+ its manifest) per input image, resumable, failures recorded, in this process or on
Ray Data; the driver alone writes outputs, each atomically, so every image's video appears exactly once."""

from __future__ import annotations

import json
import os
import tempfile
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterator

import numpy as np

from svdtool.console import console
from svdtool.cpu import cpu_info
from svdtool.errors import SvdtoolError
from svdtool.outputs import library_versions, sha256_file

from .inputs import BatchItem
from .progress import BatchProgress
from .worker import VIDEO_FORMATS, BatchSpec, VideoWorker

FAILURES = "failures.jsonl"
SUMMARY = "batch.json"
STAGES = ("total", "image_encoder", "unet", "vae_encoder", "vae_decoder")


@dataclass(frozen=True)
class RayOptions:
    """Where and how wide: `address` None starts Ray embedded on this machine; "auto" or HOST:PORT joins a cluster."""

    address: str | None = None
    actors: int | None = None  # None: as many as the cluster's CPUs allow
    cpus_per_actor: float = 2


def output_paths(out_dir: Path, item: BatchItem, video_format: str) -> tuple[Path, Path]:
    video = out_dir / f"{item.name}.{video_format}"
    return video, video.with_name(video.name + ".json")


def generate_batch(spec: BatchSpec, items: list[BatchItem], out_dir: str | Path, ray: RayOptions | None = None) -> dict[str, Any]:
    """Generate every item not already done (same input sha256, same `spec.key()`, video intact) into `out_dir`.
    Returns the summary (also written as batch.json); `summary["failed"]` > 0 means some images have no video."""
    if spec.video_format not in VIDEO_FORMATS:
        raise SvdtoolError(f"--format must be one of {', '.join(VIDEO_FORMATS)}, not {spec.video_format!r}")
    out_dir = Path(out_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise SvdtoolError(f"--output {out_dir} is a file; a batch writes into a folder")
    out_dir.mkdir(parents=True, exist_ok=True)
    todo = [item for item in items if not is_done(out_dir, item, spec)]
    skipped = len(items) - len(todo)
    console.print(f"Batch: {len(items)} images → {out_dir}: {skipped} already done, {len(todo)} to generate "
                  f"{'on Ray' if ray else 'in this process'}")
    start = time.perf_counter()
    records, failures, returned = [], [], set()
    with BatchProgress(len(todo)) as progress:
        for record in _records(spec, todo, ray):
            if record["name"] in returned:
                continue  # a retried task's second answer (Ray): each image counts, and is written, once
            returned.add(record["name"])
            if record["status"] == "done":
                _write_outputs(out_dir, record, spec)
            else:
                failures.append({k: record.get(k) for k in ("name", "source", "error", "worker")})
            records.append(record)
            progress.update(record["status"] == "done")
        for item in todo:
            if item.name not in returned:  # lost with its worker, and Ray's retries were spent
                failures.append({"name": item.name, "source": item.source, "error": "worker lost (retries spent)", "worker": None})
                progress.update(False)
    wall = time.perf_counter() - start
    _write_failures(out_dir, failures)
    summary = _summary(spec, items, records, failures, skipped, wall, ray)
    _atomic_write(out_dir / SUMMARY, json.dumps(summary, indent=2).encode())
    rate = summary["throughput"]["videos_per_hour"]
    console.print(f"[green]{summary['done']} videos[/] written, {skipped} already done, "
                  + (f"[red]{len(failures)} failed[/] (see {out_dir / FAILURES})" if failures else "0 failed")
                  + (f"; {rate:.0f} videos/hour" if rate else ""))
    return summary


def _records(spec: BatchSpec, todo: list[BatchItem], ray: RayOptions | None) -> Iterator[dict[str, Any]]:
    if not todo:
        return
    if ray is None:  # Ray is not imported at all
        worker = VideoWorker(spec)
        for item in todo:
            yield worker(item)
        return
    from .on_ray import ray_records

    yield from ray_records(spec, todo, ray)


def is_done(out_dir: Path, item: BatchItem, spec: BatchSpec) -> bool:
    """Resume: the video and its manifest exist, the manifest matches the settings and the input's sha256 (a URL is not
    fetched again: its address is trusted), and the video's sha256 is the manifest's."""
    video, sidecar = output_paths(out_dir, item, spec.video_format)
    if not (video.is_file() and sidecar.is_file()):
        return False
    try:
        manifest = json.loads(sidecar.read_text())
    except (OSError, ValueError):
        return False
    if manifest.get("batch_key") != spec.key() or manifest.get("output", {}).get("sha256") != sha256_file(video):
        return False
    if item.is_url:
        return manifest["input"]["source"] == item.source
    return Path(item.source).is_file() and manifest["input"]["sha256"] == sha256_file(Path(item.source))


def _write_outputs(out_dir: Path, record: dict[str, Any], spec: BatchSpec) -> None:
    item = BatchItem(record["name"], record["source"])
    video, sidecar = output_paths(out_dir, item, spec.video_format)
    _atomic_write(video, record["video"])
    manifest = {
        "stage": "generate",
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "input": {"source": record["source"], "sha256": record["input_sha256"]},
        "output": {"path": video.name, "frames": record["frames_shape"], "sha256": sha256_file(video),
                   "frames_sha256": record["frames_sha256"]},
        "runtime": record["runtime"],
        "settings": spec.settings.as_dict(),
        "timings_seconds": record["timings"],
        "worker": record["worker"],
        "batch_key": spec.key(),
        "versions": library_versions(),
    }
    _atomic_write(sidecar, json.dumps(manifest, indent=2, default=str).encode())  # after the video: it marks it done


def _write_failures(out_dir: Path, failures: list[dict[str, Any]]) -> None:
    path = out_dir / FAILURES
    if failures:
        _atomic_write(path, "".join(json.dumps(f, default=str) + "\n" for f in failures).encode())
    elif path.exists():
        path.unlink()  # a resumed batch that now succeeded leaves no stale failures


def _atomic_write(path: Path, data: bytes) -> None:
    handle, tmp = tempfile.mkstemp(prefix=f".tmp-{path.name}-", dir=path.parent)
    try:
        with os.fdopen(handle, "wb") as stream:
            stream.write(data)
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _summary(spec: BatchSpec, items: list[BatchItem], records: list[dict[str, Any]], failures: list[dict[str, Any]],
             skipped: int, wall: float, ray: RayOptions | None) -> dict[str, Any]:
    done = [r for r in records if r["status"] == "done"]
    percentiles = {}
    for stage in STAGES:
        values = [r["timings"][stage] for r in done if stage in r["timings"]]
        if values:
            percentiles[stage] = {f"p{q}": round(float(np.percentile(values, q)), 3) for q in (50, 90, 99)}
    workers: dict[str, dict[str, Any]] = {}
    for record in records:
        worker = record["worker"]
        key = f"{worker['host']}:{worker['pid']}"
        entry = workers.setdefault(key, {"videos": 0, "peak_rss_gb": 0.0})
        entry["videos"] += record["status"] == "done"
        entry["peak_rss_gb"] = max(entry["peak_rss_gb"], worker.get("peak_rss_gb", 0.0))
    return {
        "stage": "batch",
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "images": len(items), "done": len(done), "skipped": skipped, "failed": len(failures),
        "throughput": {"wall_s": round(wall, 2), "videos_per_hour": round(3600 * len(done) / wall, 1) if done and wall else 0.0},
        "stage_seconds": percentiles,
        "workers": workers,
        "engine": {"kind": "ray", "address": ray.address or "embedded", "actors": ray.actors,
                   "cpus_per_actor": ray.cpus_per_actor} if ray else {"kind": "in-process"},
        "spec": spec.key(),
        "driver_cpu": cpu_info(),
        "versions": library_versions(),
    }
