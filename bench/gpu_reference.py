"""The PyTorch GPU reference's speed: diffusers fp16 on CUDA at the full SVD-XT shape and at the reduced shape.

Seconds per video, per UNet step (CUDA-synchronised stage timer), peak GPU memory. Run on a GPU host:
python bench/gpu_reference.py OUT_JSON [preset]
"""

from __future__ import annotations

import json
import sys
import time

import torch

from common import usage
from PIL import Image

from svdtool.models import load_pipeline
from svdtool.runtime import GenerationSettings, generate

SHAPES = {
    "full": GenerationSettings(num_frames=25, height=576, width=1024, num_inference_steps=25, decode_chunk_size=8),
    "reduced": GenerationSettings(num_frames=8, height=256, width=256, num_inference_steps=25, decode_chunk_size=8),
}


def main(out_json: str, preset: str = "svd-xt") -> None:
    start = time.perf_counter()
    pipeline = load_pipeline(preset, torch.float16).to("cuda")
    build_s = time.perf_counter() - start
    image = Image.open("examples/astronaut.jpg").convert("RGB")
    results = {"preset": preset, "gpu": torch.cuda.get_device_name(), "torch": torch.__version__, "dtype": "fp16",
               "build_seconds": round(build_s, 1), "shapes": {}}
    for name, settings in SHAPES.items():
        defaults = {"fps": 7, "motion_bucket_id": 127, "noise_aug_strength": 0.02, "min_guidance_scale": 1.0, "max_guidance_scale": 3.0}
        settings = settings.resolved(defaults)
        generate(pipeline, image, settings, show_progress=False)  # warm-up (cuDNN autotuning, allocator)
        torch.cuda.reset_peak_memory_stats()
        runs = [generate(pipeline, image, settings, show_progress=False).timings for _ in range(2)]
        best = min(runs, key=lambda t: t["total"])
        results["shapes"][name] = {
            "settings": settings.as_dict(),
            "seconds_per_video": best["total"],
            "seconds_per_unet_step": round(best["unet"] / best["unet_calls"], 4),
            "vae_decode_seconds": best["vae_decoder"],
            "peak_gpu_memory_gb": round(torch.cuda.max_memory_allocated() / 2**30, 2),
            "runs_total_seconds": [r["total"] for r in runs],
        }
        print(name, results["shapes"][name], flush=True)
    with open(out_json, "w") as handle:
        json.dump(results, handle, indent=2)


if __name__ == "__main__":
    usage(__doc__)
    main(*sys.argv[1:])
