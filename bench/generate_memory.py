"""Where a generation's memory goes: peak RSS per stage, whole process, and time, for IR folders and memory settings.

Each run is its own process (`svdtool.runtime.generate` through the library, so that every stage's peak is known, and
/usr/bin/time for the process's peak). Variants:
  before   every part keeps its working memory and its IR's mapped pages (svdtool 0.1.0), guidance halves batched
  release  working memory handed back between stages (release_memory), halves batched      [--memory standard]
  in-turn  release, and the guidance halves one after the other (decoder: all frames at once)
  low      in-turn, and the VAE decoder 2 frames a chunk                                    [--memory low]
  low-kept low, but the IR files' mapped pages kept resident (svdtool before drop_mapped_files)

Run: python bench/generate_memory.py DIR [DIR ...] [--height 576 --width 1024 --frames 14 --steps 1] [--variants a,b]
     [--name NAME]  → bench/results/generate_memory_NAME.{json,md}
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

from common import RESULTS, machine, save

VARIANTS = {"before": {"release": False, "memory": "standard"}, "release": {"release": True, "memory": "standard"},
            "in-turn": {"release": True, "memory": "low", "all_frames": True}, "low": {"release": True, "memory": "low"},
            "low-kept": {"release": True, "memory": "low", "keep_pages": True}}
CHILD = """
import json, sys
from pathlib import Path
from PIL import Image
import svdtool.runtime.pipeline as pipeline_module
from svdtool.runtime import generate
from svdtool.runtime.generate import GenerationSettings
from svdtool.runtime.loading import load_ov_pipeline
args = json.loads(sys.argv[1])
if not args["release"]:
    pipeline_module.release_memory = lambda part: None
if not args["release"] or args.get("keep_pages"):
    import svdtool.runtime.parts as parts_module
    parts_module.drop_source_pages = pipeline_module.drop_source_pages = lambda part: None
pipeline, manifest = load_ov_pipeline(args["folder"])
settings = GenerationSettings(num_frames=args["frames"], height=args["height"], width=args["width"],
                              num_inference_steps=args["steps"], memory=args["memory"],
                              decode_chunk_size=args["frames"] if args.get("all_frames") else None)
result = generate(pipeline, Image.open(args["image"]).convert("RGB"), settings.resolved(manifest["generation_defaults"]),
                  show_progress=False)
print("RESULT " + json.dumps({"peak_rss_gb": result.peak_rss_gb, "timings": result.timings,
                              "decode_chunk_size": result.settings.decode_chunk_size}))
"""


def run(folder: str, variant: str, shape: argparse.Namespace) -> dict:
    image = Path(__file__).parent.parent / "examples" / "astronaut.jpg"
    args = {**VARIANTS[variant], "folder": folder, "image": str(image), "height": shape.height, "width": shape.width,
            "frames": shape.frames, "steps": shape.steps}
    start = time.perf_counter()
    done = subprocess.run(["/usr/bin/time", "-v", sys.executable, "-c", CHILD, json.dumps(args)], capture_output=True, text=True)
    seconds = time.perf_counter() - start
    if done.returncode != 0:  # recorded, not fatal: a crash (OpenVINO's SIGSEGV on a too-large tensor) is a result too
        signal = next((line.split()[-1] for line in done.stderr.splitlines() if "terminated by signal" in line), None)
        return {"failed": f"signal {signal}" if signal else f"exit {done.returncode}", "wall_seconds": round(seconds, 1),
                "stderr_tail": done.stderr[-1500:]}
    result = json.loads(next(line[7:] for line in done.stdout.splitlines() if line.startswith("RESULT ")))
    process_kb = int(next(line.split(":")[1] for line in done.stderr.splitlines() if "Maximum resident set size" in line))
    return {**result, "process_peak_rss_gb": round(process_kb / 2**20, 2), "wall_seconds": round(seconds, 1)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folders", nargs="+")
    parser.add_argument("--height", type=int, default=576)
    parser.add_argument("--width", type=int, default=1024)
    parser.add_argument("--frames", type=int, default=14)
    parser.add_argument("--steps", type=int, default=1)
    parser.add_argument("--variants", default=",".join(VARIANTS))
    parser.add_argument("--name", default="true_size")
    shape = parser.parse_args()
    results = {"machine": machine(), "date": time.strftime("%Y-%m-%d"), "shape": vars(shape), "runs": []}
    rows = []
    for folder in shape.folders:
        for variant in shape.variants.split(","):
            measured = run(folder, variant, shape)
            results["runs"].append({"folder": Path(folder).name, "variant": variant, **measured})
            if "failed" in measured:
                rows.append(f"| {Path(folder).name} | {variant} | | | | | **{measured['failed']}** | | | {measured['wall_seconds']:.0f} |")
                print(rows[-1], flush=True)
                continue
            peaks, timings = measured["peak_rss_gb"], measured["timings"]
            rows.append(f"| {Path(folder).name} | {variant} | {measured['decode_chunk_size']} | {peaks.get('compile', 0):.2f} | "
                        f"{peaks.get('unet', 0):.2f} | {peaks.get('vae_decoder', 0):.2f} | **{measured['process_peak_rss_gb']:.2f}** | "
                        f"{timings.get('unet', 0) / max(1, shape.steps):.1f} | {timings.get('vae_decoder', 0):.1f} | {measured['wall_seconds']:.0f} |")
            print(rows[-1], flush=True)
    cpu = results["machine"]
    md = [f"# Where `generate`'s memory goes: {shape.height}×{shape.width}, {shape.frames} frames, {shape.steps} step(s) "
          f"({results['date']})", "",
          f"Machine: {cpu['cpu']} ({', '.join(cpu['isa'])}), {cpu['cores']} cores, {cpu.get('ram_gb', '?')} GB. Command: "
          f"`python bench/generate_memory.py {' '.join(Path(f).name for f in shape.folders)} --height {shape.height} --width "
          f"{shape.width} --frames {shape.frames} --steps {shape.steps} --variants {shape.variants} --name {shape.name}`. Peak RSS in GB (GiB): per stage (each includes the compiled weights "
          "resident by then), and the whole process (/usr/bin/time); times in seconds.", "",
          "| IR | variant | decode chunk | compile | UNet | VAE decoder | process peak | UNet s/step | decode s | wall s |",
          "|---|---|---|---|---|---|---|---|---|---|", *rows, "",
          *[f"- `{name}`: {line.split(maxsplit=1)[1]}" for name, line in zip(VARIANTS, __doc__.splitlines()[4:9])
            if name in shape.variants.split(",")], ""]
    save(f"generate_memory_{shape.name}", results, "\n".join(md))
    plot(results, RESULTS / f"generate_memory_{shape.name}.png")


def plot(results: dict, path: Path) -> None:
    """Each run's peak RSS per stage, side by side: where the memory goes, and what each variant takes away."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    stages = ["compile", "image_encoder", "vae_encoder", "unet", "vae_decoder"]
    runs = [run for run in results["runs"] if "peak_rss_gb" in run]
    figure, axis = plt.subplots(figsize=(8, 4))
    width = 0.8 / max(1, len(runs))
    for index, run in enumerate(runs):
        axis.bar([i + index * width for i in range(len(stages))], [run["peak_rss_gb"].get(s, 0) for s in stages], width,
                 label=f"{run['folder']} {run['variant']} (peak {run['process_peak_rss_gb']} GiB)")
    axis.set_xticks([i + width * (len(runs) - 1) / 2 for i in range(len(stages))], stages)
    axis.set_ylabel("peak RSS in the stage (GiB)")
    shape = results["shape"]
    axis.set_title(f"{shape['height']}x{shape['width']}, {shape['frames']} frames: {results['machine']['cpu']}, "
                   f"{results['machine']['cores']} cores", fontsize=9)
    axis.legend(fontsize=8)
    figure.tight_layout()
    figure.savefig(path, dpi=100)


if __name__ == "__main__":
    main()
