"""Quantize DeepCache's UNet pair (convert/deepcache.py) like the UNet itself.

The full IR takes the UNet's inputs, so it is calibrated on the UNet's recorded samples; the shallow IR also takes
the cached feature, which the FP full IR computes from each sample (the feature a shallow step reuses comes from an
earlier step of the same video, and DeepCache rests on it changing little between steps). Both go through
`quantize_component`, so in --mode int8 through nncf's pipeline step by step, as the UNet does (an svd-xt folder
exported with --cache-branch would otherwise peak at a single nncf.quantize's 23 GB).
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import openvino as ov

from svdtool.convert import OV_XML
from svdtool.memory import PeakRSS, release_memory
from svdtool.runtime.deepcache import CACHED_FEATURE

from .fusion import fusion_report
from .modes import QuantizeOptions, quantize_component


def quantize_deepcache(model_dir: Path, out_dir: Path, unet_samples: list[dict[str, np.ndarray]], options: QuantizeOptions,
                       compress_to_fp16: bool) -> dict[str, Any]:
    """Write the quantized pair of every branch of `model_dir/deepcache` under `out_dir/deepcache`; returns one report
    per IR, keyed like a component ("deepcache/branch_0/full") and shaped like the other components' reports."""
    core, report = ov.Core(), {}
    for branch_dir in sorted((Path(model_dir) / "deepcache").glob("branch_*")):
        fp_full = core.compile_model(core.read_model(branch_dir / "full" / OV_XML), "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
        samples = {"full": unet_samples,
                   "shallow": [{**sample, CACHED_FEATURE: fp_full(sample)[1]} for sample in unet_samples]}
        del fp_full
        release_memory()
        for kind in ("full", "shallow"):
            with PeakRSS() as peak, tempfile.TemporaryDirectory(prefix="svdtool-ptq-") as scratch:
                quantized = quantize_component("unet", branch_dir / kind / OV_XML, samples[kind], options, Path(scratch), compress_to_fp16)
                target = Path(out_dir) / "deepcache" / branch_dir.name / kind
                target.mkdir(parents=True, exist_ok=True)
                (target / "config.json").write_bytes((branch_dir / kind / "config.json").read_bytes())
                ov.save_model(quantized, target / OV_XML, compress_to_fp16=compress_to_fp16)
                fusion = fusion_report(quantized)
                del quantized
                release_memory()
            report[f"deepcache/{branch_dir.name}/{kind}"] = {
                "nncf": options.nncf_parameters("unet"), "calibration_samples": len(samples[kind]),
                "bytes_before": ir_bytes(branch_dir / kind), "bytes_after": ir_bytes(target),
                "seconds": round(peak.seconds, 1), "peak_rss_gb": round(peak.peak_gb, 2), "fusion": fusion}
    return report


def ir_bytes(folder: Path) -> int:
    return sum(f.stat().st_size for f in Path(folder).glob("openvino_model.*"))
