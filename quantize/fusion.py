"""Proof of operation fusion: read the CPU plugin's compiled (runtime) graph and count what executes in int8.

`compiled_model.get_runtime_model()` has one node per executed kernel; its rt_info carries `layerType`,
`runtimePrecision`, `primitiveType` (the kernel, e.g. `jit_avx512_amx_i8`) and `originalLayersNames` (the IR nodes
fused into it); its input ports carry the element types the kernel reads. A FakeQuantize that the plugin folded
into a Convolution/FullyConnected no longer appears as its own node.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

import openvino as ov

COMPUTE_TYPES = ("Convolution", "FullyConnected", "MatMul", "ScaledDotProductAttention", "Deconvolution")
CONV_LINEAR = ("Convolution", "FullyConnected", "MatMul", "Deconvolution")
INT_TYPES = {"i8", "u8", "i4", "u4"}


def _rt(node: ov.Node, key: str) -> str:
    info = node.get_rt_info()
    return str(info[key].astype(str)) if key in info else ""


def execution_class(node: ov.Node) -> str:
    """"int8" when the kernel's activation input is 8-bit, "int8-weights" (or "int4-weights") when only its weights
    are (weight-only compression, decompressed on the fly), else the runtime precision (bf16/f32)."""
    types = [port.get_element_type().get_type_name() for port in node.inputs()]
    if types and types[0] in ("i8", "u8"):
        return "int8"
    if len(types) > 1 and types[1] in INT_TYPES:
        return f"int{types[1][1]}-weights"
    return _rt(node, "runtimePrecision").lower() or "?"


def fusion_report(model: ov.Model, device: str = "CPU", config: dict[str, Any] | None = None) -> dict[str, Any]:
    """Per compute op type: executed kernels by execution class; kernel names; FakeQuantize fused vs executing."""
    ir_fake_quantize = sum(op.get_type_name() == "FakeQuantize" for op in model.get_ops())
    runtime = ov.Core().compile_model(model, device, config or {}).get_runtime_model()
    by_type: dict[str, Counter] = defaultdict(Counter)
    kernels: Counter = Counter()
    not_int8: dict[str, list[str]] = defaultdict(list)
    executing_fq = 0
    for node in runtime.get_ops():
        layer_type = _rt(node, "layerType")
        if layer_type == "FakeQuantize":
            executing_fq += 1
        if layer_type not in COMPUTE_TYPES:
            continue
        kind = execution_class(node)
        by_type[layer_type][kind] += 1
        kernels[_rt(node, "primitiveType")] += 1
        if layer_type in CONV_LINEAR and kind != "int8":
            not_int8[layer_type].append(_rt(node, "originalLayersNames").split(",")[0] or node.get_friendly_name())
    total = sum(sum(by_type[t].values()) for t in CONV_LINEAR if t in by_type)
    int8 = sum(by_type[t]["int8"] for t in CONV_LINEAR if t in by_type)
    return {
        "device": device,
        "executed": {t: dict(counts) for t, counts in sorted(by_type.items())},
        "kernels": dict(kernels.most_common()),
        "conv_linear_total": total,
        "conv_linear_int8": int8,
        "conv_linear_int8_fraction": round(int8 / total, 4) if total else 0.0,
        "fake_quantize_in_ir": ir_fake_quantize,
        "fake_quantize_executing": executing_fq,
        "fake_quantize_fused": max(ir_fake_quantize - executing_fq, 0),
        "not_int8": dict(not_int8),
    }


def inspect_folder(folder: str | Path, device: str = "CPU") -> dict[str, dict[str, Any]]:
    """The fusion report of every component IR in an exported or quantized folder."""
    from svdtool.convert import EXPORTED, OV_XML

    from svdtool.outputs import read_manifest
    from svdtool.runtime.loading import warn_if_cpu_unfit

    warn_if_cpu_unfit(read_manifest(folder))
    core = ov.Core()
    return {name: fusion_report(core.read_model(Path(folder) / name / OV_XML), device) for name in EXPORTED}
