"""The OpenVINO runtime: `OVStableVideoDiffusionPipeline`, `load_ov_pipeline()` and `generate()`."""

from .generate import GenerationResult, GenerationSettings, generate, stage_timer
from .loading import PRECISIONS, load_ov_pipeline, resolve_model_dir
from .media import load_image, output_kind, read_video, write_video
from .pipeline import OVStableVideoDiffusionPipeline

__all__ = [
    "PRECISIONS",
    "GenerationResult",
    "GenerationSettings",
    "OVStableVideoDiffusionPipeline",
    "generate",
    "load_image",
    "load_ov_pipeline",
    "output_kind",
    "read_video",
    "resolve_model_dir",
    "stage_timer",
    "write_video",
]
