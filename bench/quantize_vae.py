"""Does full INT8 (weights and activations) of the VAE decoder, VAE encoder and image encoder pay? (#11 item 3)

python bench/quantize_vae.py FP_DIR [--calib DIR] [--size H W] [--frames F] [--max-images N] [--name NAME]
    -> bench/results/quantize_vae_NAME.{json,md}   (--max-images: the first N photos of each set, for large models)

Each component's inputs are recorded while the FP pipeline (f32) generates from the calibration photos (as `svdtool
quantize` records them) and from the held-out photos (bench/heldout/). Variants per component: the FP16 IR at this
CPU's default precision, INT8 weights only (`nncf.compress_weights` INT8_ASYM: what `svdtool quantize` ships), full
INT8 (`nncf.quantize`, nncf's defaults, every calibration input) and full INT8 with asymmetric activations (MIXED
preset) and the layers touching pixels or the embedding kept in float. Quality: the held-out outputs against the FP
IR at f32 — PSNR of the decoded frames (uint8) for the decoder, output SNR (dB) for the encoders. Speed: the median
of 5 calls on one held-out input (compiled as the runtime compiles it).
"""

from __future__ import annotations

import statistics
import sys
import time
from pathlib import Path

import nncf
import numpy as np
import openvino as ov

sys.path.insert(0, str(Path(__file__).parent))
from common import machine, save, usage  # noqa: E402

from svdtool.convert import OV_XML  # noqa: E402

HERE = Path(__file__).parent
COMPONENTS = ("vae_decoder", "vae_encoder", "image_encoder")


def record(fp_dir: Path, calib: Path, size: tuple[int, int] | None, frames: int | None, max_images: int) -> tuple[dict, object]:
    from PIL import Image

    from svdtool.quantize.record import collect_calibration_data
    from svdtool.runtime import GenerationSettings, load_ov_pipeline

    pipeline, manifest = load_ov_pipeline(fp_dir, precision="f32")
    overrides = {"num_inference_steps": 4}
    if size:
        overrides.update(height=size[0], width=size[1])
    if frames:
        overrides.update(num_frames=frames)
    settings = GenerationSettings(**overrides).resolved(manifest["generation_defaults"])
    load = lambda folder: [Image.open(p).convert("RGB") for p in sorted(folder.glob("*.jpg"))[:max_images]]  # noqa: E731
    calibration = collect_calibration_data(pipeline, load(calib), settings, unet_samples=1)
    held_out = collect_calibration_data(pipeline, load(HERE / "heldout"), settings, unet_samples=1)
    return {name: {"calibration": calibration[name], "held_out": held_out[name]} for name in COMPONENTS}, settings


def to_uint8(frames: np.ndarray) -> np.ndarray:
    return ((np.clip(frames, -1, 1) + 1) * 127.5).round().astype(np.uint8)


def quality(name: str, outputs: list[np.ndarray], reference: list[np.ndarray]) -> float:
    if name == "vae_decoder":
        mse = np.mean([np.mean((to_uint8(a).astype(np.float64) - to_uint8(b)) ** 2) for a, b in zip(outputs, reference)])
        return round(float(10 * np.log10(255.0**2 / max(mse, 1e-12))), 2)
    error = sum(float(np.sum((a.astype(np.float64) - b) ** 2)) for a, b in zip(outputs, reference))
    signal = sum(float(np.sum(b.astype(np.float64) ** 2)) for b in reference)
    return round(10 * np.log10(signal / max(error, 1e-30)), 2)


def measure(name: str, model: ov.Model, inputs: list[dict], reference: list[np.ndarray]) -> dict:
    compiled = ov.Core().compile_model(model, "CPU")
    outputs = [compiled(x)[0] for x in inputs]
    runs = []
    for _ in range(5):
        start = time.perf_counter()
        compiled(inputs[0])
        runs.append(time.perf_counter() - start)
    return {"quality": quality(name, outputs, reference), "call_s": round(statistics.median(runs), 4)}


def main(argv: list[str]) -> None:
    fp_dir = Path(argv[0])
    option = lambda flag, count=1: argv[argv.index(flag) + 1: argv.index(flag) + 1 + count] if flag in argv else None  # noqa: E731
    calib = Path((option("--calib") or [HERE.parent / "examples" / "calibration"])[0])
    size = tuple(int(v) for v in option("--size", 2)) if option("--size", 2) else None
    frames = int(option("--frames")[0]) if option("--frames") else None
    max_images = int(option("--max-images")[0]) if option("--max-images") else 100
    name_tag = (option("--name") or [fp_dir.name])[0]
    data, settings = record(fp_dir, calib, size, frames, max_images)
    core, results = ov.Core(), {}
    for name in COMPONENTS:
        fp = core.read_model(fp_dir / name / OV_XML)
        held_out = data[name]["held_out"]
        reference = [core.compile_model(fp, "CPU", {"INFERENCE_PRECISION_HINT": "f32"})(x)[0] for x in held_out]
        dataset, subset = nncf.Dataset(data[name]["calibration"]), len(data[name]["calibration"])
        variants = {
            "FP16 IR, default precision": fp,
            "INT8 weights (shipped)": nncf.compress_weights(fp.clone(), mode=nncf.CompressWeightsMode.INT8_ASYM),
            "full INT8 (nncf.quantize)": nncf.quantize(fp.clone(), dataset, subset_size=subset),
            # asymmetric activations (post-SiLU ranges are one-sided) and the layers touching pixels in float
            "full INT8, MIXED preset, first/last layers in float": nncf.quantize(
                fp.clone(), dataset, subset_size=subset, preset=nncf.QuantizationPreset.MIXED,
                ignored_scope=nncf.IgnoredScope(patterns=[".*conv_in.*", ".*conv_out.*", ".*time_conv_out.*",
                                                          ".*patch_embedding.*", ".*visual_projection.*"], validate=False)),
        }
        results[name] = {label: measure(name, model, held_out, reference) for label, model in variants.items()}
        results[name]["calibration_inputs"] = len(data[name]["calibration"])
    info = machine()
    unit = {"vae_decoder": "PSNR of decoded frames vs FP32 (dB)", "vae_encoder": "output SNR vs FP32 (dB)",
            "image_encoder": "output SNR vs FP32 (dB)"}
    lines = [f"# Full INT8 of the VAE and image encoder: {name_tag}, {settings.width}x{settings.height}, {settings.num_frames} frames",
             "", f"{info['cpu']} ({', '.join(info['isa'])}), {info['cores']} cores; held-out photos: bench/heldout/; "
             "one call = one chunk of frames (decoder) or one image (encoders)", "",
             "| component | variant | quality | call (s) | vs FP16 IR |", "|---|---|---|---|---|"]
    for name in COMPONENTS:
        base = results[name]["FP16 IR, default precision"]["call_s"]
        for label, row in results[name].items():
            if isinstance(row, dict):
                lines.append(f"| {name} | {label} | {row['quality']} ({unit[name]}) | {row['call_s']} | {base / row['call_s']:.2f}× |")
    save(f"quantize_vae_{name_tag}", {"machine": info, "model": str(fp_dir), "settings": settings.as_dict(), "results": results},
         "\n".join(lines) + "\n")


if __name__ == "__main__":
    usage(__doc__)
    main(sys.argv[1:])
