"""Batch throughput: videos per hour in this process vs Ray Data (embedded) with 1..N actors, per IR folder.

python bench/batch_scaling.py NAME=IR_DIR [NAME=IR_DIR ...] [--images N] [--actors 1,2] [--out NAME]

Each actor gets cores / actors CPUs and as many OpenVINO threads; the in-process run uses every core. The batch is
svd-mini's shape (128x128x8, 25 steps) over N photos (the repository's photos, repeated), one run per configuration,
wall time from the call to the last video (Ray's start and each actor's load and compile included, as a user sees
them). Memory: each actor's peak RSS. -> results/<out>.json/.md
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from common import machine, save  # noqa: E402

HERE = Path(__file__).parent
PHOTOS = sorted([*HERE.parent.glob("examples/*.jpg"), *HERE.parent.glob("examples/calibration/*.jpg"), *HERE.glob("heldout/*.jpg")])


def markdown(result: dict, images: int) -> str:
    m, rows = result["machine"], result["rows"]
    lines = [f"# Batch throughput: in-process vs Ray Data", "",
             f"{m['cpu']} ({', '.join(m['isa'])}), {m['cores']} cores, {m['ram_gb']} GB; {result['shape']}; {images} "
             "photos per run, one run per row; wall time from the call to the last video (Ray's start and each actor's "
             "load + compile included, which a short batch pays in full); per-video time: the median of one actor's "
             "videos, so the rate once started shows what a long batch approaches.", "",
             "| IR | engine | CPUs (threads) per actor | videos/hour (whole run) | wall s | s/video (one actor, p50) | "
             "videos/hour once started (actors × 3600 / p50) | peak RSS per actor (GB) |",
             "|---|---|---|---|---|---|---|---|"]
    lines += [f"| {r['ir']} | {r['engine']} | {r['cpus_per_actor']} | {r['videos_per_hour']:.0f} | {r['wall_s']} | "
              f"{r['video_s_p50']} | {r['actors'] * 3600 / r['video_s_p50']:.0f} | {r['peak_rss_gb_per_actor']} |" for r in rows]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("irs", nargs="+", help="NAME=IR_DIR")
    parser.add_argument("--images", type=int, default=12)
    parser.add_argument("--actors", default="1,2")
    parser.add_argument("--out", default="batch_scaling")
    parser.add_argument("--format", default="mp4", help="mp4, or gif where imageio-ffmpeg is missing (the GPU host)")
    args = parser.parse_args()

    from svdtool.batch import BatchSpec, RayOptions, collect_inputs, generate_batch
    from svdtool.runtime import GenerationSettings
    from svdtool.runtime.session import ir_generation_defaults

    cores = os.cpu_count() or 1
    work = Path(tempfile.mkdtemp(prefix="batch-bench-"))
    listing = work / "inputs.txt"
    listing.write_text("".join(f"{PHOTOS[i % len(PHOTOS)]}\n" for i in range(args.images)))
    items = collect_inputs(listing)
    rows = []
    for pair in args.irs:
        label, folder = pair.split("=", 1)
        settings = GenerationSettings(num_inference_steps=25).resolved(ir_generation_defaults(Path(folder)))
        configs = [("in-process", None, cores)] + [(f"Ray, {a} actor{'s' if a > 1 else ''}", a, max(1, cores // a))
                                                    for a in map(int, args.actors.split(","))]
        for engine, actors, cpus in configs:
            spec = BatchSpec(folder, settings, args.format, threads=cpus if actors else None)
            ray = RayOptions(None, actors, cpus) if actors else None
            summary = generate_batch(spec, items, work / f"{label}-{engine}".replace(" ", "_").replace(",", ""), ray)
            memory = [w["peak_rss_gb"] for w in summary["workers"].values()]
            rows.append({"ir": label, "engine": engine, "actors": actors or 1, "cpus_per_actor": cpus,
                         "videos": summary["done"], "failed": summary["failed"], "wall_s": summary["throughput"]["wall_s"],
                         "videos_per_hour": summary["throughput"]["videos_per_hour"],
                         "video_s_p50": summary["stage_seconds"].get("total", {}).get("p50"),
                         "peak_rss_gb_per_actor": round(max(memory), 2) if memory else None})
            print(rows[-1], flush=True)
    result = {"machine": machine(), "shape": f"{settings.width}x{settings.height}, {settings.num_frames} frames, 25 steps",
              "images": args.images, "rows": rows}
    save(args.out, result, markdown(result, args.images))


if __name__ == "__main__":
    main()
