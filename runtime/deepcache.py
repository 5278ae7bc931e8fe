"""DeepCache in the OpenVINO runtime: per denoising step, the full UNet (which refreshes branch K's cached feature) or
the shallow one (which reuses it). The UNet part of `OVStableVideoDiffusionPipeline` hands each call here, inside
diffusers' own `__call__`; both guidance halves travel in one batch, so they always share one decision and one cache.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import openvino as ov

from svdtool.errors import SvdtoolError
from svdtool.memory import drop_mapped_files

from .parts import OV_XML

CACHED_FEATURE = "cached_feature"
SCHEDULES = ("uniform", "front")


@dataclass(frozen=True)
class DeepCacheSettings:
    """`interval` N: a full UNet every N steps (1: DeepCache off); `branch` K: which skip branch is cached;
    `schedule` "uniform" (steps 0, N, 2N, ...) or "front" (full steps denser at the start, where the sample changes
    most: the same number of full steps as uniform, spaced by growing gaps)."""

    interval: int = 1
    branch: int = 0
    schedule: str = "uniform"

    def check(self) -> None:
        if self.interval < 1:
            raise SvdtoolError(f"--cache-interval {self.interval} is not possible: use 1 (no caching) or more")
        if self.branch < 0:
            raise SvdtoolError(f"--cache-branch {self.branch} is not possible: use 0 or more")
        if self.schedule not in SCHEDULES:
            raise SvdtoolError(f"--cache-schedule must be one of {', '.join(SCHEDULES)}, not {self.schedule!r}")

    @property
    def enabled(self) -> bool:
        return self.interval > 1

    def full_steps(self, num_steps: int) -> set[int]:
        """The steps that run the full UNet; step 0 always does (there is nothing cached before it)."""
        count = len(range(0, num_steps, self.interval))
        if self.schedule == "uniform" or count < 2:
            return set(range(0, num_steps, self.interval))
        # "front": gaps grow linearly; step i of `count` sits at (i / count)^1.5 of the run (DeepCache's non-uniform
        # variant concentrates full steps where the sample changes most).
        return {min(num_steps - 1, round(num_steps * (i / count) ** 1.5)) for i in range(count)}

    def as_dict(self) -> dict[str, Any]:
        return {"interval": self.interval, "branch": self.branch, "schedule": self.schedule}


def check_branch(unet_config: dict, branch: int) -> None:
    """`branch` exists in a UNet of this config: 0 (top level) to levels - 2."""
    levels = len(unet_config["block_out_channels"])
    if not 0 <= branch <= levels - 2:
        raise SvdtoolError(f"--cache-branch {branch} does not exist: this UNet has branches 0-{levels - 2} "
                           "(one per level above its deepest)")


def available_branches(model_dir: Path) -> list[int]:
    folder = Path(model_dir) / "deepcache"
    return sorted(int(path.name.split("_")[1]) for path in folder.glob("branch_*") if (path / "shallow" / OV_XML).is_file())


def check_available(model_dir: Path, settings: DeepCacheSettings) -> None:
    """A cheap check before loading: the folder holds the IRs of the branch asked for."""
    settings.check()
    if not settings.enabled:
        return
    branches = available_branches(model_dir)
    if settings.branch not in branches:
        have = f"it has branches {', '.join(map(str, branches))}" if branches else "it has none"
        raise SvdtoolError(f"--cache-branch {settings.branch}: {model_dir} has no DeepCache IRs for that branch ({have}); "
                           f"export with `svdtool export SOURCE -o DIR --cache-branch {settings.branch}`")


class DeepCacheRunner:
    """Compiled full and shallow UNets of one branch, the cached feature, and a count of each kind of call."""

    def __init__(self, model_dir: Path, settings: DeepCacheSettings, device: str, ov_config: dict[str, Any]):
        self.settings = settings
        self.folder = folder = Path(model_dir) / "deepcache" / f"branch_{settings.branch}"
        # The pipeline parts' own Core (optimum-intel's), so that all compiled models share one CPU plugin and its threads.
        from optimum.intel.openvino.modeling_diffusion import core

        self.core, self.device, self.ov_config = core, device, ov_config
        self.models = {kind: self.core.read_model(folder / kind / OV_XML) for kind in ("full", "shallow")}
        self.exported_shapes = {kind: {port.get_any_name(): port.get_partial_shape() for port in model.inputs}
                                for kind, model in self.models.items()}
        self.compiled: dict[str, ov.CompiledModel] = {}
        self.cached: np.ndarray | None = None
        self.full_steps: set[int] = set()
        self.calls = {"full": 0, "shallow": 0}

    def reshape(self, unet_shapes: dict[str, list[int]]) -> None:
        """Give both IRs the UNet's input shapes (-1 = dynamic); the feature's follow from the sample's."""
        batch, frames, _, height, width = unet_shapes["sample"]
        level = 2 ** self.settings.branch
        channels = self.models["shallow"].input(CACHED_FEATURE).get_partial_shape()[1]
        feature = [batch * frames if batch > 0 and frames > 0 else -1, channels.get_length(),
                   height // level if height > 0 else -1, width // level if width > 0 else -1]
        for kind, model in self.models.items():
            shapes = {**unet_shapes, **({CACHED_FEATURE: feature} if kind == "shallow" else {})}
            model.reshape({name: ov.PartialShape(shape) for name, shape in shapes.items()})
        self.compiled = {}

    def start(self, num_steps: int) -> None:
        """A new video: nothing cached yet."""
        self.cached, self.full_steps = None, self.settings.full_steps(num_steps)

    def compile(self) -> None:
        for kind, model in self.models.items():
            if kind not in self.compiled:
                try:
                    self.compiled[kind] = self.core.compile_model(model, self.device, self.ov_config)
                except RuntimeError:  # a weight-compressed IR that will not compile at static shapes (see pipeline.fit)
                    model.reshape(self.exported_shapes[kind])
                    self.compiled[kind] = self.core.compile_model(model, self.device, self.ov_config)

    def release_memory(self) -> None:
        for compiled in self.compiled.values():
            compiled.release_memory()
        drop_mapped_files(self.folder)

    def __call__(self, inputs: dict[str, Any], step: int) -> np.ndarray:
        self.compile()
        if step in self.full_steps or self.cached is None:
            outputs = self.compiled["full"](inputs)
            self.cached = outputs[1]
            self.calls["full"] += 1
            return outputs[0]
        self.calls["shallow"] += 1
        return self.compiled["shallow"]({**inputs, CACHED_FEATURE: self.cached})[0]
