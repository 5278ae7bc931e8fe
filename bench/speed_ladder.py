"""The speed ladder of docs/speed.md: INT8 × attention (ToDo) × fewer Euler steps (`--speed`), each rung's quality on
svd-mini (`svdtool validate` against the exact PyTorch run) and its whole-video time at SVD's true size.

    python bench/speed_ladder.py build WORK SOURCE [--calib-small]    export SOURCE twice (exact attention; ToDo x2) and
                                                                       quantize both (INT8)
    python bench/speed_ladder.py quality WORK                          svd-mini: one PyTorch fp32 reference (25 Euler
                                                                       steps, bench/heldout), then `svdtool validate
                                                                       --speed` for every rung, natively and (AVX-512 CPUs)
                                                                       as a CPU without VNNI computes int8
    python bench/speed_ladder.py speed WORK NAME [--frames 25]         per-call costs of WORK's IRs at 576x1024 (one video of
                                                                       2 steps each) -> WORK/speed_NAME.json
    python bench/speed_ladder.py table WORK [--speed NAME ...]         -> bench/results/speed_ladder.{json,md}

Whole-video seconds are computed from one run's measured costs: encoders + steps x (one UNet call + the sampler's
work) + the decoder, so a rung at 25 steps costs minutes of device time, not an hour. DeepCache is measured apart
(bench/deepcache.py): at fewer steps it failed validate on svd-mini, so no rung stacks it.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from common import RESULTS, machine, machine_line, model_label, save

HELD_OUT = Path(__file__).parent / "heldout"
CALIBRATION = Path(__file__).parents[1] / "examples" / "calibration"
# IR folder name -> (label, export options); each is exported ("-fp16") and quantized to INT8 ("-int8").
IRS = {"exact": ("", []), "todo2": (" + ToDo×2", ["--kv-downsample", "2"])}
# Rungs: (IR folder, preset, precision). "exact" FP16 is the baseline every speed-up is measured against.
RUNGS = [("exact", "exact", "fp16"), ("exact", "exact", "int8"), ("todo2", "exact", "int8"), ("exact", "balanced", "int8"),
         ("todo2", "balanced", "int8"), ("exact", "fast", "int8"), ("todo2", "fast", "int8"), ("exact", "fast", "fp16")]
# Explored and left out of the presets, svd-mini only (its IRs carry DeepCache branch 0): DeepCache every 2nd step on
# top of the fast and balanced step counts.
CACHED_RUNGS = [("exact", "fast", "int8"), ("exact", "balanced", "int8")]
# Explored below `fast`: the INT8 IRs at this share of the steps (a preset registered here only: EXPLORED_CLI).
EXPLORED_FRACTION = 0.32
EXPLORED_RUNGS = [("exact", "explored", "int8"), ("todo2", "explored", "int8")]
EXPLORED_CLI = "import sys, speed_ladder; speed_ladder.register_explored(); from svdtool.cli import app; sys.argv[0] = 'svdtool'; app()"


def svdtool(*args: str, env: dict[str, str] | None = None, explored: bool = False) -> int:
    """svdtool's CLI in a child process (`explored`: with the explored preset registered)."""
    command = ["-c", EXPLORED_CLI] if explored else ["-m", "svdtool.cli"]
    path = os.pathsep.join(filter(None, (str(Path(__file__).parent), os.environ.get("PYTHONPATH"))))
    return subprocess.run([sys.executable, *command, *args], env={**os.environ, "PYTHONPATH": path, **(env or {})}).returncode


def ir_folder(work: Path, attention: str, precision: str) -> Path:
    return work / f"{attention}-{precision}"


def rung_name(attention: str, speed: str, precision: str, cached: bool = False) -> str:
    return f"{precision}-{attention}-{speed}{'-dc2' if cached else ''}"


def rung_label(attention: str, speed: str, precision: str, cached: bool = False) -> str:
    if speed == "explored":
        return f"INT8{IRS[attention][0]}, {EXPLORED_FRACTION} of the steps (explored below `fast`)"
    return (f"{'FP16 IR' if precision == 'fp16' else 'INT8'}{IRS[attention][0]}, `--speed {speed}`"
            f"{' + DeepCache every 2nd step (left out)' if cached else ''}")


def all_rungs() -> list[tuple[str, str, str, bool]]:
    return ([(*rung, False) for rung in RUNGS] + [(*rung, True) for rung in CACHED_RUNGS]
            + [(*rung, False) for rung in EXPLORED_RUNGS])


def register_explored() -> None:
    from svdtool.runtime.speed import SPEEDS, SpeedPreset

    SPEEDS["explored"] = SpeedPreset("explored", EXPLORED_FRACTION)


def build(work: Path, source: str, small_calibration: bool) -> None:
    calibration = ["--samples", "8", "--calib-height", "128", "--calib-width", "128", "--calib-frames", "4",
                   "--calib-steps", "2"] if small_calibration else []
    for attention, (_, options) in IRS.items():
        fp16, int8 = ir_folder(work, attention, "fp16"), ir_folder(work, attention, "int8")
        cache = ["--cache-branch", "0"] if source == "mini" else []  # for CACHED_RUNGS (cheap at svd-mini's size)
        if not fp16.is_dir():
            assert svdtool("export", source, "-o", str(fp16), *options, *cache) == 0
        if not int8.is_dir():
            assert svdtool("quantize", str(fp16), "--calib", str(CALIBRATION), "-o", str(int8), *calibration) == 0


def quality(work: Path, size: int | None = None) -> None:
    """Every rung validated against the exact PyTorch run; `size` (e.g. 256: twice svd-mini's, attention over 4x the
    tokens): the presets' rungs natively at size x size, in WORK/q{size}/."""
    if size:
        return quality_at(work, size)
    reference = work / "reference"
    if not reference.is_dir():
        assert svdtool("reference", "mini", "--images", str(HELD_OUT), "-o", str(reference), "--device", "cpu", "--dtype", "fp32") == 0
    from svdtool.cpu import cpu_info

    kinds = {"native": ({}, "auto")}
    if "AVX512-VNNI" in cpu_info()["isa"]:  # a CPU with AVX-512 and int8 dot products can also compute as one without
        kinds["no-vnni"] = ({"ONEDNN_MAX_CPU_ISA": "AVX512_CORE"}, "f32")
    for attention, speed, precision, cached in all_rungs():
        for kind, (env, hint) in kinds.items():
            out = work / f"val-{rung_name(attention, speed, precision, cached)}-{kind}"
            if not (out / "report.json").is_file():
                svdtool("validate", str(ir_folder(work, attention, precision)), "--reference", str(reference), "--speed", speed,
                        "--precision", hint, "-o", str(out), "--overwrite", *(["--cache-interval", "2"] if cached else []), env=env,
                        explored=speed == "explored")


def quality_at(work: Path, size: int) -> None:
    folder = work / f"q{size}"
    reference = folder / "reference"
    if not reference.is_dir():
        assert svdtool("reference", "mini", "--images", str(HELD_OUT), "-o", str(reference), "--device", "cpu", "--dtype", "fp32",
                       "--height", str(size), "--width", str(size)) == 0
    for attention, speed, precision in RUNGS + EXPLORED_RUNGS:
        out = folder / f"val-{rung_name(attention, speed, precision)}-native"
        if not (out / "report.json").is_file():
            svdtool("validate", str(ir_folder(work, attention, precision)), "--reference", str(reference), "--speed", speed,
                    "-o", str(out), "--overwrite", explored=speed == "explored")


def speed(work: Path, name: str, frames: int, height: int, width: int, memory: str) -> None:
    """One video of 2 steps per IR: what a UNet call, the encoders and the decoder cost, and the peak RSS."""
    from svdtool.runtime import GenerationSettings, generate, load_image, load_ov_pipeline
    from svdtool.runtime.session import ir_generation_defaults

    results = {"machine": machine(), "date": time.strftime("%Y-%m-%d"), "frames": frames, "height": height, "width": width,
               "memory": memory, "irs": {}}
    image = load_image(Path(__file__).parents[1] / "examples" / "astronaut.jpg")
    for folder in sorted({ir_folder(work, attention, precision) for attention, _, precision in RUNGS}):
        settings = GenerationSettings(num_frames=frames, height=height, width=width, num_inference_steps=2, memory=memory)
        settings = settings.resolved(ir_generation_defaults(folder))
        pipeline, manifest = load_ov_pipeline(folder, settings=settings)
        results["model"] = model_label(manifest["source"])
        result = generate(pipeline, image, settings, show_progress=False)
        results["irs"][folder.name] = {**call_costs(result.timings, settings.num_inference_steps),
                                       "peak_rss_gb": result.peak_rss_gb["overall"], "decode_chunk_size": settings.decode_chunk_size}
        print(folder.name, results["irs"][folder.name], flush=True)
        del pipeline
    (work / f"speed_{name}.json").write_text(json.dumps(results, indent=2))


def call_costs(timings: dict[str, float], steps: int) -> dict[str, float]:
    """One video's stage timings as what a whole video is computed from: encoders, one UNet call, the decoder, and the
    sampler's own work per step."""
    return {"encoders_s": round(timings["image_encoder"] + timings["vae_encoder"], 3),
            "unet_call_s": round(timings["unet"] / timings["unet_calls"], 3), "decoder_s": round(timings["vae_decoder"], 3),
            "other_per_step_s": round((timings["total"] - timings["image_encoder"] - timings["vae_encoder"] - timings["unet"]
                                       - timings["vae_decoder"]) / steps, 3)}


def video_seconds(costs: dict[str, Any], steps: int) -> float:
    return costs["encoders_s"] + steps * (costs["unet_call_s"] + costs["other_per_step_s"]) + costs["decoder_s"]


def table(work: Path, speed_names: list[str]) -> None:
    """The ladder from WORK's validate reports and speed_NAME.json files; what WORK lacks (a quality run or another
    machine's speed from an earlier session) is kept from bench/results/speed_ladder.json."""
    from svdtool.runtime.speed import SPEEDS

    register_explored()
    recorded_file = RESULTS / "speed_ladder.json"
    recorded = json.loads(recorded_file.read_text()) if recorded_file.is_file() else {"rungs": [], "speed": {}}
    recorded_rows = {row["rung"]: row for row in recorded["rungs"]}
    # The header names the machine of the recorded quality runs unless WORK re-ran every rung; a row validated here on
    # another machine says so in its label.
    here = machine()
    every_rung_here = all((work / f"val-{rung_name(*rung)}-native" / "report.json").is_file() for rung in all_rungs())
    quality_machine = recorded.get("quality_machine") if recorded.get("quality_machine") and not every_rung_here else here
    results: dict[str, Any] = {"quality_machine": quality_machine, "date": time.strftime("%Y-%m-%d"), "rungs": [],
                               "speed": dict(recorded["speed"])}
    for name in speed_names:
        results["speed"][name] = json.loads((work / f"speed_{name}.json").read_text())
    sizes = sorted({int(folder.name[1:]) for folder in work.glob("q[0-9]*") if folder.is_dir()}  # quality --size runs
                   | {int(kind.split("-")[1]) for row in recorded_rows.values() for kind in row if kind.startswith("native-")})
    header = "| rung | svd-mini steps | validate native: verdict, PSNR mean / worst | no-VNNI |"
    header += "".join(f" native at {size}×{size} |" for size in sizes)
    for name, run in results["speed"].items():
        header += f" {name} s/video at {run['width']}×{run['height']}×{run['frames']}, 25 steps (speed-up) | peak RSS GB |"
    lines = [header, "|" + "---|" * (header.count("|") - 1)]
    for attention, speed, precision, cached in all_rungs():
        preset, rung = SPEEDS[speed], rung_name(attention, speed, precision, cached)
        row, cells = {"rung": rung}, [rung_label(attention, speed, precision, cached), str(preset.steps(25))]
        runs = {kind: work / f"val-{rung}-{kind}" for kind in ("native", "no-vnni")}
        runs.update({f"native-{size}": work / f"q{size}" / f"val-{rung}-native" for size in sizes})
        if any((folder / "report.json").is_file() for folder in runs.values()) and here["cpu"] != quality_machine["cpu"]:
            row["validated_on"] = here
        elif "validated_on" in recorded_rows.get(rung, {}):
            row["validated_on"] = recorded_rows[rung]["validated_on"]
        if "validated_on" in row:
            cells[0] += f" (validated on {row['validated_on']['cpu']}, {row['validated_on']['cores']} cores)"
        for kind, folder in runs.items():
            report_file = folder / "report.json"
            if report_file.is_file():
                report = json.loads(report_file.read_text())
                row[kind] = {"pass": report["pass"], "psnr_mean": report["summary"]["psnr_mean"],
                             "psnr_worst": min(image["runtime"]["psnr_mean"] for image in report["images"]),
                             "failed": sorted({check["check"] for image in report["images"] for check in image["checks"] if not check["pass"]})}
            elif kind in recorded_rows.get(rung, {}):
                row[kind] = recorded_rows[rung][kind]
            else:
                cells.append("–")
                continue
            verdict = "PASS" if row[kind]["pass"] else "FAIL (" + ", ".join(row[kind]["failed"]).replace("|", "\\|") + ")"
            cells.append(f"{verdict} {row[kind]['psnr_mean']:.1f} / {row[kind]['psnr_worst']:.1f}")
        for name, run in results["speed"].items():
            costs = None if cached else run["irs"].get(ir_folder(work, attention, precision).name)
            baseline = run["irs"].get(ir_folder(work, "exact", "fp16").name)
            if costs is None or baseline is None:
                cells += ["–", "–"]
                continue
            seconds = video_seconds(costs, preset.steps(25))
            exact = video_seconds(baseline, 25)
            row[name] = {"video_s": round(seconds, 1), "speed_up": round(exact / seconds, 2), "peak_rss_gb": costs["peak_rss_gb"]}
            cells += [f"{seconds:.0f} ({exact / seconds:.2f}×)", f"{costs['peak_rss_gb']:.1f}"]
        results["rungs"].append(row)
        lines.append("| " + " | ".join(cells) + " |")
    markdown = "\n".join([
        "# Speed ladder: INT8 × ToDo × fewer steps (`--speed`)",
        "",
        f"Quality: svd-mini on {machine_line(results['quality_machine'])}, `svdtool validate` "
        "against the exact PyTorch fp32 run (25 Euler steps) on the 5 held-out photos (bench/heldout), 128×128×8, default "
        "thresholds; *no-VNNI*: the same IR with ONEDNN_MAX_CPU_ISA=AVX512_CORE and `--precision f32`. IRs: svdtool's "
        "default export and INT8 quantization."
        + "".join(f" *Native at {size}×{size}*: the same against the exact PyTorch run at {size}×{size}, where the top "
                  f"level's attention sees {(size // 128) ** 2}× svd-mini's tokens (`quality WORK --size {size}`)." for size in sizes),
        "",
        *[f"Speed `{name}`: {run['model']} on {run['machine']['cpu']} ({run['machine']['cores']} "
          + (f"of its {run['machine']['cores_in_machine']} " if run["machine"].get("cores_in_machine", run["machine"]["cores"]) != run["machine"]["cores"] else "")
          + "cores; "
          f"{', '.join(run['machine']['isa'])}), "
          f"{run['width']}×{run['height']}×{run['frames']}, `--memory {run['memory']}`; seconds per video computed from one measured video of 2 steps per IR "
          "(encoders + steps × a UNet call's measured cost + decoder, decode chunk "
          f"{next(iter(run['irs'].values()))['decode_chunk_size']}); speed-up against the FP16 IR at 25 steps." for name, run in results["speed"].items()],
        "",
        *lines,
        "",
        "Reproduce: quality `python bench/speed_ladder.py build WORK mini && python bench/speed_ladder.py quality WORK` "
        "(and `quality WORK --size 256`); "
        "speed on a 24 GB machine `python bench/speed_ladder.py build SVD_WORK svd --calib-small && python "
        "bench/speed_ladder.py speed SVD_WORK NAME --frames 14 --memory low`, on the GPU host's Xeon "
        "`CPUS=2-15 FRAMES=25 bench/server_speed_ladder.sh start|collect OUT` (xeon25); then copy SVD_WORK/speed_NAME.json "
        "into WORK and `python bench/speed_ladder.py table WORK --speed NAME` (what WORK lacks, quality runs or other "
        "machines' speeds, is kept from the committed speed_ladder.json).",
        "",
    ])
    save("speed_ladder", results, markdown)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("stage", choices=("build", "quality", "speed", "table"))
    parser.add_argument("work", type=Path)
    parser.add_argument("name", nargs="?", help="build: the source (mini, svd-xt); speed: this machine's name in the table")
    parser.add_argument("--calib-small", action="store_true", help="build: calibrate at 128x128x4, 2 steps, 8 samples")
    parser.add_argument("--frames", type=int, default=25)
    parser.add_argument("--height", type=int, default=576)
    parser.add_argument("--width", type=int, default=1024)
    parser.add_argument("--size", type=int, help="quality: validate the presets' rungs at SIZE x SIZE too (WORK/qSIZE)")
    parser.add_argument("--memory", default="standard", help="speed: generate's --memory (low on a 24 GB machine)")
    parser.add_argument("--speed", action="append", default=[], help="table: speed_NAME.json files of WORK to add")
    args = parser.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    if args.stage == "build":
        build(args.work, args.name, args.calib_small)
    elif args.stage == "quality":
        quality(args.work, args.size)
    elif args.stage == "speed":
        speed(args.work, args.name, args.frames, args.height, args.width, args.memory)
    else:
        table(args.work, args.speed)


if __name__ == "__main__":
    main()
