"""Helpers shared by the benchmark scripts: machine description, timing, result files."""

from __future__ import annotations

import json
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any, Callable

import psutil

RESULTS = Path(__file__).parent / "results"


def machine() -> dict[str, Any]:
    """This machine for result files: svdtool's own CPU detection (model, ISA, int8 dot product), cores and RAM."""
    from svdtool.cpu import cpu_info

    info = cpu_info()
    usable, total = len(os.sched_getaffinity(0)), psutil.cpu_count()  # a run pinned with taskset uses fewer than it has
    return {"cpu": info["model"], "isa": info["isa"], "int8_dot_product": info["int8_dot_product"], "cores": usable,
            **({"cores_in_machine": total} if usable != total else {}), "ram_gb": round(psutil.virtual_memory().total / 2**30, 1)}


def machine_line(info: dict[str, Any]) -> str:
    """A result file's machine, as its Markdown names it: "MODEL (N cores; ISA, ...)"."""
    return f"{info['cpu']} ({info['cores']} cores; {', '.join(info['isa'])})"


def model_label(source: dict[str, Any]) -> str:
    """A manifest's source as a result file names it: its reference, marked when the weights are random."""
    return source["ref"] + (" (random weights)" if source.get("random_weights") else "")


def decoder_latents(ir_dir: Path, frames: int, height: int, width: int):
    """Random latents (seed 0, float32) for `frames` frames of height x width through `ir_dir`'s VAE decoder, shaped by
    its config (latent channels, downscale): a decoder's time does not depend on its inputs' values."""
    import numpy as np

    config = json.loads((Path(ir_dir) / "vae_decoder" / "config.json").read_text())
    scale = 2 ** (len(config["block_out_channels"]) - 1)
    return np.random.default_rng(0).standard_normal((frames, config["latent_channels"], height // scale, width // scale),
                                                    dtype=np.float32)


def timed(function: Callable[[], Any], repeat: int = 3, warmup: int = 1) -> dict[str, float]:
    for _ in range(warmup):
        function()
    runs = []
    for _ in range(repeat):
        start = time.perf_counter()
        function()
        runs.append(time.perf_counter() - start)
    return {"median_s": round(statistics.median(runs), 3), "min_s": round(min(runs), 3), "max_s": round(max(runs), 3), "runs": len(runs)}


def save(name: str, result: dict[str, Any], markdown: str) -> None:
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / f"{name}.json").write_text(json.dumps(result, indent=2))
    (RESULTS / f"{name}.md").write_text(markdown)
    print(markdown)


def usage(doc: str | None) -> None:
    """`--help` for the scripts that read their arguments by position: print the script's docstring (its usage), exit 0."""
    if any(arg in ("-h", "--help") for arg in sys.argv[1:]):
        print((doc or "").strip())
        raise SystemExit(0)
