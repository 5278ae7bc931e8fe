"""How each mode quantizes each component, with nncf (and optimum-intel's hybrid scheme for `hybrid`).

The int8 recipe is measured (bench/quantize_recipe.py, svd-mini, SNR of the sampler's denoised estimate vs the FP
UNet on held-out photos): nncf's defaults give 26.6 dB mean / 9.3 dB worst call; keeping `UNET_FLOAT_LAYERS` in float
and calibrating on 64 samples gives 48.8 / 35.8 dB, at a negligible share of the UNet's FLOPs.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import nncf
import numpy as np
import openvino as ov
from nncf.quantization.advanced_parameters import (
    AdvancedCompressionParameters,
    AdvancedQuantizationParameters,
    AdvancedSmoothQuantParameters,
    GroupSizeFallbackMode,
    OverflowFix,
)

from svdtool import logs

logs.adopt("nncf", "torch")
MODES = ("int8", "hybrid", "w8", "w4")
# 8-bit dot products without VNNI (AVX2, AVX-512 without VNNI) accumulate pairs in 16 bits and can saturate; nncf's
# overflow fix quantizes weights to 7 bits so they cannot. Measured on svd-mini's UNet: with the fix on every layer,
# a CPU without VNNI gives the same result as one with VNNI (20.0 dB both); without it, 6-8 dB worse.
CPU_TARGETS = {
    "any": {"overflow_fix": OverflowFix.ENABLE, "runs_accurately_on": "every x86 CPU OpenVINO supports (AVX2, AVX-512, VNNI, AMX)"},
    "vnni": {"overflow_fix": OverflowFix.DISABLE, "runs_accurately_on": "CPUs with VNNI or AMX only (AVX512-VNNI, AVX-VNNI, AMX)"},
}
# UNet layer classes, most harmful to quantize first (bench/quantize_recipe.py, svd-mini, denoised-estimate SNR): the
# time and added-time embeddings (per-tensor ranges across timesteps: the worst step 9 → 19 dB in float), the
# cross-attention on the single CLIP token (its output is the image conditioning: +9 dB mean with the others), the
# first and last convolutions (+3.5 dB on early steps) and the embedding's projection into every resnet. --mode int8
# keeps these four in float (26.6 → 48.8 dB mean); --accuracy-target may keep more of them, in this order.
UNET_LAYER_CLASSES = {
    "time embeddings": (".*time_embedding.*", ".*add_embedding.*"),
    "cross-attention": (".*attn2.*",),
    "first and last convolutions": (".*conv_in.*", ".*conv_out.*"),
    "time-embedding projections": (".*time_emb_proj.*",),
    "self-attention": (".*attn1.*",),
    "feed-forward": (".*\\.ff\\..*",),
    "transformer projections": (".*proj_in.*", ".*proj_out.*"),
    "resnet convolutions": (".*resnets.*conv.*",),
    "down- and upsampling convolutions": (".*samplers.*",),  # with all classes in float, nothing is quantized
}
DEFAULT_FLOAT_CLASSES = 4
UNET_FLOAT_LAYERS = tuple(p for patterns in list(UNET_LAYER_CLASSES.values())[:DEFAULT_FLOAT_CLASSES] for p in patterns)
ACTIVATION_MODES = ("int8", "hybrid")  # the modes whose int8 kernels see int8 activations (and can saturate)
STATISTICS_PER_PASS = 200  # nncf statistic points per statistics model (see quantize_unet_stepwise)


@dataclass(frozen=True)
class QuantizeOptions:
    mode: str = "int8"
    target_cpu: str = "any"  # "any" (portable) or "vnni"
    smooth_quant_alpha: float = 0.95
    ignored_scope: tuple[str, ...] = ()  # more regex patterns of node names kept in floating point
    w4_group_size: int = 64

    def overflow_fix(self) -> OverflowFix:
        return CPU_TARGETS[self.target_cpu]["overflow_fix"]

    def float_op_types(self) -> list[str]:
        """Op types kept in float in the int8 UNet. For `any`: attention (its score and value products multiply two
        activations, so no 7-bit weight can keep them from saturating; measured on tiny, the UNet output of a CPU
        without VNNI, emulated, was 27.9 dB from a VNNI CPU's with them in int8)."""
        return ["ScaledDotProductAttention"] if self.target_cpu == "any" else []

    def unet_float_layers(self) -> list[str]:
        return [*(UNET_FLOAT_LAYERS if self.mode == "int8" else ()), *self.ignored_scope]

    def nncf_parameters(self, component: str) -> dict[str, Any]:
        """What is recorded in the manifest for `component`."""
        method = self.method(component)
        params: dict[str, Any] = {"method": method}
        if method == "nncf.quantize":
            params.update(model_type="transformer", smooth_quant_alpha=self.smooth_quant_alpha, preset="performance",
                          overflow_fix=self.overflow_fix().value, kept_in_float=self.unet_float_layers(),
                          op_types_kept_in_float=self.float_op_types())
        elif method == "optimum-intel hybrid":
            params.update(weights="int8_asym on MatMul/Gather", activations="int8 on the remaining ops", smooth_quant_alpha=-1,
                          overflow_fix=self.overflow_fix().value)
        else:
            params.update(self._weight_mode())
        if self.ignored_scope and method != "nncf.quantize":
            params["ignored_scope"] = list(self.ignored_scope)
        return params

    @property
    def data_free(self) -> bool:
        """Weight-only modes (w8, w4): nncf.compress_weights on every component, no calibration data to record."""
        return self.method("unet") == "nncf.compress_weights"

    def method(self, component: str) -> str:
        if component == "unet" and self.mode == "int8":
            return "nncf.quantize"
        if component == "unet" and self.mode == "hybrid":
            return "optimum-intel hybrid"
        return "nncf.compress_weights"

    def _weight_mode(self) -> dict[str, Any]:
        if self.mode == "w4":
            return {"mode": "int4_sym", "group_size": self.w4_group_size, "ratio": 1.0, "all_layers": True,
                    "group_size_fallback": "adjust (min 32)", "backup": "int8_asym"}
        return {"mode": "int8_asym"}

    def cpu_requirement(self) -> dict[str, str]:
        """What the IR assumes of the CPU that runs it (recorded in the manifest and model card)."""
        if self.mode not in ACTIVATION_MODES:
            return {"target_cpu": "any", "runs_accurately_on": CPU_TARGETS["any"]["runs_accurately_on"],
                    "why": "weight-only compression: activations stay in float, nothing can saturate"}
        return {"target_cpu": self.target_cpu, "runs_accurately_on": CPU_TARGETS[self.target_cpu]["runs_accurately_on"],
                "overflow_fix": self.overflow_fix().value}


def quantize_component(name: str, model_xml: Path, samples: list[dict[str, np.ndarray]], options: QuantizeOptions,
                       scratch: Path, compress_to_fp16: bool, float_layers: list[str] | None = None) -> ov.Model:
    """Quantize one component's IR in the way `options.mode` prescribes for it. The int8 UNet (or a DeepCache UNet)
    goes through `quantize_unet_stepwise` with `float_layers` (default UNET_FLOAT_LAYERS) in float, using `scratch`,
    which must outlive the returned model (its float weights are read from there)."""
    with logs.library_progress_hidden():
        if options.method(name) == "nncf.quantize":
            layers = list(UNET_FLOAT_LAYERS if float_layers is None else float_layers)
            return quantize_unet_stepwise(model_xml, samples, options, layers, scratch, compress_to_fp16)
        return _quantize_component(name, ov.Core().read_model(model_xml), samples, options)


def unet_int8_parameters(samples: int, options: QuantizeOptions, float_layers: list[str]) -> dict[str, Any]:
    """nncf.quantize's arguments for the UNet in --mode int8, with `float_layers` (regex patterns) kept in float (the
    pipeline `quantize_unet_stepwise` runs is nncf's for these arguments)."""
    return dict(
        subset_size=samples, model_type=nncf.ModelType.TRANSFORMER, preset=nncf.QuantizationPreset.PERFORMANCE,
        ignored_scope=nncf.IgnoredScope(patterns=[*float_layers, *options.ignored_scope], types=options.float_op_types(),
                                        validate=False),
        advanced_parameters=AdvancedQuantizationParameters(
            overflow_fix=options.overflow_fix(),
            smooth_quant_alphas=AdvancedSmoothQuantParameters(matmul=options.smooth_quant_alpha),
        ),
    )


def quantize_unet_stepwise(model_xml: Path, samples: list[dict[str, np.ndarray]], options: QuantizeOptions,
                           float_layers: list[str], scratch: Path, compress_to_fp16: bool,
                           statistics_per_pass: int = STATISTICS_PER_PASS) -> ov.Model:
    """nncf.quantize's own post-training pipeline (SmoothQuant, then MinMax + FastBiasCorrection) with its peak memory
    cut, through nncf's Pipeline API (nncf has no option for either; the algorithms, statistics and transformations
    are nncf's). Measured on svd-xt (bench/results/quantize_memory_svd-xt_*.md), where one call peaked at 23.3 GB RSS:
    - each step's statistics are collected `statistics_per_pass` points at a time: the f32 statistics model with all
      731 MinMax points of svd-xt's UNet took 19.4 GB, a quarter of them at a time 14.3 GB;
    - the model is saved and read back between the steps, in the source IR's precision (`compress_to_fp16` for an
      fp16 IR, as the final IR is saved): SmoothQuant's working state goes, its weights become file pages again.
    With an f32 IR the result equals nncf.quantize's bit for bit (tests/test_quantize.py)."""
    from nncf.common.factory import build_graph
    from nncf.common.tensor_statistics.statistic_point import StatisticPointsContainer
    from nncf.openvino.graph.model_utils import remove_friendly_name_duplicates
    from nncf.quantization.algorithms.pipeline import collect_statistics
    from nncf.quantization.algorithms.post_training.pipeline import create_ptq_pipeline
    from openvino._offline_transformations import compress_quantize_weights_transformation

    from svdtool.memory import release_memory

    def container(points: list) -> StatisticPointsContainer:
        result = StatisticPointsContainer()
        for point in points:
            result.add_statistic_point(point)
        return result

    scratch.mkdir(parents=True, exist_ok=True)
    pipeline = create_ptq_pipeline(**unet_int8_parameters(len(samples), options, float_layers))
    dataset = nncf.Dataset(samples)
    model = remove_friendly_name_duplicates(ov.Core().read_model(model_xml))
    with logs.library_progress_hidden():
        for step in range(len(pipeline.pipeline_steps)):
            if step:
                ov.save_model(model, scratch / f"step{step}.xml", compress_to_fp16=compress_to_fp16)
                del model
                release_memory()
                model = ov.Core().read_model(scratch / f"step{step}.xml")
            graph = build_graph(model)
            points = [p for group in pipeline.get_statistic_points_for_step(step, model, graph).values() for p in group]
            passes = max(1, -(-len(points) // statistics_per_pass))
            for part in range(passes):  # each point keeps what it collected
                collect_statistics(container(points[part::passes]), model, graph, dataset)
                release_memory()
            model = pipeline.run_step(step, container(points), model, graph)
            del graph, points
            release_memory()
    compress_quantize_weights_transformation(model)
    return model


def _quantize_component(name: str, model: ov.Model, samples: list[dict[str, np.ndarray]], options: QuantizeOptions) -> ov.Model:
    ignored = nncf.IgnoredScope(patterns=list(options.ignored_scope), validate=False) if options.ignored_scope else None
    if options.method(name) == "optimum-intel hybrid":
        return _hybrid(model, samples, options)
    if options.mode == "w4":
        return nncf.compress_weights(
            model, mode=nncf.CompressWeightsMode.INT4_SYM, group_size=options.w4_group_size, ratio=1.0,
            ignored_scope=ignored, all_layers=True,
            # Layers whose input channels the group does not divide get a smaller group (≥ 32), else int8.
            advanced_parameters=AdvancedCompressionParameters(group_size_fallback_mode=GroupSizeFallbackMode.ADJUST),
        )
    return nncf.compress_weights(model, mode=nncf.CompressWeightsMode.INT8_ASYM, ignored_scope=ignored)


def _hybrid(model: ov.Model, samples: list[dict[str, np.ndarray]], options: QuantizeOptions) -> ov.Model:
    """optimum-intel's hybrid scheme for diffusion UNets: int8 weights on MatMul/Embedding layers, full int8
    quantization (weights + activations) of the other layers. Its functions are private, so we import them here
    rather than re-implementing them; its activation config defaults to no overflow fix, so we set ours."""
    from optimum.intel import OVWeightQuantizationConfig
    from optimum.intel.openvino.quantization import _get_hybrid_mixed_quantization_config, _mixed_quantization

    config = _get_hybrid_mixed_quantization_config(model, OVWeightQuantizationConfig(
        bits=8, num_samples=len(samples),
        ignored_scope={"patterns": list(options.ignored_scope)} if options.ignored_scope else None,
    ))
    config.full_quantization_config.overflow_fix = options.overflow_fix().value
    return _mixed_quantization(model, config, nncf.Dataset(samples))
