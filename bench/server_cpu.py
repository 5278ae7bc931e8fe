"""OpenVINO on a server CPU (the GPU host's own cores): one SVD-XT UNet step, FP32 vs default vs INT8, and PyTorch.

Exports svd-xt (random weights), times the UNet at 256×256, 8 frames, batch 2, quantizes the UNet with nncf
defaults (TRANSFORMER, SmoothQuant 0.95) on synthetic inputs of the calibration shape — enough for speed, not a
quality claim — and times it again. Run: python bench/server_cpu.py OUT_JSON
"""

from __future__ import annotations

import json
import sys
import tempfile
import time
from pathlib import Path

import nncf
import numpy as np
import openvino as ov
import torch
from nncf.quantization.advanced_parameters import AdvancedQuantizationParameters, AdvancedSmoothQuantParameters

from common import machine, timed, usage
from quantize_svd import unet_inputs
from svdtool.convert import export
from svdtool.models import load_component, resolve_source


def main(out_json: str) -> None:
    work = Path(tempfile.mkdtemp())
    start = time.perf_counter()
    export("svd-xt", work / "ir")
    export_s = time.perf_counter() - start
    inputs = unet_inputs(256, 256, 8)
    core = ov.Core()
    unet = core.read_model(work / "ir" / "unet" / "openvino_model.xml")
    steps = {}
    for label, config in (("ov_fp32", {"INFERENCE_PRECISION_HINT": "f32"}), ("ov_default", {})):
        request = core.compile_model(unet, "CPU", config).create_infer_request()
        steps[label] = timed(lambda: request.infer(inputs), repeat=3)
        del request
    rng = np.random.default_rng(0)
    samples = [{"sample": rng.standard_normal((1, 4, 8, 16, 16), dtype=np.float32), "timestep": np.array(t, np.float32),
                "encoder_hidden_states": rng.standard_normal((1, 1, 1024), dtype=np.float32),
                "added_time_ids": np.array([[6, 127, 0.02]], np.float32)} for t in (-1.0, 0.0, 1.0, 2.0)]
    start = time.perf_counter()
    quantized = nncf.quantize(unet, nncf.Dataset(samples), model_type=nncf.ModelType.TRANSFORMER, subset_size=4,
                              advanced_parameters=AdvancedQuantizationParameters(
                                  smooth_quant_alphas=AdvancedSmoothQuantParameters(matmul=0.95)))
    quantize_s = time.perf_counter() - start
    request = core.compile_model(quantized, "CPU").create_infer_request()
    steps["ov_int8"] = timed(lambda: request.infer(inputs), repeat=3)
    del request, quantized, unet
    torch_unet = load_component(resolve_source("svd-xt"), "unet")
    torch_inputs = {k: torch.from_numpy(v) for k, v in inputs.items()}
    with torch.inference_mode():
        steps["torch_fp32"] = timed(lambda: torch_unet(**torch_inputs, return_dict=False), repeat=2)
    result = {"machine": machine(), "torch_threads": torch.get_num_threads(), "export_s": round(export_s, 1),
              "quantize_unet_s": round(quantize_s, 1), "unet_step_256x256x8_batch2": steps,
              "int8_vs_ov_fp32": round(steps["ov_fp32"]["median_s"] / steps["ov_int8"]["median_s"], 2),
              "int8_vs_ov_default": round(steps["ov_default"]["median_s"] / steps["ov_int8"]["median_s"], 2),
              "int8_vs_torch_fp32": round(steps["torch_fp32"]["median_s"] / steps["ov_int8"]["median_s"], 2)}
    Path(out_json).write_text(json.dumps(result, indent=2))
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    usage(__doc__)
    main(*sys.argv[1:])
