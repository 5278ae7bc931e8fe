"""Where a UNet step's time goes: OpenVINO's per-node PERF_COUNT for the UNet IRs of one or more svdtool folders, at one
latent shape, grouped into attention (every node of an `attn1`/`attn2` block: scores, softmax, projections), the other
float nodes and the int8 ones.

    python bench/profile_unet.py TAG FOLDER [FOLDER ...] [--height 576 --width 1024 --frames 2] [--config KEY=VALUE ...]

One warm-up call, then one profiled call per folder (CFG batch of 2, the shape a video's UNet sees); writes
bench/results/profile_unet_TAG.{json,md}. OpenVINO's benchmark_app reports the same counters per node but not per
block, and the question here is how much of the step attention keeps in float. `--config` adds CPU plugin properties
(e.g. SNIPPETS_MODE=DISABLE: attention as MatMul, Softmax, MatMul instead of the fused Snippets subgraph); the table
gives the process's peak RSS, so profile one folder per run to read one configuration's memory.
"""

from __future__ import annotations

import re
import resource
import sys
import time
from collections import defaultdict
from pathlib import Path

import numpy as np
import openvino as ov
import typer

sys.path.insert(0, str(Path(__file__).parent))
from common import machine, save  # noqa: E402

ATTENTION = re.compile(r"attn[12]")
app = typer.Typer(add_completion=False)


def _inputs(model: ov.Model, height: int, width: int, frames: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    channels = model.input("sample").get_partial_shape()[2].get_length()
    width_states = model.input("encoder_hidden_states").get_partial_shape()[2].get_length()
    return {"sample": rng.standard_normal((2, frames, channels, height // 8, width // 8), dtype=np.float32),
            "timestep": np.array(0.5, dtype=np.float32),
            "encoder_hidden_states": rng.standard_normal((2, 1, width_states), dtype=np.float32),
            "added_time_ids": np.array([[6, 127, 0.02]] * 2, dtype=np.float32)}


def profile(folder: Path, height: int, width: int, frames: int, config: dict[str, str]) -> dict:
    """Milliseconds per group (attention / other float / int8) and per executed layer type, for one UNet call."""
    core = ov.Core()
    model = core.read_model(folder / "unet" / "openvino_model.xml")
    inputs = _inputs(model, height, width, frames)
    model.reshape({name: value.shape for name, value in inputs.items()})
    compiled = core.compile_model(model, "CPU", {"PERF_COUNT": True, "PERFORMANCE_HINT": "LATENCY", **config})
    request = compiled.create_infer_request()
    request.infer(inputs)  # warm-up: first-call allocations
    start = time.perf_counter()
    request.infer(inputs)
    wall_ms = (time.perf_counter() - start) * 1e3
    groups: dict[str, float] = defaultdict(float)
    layer_types: dict[str, float] = defaultdict(float)
    attention_types: dict[str, float] = defaultdict(float)
    for node in request.profiling_info:
        if node.status != node.Status.EXECUTED:
            continue
        ms = node.real_time.total_seconds() * 1e3
        int8 = "I8" in node.exec_type.upper() or "U8" in node.exec_type.upper()
        group = "attention" if ATTENTION.search(node.node_name) else "int8" if int8 else "other float"
        if group == "attention" and int8:
            group = "attention int8"
        groups[group] += ms
        kind = f"{node.node_type} ({'int8' if int8 else 'float'})"
        layer_types[kind] += ms
        if group.startswith("attention"):
            attention_types[kind] += ms
    return {"wall_ms": round(wall_ms, 1), "total_ms": round(sum(groups.values()), 1), "groups_ms": {k: round(v, 1) for k, v in sorted(groups.items())},
            "top_layer_types_ms": _top(layer_types, 8), "attention_layer_types_ms": _top(attention_types, 8)}


def _top(times: dict[str, float], count: int) -> dict[str, float]:
    return {k: round(v, 1) for k, v in sorted(times.items(), key=lambda kv: -kv[1])[:count]}


@app.command()
def main(tag: str, folders: list[Path], height: int = 576, width: int = 1024, frames: int = 2,
         config: list[str] = typer.Option([], help="CPU plugin property KEY=VALUE, repeatable")) -> None:
    missing = [str(folder) for folder in folders if not (folder / "unet" / "openvino_model.xml").is_file()]
    if missing:
        raise SystemExit(f"no UNet IR (unet/openvino_model.xml) in {', '.join(missing)}: pass svdtool export/quantize folders")
    if min(height, width, frames) < 1 or height % 8 or width % 8:
        raise SystemExit("--height and --width must be positive multiples of 8 and --frames at least 1")
    if any("=" not in item for item in config):
        raise SystemExit("--config takes KEY=VALUE, e.g. SNIPPETS_MODE=DISABLE")
    properties = dict(item.split("=", 1) for item in config)
    results = {str(folder): profile(folder, height, width, frames, properties) for folder in folders}
    peak_rss_gb = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20, 2)
    m = machine()
    shape = f"{height}x{width}x{frames} (latents {height // 8}x{width // 8}, CFG batch 2)"
    lines = [f"# UNet call profile (PERF_COUNT), {shape}, on {m['cpu']} ({m['cores']} cores)", "",
             f"Plugin config: {properties or 'defaults'}; peak RSS of the process: {peak_rss_gb} GB.", "",
             "| IR | call, wall (s) | sum of nodes (s) | attention float (s) | attention int8 (s) | other float (s) | int8 (s) | attention by node type (s) |",
             "|---|---|---|---|---|---|---|---|"]
    for folder, r in results.items():
        g = r["groups_ms"]
        top = ", ".join(f"{k} {v / 1e3:.2f}" for k, v in list(r["attention_layer_types_ms"].items())[:4])
        lines.append(f"| {Path(folder).name} | {r['wall_ms'] / 1e3:.2f} | {r['total_ms'] / 1e3:.2f} | {g.get('attention', 0) / 1e3:.2f} | "
                     f"{g.get('attention int8', 0) / 1e3:.2f} | {g.get('other float', 0) / 1e3:.2f} | {g.get('int8', 0) / 1e3:.2f} | {top} |")
    save(f"profile_unet_{tag}", {"machine": m, "shape": {"height": height, "width": width, "frames": frames}, "config": properties,
                                 "peak_rss_gb": peak_rss_gb, "results": results},
         "\n".join(lines) + "\n")


if __name__ == "__main__":
    app()
