"""Which INT8 recipe keeps svd-mini's UNet accurate on every CPU? Per-call SNR of the sampler's denoised estimate made
with each quantized UNet against the FP IR's (both computed in f32), on UNet inputs recorded while generating from held-out photos (25 steps), on this CPU
and on a CPU without VNNI emulated in a child process (ONEDNN_MAX_CPU_ISA=AVX512_CORE; on an AVX-512 host that
runs int8 exactly as a VNNI-less CPU does).

python bench/quantize_recipe.py [RECIPE ...] -> bench/results/quantize_recipe.{json,md}
A recipe is a name in RECIPES; the calibration data (8 scikit-image photos, none of them held out) are recorded once
into bench/.cache/ and reused.
"""

from __future__ import annotations

import json
import os
import pickle
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from common import machine, save, usage  # noqa: E402

HERE = Path(__file__).parent
CACHE = HERE / ".cache" / "quantize_recipe"
CALIBRATION_PHOTOS = ("rocket", "immunohistochemistry", "hubble_deep_field", "coins", "camera", "retina", "colorwheel", "brick")
EVAL_STEPS = (0, 6, 12, 18, 24)
NO_VNNI = {"ONEDNN_MAX_CPU_ISA": "AVX512_CORE"}


def record(fp_dir: Path) -> dict:
    """UNet inputs: calibration (as `svdtool quantize` records them) and evaluation (held-out photos), with FP outputs."""
    path = CACHE / "inputs.pkl"
    if path.is_file():
        return pickle.loads(path.read_bytes())
    import skimage.data
    from PIL import Image

    from svdtool.quantize.record import collect_calibration_data, recording, split_guidance_halves
    from svdtool.runtime import GenerationSettings, generate, load_ov_pipeline

    pipeline, manifest = load_ov_pipeline(fp_dir, precision="f32")
    settings = GenerationSettings(num_inference_steps=25).resolved(manifest["generation_defaults"])
    photos = [Image.fromarray(getattr(skimage.data, name)()).convert("RGB") for name in CALIBRATION_PHOTOS]
    calibration = collect_calibration_data(pipeline, photos, settings, unet_samples=64)["unet"]
    evaluation = []
    for photo in sorted((HERE / "heldout").glob("*.jpg")):
        with recording(pipeline, settings) as calls:
            generate(pipeline, Image.open(photo).convert("RGB"), settings, show_progress=False)
        evaluation += [calls["unet"][step] for step in EVAL_STEPS]
    data = {"calibration": calibration, "evaluation": evaluation, "halves": split_guidance_halves(evaluation)}
    CACHE.mkdir(parents=True, exist_ok=True)
    path.write_bytes(pickle.dumps(data))
    return data


def evaluate(unet_xml: str, inputs_pkl: str, reference_xml: str) -> dict:
    """Per-call denoised-estimate SNR (dB) of `unet_xml` vs `reference_xml`, both at f32 precision, on the evaluation
    inputs; and the median time of one call at this CPU's default precision (what a user runs)."""
    import time

    import openvino as ov

    from svdtool.quantize.accuracy import denoised_snr

    core = ov.Core()
    evaluation = pickle.loads(Path(inputs_pkl).read_bytes())["evaluation"]
    config = {"INFERENCE_PRECISION_HINT": "f32"}
    quantized, reference = (core.compile_model(xml, "CPU", config) for xml in (unet_xml, reference_xml))
    snr = [denoised_snr(call, reference(call)[0], quantized(call)[0]) for call in evaluation]
    if os.environ.get("RECIPE_NO_TIMING"):  # set when the machine is busy: then only the SNR means anything
        return {"snr": snr, "ms_per_call": None}
    # Under ONEDNN_MAX_CPU_ISA=AVX512_CORE the plugin still offers bf16, which oneDNN then cannot run; a CPU without
    # VNNI (AVX2) executes f32 by default, so the emulation is timed in f32 (an AVX-512 stand-in, not AVX2's speed).
    default = core.compile_model(unet_xml, "CPU", config if os.environ.get("ONEDNN_MAX_CPU_ISA") else {})
    default(evaluation[0])
    times = []
    for call in evaluation[:10]:
        start = time.perf_counter()
        default(call)
        times.append(time.perf_counter() - start)
    return {"snr": snr, "ms_per_call": round(1000 * float(np.median(times)), 1)}


def evaluate_in_child(unet_xml: Path, reference_xml: Path, env: dict[str, str]) -> dict:
    out = subprocess.run([sys.executable, __file__, "--evaluate", str(unet_xml), str(CACHE / "inputs.pkl"), str(reference_xml)],
                         capture_output=True, text=True, env={**os.environ, **env})
    if out.returncode != 0:
        raise RuntimeError(out.stderr[-2000:])
    return json.loads(out.stdout.strip().splitlines()[-1])


def quantize_unet(fp_xml: Path, samples: list[dict], recipe: dict) -> "object":
    import nncf
    import openvino as ov
    from nncf.quantization.advanced_parameters import AdvancedQuantizationParameters, AdvancedSmoothQuantParameters, OverflowFix

    model = ov.Core().read_model(fp_xml)
    if recipe["kind"] == "none":
        return model
    overflow = {"first": OverflowFix.FIRST_LAYER, "all": OverflowFix.ENABLE, "none": OverflowFix.DISABLE}[recipe.get("overflow", "first")]
    ignored = nncf.IgnoredScope(patterns=float_classes(recipe.get("float_classes", 0)), validate=False)
    samples = samples[: recipe.get("samples", len(samples))]
    if recipe["kind"] == "hybrid":
        from optimum.intel import OVWeightQuantizationConfig
        from optimum.intel.openvino.quantization import _get_hybrid_mixed_quantization_config, _mixed_quantization

        config = _get_hybrid_mixed_quantization_config(model, OVWeightQuantizationConfig(bits=8, num_samples=len(samples)))
        config.full_quantization_config.overflow_fix = overflow.value
        return _mixed_quantization(model, config, nncf.Dataset(samples))
    return nncf.quantize(
        model, nncf.Dataset(samples), model_type=nncf.ModelType.TRANSFORMER, subset_size=len(samples),
        preset=nncf.QuantizationPreset(recipe.get("preset", "performance")), ignored_scope=ignored,
        advanced_parameters=AdvancedQuantizationParameters(
            overflow_fix=overflow, smooth_quant_alphas=AdvancedSmoothQuantParameters(matmul=recipe.get("smooth_quant", 0.95))))


def float_classes(count: int) -> list[str]:
    """The patterns of svdtool's first `count` UNet layer classes (quantize/modes.py: most harmful to quantize first)."""
    from svdtool.quantize.modes import UNET_LAYER_CLASSES

    return [pattern for patterns in list(UNET_LAYER_CLASSES.values())[:count] for pattern in patterns]


# int8 rows add svdtool's UNet layer classes to the float set one at a time, cumulatively; "+4 classes" is --mode int8.
RECIPES = {
    "hybrid (optimum-intel default)": {"kind": "hybrid", "overflow": "none"},
    "hybrid, overflow fix on all layers": {"kind": "hybrid", "overflow": "all"},
    "int8, nncf defaults": {"kind": "int8"},
    "int8, overflow fix on all layers": {"kind": "int8", "overflow": "all"},
    "+ time embeddings in float": {"kind": "int8", "overflow": "all", "float_classes": 1},
    "+ cross-attention": {"kind": "int8", "overflow": "all", "float_classes": 2},
    "+ first and last convolutions": {"kind": "int8", "overflow": "all", "float_classes": 3},
    "+ time-embedding projections (svdtool --mode int8)": {"kind": "int8", "overflow": "all", "float_classes": 4},
    "+ self-attention": {"kind": "int8", "overflow": "all", "float_classes": 5},
    "+ feed-forward": {"kind": "int8", "overflow": "all", "float_classes": 6},
    "FP16 IR (no quantization)": {"kind": "none"},
}


def main(names: list[str]) -> None:
    from svdtool.convert import export

    fp_dir = CACHE / "mini-fp16"
    if not (fp_dir / "svdtool.json").is_file():
        export("mini", fp_dir, overwrite=fp_dir.exists())
    data = record(fp_dir)
    reference_xml = fp_dir / "unet" / "openvino_model.xml"
    results_path = HERE / "results" / "quantize_recipe.json"
    results = json.loads(results_path.read_text())["recipes"] if results_path.is_file() and names else {}
    import openvino as ov

    for name in names or RECIPES:
        quantized = quantize_unet(reference_xml, data["calibration"], RECIPES[name])
        with tempfile.TemporaryDirectory() as folder:
            xml = Path(folder) / "unet.xml"
            ov.save_model(quantized, xml)
            native, no_vnni = evaluate_in_child(xml, reference_xml, {}), evaluate_in_child(xml, reference_xml, NO_VNNI)
        results[name] = {"recipe": RECIPES[name], "snr_native": summary(native["snr"]), "snr_no_vnni": summary(no_vnni["snr"]),
                         "ms_per_call_native": native["ms_per_call"], "ms_per_call_no_vnni": no_vnni["ms_per_call"]}
        print(name, results[name], flush=True)
    lines = ["# svd-mini UNet: INT8 recipes, accuracy and speed per UNet call", "",
             f"This CPU: {machine()['cpu']} ({', '.join(machine()['isa'])}); no-VNNI: the same CPU with "
             f"ONEDNN_MAX_CPU_ISA=AVX512_CORE. {len(data['evaluation'])} UNet calls (steps {EVAL_STEPS} of 25, 5 held-out "
             f"photos); calibration: {len(data['calibration'])} samples from {len(CALIBRATION_PHOTOS)} other photos.", "",
             "SNR of the sampler's denoised estimate vs the FP IR, both computed in f32; time of one UNet call (batch 2, "
             "128x128x8) at this CPU's default precision, and in f32 under the no-VNNI emulation (as an AVX2 CPU runs; "
             "AVX-512 speed, not AVX2's).", "",
             "| recipe | this CPU: SNR mean / min (dB) | no VNNI: SNR mean / min (dB) | ms per UNet call: this CPU / no VNNI |",
             "|---|---|---|---|"]
    lines += [f"| {name} | {r['snr_native']['mean']} / {r['snr_native']['min']} | {r['snr_no_vnni']['mean']} / {r['snr_no_vnni']['min']} "
              f"| {r['ms_per_call_native'] or '-'} / {r['ms_per_call_no_vnni'] or '-'} |" for name, r in results.items()]
    save("quantize_recipe", {"machine": machine(), "recipes": results}, "\n".join(lines) + "\n")


def summary(values: list[float]) -> dict[str, float]:
    return {"mean": round(float(np.mean(values)), 2), "min": round(float(np.min(values)), 2)}


if __name__ == "__main__":
    usage(__doc__)
    if sys.argv[1:2] == ["--evaluate"]:
        print(json.dumps(evaluate(*sys.argv[2:5])))
    else:
        main(sys.argv[1:])
