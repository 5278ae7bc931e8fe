"""Validation of the CPU runtime against a PyTorch reference: metrics, references, thresholds, reports.

OpenVINO-backed `validate` loads on first use, so `make_reference` runs on a GPU host without OpenVINO.
"""

from importlib import import_module
from typing import Any

from .metrics import per_frame_fidelity, video_metrics
from .reference import make_reference, read_reference
from .thresholds import Thresholds

__all__ = ["Thresholds", "make_reference", "per_frame_fidelity", "read_reference", "validate", "video_metrics"]


def __getattr__(name: str) -> Any:
    if name == "validate":
        return import_module(".run", __name__).validate
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
