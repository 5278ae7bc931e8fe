"""One loaded pipeline that turns batch items into encoded videos: in this process, or inside a Ray actor."""

from __future__ import annotations

import hashlib
import os
import platform
import resource
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from svdtool.errors import SvdtoolError
from svdtool.runtime import GenerationSettings, generate
from svdtool.runtime.deepcache import DeepCacheSettings
from svdtool.runtime.media import write_video

from .inputs import BatchItem, decode_image, read_bytes, sha256_bytes

VIDEO_FORMATS = ("mp4", "gif")


@dataclass(frozen=True)
class BatchSpec:
    """Everything a worker needs (picklable): the model, the resolved settings, the runtime options."""

    model: str  # IR folder (on shared storage), Hub id or named model
    settings: GenerationSettings  # resolved against the model's defaults
    video_format: str = "mp4"
    precision: str = "auto"
    deepcache: DeepCacheSettings = field(default_factory=DeepCacheSettings)
    threads: int | None = None  # OpenVINO inference threads (None: the plugin's choice)

    def key(self) -> dict[str, Any]:
        """What an existing output must have been made with to be reused on resume."""
        return {"model": self.model, "settings": self.settings.as_dict(), "format": self.video_format,
                "precision": self.precision, "deepcache": self.deepcache.as_dict()}


class VideoWorker:
    """Load and compile the pipeline once; then each call generates one item's video and returns it encoded, with what
    the driver needs for its manifest. Failures of one item are returned, not raised: the batch goes on."""

    def __init__(self, spec: BatchSpec):
        from svdtool.runtime.session import open_session, plan

        self.spec = spec
        target = plan(spec.model, "openvino", deepcache=spec.deepcache)
        self.session = open_session(target, precision=spec.precision, deepcache=spec.deepcache, threads=spec.threads)

    def __call__(self, item: BatchItem) -> dict[str, Any]:
        start = time.perf_counter()
        record: dict[str, Any] = {"name": item.name, "source": item.source, "worker": worker_identity()}
        try:
            data = read_bytes(item)
            record["input_sha256"] = sha256_bytes(data)
            video, facts = render(self.session.pipeline, decode_image(data, item.source), self.spec.settings,
                                  self.spec.video_format)
            record.update(status="done", video=video, **facts, runtime=self.session.info)
        except SvdtoolError as exc:
            record.update(status="failed", error=str(exc))
        except MemoryError:
            record.update(status="failed", error="out of memory: use a smaller --height/--width/--frames or --decode-chunk-size")
        except Exception as exc:  # noqa: BLE001 - any other failure of one image is reported, and the batch goes on
            record.update(status="failed", error=f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}")
        record["seconds"] = round(time.perf_counter() - start, 3)
        record["worker"]["peak_rss_gb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20, 2)
        return record


def render(pipeline: Any, image: Any, settings: GenerationSettings, video_format: str,
           on_step: Callable[[int], None] | None = None) -> tuple[bytes, dict[str, Any]]:
    """One video, encoded, and what its manifest says of it (frames' shape and sha256, stage timings): the batch
    worker's and the service's generation."""
    result = generate(pipeline, image, settings, show_progress=False, on_step=on_step)
    return encode_video(result.frames, video_format, settings.fps), {
        "frames_shape": list(result.frames.shape), "frames_sha256": hashlib.sha256(result.frames.tobytes()).hexdigest(),
        "timings": {k: v for k, v in result.timings.items() if not k.endswith("_calls")}}


def encode_video(frames: Any, video_format: str, fps: int) -> bytes:
    with tempfile.TemporaryDirectory(prefix="svdtool-batch-") as folder:
        path = write_video(frames, Path(folder) / f"video.{video_format}", fps)
        return path.read_bytes()


def worker_identity() -> dict[str, Any]:
    """Host and process, and the Ray node when this runs in a Ray actor."""
    identity: dict[str, Any] = {"host": platform.node(), "pid": os.getpid()}
    import sys

    if "ray" in sys.modules:  # never imports Ray in-process
        import ray

        if ray.is_initialized():
            identity["ray_node"] = ray.get_runtime_context().get_node_id()
    return identity
