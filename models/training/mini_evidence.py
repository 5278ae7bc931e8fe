"""Evidence that svd-mini learned: motion vs motion_bucket_id on held-out images, coherence vs the random `tiny`.

python models/training/mini_evidence.py   (CPU, ~4 min) -> bench/results/mini_evidence.{json,md}, mini_motion.png,
mini_loss.png, mini_demo.gif

Held-out inputs: the two photos scikit-image ships that training never saw (chelsea, coffee; examples/) and
procedural scenes from seeds outside the training range. Motion is the mean Farneback optical-flow magnitude
(px/frame) that `svdtool metrics` reports; the same measure on true held-out clips gives the target per bucket.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import imageio.v3 as iio
import matplotlib
import numpy as np
import torch
from PIL import Image

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

sys.path[:0] = [str(Path(__file__).parent), str(Path(__file__).parents[2] / "bench")]  # these tools, and bench/common
from common import RESULTS, machine, save  # noqa: E402

from svdtool.models import BUILTIN_MODELS, load_pipeline  # noqa: E402
from svdtool.models.scenes import bucket_to_flow, render_clips, to_uint8  # noqa: E402
from svdtool.runtime import GenerationSettings, generate  # noqa: E402
from svdtool.validate.metrics import grayscale, video_metrics, warp_error_and_motion  # noqa: E402

BUCKETS = (1, 64, 127, 191, 255)
EXAMPLES = Path(__file__).parents[2] / "examples"
HELD_OUT_SEED = 10**9  # training used seeds < 10**7


def inputs() -> dict[str, Image.Image]:
    images = {name: Image.open(EXAMPLES / f"{name}.jpg").convert("RGB") for name in ("chelsea", "coffee")}
    clips = render_clips(HELD_OUT_SEED, 4, 8)
    images.update({f"scene{i}": Image.fromarray(to_uint8(clips.frames[i])[0]) for i in range(4)})
    return images


def true_motion() -> list[dict[str, float]]:
    """Farneback motion of 96 held-out ground-truth clips, binned by their motion bucket."""
    clips = render_clips(HELD_OUT_SEED + 1, 96, 8)
    motion = np.array([warp_error_and_motion(grayscale(to_uint8(clip)))[1] for clip in clips.frames])
    rows = []
    for low, high in ((0, 32), (32, 96), (96, 160), (160, 224), (224, 256)):
        chosen = (clips.motion_bucket_id >= low) & (clips.motion_bucket_id < high)
        rows.append({"buckets": f"{low}-{high - 1}", "clips": int(chosen.sum()), "true_flow": round(float(clips.mean_flow[chosen].mean()), 3),
                     "farneback_motion": round(float(motion[chosen.numpy()].mean()), 3)})
    return rows


def main() -> None:
    torch.set_num_threads(2)
    images = inputs()
    settings = GenerationSettings(num_frames=8, height=128, width=128, num_inference_steps=25)
    defaults = BUILTIN_MODELS["mini"].defaults
    results: dict = {"machine": machine(), "settings": settings.resolved(defaults).as_dict(), "buckets": list(BUCKETS),
                     "inputs": list(images), "mini": {}, "tiny": {}}
    videos: dict[tuple[str, int], np.ndarray] = {}
    for model in ("mini", "tiny"):
        pipeline = load_pipeline(model)
        for name, image in images.items():
            for bucket in BUCKETS if model == "mini" else (127,):
                run = generate(pipeline, image, GenerationSettings(**{**settings.__dict__, "motion_bucket_id": bucket}).resolved(defaults), show_progress=False)
                results[model].setdefault(name, {})[str(bucket)] = video_metrics(run.frames)
                if model == "mini":
                    videos[(name, bucket)] = run.frames
            print(model, name, {b: m["motion"] for b, m in results[model][name].items()}, flush=True)
    results["true_clips"] = true_motion()

    motion = np.array([[results["mini"][name][str(b)]["motion"] for b in BUCKETS] for name in images])
    results["mini_motion_mean"] = dict(zip(map(str, BUCKETS), motion.mean(0).round(3).tolist()))
    results["monotonic_inputs"] = int(sum(bool(np.all(np.diff(row) > 0)) for row in motion))
    for model in ("mini", "tiny"):
        rows = [m["127"] for m in results[model].values()]
        results[f"{model}_at_127"] = {k: round(float(np.mean([r[k] for r in rows])), 3) for k in ("temporal_mse", "warp_error", "motion", "sharpness")}

    plot_motion(motion, list(images), results["true_clips"])
    plot_loss()
    demo_gif(images, videos)
    save("mini_evidence", results, markdown(results))


def plot_motion(motion: np.ndarray, names: list[str], truth: list[dict]) -> None:
    figure, axis = plt.subplots(figsize=(6, 4))
    for row, name in zip(motion, names):
        axis.plot(BUCKETS, row, marker="o", alpha=0.6, label=name)
    axis.plot(BUCKETS, motion.mean(0), color="black", linewidth=2.5, label="mean (generated)")
    centres = [np.mean([int(x) for x in row["buckets"].split("-")]) for row in truth]
    axis.plot(centres, [row["farneback_motion"] for row in truth], "s:", color="grey", label="true held-out clips, same measure")
    axis.plot(BUCKETS, [bucket_to_flow(b) for b in BUCKETS], "k--", label="bucket label (true mean flow)")
    axis.set_xlabel("motion_bucket_id")
    axis.set_ylabel("optical-flow magnitude (px/frame, 128 px)")
    axis.set_title("svd-mini: generated motion vs motion_bucket_id (held-out inputs)")
    axis.legend(fontsize=7)
    figure.tight_layout()
    figure.savefig(RESULTS / "mini_motion.png", dpi=110)


def plot_loss() -> None:
    log = json.loads((BUILTIN_MODELS["mini"].folder / "loss.json").read_text())
    figure, axes = plt.subplots(1, 2, figsize=(9, 3.2))
    for axis, phase in zip(axes, ("vae", "unet")):
        rows = [row for row in log if row["phase"] == phase]
        axis.plot([r["step"] for r in rows], [r["loss"] for r in rows])
        axis.set_title(f"{phase} training loss (mean of 25 steps)")
        axis.set_xlabel("step")
        axis.set_yscale("log")
    figure.tight_layout()
    figure.savefig(RESULTS / "mini_loss.png", dpi=110)


def demo_gif(images: dict[str, Image.Image], videos: dict[tuple[str, int], np.ndarray]) -> None:
    """Rows: input | bucket 1 | 127 | 255, for the two held-out photos."""
    shown = (1, 127, 255)
    frames = []
    for index in range(8):
        rows = []
        for name in ("chelsea", "coffee"):
            first = np.asarray(images[name].resize((128, 128), Image.Resampling.BICUBIC))
            rows.append(np.concatenate([first] + [videos[(name, b)][index] for b in shown], axis=1))
        frames.append(np.concatenate(rows, axis=0))
    iio.imwrite(RESULTS / "mini_demo.gif", np.stack(frames), duration=1000 / 7, loop=0)


def markdown(results: dict) -> str:
    lines = ["# svd-mini: does it move, and move more with a higher motion bucket?", "",
             f"Machine: {results['machine']['cpu']}. PyTorch fp32, 8 frames at 128x128, 25 steps, seed 42.", "",
             "Mean Farneback motion (px/frame) of generated videos per motion_bucket_id, held-out inputs:", "",
             "| input | " + " | ".join(map(str, BUCKETS)) + " |", "|---" * (len(BUCKETS) + 1) + "|"]
    for name, per_bucket in results["mini"].items():
        lines.append(f"| {name} | " + " | ".join(f"{per_bucket[str(b)]['motion']:.3f}" for b in BUCKETS) + " |")
    lines.append("| **mean** | " + " | ".join(f"**{v:.3f}**" for v in results["mini_motion_mean"].values()) + " |")
    lines += ["", f"Motion rises strictly with the bucket for {results['monotonic_inputs']} of {len(results['inputs'])} inputs.", "",
              "True held-out clips (what the bucket label means):", "", "| buckets | clips | true mean flow | Farneback motion |", "|---|---|---|---|"]
    lines += [f"| {r['buckets']} | {r['clips']} | {r['true_flow']} | {r['farneback_motion']} |" for r in results["true_clips"]]
    lines += ["", "Coherence at motion_bucket_id 127 (mean over inputs; lower temporal MSE / warp error = steadier):", "",
              "| model | temporal MSE | warp error | motion | sharpness |", "|---|---|---|---|---|"]
    for model in ("mini", "tiny"):
        m = results[f"{model}_at_127"]
        lines.append(f"| {model} | {m['temporal_mse']} | {m['warp_error']} | {m['motion']} | {m['sharpness']} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
