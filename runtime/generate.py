"""`generate()`: one image → video frames on the OpenVINO runtime or the PyTorch reference, with stage timings."""

from __future__ import annotations

import math
import time
from collections import defaultdict
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field, replace
from typing import Any, Callable, Iterator

import numpy as np
import torch
from diffusers import StableVideoDiffusionPipeline
from PIL import Image

from svdtool.console import make_progress
from svdtool.errors import SvdtoolError
from svdtool.models import GenerationDefaults


@dataclass(frozen=True)
class GenerationSettings:
    """Everything that decides a video, besides the model; `None` fields take the model's defaults."""

    num_frames: int | None = None
    height: int | None = None
    width: int | None = None
    num_inference_steps: int | None = None
    fps: int | None = None
    motion_bucket_id: int | None = None
    noise_aug_strength: float | None = None
    min_guidance_scale: float | None = None
    max_guidance_scale: float | None = None
    decode_chunk_size: int | None = None
    seed: int = 42

    def resolved(self, defaults: GenerationDefaults | dict[str, Any]) -> "GenerationSettings":
        """Fill unset fields from `defaults`, then check the values are possible."""
        defaults = defaults.as_dict() if isinstance(defaults, GenerationDefaults) else defaults
        filled = {key: defaults.get(key) if value is None else value for key, value in asdict(self).items()}
        settings = GenerationSettings(**filled)
        if settings.decode_chunk_size is None:
            settings = replace(settings, decode_chunk_size=settings.num_frames)
        settings.check()
        return settings

    def check(self) -> None:
        for label, value in (("height", self.height), ("width", self.width)):
            if value is None or value <= 0 or value % 64:
                raise SvdtoolError(f"--{label} {value} is not possible: use a positive multiple of 64 (SVD downsamples by 64)")
        for label, value in (("frames", self.num_frames), ("steps", self.num_inference_steps),
                             ("decode-chunk-size", self.decode_chunk_size), ("fps", self.fps)):
            if value is None or value < 1:
                raise SvdtoolError(f"--{label} {value} is not possible: use 1 or more")
        if self.min_guidance_scale > self.max_guidance_scale:
            raise SvdtoolError("--min-guidance must not exceed --max-guidance")

    def pipeline_kwargs(self) -> dict[str, Any]:
        kwargs = asdict(self)
        kwargs.pop("seed")
        return kwargs

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class GenerationResult:
    frames: np.ndarray  # uint8 [F, H, W, 3]
    settings: GenerationSettings
    timings: dict[str, float] = field(default_factory=dict)


@contextmanager
def stage_timer(pipeline: Any, on_decode: Callable[[], None] | None = None) -> Iterator[dict[str, float]]:
    """Time each component call inside `with` by wrapping it on the instance; CUDA work is synchronised."""
    timings: dict[str, float] = defaultdict(float)
    targets = [(pipeline.image_encoder, "forward", "image_encoder"), (pipeline.unet, "forward", "unet"),
               (pipeline.vae, "encode", "vae_encoder"), (pipeline.vae, "decode", "vae_decoder")]

    def timed(function: Callable, stage: str) -> Callable:
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            start = time.perf_counter()
            result = function(*args, **kwargs)
            if torch.cuda.is_available():
                torch.cuda.synchronize()
            timings[stage] += time.perf_counter() - start
            timings[f"{stage}_calls"] += 1
            if stage == "vae_decoder" and on_decode:
                on_decode()
            return result
        return wrapper

    for owner, attribute, stage in targets:
        setattr(owner, attribute, timed(getattr(owner, attribute), stage))
    try:
        yield timings
    finally:
        for owner, attribute, _ in targets:
            owner.__dict__.pop(attribute, None)


def generate(
    pipeline: StableVideoDiffusionPipeline,
    image: Image.Image,
    settings: GenerationSettings,
    show_progress: bool = True,
) -> GenerationResult:
    """Run diffusers' `__call__` on a PyTorch or an OpenVINO (`OVStableVideoDiffusionPipeline`) pipeline. The noise comes from a CPU generator seeded with
    `settings.seed` (diffusers draws on the CPU and moves it), so CUDA, CPU and OpenVINO runs of one model start
    from identical latents and noise augmentation."""
    _check_static_shape(pipeline, settings)
    generator = torch.Generator("cpu").manual_seed(settings.seed)
    num_frames = settings.num_frames
    pipeline.set_progress_bar_config(disable=True)
    with make_progress() as progress:
        if not show_progress:
            progress.disable = True
        denoise = progress.add_task("denoising", total=settings.num_inference_steps)
        decode = progress.add_task("decoding", total=math.ceil(num_frames / settings.decode_chunk_size))

        def on_step(_pipe: Any, _step: int, _t: Any, callback_kwargs: dict) -> dict:
            progress.advance(denoise)
            return callback_kwargs

        start = time.perf_counter()
        with torch.inference_mode(), stage_timer(pipeline, lambda: progress.advance(decode)) as timings:
            frames = pipeline(
                image,
                **settings.pipeline_kwargs(),
                generator=generator,
                output_type="np",
                callback_on_step_end=on_step,
            ).frames[0]
        timings["total"] = time.perf_counter() - start
    frames = (np.clip(frames, 0, 1) * 255).round().astype(np.uint8)
    return GenerationResult(frames=frames, settings=settings, timings={k: round(v, 4) for k, v in timings.items()})


def _check_static_shape(pipeline: Any, settings: GenerationSettings) -> None:
    if not hasattr(pipeline, "vae_decoder"):  # only OpenVINO pipelines can have static shapes
        return
    chunk = pipeline.vae_decoder.model.input("latent_sample").get_partial_shape()[0]
    static = {
        "height": pipeline.height,
        "width": pipeline.width,
        "num_frames": pipeline.num_frames,
        "decode_chunk_size": -1 if chunk.is_dynamic else chunk.get_length(),
    }
    for key, value in static.items():
        if value != -1 and getattr(settings, key) != value:
            raise SvdtoolError(f"this pipeline has a static {key} of {value} (exported with --static or reshaped); generate with that, or use a dynamic IR")
