"""The VAE decoder's call with its exported FP16 weights against weight-only INT8 (nncf.compress_weights, what
`--mode int8` does to the decoder), isolated: one chunk of latents, one machine, one process, median of 3 calls after
a warm-up.

    python bench/decoder_weights.py FP_IR NAME [--frames 8 --height 576 --width 1024]   -> bench/results/decoder_weights_NAME.{json,md}

The weights may be random (svd-xt): this measures speed only.
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
    parser.add_argument("--frames", type=int, default=8, help="latents in one decoder call (svdtool's decode chunk)")
    parser.add_argument("--height", type=int, default=576)
    parser.add_argument("--width", type=int, default=1024)
    args = parser.parse_args()
    import nncf

    from svdtool.outputs import read_manifest

    model = model_label(read_manifest(Path(args.fp_ir))["source"])
    core, xml = ov.Core(), Path(args.fp_ir) / "vae_decoder" / "openvino_model.xml"
    variants = {"FP16 weights (exported)": core.read_model(xml),  # a model of its own: compress_weights changes the one it gets
                "INT8 weights (nncf.compress_weights INT8_ASYM)": nncf.compress_weights(
                    core.read_model(xml), mode=nncf.CompressWeightsMode.INT8_ASYM)}
    latents = decoder_latents(Path(args.fp_ir), args.frames, args.height, args.width)
    rows = {}
    for label, variant in variants.items():
        compiled = core.compile_model(variant, "CPU")
        rows[label] = {**timed(lambda: compiled(latents)),
                       "inference_precision": compiled.get_property("INFERENCE_PRECISION_HINT").to_string()}
        del compiled
        print(label, rows[label], flush=True)
    baseline = rows["FP16 weights (exported)"]["median_s"]
    result = {"machine": machine(), "date": time.strftime("%Y-%m-%d"), "model": model,
              "chunk": list(latents.shape), "variants": rows}
    cpu = result["machine"]
    lines = [f"# The VAE decoder: exported FP16 weights against weight-only INT8 ({args.width}×{args.height}, {args.frames} frames a call)", "",
             f"{machine_line(cpu)}; {model}'s FP16 IR, its vae_decoder, one call on "
             f"{args.frames} latents of {latents.shape[2]}×{latents.shape[3]}, median of 3 after a warm-up.", "",
             "| decoder weights | inference precision | s / call | vs FP16 weights |", "|---|---|---|---|"]
    for label, row in rows.items():
        lines.append(f"| {label} | {row['inference_precision']} | {row['median_s']} | {baseline / row['median_s']:.2f}× |")
    lines += ["", f"Reproduce: `python bench/decoder_weights.py FP_IR {args.name} --frames {args.frames} --height {args.height} "
                  f"--width {args.width}`"]
    save(f"decoder_weights_{args.name}", result, "\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
