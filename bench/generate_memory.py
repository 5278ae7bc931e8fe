"""Peak RSS and wall time of a whole `svdtool generate` (own process, /usr/bin/time) for IR folders.

Run: python bench/generate_memory.py DIR [DIR ...]  (shape: 256×256, 8 frames, 4 steps, decode chunk 8)
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
import time
from pathlib import Path

from common import machine, save

ARGS = ["--height", "256", "--width", "256", "--frames", "8", "--steps", "4", "--decode-chunk-size", "8"]


def main(*folders: str) -> None:
    rows, results = [], {"machine": machine(), "date": time.strftime("%Y-%m-%d"), "args": ARGS, "runs": {}}
    image = Path(__file__).parent.parent / "examples" / "astronaut.jpg"
    for folder in folders:
        with tempfile.TemporaryDirectory() as out:
            start = time.perf_counter()
            run = subprocess.run(["/usr/bin/time", "-v", sys.executable, "-m", "svdtool.cli", "generate", "-m", folder, "-i", str(image),
                                  "-o", f"{out}/v.mp4", *ARGS], capture_output=True, text=True)
            seconds = time.perf_counter() - start
        if run.returncode != 0:
            raise SystemExit(run.stderr[-2000:])
        peak = int(next(l.split(":")[1] for l in run.stderr.splitlines() if "Maximum resident set size" in l)) / 2**20
        name = Path(folder).name
        results["runs"][name] = {"peak_rss_gb": round(peak, 2), "wall_seconds": round(seconds, 1)}
        rows.append(f"| {name} | {peak:.2f} | {seconds:.1f} |")
    md = "\n".join([f"# Whole `svdtool generate` at 256×256, 8 frames, 4 steps ({results['date']})", "",
                    f"Machine: {results['machine']['cpu']}, {results['machine']['cores']} cores. Wall time includes start-up, compile and writing the mp4.", "",
                    "| IR folder | peak RSS (GB) | wall (s) |", "|---|---|---|", *rows, ""])
    save("generate_memory", results, md)


if __name__ == "__main__":
    main(*sys.argv[1:])
