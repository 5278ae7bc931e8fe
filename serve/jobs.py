"""Jobs of the async mode, shared by every replica: a named Ray actor, so that `GET /v1/jobs/{id}` finds a job
whichever replica made it and whichever replica answers."""

from __future__ import annotations

from collections import OrderedDict
from typing import Any

JOBS_ACTOR = "svdtool-serve-jobs"
KEEP = 200  # finished jobs kept (with their videos); older ones are forgotten


class JobStore:
    def __init__(self) -> None:
        self.jobs: OrderedDict[str, dict[str, Any]] = OrderedDict()
        self.videos: dict[str, bytes] = {}

    def create(self, job_id: str, steps: int) -> None:
        self.jobs[job_id] = {"id": job_id, "status": "queued", "step": 0, "steps": steps}
        while len(self.jobs) > KEEP:
            old, _ = self.jobs.popitem(last=False)
            self.videos.pop(old, None)

    def update(self, job_id: str, **fields: Any) -> None:
        if job_id in self.jobs:
            self.jobs[job_id].update(fields)

    def finish(self, job_id: str, video: bytes, manifest: dict[str, Any]) -> None:
        self.videos[job_id] = video
        self.update(job_id, status="done", manifest=manifest, step=self.jobs.get(job_id, {}).get("steps", 0))

    def get(self, job_id: str) -> dict[str, Any] | None:
        return self.jobs.get(job_id)

    def video(self, job_id: str) -> bytes | None:
        return self.videos.get(job_id)


def job_store() -> Any:
    """The shared store, started once per Ray cluster (detached, named)."""
    import ray

    return ray.remote(JobStore).options(name=JOBS_ACTOR, namespace="svdtool", lifetime="detached", get_if_exists=True,
                                        num_cpus=0).remote()
