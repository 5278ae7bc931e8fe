"""`--speed exact|balanced|fast`: one flag for how many denoising steps a run takes, each preset measured on svd-mini
with `svdtool validate` against the exact PyTorch run (bench/speed_ladder.py, docs/speed.md).

A preset sets the steps as a share of the model's default (SVD's Euler sampler); `--steps` wins over it. What the IR
holds (INT8, ToDo's `export --kv-downsample`) stacks with any preset. DeepCache is no part of a preset: at fewer steps
its reused features moved svd-mini's motion beyond validate's limits (docs/speed.md), and it stays its own option.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

from svdtool.errors import SvdtoolError


@dataclass(frozen=True)
class SpeedPreset:
    name: str
    step_fraction: float  # of the model's default denoising steps (rounded, at least 1)

    def steps(self, default_steps: int) -> int:
        return max(1, round(default_steps * self.step_fraction))

    def applied(self, exact: Any) -> Any:
        """Resolved exact `GenerationSettings` at this preset (validate runs the reference at `exact`, the IR at this)."""
        return replace(exact, num_inference_steps=self.steps(exact.num_inference_steps), speed=self.name)


SPEEDS: dict[str, SpeedPreset] = {preset.name: preset for preset in (
    SpeedPreset("exact", 1.0), SpeedPreset("balanced", 0.6), SpeedPreset("fast", 0.4))}


def speed_preset(name: str) -> SpeedPreset:
    if name not in SPEEDS:
        raise SvdtoolError(f"--speed must be one of {', '.join(SPEEDS)}, not {name!r}")
    return SPEEDS[name]
