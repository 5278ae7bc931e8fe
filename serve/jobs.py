"""Jobs of the async mode, shared by every replica: a named Ray actor, so that `GET /v1/jobs/{id}` finds a job
whichever replica made it and whichever replica answers.

Bounded: finished jobs are forgotten oldest first beyond KEEP of them, beyond MAX_VIDEO_BYTES of videos or after
MAX_AGE_S; queued and running jobs are never dropped (a replica's queue bounds them), and one with no progress for
STALE_S is reported failed (its replica died) instead of running forever."""

from __future__ import annotations

import time
from collections import OrderedDict
from typing import Any

JOBS_ACTOR = "svdtool-serve-jobs"
JOBS_NAMESPACE = "svdtool"
KEEP = 200
MAX_VIDEO_BYTES = 512 * 2**20
MAX_AGE_S = 3600.0
STALE_S = 900.0  # a step at SVD's true size takes minutes on a small CPU; a quarter hour without one is a dead replica
FINISHED = ("done", "failed")


class JobStore:
    def __init__(self, clock: Any = time.monotonic) -> None:
        self.jobs: OrderedDict[str, dict[str, Any]] = OrderedDict()
        self.videos: dict[str, bytes] = {}
        self.touched: dict[str, float] = {}  # job id -> when it was created, progressed or finished
        self.clock = clock

    def create(self, job_id: str, steps: int) -> None:
        self.jobs[job_id] = {"id": job_id, "status": "queued", "step": 0, "steps": steps}
        self.touched[job_id] = self.clock()
        self._evict()

    def update(self, job_id: str, **fields: Any) -> None:
        if job_id in self.jobs:
            self.jobs[job_id].update(fields)
            self.touched[job_id] = self.clock()
            if fields.get("status") == "failed":
                self.jobs.move_to_end(job_id)

    def finish(self, job_id: str, video: bytes, manifest: dict[str, Any]) -> None:
        if job_id not in self.jobs:
            return  # forgotten (it cannot be: running jobs are kept); storing its video would leak it
        self.videos[job_id] = video
        self.update(job_id, status="done", manifest=manifest, step=self.jobs[job_id].get("steps", 0))
        self.jobs.move_to_end(job_id)  # the newest finished job: forgotten last
        self._evict()

    def get(self, job_id: str) -> dict[str, Any] | None:
        job = self.jobs.get(job_id)
        if job is not None and job["status"] not in FINISHED and self.clock() - self.touched[job_id] > STALE_S:
            self.update(job_id, status="failed", error=f"no progress for {STALE_S:g} s: its replica stopped")
        return self.jobs.get(job_id)

    def video(self, job_id: str) -> bytes | None:
        return self.videos.get(job_id)

    def stats(self) -> dict[str, int]:
        return {"jobs": len(self.jobs), "finished": sum(j["status"] in FINISHED for j in self.jobs.values()),
                "video_bytes": sum(map(len, self.videos.values()))}

    def _evict(self) -> None:
        now = self.clock()
        finished = [job_id for job_id, job in self.jobs.items() if job["status"] in FINISHED]  # oldest first
        count, video_bytes = len(finished), sum(map(len, self.videos.values()))
        for job_id in finished:
            if count <= KEEP and video_bytes <= MAX_VIDEO_BYTES and now - self.touched[job_id] <= MAX_AGE_S:
                continue
            del self.jobs[job_id], self.touched[job_id]
            video_bytes -= len(self.videos.pop(job_id, b""))
            count -= 1


def job_store() -> Any:
    """The shared store, started once per Ray cluster (detached, named; `stop_jobs` ends it)."""
    import ray

    return ray.remote(JobStore).options(name=JOBS_ACTOR, namespace=JOBS_NAMESPACE, lifetime="detached", get_if_exists=True,
                                        num_cpus=0).remote()


def stop_jobs() -> None:
    """End the detached store: `serve.shutdown()` leaves detached actors running on a cluster."""
    import ray

    try:
        ray.kill(ray.get_actor(JOBS_ACTOR, namespace=JOBS_NAMESPACE))
    except ValueError:  # never started, or already gone
        pass
