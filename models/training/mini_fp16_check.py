"""Is a trained svd-mini safe to run in fp16? On CUDA, from identical noise (svdtool draws it in float32):

- per-module SNR of the UNet's fp16 outputs vs fp32, on real UNet inputs recorded at five denoising steps, and the
  largest |activation| any module produces (fp16 overflows at 65,504);
- the whole video, CUDA fp16 vs CUDA fp32 (TF32 off), PSNR per held-out photo.

python models/training/mini_fp16_check.py PIPELINE_FOLDER OUT.json   (GPU host)
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import torch

sys.path[:0] = [str(Path(__file__).parent), str(Path(__file__).parents[2] / "bench")]  # these tools, and bench/common
from mini_vae_check import PHOTOS  # noqa: E402

from svdtool.models import BUILTIN_MODELS, load_pipeline  # noqa: E402
from svdtool.runtime import GenerationSettings, generate, load_image  # noqa: E402
from svdtool.validate.metrics import psnr_per_frame  # noqa: E402

SETTINGS = GenerationSettings(num_frames=8, height=128, width=128, num_inference_steps=25, decode_chunk_size=8).resolved(
    BUILTIN_MODELS["mini"].defaults)  # svd-mini's own defaults: bucket 127, guidance 1.0 -> 2.5, seed 42
RECORDED_STEPS = (0, 6, 12, 18, 24)


def record_unet_inputs(pipeline, image) -> list[tuple]:
    calls = []
    forward = pipeline.unet.forward

    def recorder(*args, **kwargs):
        calls.append((args, kwargs))
        return forward(*args, **kwargs)

    pipeline.unet.forward = recorder
    generate(pipeline, image, SETTINGS, show_progress=False)
    pipeline.unet.__dict__.pop("forward", None)  # generate()'s stage timer may have removed it already
    return [calls[step] for step in RECORDED_STEPS]


def module_outputs(unet, args, kwargs, dtype) -> dict[str, torch.Tensor]:
    outputs, hooks = {}, []
    for name, module in unet.named_modules():
        if name and not list(module.children()):
            hooks.append(module.register_forward_hook(
                lambda _m, _i, out, _n=name: outputs.__setitem__(_n, out.detach().float()) if torch.is_tensor(out) else None))
    cast = lambda x: x.to(dtype) if torch.is_tensor(x) and x.is_floating_point() else x  # noqa: E731
    with torch.no_grad():
        unet(*map(cast, args), **{k: cast(v) for k, v in kwargs.items()})
    for hook in hooks:
        hook.remove()
    return outputs


def main(folder: str, out_json: str) -> None:
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    fp32 = load_pipeline(folder, torch.float32).to("cuda")
    fp16 = load_pipeline(folder, torch.float16).to("cuda")
    images = {name: load_image(path) for name, path in PHOTOS.items()}
    worst, largest = {}, 0.0
    for args, kwargs in record_unet_inputs(fp32, images["chelsea"]):
        reference = module_outputs(fp32.unet, args, kwargs, torch.float32)
        half = module_outputs(fp16.unet, args, kwargs, torch.float16)
        for name, value in reference.items():
            error = (half[name] - value).pow(2).sum()
            snr = float(10 * torch.log10(value.pow(2).sum() / error.clamp_min(1e-30)))
            worst[name] = min(worst.get(name, snr), snr)
            largest = max(largest, float(half[name].abs().max()))
    lowest = sorted(worst.items(), key=lambda item: item[1])[:5]
    videos = {}
    for name, image in images.items():
        a = generate(fp32, image, SETTINGS, show_progress=False).frames
        b = generate(fp16, image, SETTINGS, show_progress=False).frames
        videos[name] = round(float(psnr_per_frame(b, a).mean()), 2)
    result = {"gpu": torch.cuda.get_device_name(), "torch": torch.__version__, "settings": SETTINGS.as_dict(),
              "modules": len(worst), "min_module_snr_db": round(lowest[0][1], 2),
              "lowest_modules": [[name, round(snr, 2)] for name, snr in lowest],
              "max_abs_activation_fp16": round(largest, 2),
              "video_psnr_fp16_vs_fp32": videos, "video_psnr_mean": round(float(np.mean(list(videos.values()))), 2)}
    Path(out_json).write_text(json.dumps(result, indent=2))
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main(*sys.argv[1:])
