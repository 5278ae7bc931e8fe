"""Batch generation: many images → one video each, in this process or on Ray Data (`svdtool.batch.generate_batch`)."""

from .inputs import BatchItem, collect_inputs, is_batch_input
from .run import RayOptions, generate_batch
from .worker import VIDEO_FORMATS, BatchSpec

__all__ = ["BatchItem", "BatchSpec", "RayOptions", "VIDEO_FORMATS", "collect_inputs", "generate_batch", "is_batch_input"]
