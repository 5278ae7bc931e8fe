"""Pass/fail thresholds of `svdtool validate`: defaults, a TOML file, then command-line overrides."""

from __future__ import annotations

import tomllib
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path
from typing import Any

from svdtool.errors import SvdtoolError


@dataclass(frozen=True)
class Thresholds:
    min_psnr: float = 30.0  # mean PSNR of the runtime's frames vs the reference's, dB
    max_temporal_mse_change: float = 0.15  # |Δ temporal MSE| / reference
    max_sharpness_change: float = 0.20  # |Δ sharpness| / reference
    max_brightness_change: float = 3.0  # |Δ mean intensity|, levels of 255
    max_noise_increase: float = 0.20  # (runtime − reference) / reference noise sigma
    max_colourfulness_change: float = 0.15  # |Δ mean Lab chroma| / reference
    max_motion_change: float = 0.30  # |Δ mean optical-flow magnitude| / reference (student vs teacher only)

    @classmethod
    def load(cls, toml_file: str | Path | None = None, base: "Thresholds | None" = None, **overrides: float | None) -> "Thresholds":
        thresholds = base or cls()
        if toml_file:
            path = Path(toml_file)
            try:
                values = tomllib.loads(path.read_text()).get("thresholds", {})
            except (OSError, tomllib.TOMLDecodeError) as exc:
                raise SvdtoolError(f"--thresholds {path}: {exc}") from exc
            unknown = set(values) - {f.name for f in fields(cls)}
            if unknown:
                raise SvdtoolError(f"--thresholds {path}: unknown keys {sorted(unknown)} under [thresholds]")
            thresholds = replace(thresholds, **{k: float(v) for k, v in values.items()})
        return replace(thresholds, **{k: v for k, v in overrides.items() if v is not None})

    def as_dict(self) -> dict[str, float]:
        return asdict(self)

    def check(self, runtime: dict[str, float], reference: dict[str, float], pixel_gate: bool = True) -> list[dict[str, Any]]:
        """One row per threshold: measured value, limit, pass. Without `pixel_gate` (a student against its teacher: two
        samplers draw two different videos from one seed) PSNR is not checked and motion is."""

        def relative(key: str) -> float:
            return abs(runtime[key] - reference[key]) / max(abs(reference[key]), 1e-9)

        rows = [
            ("PSNR vs reference (dB)", runtime["psnr_mean"], f"≥ {self.min_psnr}", runtime["psnr_mean"] >= self.min_psnr),
            ("|Δ temporal MSE| (relative)", relative("temporal_mse"), f"≤ {self.max_temporal_mse_change}",
             relative("temporal_mse") <= self.max_temporal_mse_change),
            ("|Δ sharpness| (relative)", relative("sharpness"), f"≤ {self.max_sharpness_change}",
             relative("sharpness") <= self.max_sharpness_change),
            ("|Δ brightness| (levels)", abs(runtime["brightness"] - reference["brightness"]), f"≤ {self.max_brightness_change}",
             abs(runtime["brightness"] - reference["brightness"]) <= self.max_brightness_change),
            ("noise increase (relative)", (runtime["noise"] - reference["noise"]) / max(reference["noise"], 1e-9),
             f"≤ {self.max_noise_increase}",
             (runtime["noise"] - reference["noise"]) / max(reference["noise"], 1e-9) <= self.max_noise_increase),
            ("|Δ colourfulness| (relative)", relative("colourfulness"), f"≤ {self.max_colourfulness_change}",
             relative("colourfulness") <= self.max_colourfulness_change),
        ]
        if not pixel_gate:
            rows = rows[1:] + [("|Δ motion| (relative)", relative("motion"), f"≤ {self.max_motion_change}",
                                relative("motion") <= self.max_motion_change)]
        return [{"check": name, "value": round(float(value), 4), "limit": limit, "pass": bool(ok)} for name, value, limit, ok in rows]


# A few-step student against its teacher (svdtool validate --teacher): the goals of docs/fewstep.md, sharpness and
# temporal MSE within 20 % of the teacher's, motion within 30 %; brightness may move 5 levels between two samplers' videos.
TEACHER_THRESHOLDS = Thresholds(max_temporal_mse_change=0.20, max_brightness_change=5.0)
