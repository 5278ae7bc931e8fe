"""The batch on Ray Data: an actor pool where each actor loads and compiles the pipeline once and serves many images.
Ray runs embedded on this machine (`ray.init()`) or joins a cluster; actors that die are restarted by Ray and their
image retried (twice); an image whose retries are spent is reported by the driver, and the batch goes on."""

from __future__ import annotations

import json
from typing import Any, Iterator

import numpy as np

from svdtool import logs
from svdtool.errors import SvdtoolError

from .inputs import BatchItem
from .worker import BatchSpec, VideoWorker

TASK_RETRIES = 2  # an image that kills its worker three times is a failure, not an endless loop


class RayVideoWorker:
    """A Ray Data actor around `VideoWorker`: batches of one item in, one record out (the video as bytes). The spec is a
    class attribute of a subclass made per batch (`map_on_actor_pool`), not a constructor argument: Ray restarts a dead actor
    with its constructor arguments, and arguments kept in the object store may be gone by then (ray#53727)."""

    spec: BatchSpec

    def __init__(self) -> None:
        from svdtool import logs

        logs.configure(False, append=True)
        self.worker = VideoWorker(self.spec)

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        records = [self.worker(BatchItem(str(name), str(source))) for name, source in zip(batch["name"], batch["source"])]
        videos = [record.pop("video", b"") for record in records]
        return {"record": np.array([json.dumps(record, default=str) for record in records]),
                "video": np.array(videos, dtype=object)}


def map_on_actor_pool(rows: list[dict[str, Any]], worker_class: type, attributes: dict[str, Any], *, actors: int, cpus: float,
                      gpus: int = 0, skip_failed_rows: bool = False) -> Any:
    """`rows` (one block each) through a pool of `actors` actors of a subclass of `worker_class` carrying `attributes`
    (class attributes, not constructor arguments: see RayVideoWorker), one row in flight per actor; a dead actor is
    restarted and its row retried TASK_RETRIES times. `skip_failed_rows`: a row whose retries are spent is dropped
    instead of failing the run. Returns the lazy dataset."""
    import ray.data

    context = ray.data.DataContext.get_current()
    context.enable_progress_bars = False  # the driver draws one bar of its own
    context.print_on_execution_start = False
    context.max_errored_blocks = -1 if skip_failed_rows else 0
    return ray.data.from_items(rows, override_num_blocks=len(rows)).map_batches(
        type(worker_class.__name__, (worker_class,), attributes), batch_size=1, num_cpus=cpus, num_gpus=gpus,
        compute=ray.data.ActorPoolStrategy(size=min(actors, len(rows)), max_tasks_in_flight_per_actor=1),
        max_restarts=-1, max_task_retries=TASK_RETRIES)


def connect(address: str | None) -> dict[str, float]:
    """Start a private Ray instance on this machine (address None: Ray's "local", never someone's running cluster) or
    join a cluster ("auto": the one `ray start` began on this machine; HOST:PORT); returns the cluster's resources. Ray's
    own logs go where every library's do (svdtool's log file; the console too with --verbose)."""
    import ray
    import ray.data  # noqa: F401 - configures its loggers on import

    logs.adopt("ray", "ray.data", "ray.serve")  # before init, which logs too
    if not ray.is_initialized():
        try:
            ray.init(address=address or "local", include_dashboard=False, configure_logging=False, log_to_driver=logs.verbose())
        except (ConnectionError, RuntimeError, ValueError) as exc:
            where = f"the Ray cluster at {address}" if address else "an embedded Ray"
            raise SvdtoolError(f"could not start or reach {where}: {str(exc).splitlines()[0]}") from exc
    logs.adopt("ray", "ray.data", "ray.serve")
    return ray.cluster_resources()


def ray_records(spec: BatchSpec, todo: list[BatchItem], options: Any) -> Iterator[dict[str, Any]]:
    resources = connect(options.address)
    cpus = resources.get("CPU", 0)
    if options.cpus_per_actor > cpus:
        raise SvdtoolError(f"--cpus-per-actor {options.cpus_per_actor:g} is more than the Ray cluster's {cpus:g} CPUs")
    dataset = map_on_actor_pool([{"name": item.name, "source": item.source} for item in todo], RayVideoWorker, {"spec": spec},
                                actors=options.actors or max(1, int(cpus // options.cpus_per_actor)),
                                cpus=options.cpus_per_actor, skip_failed_rows=True)  # the batch goes on
    with logs.library_output_to_log():  # Ray's C++ core worker notices (e.g. ray#53727, harmless here)
        for row in dataset.iter_rows():
            record = json.loads(row["record"])
            if record["status"] == "done":
                record["video"] = bytes(row["video"])
            yield record
