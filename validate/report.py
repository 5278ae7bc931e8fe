"""A self-contained HTML report: animated reference vs runtime per image, per-frame PSNR plot, metric tables."""

from __future__ import annotations

import base64
import html
import io
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from PIL import Image  # noqa: E402

from svdtool.cpu import cpu_label  # noqa: E402

STYLE = """body{font-family:system-ui,sans-serif;margin:2em;color:#222}table{border-collapse:collapse;margin:.5em 0}
td,th{border:1px solid #ccc;padding:4px 8px;text-align:right}th{background:#f3f3f3}td:first-child{text-align:left}
.pass{color:#1a7f37;font-weight:bold}.fail{color:#cf222e;font-weight:bold}.media{display:flex;flex-wrap:wrap;gap:1.5em;align-items:flex-start}
figure{margin:0}figcaption{text-align:center;font-size:.9em}img.video{width:256px;image-rendering:pixelated}"""


def _data_uri(data: bytes, mime: str) -> str:
    return f"data:{mime};base64,{base64.b64encode(data).decode()}"


def _gif(frames: np.ndarray, fps: int) -> str:
    buffer = io.BytesIO()
    images = [Image.fromarray(frame) for frame in frames]
    images[0].save(buffer, format="GIF", save_all=True, append_images=images[1:], duration=int(1000 / fps), loop=0)
    return _data_uri(buffer.getvalue(), "image/gif")


def _png(image: np.ndarray) -> str:
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="PNG")
    return _data_uri(buffer.getvalue(), "image/png")


def _psnr_plot(per_frame: dict[str, list[float]], min_psnr: float) -> str:
    figure, axis = plt.subplots(figsize=(5, 2.6), dpi=100)
    axis.plot(range(len(per_frame["psnr"])), per_frame["psnr"], marker="o")
    axis.axhline(min_psnr, color="red", linestyle="--", label=f"threshold {min_psnr} dB")
    axis.set_xlabel("frame")
    axis.set_ylabel("PSNR vs reference (dB)")
    axis.legend(loc="lower right")
    figure.tight_layout()
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png")
    plt.close(figure)
    return _data_uri(buffer.getvalue(), "image/png")


def _table(headers: list[str], rows: list[list[Any]]) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in headers)
    body = "".join("<tr>" + "".join(f"<td>{cell}</td>" for cell in row) + "</tr>" for row in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def _device_name(environment: dict[str, Any]) -> str:
    cpu = environment.get("cpu", "")
    return environment.get("gpu") or (cpu_label(cpu) if isinstance(cpu, dict) else str(cpu))


def _verdict(ok: bool) -> str:
    return '<span class="pass">PASS</span>' if ok else '<span class="fail">FAIL</span>'


def worst_first(images: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Images with the most failed checks first, then the lowest mean PSNR: where to look in a large validation."""
    return sorted(images, key=lambda i: (-sum(not c["pass"] for c in i["checks"]), i["runtime"]["psnr_mean"]))


def write_html_report(path: Path, report: dict[str, Any], frames: dict[str, tuple], fps: int) -> None:
    """`frames` maps image name → (reference frames, runtime frames, input image)."""
    model, reference = report["model"], report["reference"]
    source = model.get("source") or {}
    source_text = f"{source.get('kind', '?')} {source.get('ref', '?')}" + (" (random weights)" if source.get("random_weights") else "")
    parts = [
        f"<h1>svdtool validate — {_verdict(report['pass'])}</h1>",
        f"<p>Model <code>{html.escape(model['path'])}</code> ({html.escape(str(model['mode']))}, source "
        f"{html.escape(source_text)}) on {html.escape(cpu_label(report['runtime']['environment']['cpu']))}, "
        f"{html.escape(report['runtime']['precision'])} execution, vs PyTorch reference on {html.escape(reference['device'])} "
        f"({html.escape(reference['dtype'])}, {html.escape(_device_name(reference['environment']))}).</p>",
    ]
    summary = report["summary"]
    rows = [[key, summary["reference"][key], summary["runtime"][key]] for key in summary["reference"]]
    rows += [[key, "", summary[key]] for key in ("psnr_mean", "psnr_min", "ssim_mean", "ssim_min")]
    rows.append(["seconds per video", summary["seconds_per_video"]["reference"], summary["seconds_per_video"]["runtime"]])
    parts += ["<h2>Summary (mean over images)</h2>", _table(["metric", "reference", "runtime"], rows)]
    ordered = worst_first(report["images"])
    parts += ["<h2>Images, worst first</h2>", _table(["image", "PSNR mean (dB)", "SSIM mean", "failed checks"], [
        [html.escape(i["image"]), f"{i['runtime']['psnr_mean']:.2f}", f"{i['runtime']['ssim_mean']:.3f}",
         html.escape(", ".join(c["check"] for c in i["checks"] if not c["pass"]) or "none")] for i in ordered])]
    for image in ordered:
        reference_frames, runtime_frames, input_image = frames[image["image"]]
        checks = [[c["check"], c["value"], html.escape(c["limit"]), _verdict(c["pass"])] for c in image["checks"]]
        metrics = [[k, image["reference"][k], image["runtime"][k]] for k in image["reference"]]
        parts += [
            f"<h2>{html.escape(image['image'])}</h2>",
            '<div class="media">',
            f'<figure><img class="video" src="{_png(input_image)}"><figcaption>input</figcaption></figure>',
            f'<figure><img class="video" src="{_gif(reference_frames, fps)}"><figcaption>reference ({html.escape(reference["device"])})</figcaption></figure>',
            f'<figure><img class="video" src="{_gif(runtime_frames, fps)}"><figcaption>OpenVINO CPU runtime</figcaption></figure>',
            f'<figure><img src="{_psnr_plot(image["per_frame"], report["thresholds"]["min_psnr"])}"><figcaption>per-frame PSNR</figcaption></figure>',
            "</div>",
            _table(["check", "value", "limit", "result"], checks),
            _table(["metric", "reference", "runtime"], metrics),
        ]
    settings_rows = [[k, v] for k, v in report["settings"].items()]
    env_rows = [[f"reference {k}", html.escape(str(v))] for k, v in reference["environment"].items()]
    env_rows += [[f"runtime {k}", html.escape(str(v))] for k, v in report["runtime"]["environment"].items()]
    parts += ["<h2>Settings</h2>", _table(["setting", "value"], settings_rows),
              "<h2>Environment</h2>", _table(["", "value"], env_rows)]
    page = f"<!doctype html><html><head><meta charset='utf-8'><title>svdtool validate</title><style>{STYLE}</style></head><body>{''.join(parts)}</body></html>"
    path.write_text(page)
