"""`push()`: publish a verified IR folder to the Hugging Face Hub in one commit, with a generated model card."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx
from huggingface_hub import CommitOperationAdd, HfApi
from huggingface_hub.errors import HfHubHTTPError, OfflineModeIsEnabled

from .console import console
from .errors import SvdtoolError
from .outputs import MANIFEST_NAME, read_manifest, verify_files

SVD_LICENSE = {"license": "other", "license_name": "stable-video-diffusion-community",
               "license_link": "LICENSE.md"}


def _front_matter(manifest: dict[str, Any]) -> str:
    source = manifest.get("source", {})
    mode = manifest.get("quantization", {}).get("mode")
    tags = ["openvino", "nncf", "svdtool", "stable-video-diffusion", "image-to-video"] + ([mode] if mode else [])
    lines = ["---", "library_name: openvino", "pipeline_tag: image-to-video", "tags:"] + [f"- {tag}" for tag in tags]
    if source.get("kind") == "hub":
        lines.append(f"base_model: {source['ref']}")
        if source["ref"].startswith("stabilityai/stable-video-diffusion"):
            lines += [f"{key}: {value}" for key, value in SVD_LICENSE.items()]
    elif source.get("kind") == "preset":
        lines.append("license: apache-2.0")
    lines.append("---")
    return "\n".join(lines)


def _fusion_rows(components: dict[str, Any]) -> list[str]:
    rows = ["| component | conv+linear in int8 | FakeQuantize fused / executing | size before → after (MiB) |", "|---|---|---|---|"]
    for name, info in components.items():
        fusion = info["fusion"]
        rows.append(f"| {name} | {fusion['conv_linear_int8']}/{fusion['conv_linear_total']} "
                    f"({100 * fusion['conv_linear_int8_fraction']:.1f} %) | {fusion['fake_quantize_fused']} / "
                    f"{fusion['fake_quantize_executing']} | {info['bytes_before'] / 2**20:.1f} → {info['bytes_after'] / 2**20:.1f} |")
    return rows


def _sampler_lines(manifest: dict[str, Any]) -> list[str]:
    """What replaced the source's UNet and scheduler, when anything did (few-step students)."""
    unet, sampler = manifest.get("source", {}).get("unet"), manifest.get("sampler")
    if not unet and (not sampler or sampler["name"] == "euler"):
        return []
    lines = ["## Sampler", ""]
    if unet:
        lines.append(f"- UNet: replaced by `{unet['ref']}` (sha256 `{unet['sha256']}`)")
    if sampler:
        lines.append(f"- sampler: **{sampler['name']}** ({sampler['description']}; `{sampler['scheduler']}`, "
                     f"{json.dumps(sampler['config'])})")
        if sampler["name"] != "euler":
            lines.append(f"- {sampler['num_inference_steps']} steps, guidance {sampler['min_guidance_scale']} → "
                         f"{sampler['max_guidance_scale']}: `svdtool generate` uses them without flags; loading this folder "
                         "needs svdtool installed (the scheduler is `svdtool.models.SVDConsistencyScheduler`)")
    return lines + [""]


def _sampler_kwargs(manifest: dict[str, Any]) -> str:
    sampler = manifest.get("sampler") or {}
    keys = ("num_inference_steps", "min_guidance_scale", "max_guidance_scale")
    return "".join(f", {key}={sampler[key]}" for key in keys if sampler.get("name", "euler") != "euler" and key in sampler)


def model_card(manifest: dict[str, Any], repo_id: str, validation: dict[str, Any] | None = None) -> str:
    """Markdown model card with YAML metadata, built from the folder's manifest (and a validation report)."""
    source = manifest.get("source", {})
    total = sum(entry["bytes"] for entry in manifest.get("files", {}).values()) / 2**20
    lines = [_front_matter(manifest), "", f"# {repo_id}", "",
             f"Stable Video Diffusion pipeline in OpenVINO IR, made with svdtool {manifest.get('versions', {}).get('svdtool', '')} "
             f"from `{source.get('ref')}` ({source.get('kind')}).", ""]
    if source.get("random_weights"):
        lines += ["> **Random weights.** This pipeline was built from a configuration with seeded random weights, for "
                  "testing and benchmarking: its videos are noise.", ""]
    shape = manifest.get("shape", {})
    lines += ["## Export", "", f"- IR weights: {manifest.get('weights')} (via {manifest.get('via', 'openvino')})",
              f"- shapes: {'static ' + json.dumps({k: v for k, v in shape.items() if k != 'static'}) if shape.get('static') else 'dynamic batch, frames, height and width'}",
              f"- default generation: {json.dumps(manifest.get('generation_defaults'))}", f"- files: {len(manifest.get('files', {}))}, {total:.1f} MiB"]
    decoder = manifest.get("vae_decoder", {})
    if decoder.get("name") == "tiny":
        lines += [f"- VAE decoder: **tiny** ({decoder['class']}, `{decoder['ref']}`), in place of the source's temporal decoder: "
                  "frame by frame, much cheaper, approximate (see Validation)"]
    lines += [""]
    lines += _sampler_lines(manifest)
    lines += ["| component | inputs | outputs |", "|---|---|---|"]
    lines += [f"| {name} | {', '.join(f'`{k}` {v}' for k, v in info['inputs'].items())} | "
              f"{', '.join(f'`{k}` {v}' for k, v in info['outputs'].items())} |" for name, info in manifest.get("components", {}).items()]
    requirement = manifest.get("cpu_requirement")
    if requirement:
        lines += ["", f"**CPU:** runs accurately on {requirement['runs_accurately_on']} (target `{requirement['target_cpu']}`"
                  + (f": {requirement['why']})." if "why" in requirement else ")."), ""]
    quantization = manifest.get("quantization")
    if quantization:
        calibration = quantization["calibration"]
        lines += ["", "## Quantization", "", f"- mode: **{quantization['mode']}** (NNCF post-training)",
                  f"- calibration: {calibration['used_for_calibration']} images from `{calibration['source']}`, settings {json.dumps(calibration['settings'])}"]
        lines += [f"- {name}: {json.dumps(info['nncf'])}" for name, info in quantization["components"].items()]
        lines += ["", "CPU execution after compilation (from the OpenVINO runtime graph):", ""] + _fusion_rows(quantization["components"])
        quality = quantization["quality_check"]["mean"]
        lines += ["", f"Quick check, FP vs quantized on {quantization['quality_check']['images']} held-out images (same seed): "
                  f"PSNR {quality['psnr_mean']:.2f} dB, SSIM {quality['ssim_mean']:.3f}."]
        control = quantization.get("accuracy_control")
        if control:
            floats = sorted(name for names in control["kept_in_float"].values() for name in names)
            lines += ["", f"Accuracy control (nncf): target {control['target_db']} dB, reached {control['reached_db']} dB "
                      f"({'met' if control['met'] else 'NOT met'}; {control['metric']}); {len(floats)} UNet layers kept in float."]
    if validation:
        summary = validation["summary"]
        verdict = "PASS" if validation["pass"] else "FAIL"
        against = ("Against its PyTorch teacher (each at its own steps and guidance; metrics compared, no pixel gate)"
                   if validation.get("comparison") == "student vs teacher" else "Against a PyTorch reference")
        lines += ["", "## Validation", "", f"{against} on {validation['reference']['device']} "
                  f"({validation['reference']['dtype']}): **{verdict}**.", "", "| metric | reference | this pipeline |", "|---|---|---|"]
        lines += [f"| {key} | {summary['reference'][key]} | {summary['runtime'][key]} |" for key in summary["reference"]]
        lines += [f"| PSNR vs reference (mean / min, dB) | | {summary['psnr_mean']} / {summary['psnr_min']} |",
                  f"| SSIM vs reference (mean / min) | | {summary['ssim_mean']} / {summary['ssim_min']} |"]
    lines += ["", "## Usage", "", "```bash", "pip install svdtool",
              f"svdtool generate --model {repo_id} --input image.jpg --output video.mp4", "```", "", "```python",
              "from svdtool.runtime import OVStableVideoDiffusionPipeline", "from diffusers.utils import load_image, export_to_video", "",
              f'pipe = OVStableVideoDiffusionPipeline.from_pretrained("{repo_id}")',
              f'frames = pipe(load_image("image.jpg"), decode_chunk_size=8{_sampler_kwargs(manifest)}).frames[0]', 'export_to_video(frames, "video.mp4", fps=7)', "```", ""]
    return "\n".join(lines)


def push(
    model_dir: str | Path,
    repo_id: str,
    *,
    private: bool = False,
    revision: str | None = None,
    commit_message: str | None = None,
    token: str | None = None,
    create_pr: bool = False,
    dry_run: bool = False,
    validation_dir: str | Path | None = None,
    endpoint: str | None = None,
) -> dict[str, Any]:
    """Verify `model_dir` against its manifest (sizes and sha256), write the card, upload all in one commit."""
    model_dir = Path(model_dir)
    if repo_id.count("/") != 1 or not all(repo_id.split("/")):
        raise SvdtoolError(f"--repo-id {repo_id!r} must look like USER/NAME")
    manifest = read_manifest(model_dir)
    verify_files(model_dir, manifest, checksums=True)
    validation = None
    if validation_dir:
        report = Path(validation_dir) / "report.json"
        if not report.is_file():
            raise SvdtoolError(f"--validation {validation_dir} has no report.json (make it with `svdtool validate`)")
        validation = json.loads(report.read_text())
    card = model_card(manifest, repo_id, validation)
    files = [*manifest["files"], MANIFEST_NAME]
    plan = {"repo_id": repo_id, "files": {name: (model_dir / name).stat().st_size for name in files}, "card": card}
    if dry_run:
        return plan
    operations = [CommitOperationAdd(path_in_repo=name, path_or_fileobj=str(model_dir / name)) for name in files]
    operations.append(CommitOperationAdd(path_in_repo="README.md", path_or_fileobj=card.encode()))
    api = HfApi(endpoint=endpoint, token=token)
    try:
        api.create_repo(repo_id, private=private, exist_ok=True)
        if revision:
            api.create_branch(repo_id, branch=revision, exist_ok=True)
        commit = api.create_commit(repo_id, operations=operations, revision=revision, create_pr=create_pr,
                                   commit_message=commit_message or f"Upload {manifest.get('stage', 'model')} folder with svdtool")
    except HfHubHTTPError as exc:
        raise SvdtoolError(_hub_error(exc, repo_id, api.endpoint)) from exc
    except OfflineModeIsEnabled as exc:
        raise SvdtoolError("HF_HUB_OFFLINE is set: unset it to push") from exc
    except (httpx.HTTPError, OSError) as exc:
        raise SvdtoolError(f"could not reach the Hub at {api.endpoint} ({type(exc).__name__}); check the network or HF_ENDPOINT") from exc
    console.print(f"[green]pushed[/] {len(operations)} files to {repo_id}: {commit.commit_url}")
    return {**plan, "commit_url": commit.commit_url, "pr_url": commit.pr_url}


def _hub_error(exc: HfHubHTTPError, repo_id: str, endpoint: str) -> str:
    status = exc.response.status_code if exc.response is not None else None
    if status == 401:
        return "the Hub rejected the token (401): log in with `hf auth login`, set HF_TOKEN or pass --token with write access"
    if status == 403:
        return f"no write access to {repo_id} (403): it belongs to someone else or the token is read-only"
    if status == 404:
        return f"{repo_id} not found (404) at {endpoint}: check --repo-id and --revision"
    if status == 429:
        return "the Hub is rate-limiting this client (429): wait a few minutes and push again"
    return f"the Hub answered {status} for {repo_id}: {str(exc).splitlines()[0]}; nothing was committed"
