"""A tiny VAE decoder (`svdtool export --vae-decoder`, TAESD's architecture) against SVD's temporal decoder (#45).

    python bench/tiny_decoder.py speed IR_DIR NAME [--decoder SPEC | --channels C] [--frames F] [--height H] [--width W]
        one chunk of F frames (8) through IR_DIR's vae_decoder and through a tiny decoder exported as `--vae-decoder`
        exports it (SPEC; default: TAESD's architecture, C (64) channels a block, with random weights, since speed does
        not depend on them), both compiled as the runtime compiles them (the CPU's default precision), at HxW (576x1024)
        -> bench/results/tiny_decoder_speed_NAME.{json,md}
    python bench/tiny_decoder.py quality WORK DECODER [--results NAME]
        svd-mini exported without and with DECODER (its tiny decoder, trained by `python -m svdtool.models.tiny_decoder`),
        both quantized (default INT8), validated against the exact PyTorch fp32 run (25 Euler steps) on the held-out
        photos (bench/heldout) -> bench/results/NAME.{json,md} (tiny_decoder_mini)
    python bench/tiny_decoder.py latents MODEL DECODER[,DECODER...] [--results NAME]
        which latents a tiny decoder is off on: per held-out photo, the sharpness and temporal MSE of each DECODER's
        frames against MODEL's temporal decoder's, decoding (a) the latents MODEL's PyTorch pipeline generates (its
        defaults, seed 42: what `generate` decodes), (b) those frames encoded again by MODEL's VAE (what the
        decoder was distilled on) and (c) the photo as a still clip, encoded
        -> bench/results/NAME.{json,md} (tiny_decoder_latents_mini)
    python bench/tiny_decoder.py pool MODEL MOSAICS:LEAVES[,...] [--clips N] [--results NAME]
        how the training pool's content compares with the held-out inputs: the sharpness (validate's Laplacian variance)
        of the held-out photos resized to MODEL's size, and of the first frames of N (192) clips rendered as
        `tiny_decoder --mosaics M --leaves L` pools them -> bench/results/NAME.{json,md} (tiny_decoder_pool)
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import openvino as ov

sys.path.insert(0, str(Path(__file__).parent))
from common import decoder_latents, machine, machine_line, save, timed, usage  # noqa: E402

HELD_OUT = Path(__file__).parent / "heldout"
CALIBRATION = Path(__file__).parents[1] / "examples" / "calibration"
REPEAT = 2


def svdtool(*args: str) -> None:
    subprocess.run([sys.executable, "-m", "svdtool.cli", *args], check=True)


def time_decoder(xml: Path, latents: np.ndarray) -> dict:
    """Median seconds per call of one chunk (after a warm-up call), compiled with the CPU plugin's defaults."""
    compiled = ov.Core().compile_model(xml, "CPU")
    call = timed(lambda: compiled(latents), repeat=REPEAT)["median_s"]
    return {"call_s": call, "per_frame_s": round(call / len(latents), 4),
            "precision": compiled.get_property("INFERENCE_PRECISION_HINT").to_string()}


def tiny_decoder_ir(spec: str | None, vae_config: dict, folder: Path, channels: int = 64) -> Path:
    """The tiny decoder's IR as `svdtool export --vae-decoder` writes it (TinyDecoderWrapper, fp16 weights); without
    `spec`, TAESD's architecture `channels` wide with random weights."""
    from svdtool.convert.export import _convert, _save_component
    from svdtool.convert.wrappers import ExportShape, TinyDecoderWrapper
    from svdtool.models.decoders import context_frames, latent_scale, load_tiny_decoder
    from svdtool.models.tiny_decoder import new_tiny_decoder

    tiny = load_tiny_decoder(spec) if spec else new_tiny_decoder(vae_config["latent_channels"], channels)
    context = context_frames(tiny.config.latent_channels, vae_config["latent_channels"])
    model = _convert("vae_decoder", TinyDecoderWrapper(tiny, latent_scale(tiny, vae_config), context), ExportShape(64, 64, 2),
                     vae_config, "openvino", folder)
    _save_component(folder / "tiny", model, vae_config, "fp16")
    return folder / "tiny" / "openvino_model.xml"


def speed(ir_dir: Path, name: str, spec: str | None, frames: int, height: int, width: int, channels: int = 64) -> None:
    vae_config = json.loads((ir_dir / "vae_decoder" / "config.json").read_text())
    latents = decoder_latents(ir_dir, frames, height, width)
    results = {"machine": machine(), "date": time.strftime("%Y-%m-%d"), "ir": str(ir_dir), "frames": frames, "height": height,
               "width": width, "tiny_decoder": spec or f"TAESD's architecture (AutoencoderTiny), {channels} channels a block, random weights"}
    results["temporal"] = time_decoder(ir_dir / "vae_decoder" / "openvino_model.xml", latents)
    with tempfile.TemporaryDirectory() as tmp:
        results["tiny"] = time_decoder(tiny_decoder_ir(spec, vae_config, Path(tmp), channels), latents)
    ratio = results["temporal"]["call_s"] / results["tiny"]["call_s"]
    results["speed_up"] = round(ratio, 2)
    info = results["machine"]
    markdown = "\n".join([
        f"# Tiny decoder vs temporal decoder: {width}x{height}, one chunk of {frames} frames", "",
        f"{machine_line(info)}; IR: `{ir_dir.name}` ({json.loads((ir_dir / 'svdtool.json').read_text())['source']['ref']}); "
        f"tiny decoder: {results['tiny_decoder']}; the median of {REPEAT} calls after a warm-up, CPU plugin defaults.", "",
        "| decoder | s / chunk | s / frame | precision |", "|---|---|---|---|",
        *[f"| {label} | {results[key]['call_s']} | {results[key]['per_frame_s']} | {results[key]['precision']} |"
          for key, label in (("temporal", "temporal (the IR's own)"), ("tiny", "tiny (`--vae-decoder`)"))],
        "", f"Speed-up: **{ratio:.1f}×**.", "",
        f"Reproduce: `python bench/tiny_decoder.py speed {ir_dir.name} {name} --frames {frames} --height {height} --width {width}"
        f"{f' --decoder {spec}' if spec else '' if channels == 64 else f' --channels {channels}'}`", ""])
    save(f"tiny_decoder_speed_{name}", results, markdown)


def quality(work: Path, decoder: str, results: str = "tiny_decoder_mini") -> None:
    work.mkdir(parents=True, exist_ok=True)
    irs = {"exact": work / "exact-fp16", "tiny": work / "tiny-fp16"}
    for key, folder in irs.items():
        if not folder.is_dir():
            svdtool("export", "mini", "-o", str(folder), *(["--vae-decoder", decoder] if key == "tiny" else []))
        int8 = folder.with_name(f"{key}-int8")
        if not int8.is_dir():
            svdtool("quantize", str(folder), "--calib", str(CALIBRATION), "-o", str(int8))
    reference = work / "reference"
    if not reference.is_dir():
        svdtool("reference", "mini", "--images", str(HELD_OUT), "-o", str(reference), "--device", "cpu", "--dtype", "fp32")
    rows = {}
    for label in ("exact-int8", "tiny-fp16", "tiny-int8"):
        out = work / f"val-{label}"
        if not (out / "report.json").is_file():
            subprocess.run([sys.executable, "-m", "svdtool.cli", "validate", str(work / label), "--reference", str(reference),
                            "-o", str(out), "--overwrite"])
        report = json.loads((out / "report.json").read_text())
        failed = sorted({c["check"] for image in report["images"] for c in image["checks"] if not c["pass"]})
        decode = statistics.mean(image["timings_seconds"]["runtime"]["vae_decoder"] for image in report["images"])
        video = report["summary"]["seconds_per_video"]["runtime"]
        rows[label] = {"pass": report["pass"], "failed": failed, "psnr_mean": report["summary"]["psnr_mean"],
                       "psnr_worst": min(image["runtime"]["psnr_mean"] for image in report["images"]),
                       "ssim_mean": report["summary"]["ssim_mean"], "decode_s": round(decode, 3), "video_s": round(video, 2),
                       "flicker": report["summary"]["runtime"]["flicker"], "sharpness": report["summary"]["runtime"]["sharpness"]}
    reference_summary = json.loads((work / "val-exact-int8" / "report.json").read_text())["summary"]["reference"]
    info = machine()
    lines = ["| IR | validate | PSNR mean / worst (dB) | SSIM | sharpness | flicker | decode s / video | s / video |",
             "|---|---|---|---|---|---|---|---|",
             f"| *exact PyTorch fp32 (reference)* | | | | {reference_summary['sharpness']:.1f} | {reference_summary['flicker']:.3f} | | |"]
    for label, row in rows.items():
        verdict = "PASS" if row["pass"] else "FAIL (" + ", ".join(row["failed"]).replace("|", "\\|") + ")"
        lines.append(f"| {label} | {verdict} | {row['psnr_mean']:.1f} / {row['psnr_worst']:.1f} | {row['ssim_mean']:.3f} | "
                     f"{row['sharpness']:.1f} | {row['flicker']:.3f} | {row['decode_s']:.2f} | {row['video_s']:.2f} |")
    trained = json.loads((Path(decoder) / "training.json").read_text()) if (Path(decoder) / "training.json").is_file() else {}
    width, context = _width(decoder), trained.get("context_frames", 0)
    markdown = "\n".join([
        "# svd-mini with its tiny decoder (`--vae-decoder`) against its temporal decoder", "",
        f"{machine_line(info)}; `svdtool validate` against the exact PyTorch fp32 run "
        "(25 Euler steps, 128x128x8) on the 5 held-out photos (bench/heldout), default thresholds. Tiny decoder: "
        f"`{Path(decoder).name}` ({width} channels a block)" + (f", {'; '.join(trained.get('runs', []))} on {trained.get('trained_on')}" if trained else "") + ".",
        "", *lines, "",
        f"Reproduce: `python -m svdtool.models.tiny_decoder --teacher models/mini --out {Path(decoder).name} --state STATE "
        f"--minutes M --pool-clips N{'' if width == 64 else f' --channels {width}'}"
        f"{f' --context {context}' if context else ''}` once per run named above "
        "(the state carries over; the losses and --init as named), then "
        f"`python bench/tiny_decoder.py quality WORK {Path(decoder).name} --results {results}`", ""])
    save(results, {"machine": info, "date": time.strftime("%Y-%m-%d"), "decoder": decoder, "training": trained,
                               "reference": reference_summary, "irs": rows}, markdown)


def latents(model: Path, decoders: list[str], results: str = "tiny_decoder_latents_mini") -> None:
    import torch
    from diffusers import AutoencoderTiny
    from PIL import Image

    from svdtool.models import generation_defaults, load_pipeline, resolve_source
    from svdtool.models.decoders import context_frames, with_neighbours
    from svdtool.models.scenes import to_uint8
    from svdtool.runtime.generate import GenerationSettings
    from svdtool.validate.metrics import grayscale, sharpness, temporal_mse

    source = resolve_source(str(model))
    settings, pipeline = GenerationSettings().resolved(generation_defaults(source)), load_pipeline(source)
    pipeline.set_progress_bar_config(disable=True)
    vae, scaling_factor = pipeline.vae, pipeline.vae.config.scaling_factor
    tinies = {Path(spec).name: AutoencoderTiny.from_pretrained(spec).eval() for spec in decoders}

    def gray(decoded: torch.Tensor) -> np.ndarray:
        return grayscale(to_uint8(decoded))

    def changes(diffusion_latents: torch.Tensor) -> tuple[torch.Tensor, dict]:
        decoded = vae.decode(diffusion_latents / scaling_factor, num_frames=len(diffusion_latents)).sample
        reference = gray(decoded)
        row = {"temporal_decoder_sharpness": round(sharpness(reference), 1)}
        for name, tiny in tinies.items():
            context = context_frames(tiny.config.latent_channels, diffusion_latents.shape[1])
            frames = gray(tiny.decode(with_neighbours(diffusion_latents, context)).sample)
            row[name] = {"sharpness": round(sharpness(frames) / sharpness(reference) - 1, 4),
                         "temporal_mse": round(temporal_mse(frames) / temporal_mse(reference) - 1, 4)}
        return decoded, row

    rows: dict = {}
    with torch.no_grad():
        for photo in sorted(HELD_OUT.glob("*.jpg")):
            image = Image.open(photo).convert("RGB").resize((settings.width, settings.height))
            generated = pipeline(image, **settings.pipeline_kwargs(), generator=torch.Generator().manual_seed(settings.seed),
                                 output_type="latent").frames[0]
            decoded, rows.setdefault(photo.stem, {})["generated"] = changes(generated)
            encoded = vae.encode(decoded).latent_dist.sample(torch.Generator().manual_seed(0)) * scaling_factor
            rows[photo.stem]["encoded"] = changes(encoded)[1]
            still = torch.from_numpy(np.array(image)).permute(2, 0, 1)[None].float().div(127.5).sub(1)
            still = vae.encode(still.repeat(len(decoded), 1, 1, 1)).latent_dist.sample(torch.Generator().manual_seed(0))
            rows[photo.stem]["still"] = changes(still * scaling_factor)[1]
    info = machine()
    lines = ["| photo | latents | temporal decoder's sharpness | "
             + " | ".join(f"{name}: sharpness, temporal MSE" for name in tinies) + " |",
             "|---|---|---|" + "---|" * len(tinies)]
    for photo, kinds in rows.items():
        for kind, row in kinds.items():
            lines.append(f"| {photo} | {kind} | {row['temporal_decoder_sharpness']:g} | " + " | ".join(
                f"{row[name]['sharpness']:+.1%}, {row[name]['temporal_mse']:+.1%}" for name in tinies) + " |")
    markdown = "\n".join([
        f"# Tiny decoders against {model.name}'s temporal decoder, per kind of latents", "",
        f"{machine_line(info)}; PyTorch fp32. Each cell: the tiny decoder's frames against the temporal decoder's from "
        f"the same latents, relative (validate's limits: sharpness ±20 %, temporal MSE ±15 %). *generated*: the latents "
        f"{model.name}'s pipeline makes from the photo ({settings.height}x{settings.width}x{settings.num_frames}, "
        f"{settings.num_inference_steps} Euler steps, seed {settings.seed}); *encoded*: those frames, decoded by the temporal "
        "decoder, encoded again by the VAE (a sample of its latent distribution, as the tiny decoders' training pools are); "
        "*still*: the photo itself as a clip that does not move, encoded the same way.",
        "", *lines, "", f"Reproduce: `python bench/tiny_decoder.py latents {model} {','.join(decoders)} --results {results}`", ""])
    save(results, {"machine": info, "date": time.strftime("%Y-%m-%d"), "model": str(model), "decoders": decoders,
                   "photos": rows}, markdown)


def pool(model: Path, mixes: list[str], clips: int, results: str = "tiny_decoder_pool") -> None:
    import torch
    from PIL import Image

    from svdtool.models import generation_defaults, resolve_source
    from svdtool.models.scenes import SceneMix, photo_bank, render_clips, to_uint8
    from svdtool.validate.metrics import grayscale, sharpness

    def frame_sharpness(frames: np.ndarray) -> list[float]:  # (N, H, W, 3) uint8
        return [round(sharpness(grayscale(frame[None])), 1) for frame in frames]

    defaults = generation_defaults(resolve_source(str(model)))
    size = (defaults.width, defaults.height)
    held_out = {photo.stem: frame_sharpness(np.asarray(Image.open(photo).convert("RGB").resize(size))[None])[0]
                for photo in sorted(HELD_OUT.glob("*.jpg"))}
    photos, rows = photo_bank(), {}
    for mix in mixes:
        mosaics, leaves = (float(share) for share in mix.split(":"))
        first_frames = torch.cat([render_clips(7_000 + start, min(16, clips - start), 2, photos, motion="zoom",
                                               mix=SceneMix(mosaics, leaves)).frames[:, 0] for start in range(0, clips, 16)])
        values = np.array(frame_sharpness(to_uint8(first_frames)))
        rows[mix] = {"mosaics": mosaics, "leaves": leaves, "clips": clips,
                     **{f"p{q}": round(float(np.percentile(values, q)), 1) for q in (10, 50, 90)},
                     "share_as_sharp_as_held_out": round(float((values >= min(held_out.values())).mean()), 3)}
    info = machine()
    lines = ["| content | sharpness p10 / median / p90 | share at least as sharp as the softest held-out photo |",
             "|---|---|---|",
             f"| held-out photos at {defaults.height}x{defaults.width} | "
             + ", ".join(f"{name} {value:g}" for name, value in held_out.items()) + " | |"]
    lines += [f"| pool, mosaics {row['mosaics']:g}, dead leaves {row['leaves']:g} | {row['p10']:g} / {row['p50']:g} / "
              f"{row['p90']:g} | {row['share_as_sharp_as_held_out']:.0%} |" for row in rows.values()]
    markdown = "\n".join([
        "# The tiny decoder's training pool against the held-out inputs", "",
        f"{machine_line(info)}. Sharpness is validate's (the variance of the Laplacian of the grey frame); the pool's rows "
        f"are the first frames of {clips} clips rendered as `python -m svdtool.models.tiny_decoder` pools them (zoom motion, "
        "its `--mosaics` and `--leaves` shares).", "", *lines, "",
        f"Reproduce: `python bench/tiny_decoder.py pool {model} {','.join(mixes)} --clips {clips} --results {results}`", ""])
    save(results, {"machine": info, "date": time.strftime("%Y-%m-%d"), "held_out": held_out, "pools": rows}, markdown)


def _is_share(text: str) -> bool:
    try:
        return 0 <= float(text) <= 1
    except ValueError:
        return False


def _width(decoder: str) -> int:
    return json.loads((Path(decoder) / "config.json").read_text())["decoder_block_out_channels"][0]


def main() -> None:
    usage(__doc__)
    parser = argparse.ArgumentParser()
    parser.add_argument("mode", choices=["speed", "quality", "latents", "pool"])
    parser.add_argument("folder", type=Path)
    parser.add_argument("name")
    parser.add_argument("--decoder")
    parser.add_argument("--frames", type=int, default=8)
    parser.add_argument("--height", type=int, default=576)
    parser.add_argument("--width", type=int, default=1024)
    parser.add_argument("--channels", type=int, default=64, help="speed without --decoder: the random tiny decoder's width")
    parser.add_argument("--results", default="tiny_decoder_mini", help="quality: the result files' name")
    parser.add_argument("--clips", type=int, default=192, help="pool: clips rendered per mix")
    args = parser.parse_args()
    os.environ.setdefault("PYTHONWARNINGS", "ignore")
    if args.mode == "speed":
        speed(args.folder, args.name, args.decoder, args.frames, args.height, args.width, args.channels)
    elif args.mode == "quality":
        quality(args.folder, args.name, args.results)
    elif args.mode == "pool":
        if not all(len(mix.split(":")) == 2 and all(_is_share(share) for share in mix.split(":")) for mix in args.name.split(",")):
            parser.error(f"pool: give MOSAICS:LEAVES shares between 0 and 1, e.g. 0.25:0,0.5:0.5 (not {args.name})")
        pool(args.folder, args.name.split(","), args.clips,
             args.results if args.results != "tiny_decoder_mini" else "tiny_decoder_pool")
    else:
        latents(args.folder, args.name.split(","), args.results if args.results != "tiny_decoder_mini" else "tiny_decoder_latents_mini")


if __name__ == "__main__":
    main()
