"""Validation at scale: the PyTorch reference on GPU (or CPU) actors and the OpenVINO runtime on CPU actors, both in
one Ray job and at the same time; raw frames come back to the driver, which writes the reference and the report."""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from svdtool.errors import SvdtoolError
from svdtool.runtime import GenerationSettings
from svdtool.runtime.deepcache import DeepCacheSettings

from .on_ray import connect, map_on_actor_pool
from .worker import worker_identity


@dataclass(frozen=True)
class FramesJob:
    """What one kind of actor generates: `kind` "reference" (PyTorch `source` on `device` in `dtype`) or "runtime"
    (the IR `model` with `precision`, `deepcache`, `threads`)."""

    kind: str
    settings: GenerationSettings
    source: Any = ""  # a source name or an svdtool.models.Source
    device: str = "cpu"
    dtype: str = "fp32"
    model: str = ""
    precision: str = "auto"
    deepcache: DeepCacheSettings = field(default_factory=DeepCacheSettings)
    threads: int | None = None


class FramesWorker:
    """A Ray Data actor: loads its pipeline once, then one image path in → its frames and timings out. The job is a
    class attribute (see on_ray.map_on_actor_pool)."""

    job: FramesJob

    def __init__(self) -> None:
        from svdtool import logs

        logs.configure(False, append=True)
        job = self.job
        if job.kind == "reference":
            import torch

            from svdtool.models import TORCH_DTYPES, load_pipeline, resolve_source

            if job.dtype == "fp32":  # as make_reference: CUDA would run fp32 convolutions as TF32
                torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False

            self.pipeline = load_pipeline(resolve_source(job.source), TORCH_DTYPES[job.dtype]).to(job.device)
            self.environment = {"device": job.device}
        else:
            from svdtool.runtime.session import open_session, plan

            session = open_session(plan(job.model, "openvino", deepcache=job.deepcache), precision=job.precision,
                                   deepcache=job.deepcache, threads=job.threads)
            self.pipeline, self.environment = session.pipeline, session.info

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        from svdtool.runtime import generate, load_image
        from svdtool.validate.reference import environment

        results: dict[str, list] = {"path": [], "frames": [], "shape": [], "timings": [], "environment": []}
        for path in batch["path"]:
            result = generate(self.pipeline, load_image(Path(str(path))), self.job.settings, show_progress=False)
            results["path"].append(str(path))
            results["frames"].append(result.frames.tobytes())
            results["shape"].append(list(result.frames.shape))
            results["timings"].append({k: v for k, v in result.timings.items() if not k.endswith("_calls")})
            results["environment"].append({**environment(self.job.device if self.job.kind == "reference" else "cpu"),
                                           "worker": worker_identity()})
        return {key: np.array(values, dtype=object) for key, values in results.items()}


def frames_on_ray(jobs: dict[str, FramesJob], files: list[Path], shape: Any) -> dict[str, dict[str, dict[str, Any]]]:
    """Run every job over `files` at once on Ray (reference jobs on "cuda" get one GPU per actor); returns
    {job name: {file stem: {"frames", "timings", "environment"}}}. `shape` is a RayOptions (address, actors, CPUs)."""
    from svdtool import logs

    resources = connect(shape.address)
    for name, job in jobs.items():
        if job.kind == "reference" and job.device.startswith("cuda") and resources.get("GPU", 0) < 1:
            raise SvdtoolError("the Ray cluster has no GPU for the reference: add a GPU node (`ray start --address HEAD:PORT "
                               "--num-gpus 1`), or use --reference cpu")
    outputs: dict[str, dict[str, dict[str, Any]]] = {}
    errors: list[BaseException] = []

    def run(name: str, job: FramesJob) -> None:
        gpu = job.kind == "reference" and job.device.startswith("cuda")
        actors = shape.actors or (int(resources.get("GPU", 1)) if gpu else max(1, int(resources["CPU"] // shape.cpus_per_actor)))
        dataset = map_on_actor_pool([{"path": str(f)} for f in files], FramesWorker, {"job": job}, actors=actors,
                                    cpus=1 if gpu else shape.cpus_per_actor, gpus=1 if gpu else 0)  # every image counts
        try:
            outputs[name] = {Path(row["path"]).stem: {"frames": np.frombuffer(row["frames"], np.uint8).reshape(row["shape"]),
                                                      "timings": row["timings"], "environment": row["environment"]}
                             for row in dataset.iter_rows()}
        except BaseException as exc:  # noqa: BLE001 - re-raised in the driver's thread below
            errors.append(exc)

    with logs.library_output_to_log():
        threads = [threading.Thread(target=run, args=item) for item in jobs.items()]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    if errors:
        raise SvdtoolError(f"a Ray job failed: {type(errors[0]).__name__}: {str(errors[0]).splitlines()[0]}") from errors[0]
    return outputs
