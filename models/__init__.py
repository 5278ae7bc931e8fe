"""Where pipelines come from: random-weight presets, local diffusers folders, and the Hugging Face Hub."""

from .presets import PRESETS, GenerationDefaults, Preset
from .sources import COMPONENTS, Source, generation_defaults, load_component, load_pipeline, resolve_source

__all__ = [
    "PRESETS",
    "COMPONENTS",
    "GenerationDefaults",
    "Preset",
    "Source",
    "generation_defaults",
    "load_component",
    "load_pipeline",
    "resolve_source",
]
