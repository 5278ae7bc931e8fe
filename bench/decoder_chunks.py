"""The VAE decoder's time a frame for each decode chunk (`--decode-chunk-size`: frames the temporal decoder takes in
one call), isolated: the exported IR's vae_decoder, random latents, one process, `--repeat` timed calls after a warm-up.
Its temporal layers mix the frames of a chunk, so the chunk changes the video a little (docs/true-size.md).

    python bench/decoder_chunks.py FP_IR NAME [--chunks 1,2,4,8 --height 576 --width 1024 --repeat 1]
        -> bench/results/decoder_chunks_NAME.{json,md}
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import openvino as ov

from common import decoder_latents, machine, machine_line, model_label, save, timed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("fp_ir")
    parser.add_argument("name")
    parser.add_argument("--chunks", default="1,2,4,8")
    parser.add_argument("--height", type=int, default=576)
    parser.add_argument("--width", type=int, default=1024)
    parser.add_argument("--repeat", type=int, default=1, help="timed calls per chunk (a call at 576x1024 takes minutes on 2 cores)")
    args = parser.parse_args()
    from svdtool.outputs import read_manifest

    model = model_label(read_manifest(Path(args.fp_ir))["source"])
    core = ov.Core()
    compiled = core.compile_model(core.read_model(Path(args.fp_ir) / "vae_decoder" / "openvino_model.xml"), "CPU")
    rows = {}
    for chunk in map(int, args.chunks.split(",")):
        latents = decoder_latents(Path(args.fp_ir), chunk, args.height, args.width)
        call = timed(lambda: compiled(latents), repeat=args.repeat)
        rows[chunk] = {**call, "s_per_frame": round(call["median_s"] / chunk, 2)}
        print(chunk, rows[chunk], flush=True)
    precision = compiled.get_property("INFERENCE_PRECISION_HINT").to_string()
    largest = rows[max(rows)]["s_per_frame"]
    cpu = machine()
    lines = [f"# The VAE decoder's time a frame per decode chunk ({args.width}×{args.height})", "",
             f"{machine_line(cpu)}; {model}'s IR, its vae_decoder ({precision}), "
             f"random latents, median of {args.repeat} call(s) after a warm-up, {time.strftime('%Y-%m-%d')}.", "",
             "| chunk (frames a call) | s / call | s / frame | vs the largest chunk |", "|---|---|---|---|"]
    for chunk, row in rows.items():
        lines.append(f"| {chunk} | {row['median_s']} | {row['s_per_frame']} | {largest / row['s_per_frame']:.2f}× |")
    lines += ["", f"Reproduce: `python bench/decoder_chunks.py FP_IR {args.name} --chunks {args.chunks} --height {args.height} "
                  f"--width {args.width} --repeat {args.repeat}`"]
    save(f"decoder_chunks_{args.name}", {"machine": cpu, "date": time.strftime("%Y-%m-%d"), "model": model,
                                         "inference_precision": precision, "chunks": rows}, "\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
