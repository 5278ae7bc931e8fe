"""What ToDo's fewer keys (`svdtool export --kv-downsample K`) cost in quality: svd-mini exported exactly and with each
K, each validated against the exact PyTorch CPU reference on the held-out photos, at svd-mini's size and twice it.

Run:   python bench/kv_downsample.py run WORK [--factors 1,2] [--sizes 128,256]   (export + validate; ~12 min a size on 2 cores)
Table: python bench/kv_downsample.py table WORK                                  → bench/results/kv_downsample_mini.{json,md}
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

from common import machine, save, usage

HELD_OUT = Path(__file__).parent / "heldout"


def run(work: Path, factors: list[int], sizes: list[int]) -> None:
    svdtool = [sys.executable, "-m", "svdtool.cli"]
    for factor in factors:
        ir = work / f"mini-kv{factor}"
        subprocess.run([*svdtool, "export", "mini", "-o", str(ir), "--kv-downsample", str(factor), "--overwrite"], check=True)
        for size in sizes:
            subprocess.run([*svdtool, "validate", str(ir), "--reference", "cpu", "--images", str(HELD_OUT), "--height", str(size),
                            "--width", str(size), "-o", str(work / f"val-kv{factor}-{size}"), "--overwrite"], check=True)


def table(work: Path) -> None:
    rows, results = [], {"machine": machine(), "date": time.strftime("%Y-%m-%d"), "validations": {}}
    for report_file in sorted(work.glob("val-kv*-*/report.json")):
        report = json.loads(report_file.read_text())
        factor, size = report_file.parent.name.removeprefix("val-kv").split("-")
        summary = report["summary"]
        results["validations"][report_file.parent.name] = {"kv_downsample": int(factor), "size": int(size), "pass": report["pass"],
                                                           "summary": summary}
        worst = min(report["images"], key=lambda image: image["runtime"]["psnr_mean"])
        rows.append(f"| {factor} | {size}×{size} | {'PASS' if report['pass'] else 'FAIL'} | {summary['psnr_mean']:.1f} | "
                    f"{worst['runtime']['psnr_mean']:.1f} ({worst['image']}) | {summary['ssim_min']:.3f} | "
                    f"{summary['seconds_per_video']['runtime']:.2f} |")
    cpu = results["machine"]
    md = [f"# ToDo's fewer keys on svd-mini: `svdtool validate` against the exact PyTorch run ({results['date']})", "",
          f"Machine: {cpu['cpu']} ({', '.join(cpu['isa'])}), {cpu['cores']} cores. Model: svd-mini (FP16 IR, default execution precision), 8 frames, "
          "25 steps, the five held-out photos of bench/heldout, seed 42. Command: `python bench/kv_downsample.py run WORK` then "
          "`table WORK`. PSNR in dB, of the IR's video against diffusers' fp32 video on the CPU; seconds per video are the "
          "IR's, timed inside validate (noisy: other work shared the machine).", "",
          "| kv-downsample | size | verdict | PSNR mean | PSNR worst photo | SSIM min | s / video |", "|---|---|---|---|---|---|---|",
          *rows, ""]
    save("kv_downsample_mini", results, "\n".join(md))


if __name__ == "__main__":
    usage(__doc__)
    command, folder = sys.argv[1], Path(sys.argv[2])
    options = dict(zip(sys.argv[3::2], sys.argv[4::2]))
    if command == "run":
        run(folder, [int(k) for k in options.get("--factors", "1,2").split(",")],
            [int(s) for s in options.get("--sizes", "128,256").split(",")])
    table(folder)
