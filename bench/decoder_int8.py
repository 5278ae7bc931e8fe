"""Can the VAE decoder's activations be int8 where quality holds? (#45 item 3) Each variant's decoder goes into a copy of
a shipped INT8 IR and the whole pipeline is validated, since a decoder's error reaches the video unfiltered.

    python bench/decoder_int8.py FP_DIR INT8_DIR WORK     -> bench/results/decoder_int8_SOURCE.{json,md,png}

FP_DIR: the FP16 IR INT8_DIR was quantized from (its decoder is quantized again here); the decoder's calibration inputs
are recorded from the calibration photos as `svdtool quantize` records them (bench/quantize_vae.py's `record`). Variants:
the shipped decoder (INT8 weights only, what `svdtool quantize` writes), full INT8 with nncf's defaults, with the MIXED
preset (asymmetric activations: post-SiLU ranges are one-sided), and MIXED with the full-resolution up-block and the
layers touching pixels in float (where quantization noise would reach the frames directly). Each is checked with
`svdtool validate` (default thresholds) against one PyTorch fp32 reference on the held-out photos (bench/heldout), on
this CPU natively. Speed: one decoder call (one chunk of frames), median of 5, against the shipped decoder.
"""

from __future__ import annotations

import json
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

import nncf
import numpy as np
import openvino as ov

sys.path.insert(0, str(Path(__file__).parent))
from common import machine, save, usage  # noqa: E402
from quantize_vae import record  # noqa: E402

from svdtool.convert import OV_XML  # noqa: E402
from svdtool.outputs import read_manifest, write_manifest  # noqa: E402

HERE = Path(__file__).parent
HELD_OUT = HERE / "heldout"
FRAMES_OF = "chelsea"  # the held-out photo whose frames the picture shows
CALIBRATION = Path(__file__).parents[1] / "examples" / "calibration"
MIXED = nncf.QuantizationPreset.MIXED
FULL_RESOLUTION_AND_PIXELS = [".*up_blocks.3.*", ".*decoder.conv_out/.*", ".*time_conv_out.*"]
VARIANTS = {  # label -> nncf.quantize's arguments (None: the shipped decoder)
    "INT8 weights only (shipped)": None,
    "full INT8 (nncf defaults)": {},
    "full INT8, MIXED preset": {"preset": MIXED},
    "full INT8, MIXED, full-resolution up-block and pixel layers in float": {
        "preset": MIXED, "ignored_scope": nncf.IgnoredScope(patterns=FULL_RESOLUTION_AND_PIXELS, validate=False)},
}


def decoder_call_s(model: ov.Model, latents: dict[str, np.ndarray]) -> float:
    compiled = ov.Core().compile_model(model, "CPU")
    compiled(latents)
    runs = []
    for _ in range(5):
        start = time.perf_counter()
        compiled(latents)
        runs.append(time.perf_counter() - start)
    return statistics.median(runs)


def with_decoder(int8_dir: Path, decoder: ov.Model, folder: Path) -> Path:
    """A copy of `int8_dir` with `decoder` in place of its own, its manifest's file inventory rewritten (validate checks it)."""
    shutil.rmtree(folder, ignore_errors=True)
    shutil.copytree(int8_dir, folder)
    ov.save_model(decoder, folder / "vae_decoder" / OV_XML, compress_to_fp16=True)
    write_manifest(folder, read_manifest(folder))
    return folder


def validated(ir: Path, reference: Path, out: Path) -> dict:
    code = subprocess.run(["svdtool", "validate", str(ir), "--reference", str(reference), "-o", str(out), "--overwrite"]).returncode
    if code not in (0, 1):  # 0 pass, 1 fail; anything else is an error, not a verdict
        raise SystemExit(f"svdtool validate {ir} stopped with exit {code}")
    report = json.loads((out / "report.json").read_text())
    checks = [check for image in report["images"] for check in image["checks"]]
    worst = lambda name: round(max(c["value"] for c in checks if c["check"] == name), 3)  # noqa: E731
    runtime = [image["runtime"] for image in report["images"]]
    return {"pass": report["pass"], "psnr_mean": round(float(np.mean([r["psnr_mean"] for r in runtime])), 2),
            "psnr_worst": round(min(r["psnr_mean"] for r in runtime), 2),
            "failed": sorted({c["check"] for c in checks if not c["pass"]}),
            "noise_increase_worst": worst("noise increase (relative)"), "sharpness_change_worst": worst("|Δ sharpness| (relative)")}


def main(argv: list[str]) -> None:
    fp_dir, int8_dir, work = (Path(a) for a in argv[:3])
    work.mkdir(parents=True, exist_ok=True)
    reference = work / "reference"
    source = read_manifest(int8_dir)["source"]["ref"]
    if not reference.is_dir():
        subprocess.run(["svdtool", "reference", source, "--images", str(HELD_OUT), "-o", str(reference),
                        "--device", "cpu", "--dtype", "fp32"], check=True)
    data, settings = record(fp_dir, CALIBRATION, None, None, 100)
    calibration, latents = data["vae_decoder"]["calibration"], data["vae_decoder"]["held_out"][0]
    core, results = ov.Core(), {}
    shipped = core.read_model(int8_dir / "vae_decoder" / OV_XML)
    base_s = decoder_call_s(shipped, latents)
    for index, (label, arguments) in enumerate(VARIANTS.items()):
        if arguments is None:
            decoder, ir = shipped, int8_dir
        else:
            decoder = nncf.quantize(core.read_model(fp_dir / "vae_decoder" / OV_XML), nncf.Dataset(calibration),
                                    subset_size=len(calibration), **arguments)
            ir = with_decoder(int8_dir, decoder, work / f"ir{index}")
        call_s = base_s if arguments is None else decoder_call_s(decoder, latents)
        results[label] = {"decoder_call_s": round(call_s, 4), "decoder_speedup": round(base_s / call_s, 2),
                          "validate": validated(ir, reference, work / f"val{index}")}
        print(label, results[label], flush=True)
    result = {"machine": machine(), "source": source, "settings": settings.as_dict(), "frames_of": FRAMES_OF, "results": results}
    name = f"decoder_int8_{source}"
    frames_picture([reference / "frames" / FRAMES_OF, *(work / f"val{i}" / "runtime" / FRAMES_OF for i in range(len(VARIANTS)))],
                   HERE / "results" / f"{name}.png")
    save(name, result, markdown(result, latents["latent_sample"].shape[0]))


def frames_picture(folders: list[Path], out: Path, frames: tuple[int, ...] = (0, 4, 7), scale: int = 2) -> None:
    """Rows: the reference's frames, then each variant's; columns: `frames` (enlarged, nearest neighbour)."""
    from PIL import Image

    rows = [[Image.open(folder / f"frame_{i:04d}.png").convert("RGB") for i in frames] for folder in folders]
    width, height = rows[0][0].width * scale, rows[0][0].height * scale
    picture = Image.new("RGB", (width * len(frames), height * len(rows)))
    for r, row in enumerate(rows):
        for c, frame in enumerate(row):
            picture.paste(frame.resize((width, height), Image.NEAREST), (c * width, r * height))
    picture.save(out)


def markdown(record: dict, chunk: int) -> str:
    info, settings = record["machine"], record["settings"]
    lines = [f"# The VAE decoder's activations in int8: {record['source']}'s INT8 IR, {settings['width']}x{settings['height']}, "
             f"{settings['num_frames']} frames", "",
             f"{info['cpu']} ({', '.join(info['isa'])}), {info['cores']} cores. The whole INT8 pipeline with each decoder, "
             "`svdtool validate` (default thresholds) against the PyTorch fp32 reference on the 5 held-out photos (bench/heldout); "
             f"decoder: one call of {chunk} frames, median of 5.", "",
             "| decoder | validate | PSNR mean / worst (dB) | failed checks | worst noise increase / \\|Δ sharpness\\| (limits 0.2) "
             "| decoder call (s) | vs shipped |", "|---|---|---|---|---|---|---|"]
    for label, row in record["results"].items():
        check = row["validate"]
        failed = ", ".join(check["failed"]).replace("|", "\\|") or "–"
        lines.append(f"| {label} | {'PASS' if check['pass'] else 'FAIL'} | {check['psnr_mean']} / {check['psnr_worst']} | {failed} | "
                     f"{check['noise_increase_worst']} / {check['sharpness_change_worst']} | {row['decoder_call_s']} | "
                     f"{row['decoder_speedup']:.2f}× |")
    lines += ["", f"Frames 0, 4 and 7 of {record['frames_of']} (`decoder_int8_{record['source']}.png`), one row each: "
              "the reference, then the variants in the table's order.", "",
              "Reproduce: `svdtool export mini -o FP && svdtool quantize FP --calib examples/calibration -o INT8 && "
              "python bench/decoder_int8.py FP INT8 WORK`."]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    usage(__doc__)
    main(sys.argv[1:])
