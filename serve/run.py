"""Start the service: Ray (embedded or a cluster), Serve's HTTP proxy on the given host/port, the deployment."""

from __future__ import annotations

from typing import Any

from svdtool.errors import SvdtoolError

from .limits import ServeLimits

APP_NAME = "svdtool"


def start_service(model: str, *, host: str = "127.0.0.1", port: int = 8000, replicas: int = 1,
                  autoscale: tuple[int, int] | None = None, address: str | None = None, token: str | None = None,
                  limits: ServeLimits = ServeLimits(), cpus_per_replica: float = 2) -> str:
    """Deploy `model` (IR folder, Hub id or named model) and return the service's URL; it runs until `stop_service`."""
    from ray import serve

    from svdtool.batch.on_ray import connect
    from svdtool.runtime import GenerationSettings
    from svdtool.runtime.session import plan

    target = plan(model, "openvino")  # cheap: the model exists and has a manifest, before Ray starts
    for height, width, frames in limits.sizes:  # each must be possible for this model, before anything starts
        GenerationSettings(num_frames=frames, height=height, width=width).resolved(target.defaults)
    if address is None:
        check_replicas_fit(target, autoscale[1] if autoscale else replicas)
    resources = connect(address)
    if cpus_per_replica > resources.get("CPU", 0):
        raise SvdtoolError(f"--cpus-per-replica {cpus_per_replica:g} is more than the Ray cluster's {resources.get('CPU', 0):g} CPUs")
    from .app import VideoService

    serve.start(http_options={"host": host, "port": port})
    # A video takes seconds to minutes: add a replica after 10 s with more than one request per replica (Ray's default
    # waits 30 s over a 30 s window), remove one after Ray's 10 idle minutes.
    scaling: dict[str, Any] = ({"autoscaling_config": {"min_replicas": autoscale[0], "max_replicas": autoscale[1],
                                                      "target_ongoing_requests": 1, "upscale_delay_s": 10,
                                                      "look_back_period_s": 10}}
                               if autoscale else {"num_replicas": replicas})
    deployment = VideoService.options(ray_actor_options={"num_cpus": cpus_per_replica},
                                      max_ongoing_requests=limits.max_queue + 2, **scaling)
    serve.run(deployment.bind(target.model, limits, token, max(1, int(cpus_per_replica))), name=APP_NAME, route_prefix="/")
    return f"http://{host}:{port}"


def check_replicas_fit(target: Any, replicas: int) -> None:
    """On this machine (embedded Ray), every replica holds its own compiled pipeline: refuse in one line, before Ray
    starts, replicas whose peaks at the model's defaults add up to more than is available (runtime/footprint.py)."""
    from pathlib import Path

    from svdtool.runtime import GenerationSettings
    from svdtool.runtime.footprint import available_gb, estimate

    folder = Path(target.model)
    if not (folder / "svdtool.json").is_file():  # a named model's IR is exported by its first replica
        return
    each = estimate(folder, GenerationSettings().resolved(target.defaults)).peak_gb
    available = available_gb()
    if replicas * each > available:
        fits = int(available // each)
        advice = f"use --replicas {fits} or fewer" if fits else "this machine cannot hold one replica at the model's defaults"
        raise SvdtoolError(f"{replicas} replicas need about {replicas * each:g} GB at the model's defaults ({each:g} GB each) "
                           f"and {available:g} GB is available: {advice}")


def stop_service() -> None:
    from ray import serve

    from svdtool import logs

    from .jobs import stop_jobs

    with logs.library_output_to_log():  # Ray's notices about the actors it is stopping
        serve.shutdown()
        stop_jobs()
