"""The OpenVINO runtime: `OVStableVideoDiffusionPipeline`, `load_ov_pipeline()` and `generate()`.

OpenVINO-backed names load on first use, so the PyTorch reference path (`generate` with a diffusers pipeline,
`svdtool reference` on a GPU host) runs where OpenVINO and optimum-intel are not installed.
"""

from importlib import import_module
from typing import Any

from .generate import GenerationResult, GenerationSettings, fit_shapes, generate, seeded_noise, stage_timer
from .media import load_image, output_kind, read_video, write_video

_LAZY = {
    "OVStableVideoDiffusionPipeline": ".pipeline",
    "PRECISIONS": ".loading",
    "load_ov_pipeline": ".loading",
    "resolve_model_dir": ".loading",
}

__all__ = ["GenerationResult", "GenerationSettings", "fit_shapes", "generate", "load_image", "output_kind", "read_video",
           "seeded_noise", "stage_timer", "write_video", *_LAZY]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(import_module(_LAZY[name], __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
