"""`--accuracy-target DB`: keep as few UNet layers in float as a quality target allows.

The metric is what the sampler consumes: the SNR of the denoised estimate D = c_skip·x + c_out·F built from the
quantized UNet's output F, against the FP UNet's, on held-out UNet calls (recorded while generating from the held-out
calibration images), at this CPU's default precision.

nncf.quantize_with_accuracy_control does this per quantizer group, but its ranking compiles the UNet once per group:
measured on svd-mini (2 cores), 260 groups x 4.4 s = 19 min before the first layer is reverted, hours for SVD-XT.
So the search here is over the layer classes of `UNET_LAYER_CLASSES`, most harmful first: keeping the first k
classes in float is one quantization each (nncf's pipeline, run step by step as in every int8 UNet), and k is found
by bisection (about 4 quantizations for 8 classes). Each try is saved and dropped before the next, so the search's
peak memory is one quantization's.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any, Callable

import numpy as np
import openvino as ov

from svdtool.console import console
from svdtool.errors import SvdtoolError

from .modes import UNET_LAYER_CLASSES, QuantizeOptions, quantize_component

SNR_CAP = 100.0  # dB: an exact match (the FP model against itself) scores this


def denoised_snr(call: dict[str, np.ndarray], expected: np.ndarray, got: np.ndarray) -> float:
    """SNR (dB, capped) of the denoised estimate made from `got` vs from `expected` (UNet outputs for `call`).

    The UNet output's error reaches the video scaled by c_out = -σ/√(σ²+1), so a raw-output SNR would overstate the
    late, low-σ steps; σ = exp(4·timestep) (the scheduler's continuous timestep is 0.25·ln σ), and the UNet's input
    is the noisy latent times c_in = 1/√(σ²+1), concatenated with the conditioning latent.
    """
    sigma = float(np.exp(4 * np.asarray(call["timestep"], dtype=np.float64)))
    noisy = call["sample"][:, :, : expected.shape[2]].astype(np.float64) * np.sqrt(sigma**2 + 1)
    c_skip, c_out = 1 / (sigma**2 + 1), -sigma / np.sqrt(sigma**2 + 1)
    denoised = c_skip * noisy + c_out * expected.astype(np.float64)
    error = np.sum((c_out * (got.astype(np.float64) - expected)) ** 2)
    if error == 0:
        return SNR_CAP
    return float(min(10 * np.log10(np.sum(denoised**2) / error), SNR_CAP))


def scorer(model: ov.Model, calls: list[dict[str, np.ndarray]]) -> Callable[[ov.Model], float]:
    """A function giving a UNet's mean denoised SNR on `calls` at this CPU's default precision, against `model` in f32."""
    core = ov.Core()
    reference = core.compile_model(model, "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
    expected = [reference(call)[0] for call in calls]

    def score(candidate: ov.Model) -> float:
        compiled = core.compile_model(candidate, "CPU")
        return float(np.mean([denoised_snr(call, want, compiled(call)[0]) for call, want in zip(calls, expected)]))

    return score


def quantize_to_target(model_xml: Path, calibration: list[dict[str, np.ndarray]], held_out: list[dict[str, np.ndarray]],
                       options: QuantizeOptions, target_db: float, scratch: Path, compress_to_fp16: bool) -> tuple[ov.Model, dict[str, Any]]:
    """The UNet quantized with the fewest layer classes in float that reach `target_db`, and what was decided. Raises
    SvdtoolError when even the FP IR at this CPU's default precision scores below the target. `scratch` holds the
    tries and must outlive the returned model."""
    model = ov.Core().read_model(model_xml)
    score = scorer(model, held_out)
    ceiling = score(model)
    del model
    if target_db > ceiling:
        raise SvdtoolError(f"--accuracy-target {target_db} dB is above what the FP IR itself reaches at this CPU's default "
                           f"precision ({ceiling:.1f} dB): no quantization can meet it; choose at most {ceiling:.0f}")
    classes = list(UNET_LAYER_CLASSES)
    tried: dict[int, tuple[float, Path]] = {}

    def attempt(kept: int) -> float:
        patterns = [p for name in classes[:kept] for p in UNET_LAYER_CLASSES[name]]
        work = scratch / f"classes_{kept}"
        candidate = quantize_component("unet", model_xml, calibration, options, work, compress_to_fp16, float_layers=patterns)
        saved = scratch / f"try_{kept}.xml"
        ov.save_model(candidate, saved, compress_to_fp16=compress_to_fp16)
        tried[kept] = (score(candidate), saved)
        del candidate
        shutil.rmtree(work)
        console.print(f"  {kept} layer classes in float: {tried[kept][0]:.1f} dB (target {target_db})")
        return tried[kept][0]

    low, high = 0, len(classes)  # bisect for the fewest classes whose score reaches the target
    if attempt(high) >= target_db:
        while low < high:
            middle = (low + high) // 2
            if attempt(middle) >= target_db:
                high = middle
            else:
                low = middle + 1
    best = min((k for k, (value, _) in tried.items() if value >= target_db), default=max(tried, key=lambda k: tried[k][0]))
    reached, path = tried[best]
    return ov.Core().read_model(path), {
        "target_db": target_db, "fp_ir_db": round(ceiling, 2), "reached_db": round(reached, 2),
        "met": reached >= target_db, "kept_in_float_classes": classes[:best],
        "tried": {str(k): round(value, 2) for k, (value, _) in sorted(tried.items())},
        "metric": f"mean SNR of the denoised estimate vs the FP UNet on {len(held_out)} held-out UNet calls, "
                  "at this CPU's default precision"}
