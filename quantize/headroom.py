"""How much memory `quantize` will need at its peak, known before any work starts, and a refusal when the machine
does not have it (a run killed by the OOM killer after ten minutes helps nobody).

The peaks scale with the weights: the calibration child compiles the whole FP pipeline at f32, and the main process
compiles nncf's statistics model of the UNet at f32. The factors are measured on svd-xt (random weights, 2-core AMD
EPYC, bench/quantize_memory.py, results/quantize_memory_svd-xt_after.md): the child 14.9 GB for 4.51 GB of IR, the
main process 14.4 GB for the 3.05 GB UNet IR with --mode int8. Weight-only modes compile no statistics model; the
quality check's pipelines run in children like the calibration's.
"""

from __future__ import annotations

from pathlib import Path

import psutil

from svdtool.errors import SvdtoolError

from .deepcache import ir_bytes

BASE_GB = 1.5  # Python, torch, OpenVINO and nncf loaded, small models compiled (tiny: 1.4 GB at most)
CHILD_PER_IR_GB = (14.9 - BASE_GB) / 4.51  # the calibration run: the FP pipeline compiled at f32
# The UNet's statistics model: int8 runs nncf's steps with a reload between them and a quarter of the points per pass;
# hybrid is optimum-intel's single nncf call, as int8 was before that (23.3 GB on the same machine).
UNET_PER_IR_GB = {"int8": (14.4 - BASE_GB) / 3.05, "hybrid": (23.3 - BASE_GB) / 3.05}
MARGIN = 1.1


def estimate_peak_gb(model_dir: Path, mode: str) -> float:
    """The highest RSS that `quantize` reaches (the larger of the calibration child's and the main process's)."""
    components = [folder for folder in Path(model_dir).iterdir() if (folder / "openvino_model.xml").is_file()]
    total = sum(ir_bytes(folder) for folder in components) / 1e9
    # DeepCache's UNets and --accuracy-target's tries are quantized one at a time, like the UNet: the largest counts
    unets = [Path(model_dir) / "unet", *sorted((Path(model_dir) / "deepcache").glob("branch_*/*"))]
    unet = max(ir_bytes(folder) for folder in unets) / 1e9
    return round(MARGIN * (BASE_GB + max(CHILD_PER_IR_GB * total, UNET_PER_IR_GB.get(mode, 0.0) * unet)), 1)


def check_headroom(model_dir: Path, mode: str) -> dict[str, float]:
    """Refuse, in one line, a quantization this machine's available memory cannot hold; else return the figures."""
    needed, available = estimate_peak_gb(model_dir, mode), round(psutil.virtual_memory().available / 1e9, 1)
    if needed > available:
        raise SvdtoolError(f"quantizing {model_dir} ({mode}) needs about {needed:g} GB of memory at its peak and this machine "
                           f"has {available:g} GB available: close other programs, or quantize on a machine with more memory")
    return {"estimated_peak_gb": needed, "available_gb": available}
