"""Attention routes at SVD's true size (#45 item 2): the top level's spatial self-attention at 576×1024 — 9,216 tokens
a frame, 5 heads of 64 — as one OpenVINO op, compiled each way the CPU plugin allows, one frame a call.

    python bench/attention_routes.py [--tokens 9216] [--frames 1] [--name NAME]   -> bench/results/attention_routes_NAME.{json,md}

Routes: the ScaledDotProductAttention op as the UNet IR holds it (the plugin decomposes it and its Snippets MHA
tokenization fuses score, softmax and value products into one tiled `Subgraph`: today's route); the same with Snippets
off (`SNIPPETS_MODE: DISABLE`: MatMul, Softmax, MatMul, the score matrix materialised); the op in a model with a state
variable (the condition under which older CPU plugins kept SDPA whole for LLMs: does it keep it for this shape?);
queries in 4 chunks (4 SDPA ops, concatenated); and ToDo ×2's keys and values (every 2nd row and column: 4× fewer,
`export --kv-downsample 2`). Each route runs in its own process: its peak RSS is the route's; time is the best of 3
calls after one warm-up; the output is compared with the fused route's.
"""

from __future__ import annotations

import argparse
import collections
import multiprocessing
import resource
import time
from typing import Any

from common import machine, save

HEADS, HEAD_DIM = 5, 64  # SVD's top level: 320 channels, attention_head_dim 64
ROUTES = {
    "fused SDPA (today: decomposed, Snippets MHA subgraph)": {},
    "unfused (Snippets off: MatMul, Softmax, MatMul)": {"config": {"SNIPPETS_MODE": "DISABLE"}},
    "SDPA in a stateful model": {"stateful": True},
    "queries in 4 chunks": {"chunks": 4},
    "ToDo ×2 keys/values (approximate)": {"kv_stride": 2},
}


def build(frames: int, tokens: int, stateful: bool = False, chunks: int = 1, kv_stride: int = 1):
    import numpy as np
    import openvino as ov
    import openvino.opset13 as ops
    from openvino.op.util import Variable, VariableInfo

    shape = [frames, HEADS, tokens, HEAD_DIM]
    parameters = [ops.parameter(shape, ov.Type.f32, name=name) for name in ("query", "key", "value")]
    query, key, value = parameters
    if kv_stride > 1:  # a 72x128 token grid (576x1024's top level) subsampled in both directions, as convert/tokens.py does
        rows, columns = tokens // 128, 128
        grid = [frames, HEADS, rows, columns, HEAD_DIM]
        key, value = (ops.reshape(ops.strided_slice(ops.reshape(x, grid, False), [0, 0, 0, 0, 0], grid, [1, 1, kv_stride, kv_stride, 1],
                                                    [0] * 5, [0] * 5), [frames, HEADS, -1, HEAD_DIM], False) for x in (key, value))
    if chunks == 1:
        attention = ops.scaled_dot_product_attention(query, key, value, causal=False)
    else:
        parts = ops.split(query, 2, chunks)
        attention = ops.concat([ops.scaled_dot_product_attention(parts.output(i), key, value, causal=False) for i in range(chunks)], 2)
    if not stateful:
        return ov.Model([ops.result(attention)], parameters)
    info = VariableInfo()  # one variable: a model with state is what the plugin once took for an LLM
    info.data_shape, info.data_type, info.variable_id = ov.PartialShape([1]), ov.Type.f32, "state"
    variable = Variable(info)
    read = ops.read_value(ops.constant(np.zeros(1, np.float32)), variable)
    return ov.Model([ops.result(attention), ops.result(read)], [ops.assign(read, variable)], parameters)


def run_route(frames: int, tokens: int, options: dict, queue) -> None:
    import numpy as np
    import openvino as ov

    model = build(frames, tokens, **{k: v for k, v in options.items() if k != "config"})
    compiled = ov.Core().compile_model(model, "CPU", {"PERFORMANCE_HINT": "LATENCY", **options.get("config", {})})
    nodes = collections.Counter(op.get_rt_info()["layerType"].astype(str) for op in compiled.get_runtime_model().get_ops())
    rng = np.random.default_rng(0)
    inputs = {name: rng.standard_normal((frames, HEADS, tokens, HEAD_DIM), dtype=np.float32) for name in ("query", "key", "value")}
    request = compiled.create_infer_request()
    request.infer(inputs)
    times = []
    for _ in range(3):
        start = time.perf_counter()
        request.infer(inputs)
        times.append(time.perf_counter() - start)
    queue.put({"call_s": round(min(times), 4), "peak_rss_gb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20, 2),
               "precision": compiled.get_property("INFERENCE_PRECISION_HINT").get_type_name(),
               "nodes": {k: v for k, v in nodes.items() if k not in ("Input", "Output", "Const")},
               "output": request.get_output_tensor(0).data.copy()})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tokens", type=int, default=9216)
    parser.add_argument("--frames", type=int, default=1)
    parser.add_argument("--name", default="local")
    args = parser.parse_args()
    if args.tokens % 256 or args.frames < 1:
        parser.error("--tokens must be a multiple of 256 (rows of 128 tokens, halved by ToDo) and --frames at least 1")
    context = multiprocessing.get_context("spawn")
    results: dict[str, Any] = {}
    reference = None
    for label, options in ROUTES.items():
        queue = context.Queue()
        process = context.Process(target=run_route, args=(args.frames, args.tokens, options, queue))
        process.start()
        while queue.empty():  # a route that crashes (e.g. out of memory) reports nothing: say so instead of waiting
            if not process.is_alive() and queue.empty():
                raise SystemExit(f"route {label!r} stopped with exit {process.exitcode} before reporting")
            time.sleep(0.5)
        row = queue.get()
        process.join()
        output = row.pop("output")
        reference = output if reference is None else reference
        row["max_abs_difference"] = float(abs(output - reference).max())
        results[label] = row
        print(label, row, flush=True)
    info = machine()
    fused = next(iter(results.values()))["call_s"]
    lines = [f"# Attention routes: {args.frames} frame(s) × {HEADS} heads × {args.tokens} tokens × {HEAD_DIM}", "",
             f"{info['cpu']} ({', '.join(info['isa'])}), {info['cores']} cores; one call, best of 3; peak RSS of the route's "
             "own process; difference: max |output − fused route's|.", "",
             "| route | call (s) | vs fused | peak RSS (GB) | compiled nodes | precision | max difference |", "|---|---|---|---|---|---|---|"]
    for label, row in results.items():
        nodes = ", ".join(f"{k} {v}" for k, v in sorted(row["nodes"].items()))
        lines.append(f"| {label} | {row['call_s']} | {fused / row['call_s']:.2f}× | {row['peak_rss_gb']} | {nodes} | {row['precision']} | "
                     f"{row['max_abs_difference']:.2g} |")
    lines += ["", f"Reproduce: `python bench/attention_routes.py --tokens {args.tokens} --frames {args.frames} --name {args.name}`."]
    save(f"attention_routes_{args.name}", {"machine": info, "tokens": args.tokens, "frames": args.frames, "heads": HEADS,
                                           "head_dim": HEAD_DIM, "results": results}, "\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
