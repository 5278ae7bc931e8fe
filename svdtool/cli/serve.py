"""`svdtool serve`: the IR as an HTTP service (Ray Serve), with a page to try it."""

from __future__ import annotations

import ipaddress
import os
import secrets
import signal
import time
from typing import Optional

import typer

from svdtool.console import console
from svdtool.errors import SvdtoolError

from .common import RayAddress, Verbose, run_command


def serve(
    model: str = typer.Argument("mini", help="IR folder, Hub id or named model"),
    host: str = typer.Option("127.0.0.1", help="address to listen on (0.0.0.0: every interface)"),
    port: int = typer.Option(8000, help="port to listen on"),
    replicas: int = typer.Option(1, help="replicas, each holding one compiled pipeline"),
    autoscale: Optional[str] = typer.Option(None, help="MIN:MAX replicas, scaled by Ray Serve on queued requests"),
    cpus_per_replica: float = typer.Option(2, help="CPUs per replica, also its OpenVINO and torch threads"),
    token: Optional[str] = typer.Option(None, help="bearer token required from clients (default: $SVDTOOL_TOKEN; none: open)"),
    max_queue: int = typer.Option(4, help="requests waiting per replica; more are refused with 429 and Retry-After"),
    max_image_mb: float = typer.Option(10, help="largest image upload, MB"),
    max_image_pixels: int = typer.Option(4096 * 4096, help="largest image, pixels"),
    max_video_pixels: int = typer.Option(14 * 576 * 1024, help="largest video, frames x height x width"),
    max_steps: int = typer.Option(50, help="most denoising steps a request may ask for"),
    timeout: float = typer.Option(600, help="seconds a request may wait for its replica (then 504)"),
    sizes: Optional[str] = typer.Option(None, help="the only HEIGHTxWIDTHxFRAMES requests may ask for, comma-separated (e.g. "
                                                   "576x1024x14,320x512x8): every new shape recompiles a replica's pipeline, "
                                                   "so a client alternating shapes makes each request pay a compile"),
    body_timeout: float = typer.Option(60, help="seconds a request's whole body may take to arrive (then 408); bodies "
                                                "larger than --max-image-mb needs are refused while they arrive (413)"),
    insecure: bool = typer.Option(False, "--insecure", help="allow listening beyond loopback without a token (anyone who "
                                                              "reaches the port can render on this machine)"),
    ray_address: RayAddress = None,
    verbose: Verbose = False,
) -> None:
    """Serve MODEL over HTTP: POST /v1/videos, GET /v1/jobs/{id}, /v1/health, /v1/model, and a page at /. Ctrl-C stops it.
    Beyond loopback (--host 0.0.0.0 or an interface's address) it needs a token: prefer SVDTOOL_TOKEN to --token,
    which other users see in `ps`."""

    def work() -> None:
        from svdtool.serve import ServeLimits, start_service
        from svdtool.serve.limits import parse_sizes
        from svdtool.serve.run import stop_service

        if not 1 <= port <= 65535 or replicas < 1 or cpus_per_replica <= 0 or max_queue < 0 or timeout <= 0 or body_timeout <= 0:
            raise SvdtoolError("--port must be 1-65535, --replicas 1 or more, --cpus-per-replica, --timeout and "
                               "--body-timeout above 0, --max-queue 0 or more")
        bearer = token or os.environ.get("SVDTOOL_TOKEN") or None
        if not bearer and not insecure and not _loopback(host):
            raise SvdtoolError(f"--host {host} listens beyond this machine without a token: set SVDTOOL_TOKEN (e.g. "
                               f"SVDTOOL_TOKEN={secrets.token_urlsafe(24)}), or pass --insecure to serve it open")
        scale = None
        if autoscale:
            try:
                scale = tuple(int(part) for part in autoscale.split(":"))
                assert len(scale) == 2 and 1 <= scale[0] <= scale[1]
            except (ValueError, AssertionError):
                raise SvdtoolError(f"--autoscale {autoscale!r}: give MIN:MAX replicas, 1 <= MIN <= MAX") from None
        limits = ServeLimits(int(max_image_mb * 2**20), max_image_pixels, max_video_pixels, max_steps, max_queue, timeout,
                             body_timeout, parse_sizes(sizes) if sizes is not None else ())
        url = start_service(model, host=host, port=port, replicas=replicas, autoscale=scale, address=ray_address,
                            token=bearer, limits=limits,
                            cpus_per_replica=cpus_per_replica)
        console.print(f"[green]serving[/] {model} at {url} ({f'{scale[0]}-{scale[1]}' if scale else replicas} replicas); "
                      f"try it at {url}/ — Ctrl-C stops")
        try:
            _stop_on_signals()
            while True:
                time.sleep(3600)
        except KeyboardInterrupt:  # how a server is meant to stop: not an interruption
            console.print("stopping …")
        finally:
            stop_service()
        console.print("[green]stopped[/]")

    run_command(work, verbose)


def _loopback(host: str) -> bool:
    """`host` is this machine only: localhost, or an address in 127.0.0.0/8 or ::1."""
    try:
        return host == "localhost" or ipaddress.ip_address(host).is_loopback
    except ValueError:  # a host name other than localhost may resolve anywhere
        return False


def _stop_on_signals() -> None:
    """Ctrl-C and SIGTERM (kill, docker stop, systemd) both end the wait, so that Serve and Ray are shut down, even when
    the server was started with SIGINT ignored (as a non-interactive shell starts a background job: `svdtool serve &`)
    or Ray's start-up took the signals over."""
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, signal.default_int_handler)  # raises KeyboardInterrupt
