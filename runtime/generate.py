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
from svdtool.memory import StagePeaks
from svdtool.models import GenerationDefaults

from .speed import speed_preset

# How a generation spends memory (not what it makes, except the decoder's chunk): "standard" batches the two guidance
# halves through the UNet and decodes the model's chunk (SVD-size models 8 frames, others all) unless
# --decode-chunk-size says otherwise; "low" runs the halves one after the other (half the UNet's working memory) and
# decodes LOW_DECODE_CHUNK frames at a time (the decoder's working memory grows with its chunk; docs/true-size.md).
MEMORY_MODES = ("standard", "low")
MAX_SEED = 2**63 - 1  # torch.Generator.manual_seed's range that also fits a JSON integer everywhere
MAX_FPS = 240
LOW_DECODE_CHUNK = 2


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
    memory: str = "standard"  # MEMORY_MODES: "low" runs the guidance halves in turn and decodes LOW_DECODE_CHUNK frames at a time
    speed: str = "exact"  # runtime/speed.py's SPEEDS: unset steps become the preset's share of the model's

    def resolved(self, defaults: GenerationDefaults | dict[str, Any]) -> "GenerationSettings":
        """Fill unset fields from the model's `defaults`, then check the values are possible for that model."""
        defaults = defaults.as_dict() if isinstance(defaults, GenerationDefaults) else defaults
        filled = {key: defaults.get(key) if value is None else value for key, value in asdict(self).items()}
        preset = speed_preset(self.speed)
        if self.num_inference_steps is None and filled["num_inference_steps"]:
            filled["num_inference_steps"] = preset.steps(filled["num_inference_steps"])
        settings = GenerationSettings(**filled)
        if settings.memory not in MEMORY_MODES:
            raise SvdtoolError(f"--memory must be one of {', '.join(MEMORY_MODES)}, not {settings.memory!r}")
        if self.decode_chunk_size is None and settings.num_frames:  # the user's chunk, else the mode's, else the model's
            chunk = LOW_DECODE_CHUNK if settings.memory == "low" else settings.decode_chunk_size or settings.num_frames
            settings = replace(settings, decode_chunk_size=min(chunk, settings.num_frames))
        settings.check(defaults.get("size_multiple", 64))
        return settings

    def check(self, size_multiple: int = 64) -> None:
        """One-line errors for values the model cannot run or SVD was never conditioned on."""
        for label, value in (("noise-aug-strength", self.noise_aug_strength), ("min-guidance", self.min_guidance_scale),
                             ("max-guidance", self.max_guidance_scale)):
            if not math.isfinite(value):  # NaN passes every range check below (it compares false) and renders black
                raise SvdtoolError(f"--{label} {value} is not a finite number")
        for label, value in (("height", self.height), ("width", self.width)):
            if value is None or value <= 0 or value % size_multiple:
                raise SvdtoolError(f"--{label} {value} is not possible for this model: use a positive multiple of "
                                   f"{size_multiple} (its VAE and UNet downsample by {size_multiple} in all)")
        for label, value in (("frames", self.num_frames), ("steps", self.num_inference_steps),
                             ("decode-chunk-size", self.decode_chunk_size), ("fps", self.fps)):
            if value is None or value < 1:
                raise SvdtoolError(f"--{label} {value} is not possible: use 1 or more")
        if self.fps > MAX_FPS:
            raise SvdtoolError(f"--fps {self.fps} is over {MAX_FPS}: SVD is conditioned on 5-30 and video encoders refuse more")
        if not 0 <= self.seed <= MAX_SEED:
            raise SvdtoolError(f"--seed {self.seed} is outside 0-{MAX_SEED} (a 64-bit generator seed)")
        if not 0 <= self.motion_bucket_id <= 255:
            raise SvdtoolError(f"--motion-bucket-id {self.motion_bucket_id} is outside 0-255, the range SVD was conditioned on")
        if self.noise_aug_strength < 0:
            raise SvdtoolError(f"--noise-aug-strength {self.noise_aug_strength} is negative: use 0 or more (SVD's default 0.02)")
        for label, value in (("min-guidance", self.min_guidance_scale), ("max-guidance", self.max_guidance_scale)):
            if value < 1:
                raise SvdtoolError(f"--{label} {value} is below 1: guidance 1 means none, more follows the image more closely")
        if self.min_guidance_scale > self.max_guidance_scale:
            raise SvdtoolError("--min-guidance must not exceed --max-guidance")

    def pipeline_kwargs(self) -> dict[str, Any]:
        kwargs = asdict(self)
        kwargs.pop("seed")
        kwargs.pop("memory")
        kwargs.pop("speed")
        return kwargs

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class GenerationResult:
    frames: np.ndarray  # uint8 [F, H, W, 3]
    settings: GenerationSettings
    timings: dict[str, float] = field(default_factory=dict)
    peak_rss_gb: dict[str, float] = field(default_factory=dict)  # this process's peak RSS in each stage, and overall


@contextmanager
def stage_timer(pipeline: Any, on_decode: Callable[[], None] | None = None,
                memory: StagePeaks | None = None) -> Iterator[dict[str, float]]:
    """Time each component call inside `with` by wrapping it on the instance; CUDA work is synchronised. With `memory`,
    its samples are filed under the stage running (the rest of diffusers' `__call__` under "pipeline")."""
    timings: dict[str, float] = defaultdict(float)
    targets = [(pipeline.image_encoder, "forward", "image_encoder"), (pipeline.unet, "forward", "unet"),
               (pipeline.vae, "encode", "vae_encoder"), (pipeline.vae, "decode", "vae_decoder")]

    def timed(function: Callable, stage: str) -> Callable:
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            if memory is not None:
                memory.stage = stage
            start = time.perf_counter()
            result = function(*args, **kwargs)
            if torch.cuda.is_available():
                torch.cuda.synchronize()
            timings[stage] += time.perf_counter() - start
            if memory is not None:
                memory.sample()
                memory.stage = "pipeline"
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


@contextmanager
def clip_at_its_size(pipeline: Any) -> Iterator[None]:
    """diffusers always resizes the conditioning image to 224 px, SVD's CLIP size; a CLIP built for another size (small
    test pipelines use 32 px) would refuse it. Resize CLIP's input to its own size (an antialiased resize of the
    normalised pixels, which commutes with CLIP's per-channel normalisation), for both backends alike."""
    size = pipeline.image_encoder.config.image_size
    if size == 224:
        yield
        return
    forward = pipeline.image_encoder.forward

    def resized(pixel_values: torch.Tensor, *args: Any, **kwargs: Any) -> Any:
        pixel_values = torch.nn.functional.interpolate(pixel_values, size=(size, size), mode="bicubic", antialias=True)
        return forward(pixel_values, *args, **kwargs)

    pipeline.image_encoder.forward = resized
    try:
        yield
    finally:
        pipeline.image_encoder.__dict__.pop("forward", None)


def generate(
    pipeline: StableVideoDiffusionPipeline,
    image: Image.Image,
    settings: GenerationSettings,
    show_progress: bool = True,
    on_step: Callable[[int], None] | None = None,
) -> GenerationResult:
    """Run diffusers' `__call__` on a PyTorch or an OpenVINO (`OVStableVideoDiffusionPipeline`) pipeline, from the
    noise of `seeded_noise`: CUDA, CPU and OpenVINO runs of one model, in any dtype, start from identical noise.
    `on_step(n)` is told after each denoising step (n = steps done), e.g. for a service's job progress. The result
    carries each stage's peak RSS: "compile" (shaping and compiling for these settings), one per component call, and
    "pipeline" (diffusers' own work between them)."""
    with StagePeaks() as memory:
        memory.stage = "compile"
        fit_shapes(pipeline, settings)
        memory.sample()
        memory.stage = "pipeline"
        result = _generate(pipeline, image, settings, show_progress, on_step, memory)
    result.peak_rss_gb = {**memory.peaks_gb, "overall": round(memory.peak_gb, 3)}
    return result


def _generate(pipeline: Any, image: Image.Image, settings: GenerationSettings, show_progress: bool,
              on_step: Callable[[int], None] | None, memory: StagePeaks) -> GenerationResult:
    generator, latents = seeded_noise(pipeline, settings)
    if hasattr(pipeline.scheduler, "reseed"):  # a stochastic sampler's noise between steps (models/samplers.py)
        pipeline.scheduler.reseed(settings.seed)
    num_frames = settings.num_frames
    pipeline.set_progress_bar_config(disable=True)
    with make_progress() as progress:
        if not show_progress:
            progress.disable = True
        denoise = progress.add_task("denoising", total=settings.num_inference_steps)
        decode = progress.add_task("decoding", total=math.ceil(num_frames / settings.decode_chunk_size))

        def step_done(_pipe: Any, step: int, _t: Any, callback_kwargs: dict) -> dict:
            progress.advance(denoise)
            if on_step is not None:
                on_step(step + 1)
            return callback_kwargs

        start = time.perf_counter()
        with (torch.inference_mode(), clip_at_its_size(pipeline),
              stage_timer(pipeline, lambda: progress.advance(decode), memory) as timings):
            frames = pipeline(
                image,
                **settings.pipeline_kwargs(),
                generator=generator,
                latents=latents,
                output_type="np",
                callback_on_step_end=step_done,
            ).frames[0]
        timings["total"] = time.perf_counter() - start
    frames = (np.clip(frames, 0, 1) * 255).round().astype(np.uint8)
    return GenerationResult(frames=frames, settings=settings, timings={k: round(v, 4) for k, v in timings.items()})


def seeded_noise(pipeline: Any, settings: GenerationSettings) -> tuple[torch.Generator, torch.Tensor]:
    """The random tensors of one video, drawn in float32 from a CPU generator seeded with `settings.seed`.

    diffusers draws two: the noise-augmentation noise (in the preprocessed image's dtype, float32) and then the
    initial latents in the pipeline's dtype. torch versions differ in what a seeded `randn` gives for float16
    (2.11 draws values uncorrelated with the float32 draw; 2.14 the same ones), so the latents are drawn here in
    float32, in diffusers' order, and handed over cast to the pipeline's dtype. The returned generator is freshly
    seeded: the pipeline's own first draw, the noise augmentation, is the float32 tensor drawn here before the latents.
    """
    generator = torch.Generator("cpu").manual_seed(settings.seed)
    torch.randn((1, 3, settings.height, settings.width), generator=generator, dtype=torch.float32)  # noise augmentation
    shape = (1, settings.num_frames, pipeline.unet.config.in_channels // 2,
             settings.height // pipeline.vae_scale_factor, settings.width // pipeline.vae_scale_factor)
    latents = torch.randn(shape, generator=generator, dtype=torch.float32)
    dtype = next(pipeline.image_encoder.parameters()).dtype  # what diffusers draws the latents in
    return torch.Generator("cpu").manual_seed(settings.seed), latents.to(dtype)


def fit_shapes(pipeline: Any, settings: GenerationSettings) -> None:
    """OpenVINO pipelines: a dynamic IR is shaped for these settings (faster); one the user fixed must match them."""
    if not hasattr(pipeline, "vae_decoder"):  # only OpenVINO pipelines have shapes to fit
        return
    pipeline.guidance_in_turn = settings.memory == "low"
    pipeline.fit(settings.height, settings.width, settings.num_frames, settings.decode_chunk_size,
                 guided=settings.max_guidance_scale > 1)
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
