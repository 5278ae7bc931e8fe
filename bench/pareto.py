"""The Pareto table of `svdtool quantize`'s modes on one machine: quality on svd-mini (`svdtool validate` against
PyTorch fp32 on this CPU, five held-out photos, natively and on an emulated CPU without VNNI), speed and size on
svd-xt (random weights, `svdtool bench`). Every number comes from the user-facing CLI.

    python bench/pareto.py build mini|svd-xt [RECIPE ...]   export once, then quantize each recipe (existing IRs kept)
    python bench/pareto.py quality [RECIPE ...]             svd-mini: the reference once, then validate every IR
    python bench/pareto.py speed [--size 256x256x8] [--steps 4] [RECIPE ...]   svd-xt: one `svdtool bench` over the IRs
    python bench/pareto.py table TAG [--work DIR] [--note TEXT] [--svd-xt-from pareto_TAG.json]
                                                            -> bench/results/pareto_TAG.{json,md}

Work and logs live in bench/.cache/pareto/ (kept on a warm device machine between calls); `table --work` reads one
brought back from another machine (the Xeon table: bench results and validate reports copied from the device). svd-xt is calibrated
small (8 samples at 128x128x4, 2 steps): its weights are random, so only its speed and size are read.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import typer

sys.path.insert(0, str(Path(__file__).parent))
from common import machine, save  # noqa: E402

HERE = Path(__file__).parent
WORK = HERE / ".cache" / "pareto"
RECIPES = {  # name -> `svdtool quantize` options (None: the exported FP16 IR itself)
    "fp16": None,
    "int8": [],
    "int8-vnni": ["--target-cpu", "vnni"],
    "hybrid": ["--mode", "hybrid"],
    "w8": ["--mode", "w8"],
    "w4": ["--mode", "w4"],
}
CALIBRATION = {"mini": [], "svd-xt": ["--samples", "8", "--calib-height", "128", "--calib-width", "128",
                                      "--calib-frames", "4", "--calib-steps", "2"]}
NO_VNNI = {"ONEDNN_MAX_CPU_ISA": "AVX512_CORE"}  # with an f32 hint: int8 exactly as a CPU without VNNI runs it

app = typer.Typer(add_completion=False)


def svdtool(*args: str, log: Path, env: dict[str, str] | None = None, ok: tuple[int, ...] = (0,)) -> int:
    """Run `svdtool ARGS`, appending its console to `log`; exit codes outside `ok` stop the script."""
    with log.open("a") as stream:
        stream.write(f"$ svdtool {' '.join(args)}\n")
        stream.flush()
        code = subprocess.run([sys.executable, "-m", "svdtool.cli", *args], stdout=stream, stderr=subprocess.STDOUT,
                              env={**os.environ, **(env or {})}).returncode
    if code not in ok:
        raise SystemExit(f"svdtool {args[0]} exited {code}: see {log}")
    return code


def folder(model: str, recipe: str) -> Path:
    return WORK / model / recipe


def ir_gb(path: Path) -> float:
    return round(sum(f.stat().st_size for f in path.rglob("*.bin")) / 1e9, 3)


@app.command()
def build(model: str, recipes: list[str] = typer.Argument(None)) -> None:
    """Export MODEL (mini or svd-xt) to an FP16 IR, then quantize it with every recipe; times go to times.json."""
    work = WORK / model
    work.mkdir(parents=True, exist_ok=True)
    times_path = work / "times.json"
    times = json.loads(times_path.read_text()) if times_path.is_file() else {}
    for recipe in recipes or list(RECIPES):
        target = folder(model, recipe)
        if (target / "svdtool.json").is_file():
            continue
        start = time.perf_counter()
        if RECIPES[recipe] is None:
            svdtool("export", model, "-o", str(target), "--overwrite", log=work / "build.log")
        else:
            build(model, ["fp16"])
            code = svdtool("quantize", str(folder(model, "fp16")), "--calib", "examples/calibration", "-o", str(target),
                           "--overwrite", *CALIBRATION[model], *RECIPES[recipe], log=work / "build.log", ok=(0, 2))
            if code == 2:  # bad input, or refused up front (its memory estimate exceeds this machine's): build.log says
                times[recipe] = "refused"
                times_path.write_text(json.dumps(times, indent=2))
                print(f"{model} {recipe}: refused (see {work / 'build.log'})", flush=True)
                continue
        times[recipe] = round(time.perf_counter() - start, 1)
        times_path.write_text(json.dumps(times, indent=2))
        print(f"{model} {recipe}: {times[recipe]} s", flush=True)


@app.command()
def quality(recipes: list[str] = typer.Argument(None)) -> None:
    """svd-mini: PyTorch fp32 on this CPU once (the reference), then `svdtool validate` of every IR natively and, on a
    CPU with VNNI/AMX, under the no-VNNI emulation (f32 hint)."""
    from svdtool.cpu import cpu_info

    work = WORK / "mini"
    reference = work / "reference"
    if not (reference / "reference.json").is_file():
        svdtool("reference", "mini", "--images", str(HERE / "heldout"), "-o", str(reference), "--device", "cpu",
                "--dtype", "fp32", "--overwrite", log=work / "quality.log")
    runs = {"native": ({}, [])}
    if cpu_info()["int8_dot_product"] != "no-vnni" and "AVX-512" in cpu_info()["isa"]:
        runs["no-vnni"] = (NO_VNNI, ["--precision", "f32"])
    for recipe in recipes or list(RECIPES):
        for run, (env, options) in runs.items():
            report = work / "validate" / f"{recipe}-{run}"
            if not (report / "report.json").is_file():
                svdtool("validate", str(folder("mini", recipe)), "--reference", str(reference), "-o", str(report),
                        "--overwrite", *options, log=work / "quality.log", env=env, ok=(0, 1))
            summary = json.loads((report / "report.json").read_text())["summary"]
            print(f"mini {recipe} {run}: PSNR {summary['psnr_mean']} / {summary['psnr_min']} dB", flush=True)


@app.command()
def speed(size: str = "256x256x8", steps: int = 4, repeat: int = 1, recipes: list[str] = typer.Argument(None)) -> None:
    """svd-xt: one `svdtool bench` over the IRs (a warm-up, then `repeat` timed videos each)."""
    height, width, frames = size.split("x")
    work = WORK / "svd-xt"
    folders = [str(folder("svd-xt", recipe)) for recipe in recipes or list(RECIPES)
               if (folder("svd-xt", recipe) / "svdtool.json").is_file()]  # a mode that did not fit is left out
    svdtool("bench", *folders, "--height", height, "--width", width, "--frames", frames, "--steps", str(steps),
            "--repeat", str(repeat), "-o", str(work / f"bench_{size}_{steps}steps.json"), log=work / "speed.log")


def _quality_cells(work: Path, recipe: str) -> dict:
    cells = {}
    for report in sorted((work / "mini" / "validate").glob(f"{recipe}-*")):
        data = json.loads((report / "report.json").read_text())
        run = report.name[len(recipe) + 1:]
        if run not in ("native", "no-vnni"):
            continue
        cells[run] = {"psnr_mean": data["summary"]["psnr_mean"], "psnr_min": data["summary"]["psnr_min"],
                      "ssim_mean": data["summary"]["ssim_mean"], "pass": data["pass"],
                      "failed_checks": sorted({c["check"] for image in data["images"] for c in image["checks"] if not c["pass"]}),
                      "cpu": data["runtime"]["environment"]["cpu"], "seconds_per_video": data["summary"]["seconds_per_video"]["runtime"]}
    return cells


@app.command()
def table(tag: str, work: Path = typer.Option(WORK, help="a work folder brought back from another machine"),
          note: str = typer.Option("", help="a line on how the run went (shared cores, ...)"),
          svd_xt_from: Path | None = typer.Option(None, exists=True, dir_okay=False,
                                                  help="an earlier pareto_TAG.json of this machine kind whose svd-xt cells "
                                                       "(speed, IR size, build time) this table keeps")) -> None:
    """Gather what `build`, `quality` and `speed` left in WORK into bench/results/pareto_TAG.{json,md}. The machine is
    the one the bench results name (else this one); IR sizes are read from this machine's IRs where WORK has none
    (the same export and quantization give the same files). `--svd-xt-from` re-measures svd-mini's half alone (a new
    svd-mini) without the hours svd-xt's half takes on two cores."""
    if svd_xt_from:
        return _table_with_svd_xt_of(tag, work, note, json.loads(svd_xt_from.read_text()), svd_xt_from.name)
    benches = {path.stem: json.loads(path.read_text()) for path in sorted((work / "svd-xt").glob("bench_*.json"))}
    times = {model: json.loads((work / model / "times.json").read_text()) for model in CALIBRATION
             if (work / model / "times.json").is_file()}
    rows = []
    for recipe in RECIPES:
        irs = next((path for path in (work / "svd-xt" / recipe, folder("svd-xt", recipe)) if path.is_dir()), None)
        row = {"recipe": recipe, "quantize_options": RECIPES[recipe], "mini": _quality_cells(work, recipe),
               "svd_xt_ir_gb": ir_gb(irs) if irs else None,
               "build_s": {model: times[model].get(recipe) for model in times}, "svd_xt": {}}
        for name, bench in benches.items():
            for result in bench["results"]:
                if result["label"].endswith(f"({recipe})"):
                    row["svd_xt"][name] = {key: result[key]["median"] for key in ("video_s", "unet_step_s", "vae_decode_per_frame_s")}
        rows.append(row)
    here = machine()
    host = next(iter(benches.values()))["cpu"] if benches else None  # no svd-xt benches: svd-mini's half, measured here
    result = {"machine": here if host is None or host["model"] == here["cpu"] else {"cpu": host["model"], "isa": host["isa"],
                                                                                  "int8_dot_product": host["int8_dot_product"]},
              "note": note, "benches": {name: {"settings": b["settings"], "repeat": b["repeat"]} for name, b in benches.items()},
              "rows": rows}
    save(f"pareto_{tag}", result, _markdown(result))


def _table_with_svd_xt_of(tag: str, work: Path, note: str, earlier: dict, name: str) -> None:
    """svd-mini's cells from WORK, svd-xt's (and the machine they were measured on) from an earlier table."""
    here, there = machine(), earlier["machine"]
    if (here["cpu"], here["int8_dot_product"]) != (there["cpu"], there["int8_dot_product"]):  # the ISA list grew since
        raise SystemExit(f"{name} was measured on {there['cpu']} ({', '.join(there['isa'])}), this is {here['cpu']} "
                         f"({', '.join(here['isa'])}): one table, one machine kind")
    times = json.loads((work / "mini" / "times.json").read_text()) if (work / "mini" / "times.json").is_file() else {}
    rows = [{**row, "mini": _quality_cells(work, row["recipe"]), "build_s": {**row["build_s"], "mini": times.get(row["recipe"])}}
            for row in earlier["rows"]]
    note = " ".join(part for part in (note, f"svd-xt's cells are those of an earlier {name} (git history).") if part)
    result = {"machine": here, "note": note, "benches": earlier["benches"], "rows": rows}
    save(f"pareto_{tag}", result, _markdown(result))


def _markdown(result: dict) -> str:
    m = result["machine"]
    cores = f"{m['cores']} cores; " if "cores" in m else ""
    lines = [f"# Pareto: `svdtool quantize` modes on {m['cpu']} ({cores}{', '.join(m['isa'])})", "",
             *([result["note"], ""] if result["note"] else []),
             "svd-mini quality: `svdtool validate` against PyTorch fp32 on this CPU, 5 held-out photos (bench/heldout), "
             "128x128x8, 25 steps, default thresholds; *no-VNNI* runs the same IR with ONEDNN_MAX_CPU_ISA=AVX512_CORE and an "
             "f32 hint (int8 as a CPU without VNNI computes it). svd-xt speed: `svdtool bench`, random weights, one warm-up "
             "then the median of the timed videos; speed-up against the FP16 IR's default execution.", ""]
    benches = list(result["benches"])
    with_svd_xt = bool(benches) or any(row["svd_xt_ir_gb"] for row in result["rows"])  # else svd-mini's half alone
    header = "| mode | svd-mini native: PSNR mean / worst, verdict, s/video | no-VNNI |"
    header += "".join(f" svd-xt {_bench_label(result['benches'][b])} s/video (speed-up) |" for b in benches)
    header += " svd-xt UNet step (s) | svd-xt IR (GB) |" if with_svd_xt else ""
    lines += [header, "|" + "---|" * (header.count("|") - 1)]
    base = {b: next((r["svd_xt"][b]["video_s"] for r in result["rows"] if r["recipe"] == "fp16" and b in r["svd_xt"]), None)
            for b in benches}
    for row in result["rows"]:
        cells = [f"`{row['recipe']}`"]
        for run in ("native", "no-vnni"):
            q = row["mini"].get(run)
            cells.append(f"{q['psnr_mean']:.1f} / {q['psnr_min']:.1f} {'PASS' if q['pass'] else 'FAIL'}, "
                         f"{q['seconds_per_video']:.2f} s" if q else "–")
        refused = row["build_s"].get("svd-xt") == "refused"
        for b in benches:
            s = row["svd_xt"].get(b)
            cells.append(f"{s['video_s']:.2f} ({base[b] / s['video_s']:.2f}×)" if s and base[b] else
                         "quantize refused: memory" if refused else "–")
        if with_svd_xt:
            steps = [f"{row['svd_xt'][b]['unet_step_s']:.2f}" if b in row["svd_xt"] else "–" for b in benches]
            cells.append(" / ".join(steps) if row["svd_xt"] else "–")
            cells.append(f"{row['svd_xt_ir_gb']:.2f}" if row["svd_xt_ir_gb"] else "–")
        lines.append("| " + " | ".join(cells) + " |")
    failed = [f"`{r['recipe']}` {run}: {', '.join(q['failed_checks'])}" for r in result["rows"]
              for run, q in r["mini"].items() if not q["pass"]]
    if failed:
        lines += ["", "Failed checks: " + "; ".join(failed) + "."]
    return "\n".join(lines) + "\n"


def _bench_label(bench: dict) -> str:
    s = bench["settings"]
    return f"{s['width']}×{s['height']}×{s['num_frames']}, {s['num_inference_steps']} steps"


if __name__ == "__main__":
    app()
