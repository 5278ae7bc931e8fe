"""Few-step students against their 25-step teacher (docs/fewstep.md): whole-video time of a consistency-sampled INT8
IR at its 4 steps against the teacher's FP16 IR at its 25 Euler steps.

    python bench/fewstep.py build WORK SOURCE [--calib-small] [--kv-downsample 2] [--target-cpu vnni]
        export SOURCE with `--sampler consistency` (a distilled student has the same graph as its teacher, so SOURCE's own
        UNet times what a student's would) -> WORK/student-fp16, and quantize it on its own 4-step schedule -> WORK/student-int8
        (WORK/student-int8-vnni with `svdtool quantize --target-cpu vnni`)
    python bench/fewstep.py speed WORK TEACHER_IR NAME [--frames F --height H --width W --memory low] [--teacher-speed J]
                                  [--teacher-steps 25] [--student student-int8-vnni --teacher-run NAME0]
        the teacher: one video of 2 Euler steps, its whole video at its own steps computed from those costs (encoders
        + steps x (one UNet call + the sampler's work) + decoder, as bench/speed_ladder.py does), or those costs read
        from J, bench/speed_ladder.py's speed_NAME.json of the same IR and size, or (--teacher-steps 25, TEACHER_IR
        WORK/student-fp16) from the student's FP16 export: the same UNet, VAE and encoders, so no teacher export; the
        student: one whole video at its own steps, measured -> WORK/fewstep_NAME.json; --teacher-run takes the teacher's
        figures from WORK/fewstep_NAME0.json, measured in this run at the same size and memory mode (a second student)
    python bench/fewstep.py table WORK NAME... [--bench MODEL=REPORT.json ...]   -> bench/results/fewstep.{json,md}, with
        `svdtool bench TEACHER_IR WORK/student-int8 -o REPORT.json` reports (each folder at its own steps: whole videos);
        the rows already in bench/results/fewstep.json stay unless a NAME or MODEL replaces them (MODEL@MACHINE keeps
        another machine's row of that model: the table shows MODEL)

svd and svd-xt have random weights: their figures are speed and memory only.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

from common import RESULTS, machine, model_label, save
from speed_ladder import CALIBRATION, call_costs, svdtool, video_seconds

IMAGE = Path(__file__).parents[1] / "examples" / "astronaut.jpg"


def build(work: Path, source: str, small_calibration: bool, kv_downsample: int, target_cpu: str = "any") -> None:
    fp16, int8 = work / "student-fp16", work / ("student-int8" + ("" if target_cpu == "any" else f"-{target_cpu}"))
    if not fp16.is_dir():
        assert svdtool("export", source, "-o", str(fp16), "--sampler", "consistency", "--kv-downsample", str(kv_downsample)) == 0
    calibration = ["--samples", "8", "--calib-height", "128", "--calib-width", "128", "--calib-frames", "4"] if small_calibration else []
    if not int8.is_dir():
        assert svdtool("quantize", str(fp16), "--calib", str(CALIBRATION), "-o", str(int8), "--target-cpu", target_cpu,
                       *calibration) == 0


def speed(work: Path, teacher: Path, name: str, frames: int | None, height: int | None, width: int | None, memory: str,
          teacher_speed: Path | None = None, teacher_steps: int | None = None, student: str = "student-int8",
          teacher_run: str | None = None) -> None:
    from svdtool.outputs import read_manifest
    from svdtool.runtime import GenerationSettings, generate, load_image, load_ov_pipeline
    from svdtool.runtime.session import ir_generation_defaults

    image = load_image(IMAGE)
    results: dict[str, Any] = {"machine": machine(), "date": time.strftime("%Y-%m-%d"), "memory": memory}
    for role, folder, measured_steps in (("teacher", teacher, 2), ("student", work / student, None)):
        if role == "teacher" and teacher_run:  # a second student of this run: its teacher was measured with the first
            earlier = json.loads((work / f"fewstep_{teacher_run}.json").read_text())
            student_settings = GenerationSettings(num_frames=frames, height=height, width=width, memory=memory).resolved(
                ir_generation_defaults(work / student))
            shape = [earlier[key] for key in ("frames", "height", "width", "memory")]
            if shape != [student_settings.num_frames, student_settings.height, student_settings.width, memory]:
                raise SystemExit(f"fewstep_{teacher_run}.json measured {shape}, not this run's size and memory mode")
            results["teacher"] = earlier["teacher"]
            continue
        defaults = ir_generation_defaults(folder)
        settings = GenerationSettings(num_frames=frames, height=height, width=width, num_inference_steps=measured_steps,
                                      memory=memory).resolved(defaults)
        own_steps = teacher_steps if role == "teacher" and teacher_steps else defaults["num_inference_steps"]
        if role == "teacher" and teacher_speed:  # the same IR's costs, measured by speed_ladder.py speed in this session
            ladder = json.loads(teacher_speed.read_text())
            shape = (ladder["frames"], ladder["height"], ladder["width"], ladder["memory"])
            if shape != (settings.num_frames, settings.height, settings.width, memory):
                raise SystemExit(f"{teacher_speed} measured {shape}, not {settings.num_frames}x{settings.height}x{settings.width} {memory}")
            manifest, measured = read_manifest(folder), ladder["irs"][folder.name]
            costs = {key: measured[key] for key in ("encoders_s", "unet_call_s", "decoder_s", "other_per_step_s")}
            seconds, peak_rss_gb = video_seconds(costs, own_steps), measured["peak_rss_gb"]
            video_is = f"computed from a measured 2-step video ({teacher_speed.name})"
        else:
            pipeline, manifest = load_ov_pipeline(folder, settings=settings)
            result = generate(pipeline, image, settings, show_progress=False)
            del pipeline
            costs = call_costs(result.timings, settings.num_inference_steps)
            seconds = result.timings["total"] if measured_steps is None else video_seconds(costs, own_steps)
            peak_rss_gb = result.peak_rss_gb["overall"]
            video_is = "measured" if measured_steps is None else f"computed from a measured {measured_steps}-step video"
            if role == "teacher" and teacher_steps:
                video_is += f" of {folder.name}: the same graph exported with another sampler, at {teacher_steps} Euler steps"
        results[role] = {
            "ir": folder.name, "model": model_label(manifest["source"]),
            "sampler": "euler" if role == "teacher" and teacher_steps else manifest["source"].get("sampler", "euler"), "precision": manifest.get("quantization", {}).get("mode", manifest.get("weights")),
            "target_cpu": manifest.get("cpu_requirement", {}).get("target_cpu", "any"),
            "attention": manifest.get("attention", {}), "steps": own_steps,
            "guidance": [settings.min_guidance_scale, settings.max_guidance_scale], **costs,
            "video_s": round(seconds, 1), "video_is": video_is, "peak_rss_gb": peak_rss_gb}
        results.update(frames=settings.num_frames, height=settings.height, width=settings.width)
        print(role, results[role], flush=True)
    results["speedup"] = round(results["teacher"]["video_s"] / results["student"]["video_s"], 2)
    (work / f"fewstep_{name}.json").write_text(json.dumps(results, indent=2))


def table(work: Path, names: list[str], bench_files: list[str]) -> None:
    """The speed table: fewstep.py speed runs, and `svdtool bench TEACHER STUDENT` reports (whole videos, median)."""
    from svdtool.cpu import cpu_label

    recorded = RESULTS / "fewstep.json"  # rows of earlier machines stay: each machine is measured once, in its session
    earlier = json.loads(recorded.read_text()) if recorded.is_file() else {"runs": {}, "bench": {}}
    runs = {**earlier["runs"], **{name: json.loads((work / f"fewstep_{name}.json").read_text()) for name in names}}
    benches = {**earlier["bench"],
               **{model: json.loads(Path(path).read_text()) for model, path in (item.split("=", 1) for item in bench_files)}}
    lines = ["# Few-step students: the consistency sampler's 4 steps (INT8) against the teacher's 25 (FP16 IR)", "",
             "| machine | model, size | teacher: FP16 IR, Euler | student: INT8, consistency | speed-up | how | peak RSS (teacher / student) |",
             "|---|---|---|---|---|---|---|"]
    for run in runs.values():
        teacher, student = run["teacher"], run["student"]
        machine = run["machine"]
        label = cpu_label({"model": machine["cpu"], "isa": machine["isa"], "int8_dot_product": machine["int8_dot_product"],
                           "machine": "x86_64"})
        lines.append(f"| {label}, {machine['cores']} cores | {teacher['model']}, {run['height']}×{run['width']}×"
                     f"{run['frames']}, `--memory {run['memory']}` | {_steps(teacher)}: {teacher['video_s']:g} s | "
                     f"{_steps(student)}{_target(student)}: {student['video_s']:g} s | **{run['speedup']}×** | `bench/fewstep.py speed`: the "
                     f"teacher {teacher['video_is']}, the student one whole video | {teacher['peak_rss_gb']:.1f} / "
                     f"{student['peak_rss_gb']:.1f} GB |")
    for model, report in benches.items():
        teacher, student = report["results"][:2]
        settings = report["settings"]
        lines.append(f"| {cpu_label(report['cpu'])} | {model.split('@')[0]}, "
                     f"{settings['height']}×{settings['width']}×{settings['num_frames']} | {_steps(teacher)}: "
                     f"{teacher['video_s']['median']:.2f} s | {_steps(student)}: {student['video_s']['median']:.2f} s | "
                     f"**{teacher['video_s']['median'] / student['video_s']['median']:.2f}×** | `svdtool bench`: whole videos, "
                     f"median of {report['repeat']} | +{teacher['peak_rss_added_gb']} / +{student['peak_rss_added_gb']} GB |")
    lines += ["", "svd and the `svd-mini` row: the student's UNet is the source's own under the consistency sampler (a "
              "distilled student has the same graph, so its time is a student's), at the sampler's guidance 1.0 → 1.2, "
              "so every UNet call runs both halves. `mini-lcm` is svd-mini's distilled student (models/mini-lcm), its "
              "guidance distilled in: at guidance 1 each call runs one half. svd has random weights: speed and memory only."]
    save("fewstep", {"runs": runs, "bench": benches}, "\n".join(lines))


def _target(run: dict[str, Any]) -> str:
    target = run.get("target_cpu", "any")
    return "" if target == "any" else f", `--target-cpu {target}`"


def _steps(run: dict[str, Any]) -> str:
    guidance, kv_downsample = run.get("guidance"), run.get("attention", {}).get("kv_downsample", 1)
    return (f"{run['steps']} steps" + (f", guidance {guidance[0]:g} → {guidance[1]:g}" if guidance else "")
            + (f", ToDo×{kv_downsample}" if kv_downsample > 1 else ""))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    stages = parser.add_subparsers(dest="stage", required=True)
    build_parser = stages.add_parser("build")
    build_parser.add_argument("work", type=Path)
    build_parser.add_argument("source")
    build_parser.add_argument("--calib-small", action="store_true")
    build_parser.add_argument("--kv-downsample", type=int, default=1)
    build_parser.add_argument("--target-cpu", default="any", help="svdtool quantize --target-cpu")
    speed_parser = stages.add_parser("speed")
    speed_parser.add_argument("work", type=Path)
    speed_parser.add_argument("teacher", type=Path)
    speed_parser.add_argument("name")
    for option in ("--frames", "--height", "--width"):
        speed_parser.add_argument(option, type=int)
    speed_parser.add_argument("--memory", default="standard")
    speed_parser.add_argument("--teacher-speed", type=Path, help="speed_NAME.json of bench/speed_ladder.py speed, which measured "
                              "TEACHER_IR (same folder name) in this session at the same size: its costs, not a second run")
    speed_parser.add_argument("--student", default="student-int8", help="the student's folder in WORK")
    speed_parser.add_argument("--teacher-run", help="NAME0: the teacher's figures from WORK/fewstep_NAME0.json (same size "
                              "and memory mode), measured with another student in this run")
    speed_parser.add_argument("--teacher-steps", type=int, help="TEACHER_IR is the student's graph exported with another "
                              "sampler (WORK/student-fp16): its costs taken at this many Euler steps, and no teacher export")
    table_parser = stages.add_parser("table")
    table_parser.add_argument("work", type=Path)
    table_parser.add_argument("names", nargs="*")
    table_parser.add_argument("--bench", nargs="*", default=[], help="MODEL=REPORT.json: svdtool bench TEACHER_IR STUDENT_IR reports")
    args = parser.parse_args()
    if args.stage == "build":
        args.work.mkdir(parents=True, exist_ok=True)
        build(args.work, args.source, args.calib_small, args.kv_downsample, args.target_cpu)
    elif args.stage == "speed":
        speed(args.work, args.teacher, args.name, args.frames, args.height, args.width, args.memory, args.teacher_speed,
              args.teacher_steps, args.student, args.teacher_run)
    else:
        table(args.work, args.names, args.bench)


if __name__ == "__main__":
    main()
