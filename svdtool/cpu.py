"""Which CPU runs this: its model name and the instruction sets that decide how OpenVINO executes int8 and bf16."""

from __future__ import annotations

import os
import platform
from functools import lru_cache
from pathlib import Path
from typing import Any

# /proc/cpuinfo flag → what it means for OpenVINO's CPU plugin
ISA_FLAGS = {"avx2": "AVX2", "avx512f": "AVX-512", "avx512_vnni": "AVX512-VNNI", "avx_vnni": "AVX-VNNI",
             "avx512_bf16": "AVX512-BF16", "amx_bf16": "AMX-BF16", "amx_int8": "AMX-INT8"}

DOT_ORDER = ["no-vnni", "vnni", "amx"]
ISA_LIMIT_DOT = {"SSE41": "no-vnni", "AVX": "no-vnni", "AVX2": "no-vnni", "AVX2_VNNI": "vnni", "AVX512_CORE": "no-vnni",
                 "AVX512_CORE_VNNI": "vnni", "AVX512_CORE_BF16": "vnni", "AVX512_CORE_FP16": "vnni", "AVX512_CORE_AMX": "amx"}


@lru_cache(maxsize=1)
def cpu_info() -> dict[str, Any]:
    """Model name, the ISA flags above that are present, and `int8_dot_product`: "amx", "vnni" or "no-vnni" (8-bit
    dot products without VNNI accumulate in 16 bits and can saturate: OpenVINO documents the accuracy risk)."""
    text = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").is_file() else ""
    model = next((line.split(":", 1)[1].strip() for line in text.splitlines() if line.startswith("model name")),
                 platform.processor() or platform.machine())
    flags = set(next((line.split(":", 1)[1].split() for line in text.splitlines() if line.startswith("flags")), []))
    isa = [name for flag, name in ISA_FLAGS.items() if flag in flags]
    if "amx_int8" in flags:
        dot = "amx"
    elif flags & {"avx512_vnni", "avx_vnni"}:
        dot = "vnni"
    else:
        dot = "no-vnni"
    info = {"model": model, "machine": platform.machine(), "isa": isa, "int8_dot_product": dot}
    limit = os.environ.get("ONEDNN_MAX_CPU_ISA")
    if limit:  # oneDNN (so OpenVINO's CPU plugin) uses no more than this: what a smaller CPU would run
        info["onednn_max_cpu_isa"] = limit
        info["int8_dot_product"] = min(dot, ISA_LIMIT_DOT.get(limit.upper(), dot), key=DOT_ORDER.index)
    return info


def has_vnni() -> bool:
    return cpu_info()["int8_dot_product"] != "no-vnni"


def cpu_label(info: dict[str, Any] | None = None) -> str:
    """"AMD EPYC (AVX-512, int8 dot product: vnni)" for reports."""
    info = info or cpu_info()
    widest = next((name for name in ("AMX-INT8", "AVX-512", "AVX2") if name in info["isa"]), info["machine"])
    limit = f", limited to {info['onednn_max_cpu_isa']}" if "onednn_max_cpu_isa" in info else ""
    return f"{info['model']} ({widest}{limit}, int8 dot product: {info['int8_dot_product']})"
