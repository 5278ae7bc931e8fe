"""Record the real inputs each OpenVINO component receives while the FP pipeline generates from calibration images."""

from __future__ import annotations

from collections import defaultdict
from contextlib import contextmanager
from typing import Any, Iterator

import numpy as np
from PIL import Image

from svdtool.console import progress_task
from svdtool.runtime import GenerationSettings, OVStableVideoDiffusionPipeline, fit_shapes, generate

PARTS = ("image_encoder", "vae_encoder", "vae_decoder", "unet")


@contextmanager
def recording(pipeline: OVStableVideoDiffusionPipeline, settings: GenerationSettings) -> Iterator[dict[str, list[dict[str, np.ndarray]]]]:
    """Wrap each part's compiled request so every call's input dict is copied into the yielded lists. The pipeline is
    fitted to `settings` first, as `generate` fits it: fitting recompiles the parts, and a request replaced inside `generate` would go
    unrecorded (the first calibration image's calls were lost that way)."""
    fit_shapes(pipeline, settings)
    calls: dict[str, list[dict[str, np.ndarray]]] = defaultdict(list)
    originals = {}
    for name in PARTS:
        part = getattr(pipeline, name)
        part.compile()
        originals[name] = part.request

        def record(inputs: dict[str, Any], *args: Any, _name: str = name, _request: Any = part.request, **kwargs: Any) -> Any:
            calls[_name].append({key: np.array(value, dtype=np.float32) for key, value in inputs.items()})
            return _request(inputs, *args, **kwargs)

        part.request = record
    try:
        yield calls
    finally:
        for name, request in originals.items():
            getattr(pipeline, name).request = request


def split_guidance_halves(unet_calls: list[dict[str, np.ndarray]]) -> list[dict[str, np.ndarray]]:
    """One UNet call holds [unconditional, conditional]; calibrate on each half as its own sample (half the memory)."""
    halves = []
    for call in unet_calls:
        batch = call["sample"].shape[0]
        for index in range(batch):
            halves.append({key: value if value.ndim == 0 else value[index : index + 1] for key, value in call.items()})
    return halves


def evenly(items: list, count: int) -> list:
    """`count` items spread evenly over the list (all of them when there are fewer)."""
    if count >= len(items):
        return list(items)
    return [items[int(i)] for i in np.linspace(0, len(items) - 1, count).round()]


def collect_calibration_data(
    pipeline: OVStableVideoDiffusionPipeline,
    images: list[Image.Image],
    settings: GenerationSettings,
    unet_samples: int,
) -> dict[str, list[dict[str, np.ndarray]]]:
    """Generate from every image and keep: all image/VAE inputs, and `unet_samples` UNet inputs spread evenly over
    images × timesteps, each guidance half separately."""
    per_image: list[list[dict[str, np.ndarray]]] = []
    data: dict[str, list[dict[str, np.ndarray]]] = defaultdict(list)
    with progress_task("calibration", len(images)) as advance:
        for index, image in enumerate(images):
            with recording(pipeline, settings) as calls:
                generate(pipeline, image, GenerationSettings(**{**settings.as_dict(), "seed": settings.seed + index}), show_progress=False)
            for name in ("image_encoder", "vae_encoder", "vae_decoder"):
                data[name].extend(calls[name])
            per_image.append(split_guidance_halves(calls["unet"]))
            advance()
    # Interleave so that evenly-spaced picks cover every image and every timestep.
    steps = max(len(samples) for samples in per_image)
    ordered = [samples[step] for step in range(steps) for samples in per_image if step < len(samples)]
    data["unet"] = evenly(ordered, unet_samples)
    return dict(data)


def held_out_unet_calls(pipeline: OVStableVideoDiffusionPipeline, images: list[Image.Image], settings: GenerationSettings,
                        count: int = 16) -> list[dict[str, np.ndarray]]:
    """Whole UNet calls (both guidance halves) while generating from `images`, `count` of them spread over images ×
    timesteps: what `--accuracy-target` scores a quantized UNet on."""
    calls = []
    for index, image in enumerate(images):
        with recording(pipeline, settings) as recorded:
            generate(pipeline, image, GenerationSettings(**{**settings.as_dict(), "seed": settings.seed + 100 + index}), show_progress=False)
        calls.append(recorded["unet"])
    steps = max(len(c) for c in calls)
    return evenly([c[step] for step in range(steps) for c in calls if step < len(c)], count)
