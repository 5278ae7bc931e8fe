"""Samplers an SVD UNet runs with: SVD's own Euler, and the consistency sampler of few-step students (AnimateLCM-SVD).

A sampler is a diffusers scheduler (the pipeline's `__call__` is diffusers' and calls `set_timesteps`,
`scale_model_input` and `step`) plus the generation settings it is meant for, recorded in every manifest.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from diffusers import CMStochasticIterativeScheduler, EulerDiscreteScheduler
from diffusers.schedulers.scheduling_consistency_models import CMStochasticIterativeSchedulerOutput


class SVDConsistencyScheduler(CMStochasticIterativeScheduler):
    """diffusers' multistep consistency sampler (Song et al. 2023, Algorithm 1) with SVD's conventions.

    What diffusers' `CMStochasticIterativeScheduler` lacks for an SVD UNet (AnimateLCM, Wang et al. 2024, trains its
    SVD student this way), and nothing more, is overridden here:
    - SVD conditions the UNet on c_noise = 0.25·ln σ, not 1000·0.25·ln σ;
    - SVD's UNet predicts v, so the denoiser is SVD's EDM preconditioning, x₀ = x/(σ²+σ_d²)·σ_d² − σ·σ_d/√(σ²+σ_d²)·F,
      without the σ_min offset of the consistency boundary condition (σ_d = 1 makes it SVD's Euler's);
    - the start noise is scaled by √(σ_max² + 1), as SVD's Euler does;
    - the noise each step adds is drawn in float32 from a generator seeded per video (`reseed`): diffusers' SVD
      pipeline calls `step` without one, and torch versions draw different float16 values from one seed.
    """

    @property
    def init_noise_sigma(self) -> float:
        return (self.config.sigma_max**2 + 1) ** 0.5

    @init_noise_sigma.setter
    def init_noise_sigma(self, _value: float) -> None:  # the parent's __init__ assigns σ_max
        pass

    def sigma_to_t(self, sigmas: Any) -> Any:
        return super().sigma_to_t(sigmas) / 1000

    def set_timesteps(self, *args: Any, **kwargs: Any) -> None:
        super().set_timesteps(*args, **kwargs)
        self.timesteps = self.timesteps.to(torch.float32)  # SVD's Euler hands the UNet float32 timesteps too

    def get_scalings_for_boundary_condition(self, sigma: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        sigma_data = self.config.sigma_data
        c_skip = sigma_data**2 / (sigma**2 + sigma_data**2)
        c_out = -sigma * sigma_data / (sigma**2 + sigma_data**2) ** 0.5
        return c_skip, c_out

    def reseed(self, seed: int) -> None:
        """The generator of the noise `step` adds between steps, for the video of `seed`. Its seed is derived (one LCG
        step), since a generator of `seed` itself would repeat the video's start noise, which is drawn from it."""
        self.noise_generator = torch.Generator("cpu").manual_seed((seed * 6364136223846793005 + 1442695040888963407) % 2**63)

    def step(self, model_output: torch.Tensor, timestep: Any, sample: torch.Tensor, generator: torch.Generator | None = None,
             return_dict: bool = True) -> CMStochasticIterativeSchedulerOutput | tuple:
        generator = generator or getattr(self, "noise_generator", None)
        prev_sample = super().step(model_output.float(), timestep, sample.float(), generator=generator, return_dict=False)[0]
        prev_sample = prev_sample.to(sample.dtype)
        return CMStochasticIterativeSchedulerOutput(prev_sample=prev_sample) if return_dict else (prev_sample,)


@dataclass(frozen=True)
class Sampler:
    """A sampler by name: its scheduler and the steps and guidance it is meant for."""

    name: str
    description: str
    num_inference_steps: int | None  # None: the model's own default
    min_guidance_scale: float | None = None
    max_guidance_scale: float | None = None

    def scheduler(self, euler_config: dict[str, Any]) -> Any:
        if self.name == "euler":
            return EulerDiscreteScheduler.from_config(euler_config)
        return SVDConsistencyScheduler(**CONSISTENCY_CONFIG)

    def defaults(self) -> dict[str, Any]:
        """The generation defaults this sampler sets (the others stay the model's)."""
        values = {"num_inference_steps": self.num_inference_steps, "min_guidance_scale": self.min_guidance_scale,
                  "max_guidance_scale": self.max_guidance_scale}
        return {key: value for key, value in values.items() if value is not None}

    def describe(self, scheduler: Any) -> dict[str, Any]:
        return {"name": self.name, "description": self.description, "scheduler": type(scheduler).__name__,
                "config": {k: v for k, v in dict(scheduler.config).items() if not k.startswith("_")}, **self.defaults()}


# AnimateLCM-SVD-xt's published sampling settings (its scheduler, and OpenVINO's SVD notebook): 40 training steps,
# Karras σ from 0.002 to 700 with ρ 7, σ_data 1, no clipping; 4 steps at guidance 1.0 → 1.2.
CONSISTENCY_CONFIG: dict[str, Any] = {"num_train_timesteps": 40, "sigma_min": 0.002, "sigma_max": 700.0, "sigma_data": 1.0,
                                      "s_noise": 1.0, "rho": 7.0, "clip_denoised": False}
SAMPLERS: dict[str, Sampler] = {
    "euler": Sampler("euler", "SVD's Euler sampler (EDM σ, v-prediction), the model's own steps", None),
    "consistency": Sampler("consistency", "multistep consistency sampler for consistency-distilled UNets (AnimateLCM-SVD)",
                           4, 1.0, 1.2),
}


def sampler_of_scheduler(scheduler_class: str) -> str:
    """The sampler name of a saved scheduler's class."""
    return "consistency" if scheduler_class == SVDConsistencyScheduler.__name__ else "euler"
