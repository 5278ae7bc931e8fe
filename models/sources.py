"""Resolve any model source — preset name, local diffusers folder, or Hub id — to SVD components."""

from __future__ import annotations

import inspect
import json
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import torch
from diffusers import (
    AutoencoderKLTemporalDecoder,
    EulerDiscreteScheduler,
    StableVideoDiffusionPipeline,
    UNetSpatioTemporalConditionModel,
)
from transformers import CLIPImageProcessor, CLIPVisionModelWithProjection

from svdtool import logs
from svdtool.errors import SvdtoolError

from .presets import BUILTIN_MODELS, PRESETS, SVD_SCHEDULER_CONFIG, WEIGHT_COMPONENTS, GenerationDefaults
from .samplers import SAMPLERS, SVDConsistencyScheduler, sampler_of_scheduler
from .unets import check_unet_spec, describe_unet, load_unet_weights

logs.adopt("transformers", "diffusers", "torch")  # they install console handlers on import

COMPONENTS: dict[str, type] = {
    "image_encoder": CLIPVisionModelWithProjection,
    "unet": UNetSpatioTemporalConditionModel,
    "vae": AutoencoderKLTemporalDecoder,
    "scheduler": EulerDiscreteScheduler,
    "feature_extractor": CLIPImageProcessor,
}
TORCH_DTYPES = {"fp32": torch.float32, "fp16": torch.float16}  # what --dtype of the PyTorch paths names


@dataclass(frozen=True)
class Source:
    """Where a pipeline comes from. `kind` is "preset" (random weights), "builtin" (shipped, trained), "folder" or "hub";
    `unet` replaces its UNet (models/unets.py) and `sampler` its scheduler (models/samplers.py; None: its own)."""

    kind: str
    ref: str
    variant: str | None = None
    revision: str | None = None
    unet: str | None = None
    sampler: str | None = None

    @classmethod
    def from_record(cls, record: dict[str, Any]) -> "Source":
        """The source a manifest's `source` record describes (`describe()`'s output)."""
        return cls(record["kind"], record["ref"], record.get("variant"), record.get("revision"),
                   (record.get("unet") or {}).get("ref"), record.get("sampler"))

    @property
    def own_sampler(self) -> str:
        """The sampler the source's saved scheduler is (read from its config; presets and Hub pipelines: Euler)."""
        if self.kind not in ("builtin", "folder"):
            return "euler"
        path = Path(self.location) / "scheduler" / "scheduler_config.json"
        try:
            return sampler_of_scheduler(json.loads(path.read_text()).get("_class_name", ""))
        except (OSError, ValueError):
            return "euler"

    @property
    def sampler_name(self) -> str:
        return self.sampler or self.own_sampler

    @property
    def random_weights(self) -> bool:
        return self.kind == "preset"

    @property
    def location(self) -> str:
        """What `from_pretrained` takes: the folder or Hub id."""
        return str(BUILTIN_MODELS[self.ref].folder) if self.kind == "builtin" else self.ref

    def component_location(self, name: str) -> str:
        """Where component `name` loads from (a named model may share another's files)."""
        return str(BUILTIN_MODELS[self.ref].component_folder(name)) if self.kind == "builtin" else self.ref

    def describe(self) -> dict[str, Any]:
        info: dict[str, Any] = {"kind": self.kind, "ref": self.ref, "random_weights": self.random_weights}
        if self.kind in ("preset", "builtin"):
            info["description"] = (PRESETS if self.kind == "preset" else BUILTIN_MODELS)[self.ref].description
        if self.kind == "builtin":
            info["weights_sha256"] = BUILTIN_MODELS[self.ref].weights_sha256()
        if self.variant:
            info["variant"] = self.variant
        if self.revision:
            info["revision"] = self.revision
        if self.unet:
            info["unet"] = describe_unet(self.unet)
        info["sampler"] = self.sampler_name
        return info

    def label(self) -> str:
        suffix = " (random weights)" if self.random_weights else ""
        unet = f" with the UNet {self.unet}" if self.unet else ""
        sampler = f", {self.sampler} sampler" if self.sampler and self.sampler != self.own_sampler else ""
        return f"{self.kind} {self.ref}{suffix}{unet}{sampler}"


def resolve_source(spec: str | Source, variant: str | None = None, revision: str | None = None, *, unet: str | None = None,
                   sampler: str | None = None) -> Source:
    """Turn a user string into a Source: a preset name, a local diffusers folder, or an `owner/name` Hub id, with a UNet
    file that replaces its own and a sampler (checked here, before anything is loaded). A Source is returned as it is."""
    if isinstance(spec, Source):
        return spec
    if sampler is not None and sampler not in SAMPLERS:
        raise SvdtoolError(f"--sampler must be one of {', '.join(SAMPLERS)}, not {sampler!r}")
    unet = check_unet_spec(unet) if unet is not None else None
    return replace(_resolve(spec, variant, revision), unet=unet, sampler=sampler)


def _resolve(spec: str, variant: str | None, revision: str | None) -> Source:
    if spec in PRESETS:
        return Source("preset", spec)
    if spec in BUILTIN_MODELS:
        return Source("builtin", spec)
    path = Path(spec).expanduser()
    if path.exists():
        if not (path / "model_index.json").is_file():
            raise SvdtoolError(f"{path} is not a diffusers pipeline folder (no model_index.json); give a folder made by save_pretrained")
        if variant is None and not any((path / "unet").glob("diffusion_pytorch_model.safetensors")) and any(
            (path / "unet").glob("diffusion_pytorch_model.fp16.*")
        ):
            variant = "fp16"
        return Source("folder", str(path.resolve()), variant)
    if spec.count("/") == 1 and all(spec.split("/")):
        return Source("hub", spec, variant, revision)
    raise SvdtoolError(
        f"unknown model source {spec!r}: use a named model ({', '.join([*BUILTIN_MODELS, *PRESETS])}), a local diffusers folder, or a Hub id like owner/name"
    )


def load_component(source: Source, name: str, torch_dtype: torch.dtype = torch.float32) -> Any:
    """Load one pipeline component, so exporters can hold one large model in memory at a time."""
    if name not in COMPONENTS:
        raise KeyError(name)
    if name == "scheduler" and source.sampler_name != source.own_sampler:
        return SAMPLERS[source.sampler_name].scheduler(SVD_SCHEDULER_CONFIG)
    component = _load_own_component(source, name, torch_dtype)
    if name == "unet" and source.unet:
        component = load_unet_weights(component.float(), source.unet).to(torch_dtype)
    return component


def _load_own_component(source: Source, name: str, torch_dtype: torch.dtype) -> Any:
    if source.kind == "preset":
        component = PRESETS[source.ref].build_component(name)
        if name in WEIGHT_COMPONENTS and torch_dtype != torch.float32:
            component = component.to(torch_dtype)
        return component
    kwargs: dict[str, Any] = {"subfolder": name}
    if source.kind == "hub" and source.revision:
        kwargs["revision"] = source.revision
    if name in WEIGHT_COMPONENTS:
        kwargs["torch_dtype"] = torch_dtype
        if source.variant:
            kwargs["variant"] = source.variant
    # A Hub that is down or offline surfaces as OSError, httpx or even RuntimeError ("client has been closed"),
    # so for Hub sources every Exception becomes the one-line error; local folders fail with OSError/ValueError.
    expected = Exception if source.kind == "hub" else (OSError, ValueError)
    component_class = SVDConsistencyScheduler if name == "scheduler" and source.own_sampler == "consistency" else COMPONENTS[name]
    try:
        component = component_class.from_pretrained(source.component_location(name), **kwargs)
    except expected as exc:
        where = "the Hugging Face Hub" if source.kind == "hub" else "the local folder"
        first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise SvdtoolError(f"could not load {name} of {source.ref!r} from {where} (tried {name}/ there): {first_line}") from exc
    return component.eval() if name in WEIGHT_COMPONENTS else component


def load_pipeline(source: Source | str, torch_dtype: torch.dtype = torch.float32) -> StableVideoDiffusionPipeline:
    """Build diffusers' `StableVideoDiffusionPipeline` — the PyTorch reference — from any source."""
    source = resolve_source(source) if isinstance(source, str) else source
    parts = {name: load_component(source, name, torch_dtype) for name in COMPONENTS}
    return StableVideoDiffusionPipeline(**parts)


def component_config(source: Source, name: str) -> dict[str, Any]:
    """A torch component's full config (its class's defaults filled in), read without loading any weights."""
    cls = COMPONENTS[name]
    if source.kind == "preset":
        config = dict(getattr(PRESETS[source.ref], name))
    elif source.kind == "hub":
        try:
            config = cls.load_config(source.ref, subfolder=name, revision=source.revision) if name != "image_encoder" \
                else cls.config_class.from_pretrained(source.ref, subfolder=name, revision=source.revision).to_dict()
        except Exception as exc:  # network, auth and naming errors come as many types; see load_component
            raise SvdtoolError(f"could not read the {name} config of {source.ref!r} from the Hugging Face Hub: "
                               f"{str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__}") from exc
    else:
        path = Path(source.component_location(name)) / name / "config.json"
        if not path.is_file():
            raise SvdtoolError(f"{path} is missing: {source.ref} is not a complete diffusers SVD folder")
        config = json.loads(path.read_text())
    if name == "image_encoder":
        return {**cls.config_class().to_dict(), **config}
    defaults = {key: value.default for key, value in inspect.signature(cls.__init__).parameters.items()
                if value.default is not inspect.Parameter.empty}
    return {**defaults, **config}


def size_multiple(unet_config: dict[str, Any], vae_config: dict[str, Any]) -> int:
    """What height and width must be multiples of: the VAE's downscale times the UNet's (2 per down block but the
    last), as diffusers' UNet requires: 8 x 8 = 64 for SVD, 8 x 4 = 32 for svd-mini's three-level UNet."""
    return 2 ** (len(vae_config["block_out_channels"]) - 1) * 2 ** (len(unet_config["down_block_types"]) - 1)


def generation_defaults(source: Source) -> GenerationDefaults:
    """Default settings: the named model's own, svd-mini's for a folder that `train_mini` wrote (its training.json
    says so: SVD's 576x1024 would take such a model minutes a video), else SVD's (576x1024, 25 steps) with the UNet's
    frame count; the sampler's steps and guidance over them (a consistency sampler: 4 steps, guidance 1.0 to 1.2; a
    named model keeps its own with its own sampler: mini-lcm's guidance is distilled in); and
    the size multiple, from the configs (nothing is loaded)."""
    unet_config = component_config(source, "unet")
    multiple = size_multiple(unet_config, component_config(source, "vae"))
    if source.kind in ("preset", "builtin"):
        defaults = (PRESETS if source.kind == "preset" else BUILTIN_MODELS)[source.ref].defaults
    elif source.kind == "folder" and _trained_mini(Path(source.location)):
        defaults = BUILTIN_MODELS["mini"].defaults
    else:
        defaults = GenerationDefaults(num_frames=int(unet_config.get("num_frames", 14)), height=576, width=1024,
                                      num_inference_steps=25, decode_chunk_size=8)
    own = source.kind == "builtin" and source.sampler_name == source.own_sampler  # a named model's defaults suit its sampler
    return replace(defaults, size_multiple=multiple, **({} if own else SAMPLERS[source.sampler_name].defaults()))


def _trained_mini(folder: Path) -> bool:
    record = folder / "training.json"
    try:
        return record.is_file() and json.loads(record.read_text()).get("model") == "svd-mini"
    except (OSError, ValueError, AttributeError):
        return False
