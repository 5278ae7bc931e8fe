"""`export()`: SVD components → OpenVINO IR in optimum-intel's diffusion folder layout, one component at a time."""

from __future__ import annotations

import gc
import json
from dataclasses import replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import openvino as ov
import torch
from diffusers import StableVideoDiffusionPipeline

from svdtool.console import console, progress_task
from svdtool.errors import SvdtoolError
from svdtool.memory import PeakRSS
from svdtool.models import SAMPLERS, Source, component_config, generation_defaults, load_component, resolve_source
from svdtool.models.decoders import (check_decoder_fits, check_decoder_spec, context_frames, describe_decoder, latent_scale,
                                     load_tiny_decoder)
from svdtool.outputs import atomic_output_dir, write_manifest

from svdtool.runtime.deepcache import CACHED_FEATURE, check_branch

from .deepcache import DeepCacheFullWrapper, DeepCacheShallowWrapper, feature_channels
from .fold import CROSS_ATTENTION_MODES, fold_cross_attention
from .tokens import KV_DOWNSAMPLE_FACTORS, downsample_top_level_keys
from .wrappers import (
    ExportShape,
    ImageEncoderWrapper,
    TinyDecoderWrapper,
    UnetWrapper,
    VaeDecoderWrapper,
    VaeEncoderWrapper,
    example_inputs,
    input_shapes,
)

OV_XML = "openvino_model.xml"
# Exported in this order: the VAE is loaded once for its two halves, the UNet (largest) comes last.
EXPORTED = ("image_encoder", "vae_encoder", "vae_decoder", "unet")
OUTPUT_NAMES = {
    "image_encoder": "image_embeds",
    "vae_encoder": "latent_parameters",
    "vae_decoder": "sample",
    "unet": "out_sample",
}
FLOAT_IR_CPU_REQUIREMENT = {"target_cpu": "any", "runs_accurately_on": "every x86 CPU OpenVINO supports",
                            "why": "float weights and activations"}
_WRAPPERS = {
    "image_encoder": ImageEncoderWrapper,
    "vae_encoder": VaeEncoderWrapper,
    "vae_decoder": VaeDecoderWrapper,
    "unet": UnetWrapper,
}
# Tracing shape for dynamic IRs: small (64 px or the model's size multiple, 2 frames), so tracing needs little memory;
# every dimension is dynamic afterwards.
TRACE_SIZE, TRACE_FRAMES = 64, 2


def export(
    source: Source | str,
    out_dir: str | Path,
    *,
    weights: str = "fp16",
    shape: ExportShape | None = None,
    via: str = "openvino",
    overwrite: bool = False,
    cache_branches: tuple[int, ...] = (),
    cross_attention: str = "folded",
    kv_downsample: int = 1,
    vae_decoder: str | None = None,
) -> dict[str, Any]:
    """Export image encoder, VAE encoder, VAE temporal decoder and UNet of `source` to `out_dir`.

    `weights` is "fp16" (compressed on save) or "fp32"; `shape` with `static=True` bakes one shape in; `via`
    "onnx" goes torch → ONNX → OpenVINO and keeps the ONNX files under `onnx/`. Each of `cache_branches` adds
    DeepCache's pair of UNet IRs for that branch under `deepcache/branch_K/` (see deepcache.py). `cross_attention`
    "folded" (exact, see fold.py) replaces the UNet's single-key cross-attention by its value projection; "full" traces
    it as diffusers computes it. `kv_downsample` above 1 gives the top level's spatial self-attention keys and values
    from every k-th token row and column (ToDo, tokens.py: approximate, faster at large sizes). `vae_decoder`, an
    AutoencoderTiny folder or Hub id (models/decoders.py), replaces the temporal VAE decoder (approximate, much
    cheaper). Returns the manifest.
    """
    if weights not in ("fp16", "fp32"):
        raise SvdtoolError(f"--weights must be fp16 or fp32, not {weights!r}")
    if via not in ("openvino", "onnx"):
        raise SvdtoolError(f"--via must be openvino or onnx, not {via!r}")
    if cross_attention not in CROSS_ATTENTION_MODES:
        raise SvdtoolError(f"--cross-attention must be one of {', '.join(CROSS_ATTENTION_MODES)}, not {cross_attention!r}")
    if kv_downsample not in KV_DOWNSAMPLE_FACTORS:
        raise SvdtoolError(f"--kv-downsample must be one of {', '.join(map(str, KV_DOWNSAMPLE_FACTORS))} (1 = exact), not {kv_downsample}")
    source = resolve_source(source)
    if vae_decoder is not None:
        vae_decoder = check_decoder_spec(vae_decoder)
        check_decoder_fits(vae_decoder, component_config(source, "vae"))
    cache_branches = tuple(sorted(set(cache_branches)))
    if cache_branches:
        if via != "openvino" or (shape is not None and shape.static):
            raise SvdtoolError("--cache-branch works with dynamic IRs exported via openvino")
        if source.sampler_name != "euler":
            raise SvdtoolError(f"--cache-branch does not go with the {source.sampler_name} sampler: DeepCache reuses deep features "
                               "between adjacent steps, and its few steps jump far apart in noise level (σ 700 → 0.002 in 4)")
        for branch in cache_branches:
            check_branch(component_config(source, "unet"), branch)
    defaults = generation_defaults(source)
    vae_scale = 2 ** (len(component_config(source, "vae")["block_out_channels"]) - 1)
    if shape is not None and shape.static:
        check_shape(shape.height, shape.width, shape.num_frames, defaults.size_multiple)
        trace_shape = replace(shape, vae_scale=vae_scale)
    else:
        size = max(TRACE_SIZE, defaults.size_multiple)
        trace_shape = ExportShape(size, size, TRACE_FRAMES, vae_scale=vae_scale)
    components: dict[str, Any] = {}
    console.print(f"Exporting {source.label()} → {out_dir} ({weights} weights, via {via})")
    with atomic_output_dir(Path(out_dir), overwrite) as tmp, progress_task("export", len(EXPORTED)) as advance:
        torch_parts: dict[str, Any] = {}
        for name in EXPORTED:
            module_name = "vae" if name.startswith("vae") else name
            with PeakRSS() as peak:
                if module_name not in torch_parts:
                    torch_parts[module_name] = load_component(source, module_name)
                module = torch_parts[module_name]
                config = _component_config(module_name, module)
                if name == "unet":
                    folded = fold_cross_attention(module) if cross_attention == "folded" else 0
                    downsampled = downsample_top_level_keys(module, kv_downsample)
                if name == "vae_decoder" and vae_decoder is not None:
                    tiny = load_tiny_decoder(vae_decoder)
                    context = context_frames(tiny.config.latent_channels, config["latent_channels"])
                    tiny_record = describe_decoder(vae_decoder, latent_scale(tiny, config), context)
                    ov_model = _convert(name, TinyDecoderWrapper(tiny, tiny_record["latent_scale"], context), trace_shape,
                                        config, via, tmp)
                    del tiny
                else:
                    ov_model = _convert(name, _WRAPPERS[name](module), trace_shape, config, via, tmp)
                if name == "unet":
                    deepcache = _export_deepcache(module, cache_branches, trace_shape, config, tmp, weights)
                if name in ("image_encoder", "vae_decoder", "unet"):
                    torch_parts.pop(module_name)  # release torch weights as soon as they are converted
                    del module
                    gc.collect()
                _save_component(tmp / name, ov_model, config, weights)
                info = _describe_model(ov_model)
                del ov_model
                gc.collect()
            components[name] = {**info, "weights": weights, "export_seconds": round(peak.seconds, 2), "peak_rss_gb": round(peak.peak_gb, 3)}
            console.print(f"  {name}: {peak.seconds:.1f} s, peak RSS {peak.peak_gb:.2f} GB")
            advance()
        scheduler = load_component(source, "scheduler")
        scheduler.save_pretrained(tmp / "scheduler")
        load_component(source, "feature_extractor").save_pretrained(tmp / "feature_extractor")
        _write_model_index(tmp, scheduler)
        manifest = write_manifest(
            tmp,
            {
                "format": "svdtool-openvino-ir",
                "stage": "export",
                "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
                "source": source.describe(),
                "weights": weights,
                "via": via,
                "shape": {"static": bool(shape and shape.static), **(vars(trace_shape) if shape and shape.static else {})},
                "generation_defaults": defaults.as_dict(),
                "sampler": SAMPLERS[source.sampler_name].describe(scheduler),
                "attention": {
                    "cross_attention": cross_attention, "cross_attention_layers_folded": folded,
                    "kv_downsample": kv_downsample, "kv_downsampled_layers": downsampled,
                    "why": "cross-attention sees one key (the image embedding): softmax is 1, so attn2 = to_out(to_v(context)) "
                           "exactly; kv_downsample k > 1: the top level's spatial self-attention takes its keys and values "
                           "from every k-th token row and column (ToDo, approximate)"},
                "vae_decoder": tiny_record if vae_decoder is not None else {
                    "name": "temporal", "why": "the source's own VAE decoder, mixing the frames of each chunk"},
                "cpu_requirement": FLOAT_IR_CPU_REQUIREMENT,
                "components": components,
                **({"deepcache": deepcache} if cache_branches else {}),
            },
        )
    return manifest


def check_shape(height: int, width: int, num_frames: int, size_multiple: int = 64) -> None:
    """Sizes must be multiples of the model's VAE downscale times its UNet's (64 for SVD)."""
    for label, value in (("height", height), ("width", width)):
        if value <= 0 or value % size_multiple:
            raise SvdtoolError(f"{label}={value} is not possible for this model: use a positive multiple of {size_multiple}")
    if num_frames < 1:
        raise SvdtoolError(f"frames={num_frames} is not possible: use 1 or more")


def _component_config(module_name: str, module: Any) -> dict[str, Any]:
    config = module.config.to_dict() if module_name == "image_encoder" else dict(module.config)
    if module_name == "unet":
        config.setdefault("time_cond_proj_dim", None)  # optimum-intel's UNet part asks for it (SVD has none)
    return json.loads(json.dumps(config, default=list))


def _convert(name: str, wrapper: torch.nn.Module, shape: ExportShape, config: dict, via: str, tmp: Path) -> ov.Model:
    """Component `name` through its wrapper (wrappers.py) as an OpenVINO model, inputs and output named as the runtime
    feeds them."""
    wrapper = wrapper.eval()
    example = example_inputs(name, shape, config)
    shapes = input_shapes(name, shape, config)
    with torch.no_grad():
        if via == "onnx":
            ov_model = ov.convert_model(_to_onnx(name, wrapper, example, shapes, tmp))
        else:
            ov_model = ov.convert_model(
                wrapper,
                example_input=example,
                input=[(key, ov.PartialShape(value), ov.Type.f32) for key, value in shapes.items()],
            )
    for port, key in zip(ov_model.inputs, shapes):
        port.get_tensor().set_names({key})
    ov_model.outputs[0].get_tensor().set_names({OUTPUT_NAMES[name]})
    return ov_model


def _export_deepcache(unet: Any, cache_branches: tuple[int, ...], shape: ExportShape, config: dict, tmp: Path,
                      weights: str) -> dict[str, Any]:
    """DeepCache's full and shallow UNet IRs per branch, dynamic like the UNet, with what each recomputes."""
    example = example_inputs("unet", shape, config)
    shapes = input_shapes("unet", shape, config)
    levels = len(config["block_out_channels"])
    described: dict[str, Any] = {}
    for branch in cache_branches:
        full_wrapper, shallow_wrapper = DeepCacheFullWrapper(unet, branch).eval(), DeepCacheShallowWrapper(unet, branch).eval()
        with torch.no_grad():
            feature = full_wrapper(**example)[1]
            full = ov.convert_model(full_wrapper, example_input=example,
                                    input=[(key, ov.PartialShape(value), ov.Type.f32) for key, value in shapes.items()])
            shallow_shapes = {**shapes, CACHED_FEATURE: [-1, feature.shape[1], -1, -1]}
            shallow = ov.convert_model(shallow_wrapper, example_input={**example, CACHED_FEATURE: feature},
                                       input=[(key, ov.PartialShape(value), ov.Type.f32) for key, value in shallow_shapes.items()])
        for model, names in ((full, shapes), (shallow, shallow_shapes)):
            for port, key in zip(model.inputs, names):
                port.get_tensor().set_names({key})
            model.outputs[0].get_tensor().set_names({OUTPUT_NAMES["unet"]})
        full.outputs[1].get_tensor().set_names({CACHED_FEATURE})
        folder = tmp / "deepcache" / f"branch_{branch}"
        _save_component(folder / "full", full, config, weights)
        _save_component(folder / "shallow", shallow, config, weights)
        described[str(branch)] = {
            "cached_feature": f"the input of up_blocks[{levels - 1 - branch}]: {feature_channels(config, branch)} channels at "
                              f"1/{2 ** branch} of the latent size",
            "shallow_recomputes": f"conv_in, down_blocks[0..{branch}] (the last without its downsampler), "
                                  f"up_blocks[{levels - 1 - branch}..{levels - 1}], conv_out",
            "why": "the deep features change little between adjacent denoising steps (DeepCache): full steps refresh "
                   "them, steps in between reuse them and run only the shallow blocks",
            "full": _describe_model(full), "shallow": _describe_model(shallow),
        }
        del full, shallow
        gc.collect()
    return {"branches": described}


def _to_onnx(name: str, wrapper: torch.nn.Module, example: dict, shapes: dict, tmp: Path) -> Path:
    path = tmp / "onnx" / name / "model.onnx"
    path.parent.mkdir(parents=True, exist_ok=True)
    dynamic_axes = {key: {dim: f"{key}_{dim}" for dim, size in enumerate(value) if size == -1} for key, value in shapes.items()}
    try:
        torch.onnx.export(
            wrapper,
            tuple(example.values()),
            str(path),
            input_names=list(example),
            output_names=[OUTPUT_NAMES[name]],
            dynamic_axes={k: v for k, v in dynamic_axes.items() if v},
            opset_version=17,
            dynamo=False,
        )
    except Exception as exc:  # the exporter's failures are many types; report the component and the reason
        raise SvdtoolError(f"torch.onnx.export failed for {name}: {str(exc).strip().splitlines()[0]}") from exc
    return path


def _save_component(folder: Path, ov_model: ov.Model, config: dict, weights: str) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    ov.save_model(ov_model, folder / OV_XML, compress_to_fp16=weights == "fp16")
    (folder / "config.json").write_text(json.dumps(config, indent=2))


def _describe_model(ov_model: ov.Model) -> dict[str, Any]:
    return {
        "inputs": {port.get_any_name(): str(port.get_partial_shape()) for port in ov_model.inputs},
        "outputs": {port.get_any_name(): str(port.get_partial_shape()) for port in ov_model.outputs},
    }


def _write_model_index(folder: Path, scheduler: Any) -> None:
    """model_index.json as diffusers writes it, so the folder loads with optimum-intel's machinery (which imports a
    scheduler's module by the name given here: svdtool's own consistency scheduler loads from svdtool.models)."""
    scheduler_class = type(scheduler)
    library = "diffusers" if scheduler_class.__module__.startswith("diffusers") else "svdtool.models"
    index = {
        "_class_name": StableVideoDiffusionPipeline.__name__,
        "feature_extractor": ["transformers", "CLIPImageProcessor"],
        "image_encoder": ["transformers", "CLIPVisionModelWithProjection"],
        "scheduler": [library, scheduler_class.__name__],
        "unet": ["diffusers", "UNetSpatioTemporalConditionModel"],
        "vae": ["diffusers", "AutoencoderKLTemporalDecoder"],
    }
    (folder / "model_index.json").write_text(json.dumps(index, indent=2))
