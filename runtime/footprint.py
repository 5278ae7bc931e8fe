"""How much memory a generation needs at its peak, known from the IR and the settings before anything is compiled, and
a one-line refusal, naming settings that fit, when this machine does not have it.

peak = base + compiled weights + the largest of: a stage's working memory, a part's compile. Stages run one after
another and each hands its working memory back when it ends (pipeline.py), so only the largest counts; an IR's mapped
pages are resident only while its part compiles (then dropped, svdtool.memory; the parts compile one at a time).
A stage's working memory is read off its IR shaped for the settings: OpenVINO's shape inference gives every tensor's
size, and a walk in execution order keeps alive each tensor until its last reader (an op whose output takes the place
of an input read for the last time works in place). OpenVINO fuses more than that walk knows, and scratch buffers come on top; the factors below are fitted to
measured peaks (bench/generate_memory.py, bench/results/generate_memory_*.md).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, replace
from functools import lru_cache
from pathlib import Path
from typing import Any, Callable

import numpy as np
import openvino as ov
import psutil

from svdtool.errors import SvdtoolError

from .generate import LOW_DECODE_CHUNK, GenerationSettings

GB = 2**30  # GiB, as every other memory figure svdtool prints
# Fitted to svd's INT8 IR at 576x1024x14 on a 2-core Sapphire Rapids (bench/results/generate_memory_svd_spr2.md) and
# svd-xt's at 576x1024x25 on the 16-core Xeon: compiled, the process holds 4.17 GiB for a 2.25 GiB IR (1.04 before);
# compiling a part holds its IR's pages and about 0.4x their size more; the UNet's and encoders' stages rise about 2.2x
# the walk's live peak, the decoder's 2.9x at chunks of 8 and 2 (it over-counts a chunk of 14 by about a fifth).
BASE_GB = 1.2  # Python with torch, diffusers and OpenVINO loaded, nothing compiled
# Resident bytes per byte of IR (.bin) while its pages are mapped: 1 for the pages, the rest the compiled copy, which
# stays. f32 doubles fp16 weights; an INT8 IR's int8 weights compile as they are.
WEIGHT_FACTOR = {"bf16": 2.4, "f16": 2.4, "f32": 3.4}
INT8_WEIGHT_FACTOR = {"bf16": 2.4, "f16": 2.4, "f32": 2.6}
COMPILE_FACTOR = 1.4  # a part's peak while compiling, per byte of its IR
WORKING_FACTOR = {"unet": 2.2, "vae_encoder": 2.2, "vae_decoder": 2.9}  # a stage's working memory per byte of the walk
MAX_TENSOR_ELEMENTS = 2**31
MEMORY_ENV = "SVDTOOL_MEMORY_GB"  # the memory svdtool may use, when less than the system reports available
_VIEWS = {"Parameter", "Constant", "Result", "Reshape", "Squeeze", "Unsqueeze", "ShapeOf", "Convert", "FakeQuantize"}


@dataclass(frozen=True)
class Footprint:
    weights_gb: float  # the compiled copies, kept
    stages_gb: dict[str, float]  # each stage's working memory
    largest_tensors: dict[str, int]  # each stage's largest tensor, in elements
    compile_gb: dict[str, float]  # each part's peak while it compiles: its IR pages and more (then dropped, one at a time)

    @property
    def peak_gb(self) -> float:
        return round(BASE_GB + self.weights_gb + max(*self.stages_gb.values(), *self.compile_gb.values()), 1)


def execution_precision(precision: str = "auto") -> str:
    """The precision the CPU plugin computes float layers in: the user's, or OpenVINO's default for this CPU."""
    if precision != "auto":
        return precision
    return ov.Core().get_property("CPU", "INFERENCE_PRECISION_HINT").get_type_name()


def walk(xml: Path, shapes: dict[str, list[int]], element_bytes: int) -> tuple[int, int]:
    """One call of the IR at `shapes`: its live-tensor peak in bytes (see the module's docstring) and the element count
    of its largest tensor."""
    model = _read(xml)
    model.reshape({name: ov.PartialShape(shape) for name, shape in shapes.items()})
    ops = model.get_ordered_ops()
    last_read: dict[str, int] = {}  # keyed by the node's unique name (the Python wrappers are made anew on each access)
    for index, op in enumerate(ops):
        for port in op.inputs():
            last_read[port.get_source_output().get_node().get_name()] = index
    sizes: dict[str, int] = {}
    dying_at: dict[int, list[str]] = {}
    live = peak = largest = 0
    for index, op in enumerate(ops):
        key = op.get_name()
        largest = max([largest, *(_elements(port) for port in op.outputs())])
        size = 0 if op.get_type_name() in _VIEWS else sum(_elements(port) * element_bytes for port in op.outputs())
        dying = [port.get_source_output().get_node().get_name() for port in op.inputs()]
        if any(last_read.get(source) == index and sizes.get(source) == size for source in dying):
            size = 0  # in place: the output takes the buffer of an input read for the last time here
        sizes[key] = size
        live += size
        peak = max(peak, live)
        dying_at.setdefault(last_read.get(key, index), []).append(key)
        for ended in dying_at.pop(index, []):
            live -= sizes[ended]
    return peak, largest


def estimate(folder: Path, settings: GenerationSettings, precision: str = "auto") -> Footprint:
    """The footprint of generating with `settings` from the IR folder (settings resolved)."""
    folder = Path(folder)
    executed = execution_precision(precision)
    element = 2 if executed in ("bf16", "f16") else 4
    configs = {part: json.loads((folder / part / "config.json").read_text()) for part in ("unet", "vae_decoder", "image_encoder")}
    scale = 2 ** (len(configs["vae_decoder"]["block_out_channels"]) - 1)
    h, w = settings.height // scale, settings.width // scale
    batch = 1 if settings.memory == "low" or settings.max_guidance_scale <= 1 else 2
    unet = configs["unet"]
    stages = {
        "unet": {"sample": [batch, settings.num_frames, unet["in_channels"], h, w], "timestep": [],
                 "encoder_hidden_states": [batch, 1, unet["cross_attention_dim"]], "added_time_ids": [batch, 3]},
        "vae_decoder": {"latent_sample": [min(settings.decode_chunk_size, settings.num_frames),
                                          configs["vae_decoder"]["latent_channels"], h, w]},
        "vae_encoder": {"sample": [1, 3, settings.height, settings.width]},
    }
    walked = {name: walk(folder / name / "openvino_model.xml", shapes, element) for name, shapes in stages.items()}
    parts = {name: _weight_bytes(folder / name, executed) for name in ("image_encoder", "vae_encoder", "vae_decoder", "unet")}
    return Footprint(round(sum(copy for copy, _ in parts.values()) / GB, 2),
                     {name: round(WORKING_FACTOR[name] * peak / GB, 2) for name, (peak, _) in walked.items()},
                     {name: largest for name, (_, largest) in walked.items()},
                     {name: round(COMPILE_FACTOR * mapped / GB, 2) for name, (_, mapped) in parts.items()})


def available_gb() -> float:
    """What this process may use: the system's available memory, or less where SVDTOOL_MEMORY_GB says so."""
    available = psutil.virtual_memory().available / GB
    limit = os.environ.get(MEMORY_ENV)
    if limit:
        try:
            available = min(available, float(limit))
        except ValueError:
            raise SvdtoolError(f"{MEMORY_ENV}={limit!r} is not a number of GB") from None
    return round(available, 1)


def check_memory(folder: Path, settings: GenerationSettings, precision: str = "auto") -> dict[str, Any]:
    """Refuse, in one line naming settings that would fit, a generation this machine cannot hold; else the figures.
    The IRs are read once for all the estimates this takes, and let go when it returns."""
    try:
        footprint, available = estimate(folder, settings, precision), available_gb()
        check_tensor_sizes(footprint, settings)
        if footprint.peak_gb <= available:
            return {"estimated_peak_gb": footprint.peak_gb, "available_gb": available, "weights_gb": footprint.weights_gb,
                    "working_gb": footprint.stages_gb}
        what = (f"generating {settings.num_frames} frames at {settings.width}x{settings.height} (--memory {settings.memory}) "
                f"needs about {footprint.peak_gb:g} GB at its peak and {available:g} GB is available")
        raise SvdtoolError(f"{what}: {_what_fits(folder, settings, precision, available)}")
    finally:
        _read.cache_clear()


def check_tensor_sizes(footprint: Footprint, settings: GenerationSettings) -> None:
    """OpenVINO's CPU plugin indexes a tensor with 32 bits: one of 2**31 elements or more crashes the process (a VAE
    decoder chunk of 25 frames at 576x1024, whose upsampler makes 25x256x576x1024 = 3.8e9, ended in SIGSEGV). Refuse
    that in one line, naming the largest decoder chunk or UNet frame count that stays below."""
    for stage, largest in footprint.largest_tensors.items():
        if largest < MAX_TENSOR_ELEMENTS:
            continue
        if stage == "vae_decoder":
            fits = (MAX_TENSOR_ELEMENTS - 1) // (largest // settings.decode_chunk_size)
            fix = f"use --decode-chunk-size {fits} or less" + ("" if settings.memory == "low" else " (or --memory low)")
        elif stage == "unet":
            fits = (MAX_TENSOR_ELEMENTS - 1) // (largest // settings.num_frames)
            fix = f"use --frames {fits} or fewer, or a smaller --height/--width" + ("" if settings.memory == "low" else
                                                                                    ", or --memory low")
        else:
            fix = "use a smaller --height/--width"
        raise SvdtoolError(f"at {settings.width}x{settings.height} with these settings the {stage} would hold a tensor of "
                           f"{largest:,} elements, over the 2**31 OpenVINO's CPU plugin can index (it crashes): {fix}")


def _what_fits(folder: Path, settings: GenerationSettings, precision: str, available: float) -> str:
    options = []
    low = replace(settings, memory="low", decode_chunk_size=min(settings.decode_chunk_size, LOW_DECODE_CHUNK))
    if settings.memory != "low":
        low_peak = estimate(folder, low, precision).peak_gb
        if low_peak <= available:
            return f"use --memory low (about {low_peak:g} GB), or free memory"
    if low.decode_chunk_size > 1:
        single_peak = estimate(folder, replace(low, decode_chunk_size=1), precision).peak_gb
        if single_peak <= available:
            return f"use --memory low --decode-chunk-size 1 (about {single_peak:g} GB), or free memory"
    most = {chunk: _most_frames(lambda n, chunk=chunk: estimate(folder, replace(low, num_frames=n, decode_chunk_size=min(chunk, n)),
                                                              precision).peak_gb <= available, settings.num_frames - 1)
            for chunk in {low.decode_chunk_size, 1}}
    frames = max(most.values())
    if frames:  # the most frames that fit, with the largest chunk that lets them
        chunk = max(chunk for chunk, fitting in most.items() if fitting == frames)
        options.append(f"--frames {frames}" + (" --decode-chunk-size 1" if chunk == 1 < low.decode_chunk_size else "")
                       + (" with --memory low" if settings.memory != "low" else ""))
    options.append("a smaller --height/--width")
    return "use " + " or ".join(options) + ", or a machine with more memory"


def _most_frames(fits: Callable[[int], bool], upper: int) -> int:
    """The largest frame count in 1..upper that fits (the footprint grows with frames), 0 if none: a bisection, since
    each try walks three IRs."""
    low, high = 0, upper
    while low < high:
        middle = (low + high + 1) // 2
        low, high = (middle, high) if fits(middle) else (low, middle - 1)
    return low


def _weight_bytes(component: Path, executed: str) -> tuple[float, float]:
    """A part's resident weights: the compiled copy (float weights in the execution precision) and the IR's pages."""
    xml = component / "openvino_model.xml"
    on_disk = (component / "openvino_model.bin").stat().st_size
    return on_disk * ((INT8_WEIGHT_FACTOR if _has_int8_weights(xml) else WEIGHT_FACTOR)[executed] - 1), on_disk


def _has_int8_weights(xml: Path) -> bool:
    return any(op.get_type_name() == "Constant" and op.get_element_type() in (ov.Type.i8, ov.Type.u8)
               for op in _read(xml).get_ordered_ops())


@lru_cache(maxsize=8)  # within one check_memory, which clears it (each walk reshapes every input of the model it reads)
def _read(xml: Path) -> ov.Model:
    try:
        return ov.Core().read_model(xml)
    except RuntimeError as exc:
        lines = [line for line in str(exc).splitlines() if line.strip()]
        raise SvdtoolError(f"OpenVINO could not load {xml}: {lines[-1] if lines else type(exc).__name__}") from exc


def _elements(port: ov.Output) -> int:
    shape = port.get_partial_shape()
    return int(np.prod([dim.get_length() for dim in shape], dtype=np.int64)) if shape.is_static else 0


def check_working_memory(folder: Path, settings: GenerationSettings, precision: str = "auto") -> float:
    """For a process whose pipeline is already loaded (a service replica): refuse, in one line, settings whose largest
    stage needs more working memory than is available now, or would hold a tensor OpenVINO's CPU plugin cannot index.
    Returns the working memory in GB. The estimate is kept per shape: a service asks it for every request, and reading
    and walking svd's IRs takes most of a second."""
    footprint = _shape_footprint(str(folder), _shape_of(settings), precision)
    check_tensor_sizes(footprint, settings)
    working, available = max(footprint.stages_gb.values()), available_gb()
    if working > available:
        raise SvdtoolError(f"{settings.num_frames} frames at {settings.width}x{settings.height} need about {working:g} GB of "
                           f"working memory and {available:g} GB is available: ask for fewer frames or a smaller size")
    return working


def _shape_of(settings: GenerationSettings) -> GenerationSettings:
    """`settings` with everything `estimate` does not read set alike, so that one shape is one cache entry."""
    return replace(settings, num_inference_steps=1, fps=1, motion_bucket_id=0, noise_aug_strength=0.0, seed=0, speed="exact",
                   min_guidance_scale=1.0, max_guidance_scale=2.0 if settings.max_guidance_scale > 1 else 1.0)


@lru_cache(maxsize=32)
def _shape_footprint(folder: str, shape: GenerationSettings, precision: str) -> Footprint:
    try:
        return estimate(Path(folder), shape, precision)
    finally:
        _read.cache_clear()
