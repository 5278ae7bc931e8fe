"""Validation of the CPU runtime against a PyTorch reference: metrics, references, reports."""

from .metrics import per_frame_fidelity, video_metrics

__all__ = ["per_frame_fidelity", "video_metrics"]
