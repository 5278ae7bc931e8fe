"""How each mode quantizes each component, with nncf (and optimum-intel's hybrid scheme for `hybrid`)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import nncf
import numpy as np
import openvino as ov
from nncf.quantization.advanced_parameters import (
    AdvancedCompressionParameters,
    AdvancedQuantizationParameters,
    AdvancedSmoothQuantParameters,
    GroupSizeFallbackMode,
)

MODES = ("int8", "hybrid", "w8", "w4")


@dataclass(frozen=True)
class QuantizeOptions:
    mode: str = "int8"
    smooth_quant_alpha: float = 0.95
    ignored_scope: tuple[str, ...] = ()  # regex patterns of node names kept in floating point
    w4_group_size: int = 64
    extra: dict[str, Any] = field(default_factory=dict)

    def nncf_parameters(self, component: str) -> dict[str, Any]:
        """What is recorded in the manifest for `component`."""
        method = self.method(component)
        params: dict[str, Any] = {"method": method}
        if method == "nncf.quantize":
            params.update(model_type="transformer", smooth_quant_alpha=self.smooth_quant_alpha, preset="performance")
        elif method == "optimum-intel hybrid":
            params.update(weights="int8_asym on MatMul/Gather", activations="int8 on the remaining ops", smooth_quant_alpha=-1)
        else:
            params.update(self._weight_mode(component))
        if self.ignored_scope:
            params["ignored_scope"] = list(self.ignored_scope)
        return params

    def method(self, component: str) -> str:
        if component == "unet" and self.mode == "int8":
            return "nncf.quantize"
        if component == "unet" and self.mode == "hybrid":
            return "optimum-intel hybrid"
        return "nncf.compress_weights"

    def _weight_mode(self, component: str) -> dict[str, Any]:
        if self.mode == "w4":
            return {"mode": "int4_sym", "group_size": self.w4_group_size, "ratio": 1.0, "all_layers": True,
                    "group_size_fallback": "adjust (min 32)", "backup": "int8_asym"}
        return {"mode": "int8_asym"}


def quantize_component(name: str, model: ov.Model, samples: list[dict[str, np.ndarray]], options: QuantizeOptions) -> ov.Model:
    """Quantize one component's IR in the way `options.mode` prescribes for it."""
    ignored = nncf.IgnoredScope(patterns=list(options.ignored_scope), validate=False) if options.ignored_scope else None
    method = options.method(name)
    if method == "nncf.quantize":
        return nncf.quantize(
            model,
            nncf.Dataset(samples),
            model_type=nncf.ModelType.TRANSFORMER,
            preset=nncf.QuantizationPreset.PERFORMANCE,
            subset_size=len(samples),
            ignored_scope=ignored,
            advanced_parameters=AdvancedQuantizationParameters(
                smooth_quant_alphas=AdvancedSmoothQuantParameters(matmul=options.smooth_quant_alpha)
            ),
        )
    if method == "optimum-intel hybrid":
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
    rather than re-implementing them."""
    from optimum.intel import OVWeightQuantizationConfig
    from optimum.intel.openvino.quantization import _get_hybrid_mixed_quantization_config, _mixed_quantization

    config = OVWeightQuantizationConfig(
        bits=8, num_samples=len(samples),
        ignored_scope={"patterns": list(options.ignored_scope)} if options.ignored_scope else None,
    )
    return _mixed_quantization(model, _get_hybrid_mixed_quantization_config(model, config), nncf.Dataset(samples))
