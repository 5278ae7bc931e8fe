"""Where pipelines come from: the shipped `mini` model, random-weight presets, local diffusers folders, the Hub."""

from .presets import BUILTIN_MODELS, PRESETS, BuiltinModel, GenerationDefaults, Preset
from .samplers import SAMPLERS, Sampler, SVDConsistencyScheduler
from .sources import COMPONENTS, TORCH_DTYPES, Source, component_config, generation_defaults, load_component, load_pipeline, resolve_source, size_multiple

__all__ = [
    "BUILTIN_MODELS",
    "PRESETS",
    "SAMPLERS",
    "Sampler",
    "SVDConsistencyScheduler",
    "BuiltinModel",
    "COMPONENTS",
    "GenerationDefaults",
    "Preset",
    "Source",
    "TORCH_DTYPES",
    "component_config",
    "generation_defaults",
    "load_component",
    "load_pipeline",
    "resolve_source",
    "size_multiple",
]
