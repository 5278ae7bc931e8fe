"""Ablation: `--decode-chunk-size` (frames the temporal VAE decodes at once) — peak memory vs decode time.

Each run is its own `svdtool generate` process under /usr/bin/time (1 denoising step: the UNet part is constant),
so the peak RSS belongs to that chunk size alone. Run: python bench/ablation_decode_chunk.py DIR [frames size]
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from common import machine, save, usage

CHUNKS = (1, 2, 4, 8)


def main(folder: str, frames: str = "8", size: str = "256") -> None:
    image = Path(__file__).parent.parent / "examples" / "astronaut.jpg"
    runs = {}
    for chunk in CHUNKS:
        with tempfile.TemporaryDirectory() as out:
            video = Path(out) / "v.mp4"
            run = subprocess.run(["/usr/bin/time", "-v", sys.executable, "-m", "svdtool.cli", "generate", "-m", folder, "-i", str(image),
                                  "-o", str(video), "--frames", frames, "--height", size, "--width", size, "--steps", "1",
                                  "--decode-chunk-size", str(chunk)], capture_output=True, text=True)
            if run.returncode != 0:
                raise SystemExit(run.stderr[-2000:])
            timings = json.loads(video.with_name("v.mp4.json").read_text())["timings_seconds"]
        peak = int(next(l.split(":")[1] for l in run.stderr.splitlines() if "Maximum resident set size" in l)) / 2**20
        runs[chunk] = {"peak_rss_gb": round(peak, 2), "vae_decode_s": timings["vae_decoder"], "decode_calls": timings["vae_decoder_calls"]}
    result = {"folder": Path(folder).name, "frames": int(frames), "size": int(size), "date": time.strftime("%Y-%m-%d"),
              "machine": machine(), "runs": runs}
    rows = [f"| {c} | {r['decode_calls']:.0f} | {r['vae_decode_s']:.2f} | {r['peak_rss_gb']:.2f} |" for c, r in runs.items()]
    md = "\n".join([f"# Decode chunk size ablation: `{result['folder']}`, {size}×{size}, {frames} frames ({result['date']})", "",
                    "Whole-process peak RSS of `svdtool generate --steps 1`; VAE decode time from its stage timer.", "",
                    "| decode chunk | decoder calls | VAE decode (s) | peak RSS (GB) |", "|---|---|---|---|", *rows, ""])
    save(f"ablation_decode_chunk_{result['folder']}", result, md)


if __name__ == "__main__":
    usage(__doc__)
    main(*sys.argv[1:])
