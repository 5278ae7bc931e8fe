"""Where `svdtool quantize` spends its memory: the library call runs in this process while a thread samples its RSS
every 0.25 s and labels each sample with what the main thread is doing (the component being quantized, the nncf
algorithm and step on the stack). The calibration run is a child process (its own peak is in the manifest).

python bench/quantize_memory.py FP_DIR --calib DIR [--samples 8] [--calib-size 128 128 4 2] [--out NAME]
  -> results/NAME.json/.md and NAME.png (RSS over time, coloured by phase)
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import threading
import time
from pathlib import Path

import psutil

sys.path.insert(0, str(Path(__file__).parent))
from common import RESULTS, machine, save  # noqa: E402

from svdtool.quantize import QuantizeOptions, quantize  # noqa: E402
from svdtool.runtime import GenerationSettings  # noqa: E402

STEPS = ("collect_statistics", "compile_model", "apply", "save_model", "fusion_report", "quality_check", "collect_in_subprocess",
         "read_model", "clone", "transform", "compress_quantize_weights_transformation")


def phase_of(frame) -> str:
    """'component: nncf algorithm / step' from the main thread's stack (outermost component, innermost known step)."""
    component, algorithm, step, in_loop = "", "", "", False
    while frame is not None:
        code, local = frame.f_code, frame.f_locals
        if not step and code.co_name in STEPS:
            step = code.co_name
        owner = local.get("self")
        if not algorithm and owner is not None and "nncf/quantization/algorithms" in code.co_filename:
            algorithm = type(owner).__name__
        in_loop = in_loop or code.co_name in ("quantize_component", "quantize_unet_stepwise", "quantize_to_target", "fusion_report",
                                              "save_model", "read_model")
        if code.co_name == "quantize" and code.co_filename.endswith("quantize/run.py") and isinstance(local.get("name"), str):
            component = local["name"] if in_loop else ""
        frame = frame.f_back
    return ": ".join(part for part in (component, " / ".join(p for p in (algorithm, step) if p)) if part) or "other"


def anonymous_gb() -> float:
    """RssAnon: the part of RSS that is not file pages (mmapped IR weights are file pages the kernel can drop)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("RssAnon:"):
            return int(line.split()[1]) * 1024 / 1e9
    return float("nan")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("model")
    parser.add_argument("--calib", required=True)
    parser.add_argument("--samples", type=int, default=8)
    parser.add_argument("--calib-size", type=int, nargs=4, default=[128, 128, 4, 2], metavar=("H", "W", "FRAMES", "STEPS"))
    parser.add_argument("--out", default="quantize_memory")
    args = parser.parse_args()
    height, width, frames, steps = args.calib_size
    process, main_thread = psutil.Process(), threading.main_thread()
    samples: list[tuple[float, float, float, str]] = []  # (s, RSS GB, of which anonymous GB, phase)
    done = threading.Event()
    start = time.perf_counter()

    def sample() -> None:
        while not done.wait(0.25):
            frame = sys._current_frames().get(main_thread.ident)
            samples.append((time.perf_counter() - start, process.memory_info().rss / 1e9, anonymous_gb(), phase_of(frame)))

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    with tempfile.TemporaryDirectory() as folder:
        manifest = quantize(args.model, Path(folder) / "int8", args.calib, options=QuantizeOptions(), samples=args.samples,
                            calib_settings=GenerationSettings(height=height, width=width, num_frames=frames,
                                                              num_inference_steps=steps))
    done.set()
    sampler.join()
    phases: dict[str, dict] = {}
    for t, rss, anon, phase in samples:
        entry = phases.setdefault(phase, {"first_s": round(t, 1), "seconds": 0.0, "peak_rss_gb": 0.0, "peak_anon_gb": 0.0})
        entry["seconds"] = round(entry["seconds"] + 0.25, 2)
        entry["peak_rss_gb"] = round(max(entry["peak_rss_gb"], rss), 2)
        entry["peak_anon_gb"] = round(max(entry["peak_anon_gb"], anon), 2)
    peak = max(samples, key=lambda s: s[1])
    quantization = manifest["quantization"]
    result = {"machine": machine(), "model": args.model, "samples": args.samples, "calib_size": args.calib_size,
              "peak_rss_gb": round(peak[1], 2), "peak_anon_gb": round(max(s[2] for s in samples), 2), "peak_phase": peak[3], "wall_s": round(samples[-1][0], 1),
              "calibration_child_peak_rss_gb": quantization["calibration"]["collect_peak_rss_gb"],
              "manifest_memory": quantization["memory"],  # the up-front estimate and the whole run's peak, children included
              "components": {k: {"seconds": v["seconds"], "peak_rss_gb": v["peak_rss_gb"]} for k, v in quantization["components"].items()},
              "phases": phases, "timeline": [(round(t, 2), round(r, 3), round(a, 3), p) for t, r, a, p in samples]}
    _plot(samples, RESULTS / f"{args.out}.png", f"svdtool quantize {Path(args.model).name} --mode int8: RSS of the quantizing process")
    m = result["machine"]
    lines = [f"# Memory of `svdtool quantize` ({Path(args.model).name}, --mode int8)", "",
             f"{m['cpu']} ({', '.join(m['isa'])}), {m['cores']} cores, {m['ram_gb']} GiB; {args.samples} samples, "
             f"calibration at {height}×{width}, {frames} frames, {steps} steps; RSS sampled every 0.25 s. "
             f"Peak **{result['peak_rss_gb']} GB** RSS in `{peak[3]}` (anonymous memory at most {result['peak_anon_gb']} GB; "
             "the rest are file pages of the mmapped IR, which the kernel can drop); the calibration child peaked at "
             f"{result['calibration_child_peak_rss_gb']} GB; the whole run, child processes included, "
             f"{quantization['memory']['peak_rss_gb']} GB, against the up-front estimate of "
             f"{quantization['memory']['estimated_peak_gb']} GB; wall {result['wall_s']} s. [plot]({args.out}.png)", "",
             "| phase (component: nncf algorithm / step) | from s | seconds | peak RSS GB | peak anonymous GB |", "|---|---|---|---|---|"]
    lines += [f"| {name} | {v['first_s']} | {v['seconds']} | {v['peak_rss_gb']} | {v['peak_anon_gb']} |"
              for name, v in phases.items() if v["seconds"] >= 1]
    save(args.out, result, "\n".join(lines) + "\n")


def _plot(samples: list, path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axis = plt.subplots(figsize=(11, 4.5))
    names = list(dict.fromkeys(p for *_, p in samples))
    colours = plt.get_cmap("tab20")
    for index, name in enumerate(names):
        points = [(t, r) for t, r, _, p in samples if p == name]
        if len(points) >= 4:
            axis.scatter(*zip(*points), s=3, color=colours(index % 20), label=name)
    axis.plot([t for t, *_ in samples], [a for _, _, a, _ in samples], color="black", linewidth=0.6, label="of which anonymous")
    axis.set_xlabel("seconds")
    axis.set_ylabel("RSS, GB")
    axis.set_title(title)
    axis.legend(fontsize=6, markerscale=3, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    figure.tight_layout()
    figure.savefig(path, dpi=110)


if __name__ == "__main__":
    main()
