"""Peak RSS and wall time of `svdtool export` per component, for a preset (default: the full svd-xt architecture).

Run: python bench/export_memory.py svd-xt  → bench/results/export_<preset>.json and .md
"""

from __future__ import annotations

import json
import platform
import resource
import shutil
import sys
import tempfile
import time
from pathlib import Path

import psutil

from common import usage

from svdtool.convert import export

RESULTS = Path(__file__).parent / "results"


def main(preset: str = "svd-xt", weights: str = "fp16") -> None:
    out = Path(tempfile.mkdtemp(prefix="svdtool-bench-")) / preset
    start = time.perf_counter()
    manifest = export(preset, out, weights=weights)
    total = time.perf_counter() - start
    peak_gb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    sizes = {name: sum(e["bytes"] for f, e in manifest["files"].items() if f.startswith(name + "/")) / 2**30
             for name in manifest["components"]}
    result = {
        "preset": preset,
        "weights": weights,
        "machine": {"cpu": platform.processor() or platform.machine(), "cores": psutil.cpu_count(),
                    "ram_gb": round(psutil.virtual_memory().total / 2**30, 1)},
        "date": time.strftime("%Y-%m-%d"),
        "total_seconds": round(total, 1),
        "process_peak_rss_gb": round(peak_gb, 2),
        "components": {name: {"seconds": info["export_seconds"], "peak_rss_gb": info["peak_rss_gb"],
                              "ir_gb": round(sizes[name], 3)} for name, info in manifest["components"].items()},
        "versions": manifest["versions"],
    }
    shutil.rmtree(out.parent, ignore_errors=True)
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / f"export_{preset}.json").write_text(json.dumps(result, indent=2))
    lines = [f"# Export of `{preset}` ({weights} IR), {result['date']}", "",
             f"Machine: {result['machine']}. Total {result['total_seconds']} s, process peak RSS {result['process_peak_rss_gb']} GB.", "",
             "| component | seconds | peak RSS (GB) | IR size (GB) |", "|---|---|---|---|"]
    lines += [f"| {n} | {c['seconds']} | {c['peak_rss_gb']} | {c['ir_gb']} |" for n, c in result["components"].items()]
    (RESULTS / f"export_{preset}.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    usage(__doc__)
    main(*sys.argv[1:])
