"""A UNet that replaces a pipeline's own: a bare state-dict file (AnimateLCM-SVD-xt's layout), a diffusers UNet folder,
or a file on the Hub (`owner/name/file.safetensors`). It must load strictly into the pipeline's UNet class and config."""

from __future__ import annotations

import hashlib
from functools import cache
from pathlib import Path
from typing import Any

import torch

from svdtool.errors import SvdtoolError
from svdtool.outputs import sha256_file

WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth")
EXAMPLES = 3  # key names quoted when a file does not fit


def check_unet_spec(spec: str) -> str:
    """Without loading anything: an absolute local path, or the Hub file spec as given; one-line error otherwise."""
    path = Path(spec).expanduser()
    if path.exists():
        if path.is_file() and path.suffix in WEIGHT_SUFFIXES:
            return str(path.resolve())
        if path.is_dir() and (path / "config.json").is_file():
            return str(path.resolve())
        raise SvdtoolError(f"--unet {spec}: give a UNet state-dict file ({', '.join(WEIGHT_SUFFIXES)}) or a diffusers "
                           "UNet folder (with config.json)")
    parts = spec.split("/")
    if len(parts) >= 3 and all(parts) and path.suffix in WEIGHT_SUFFIXES:
        return spec
    raise SvdtoolError(f"--unet {spec} does not exist: give a local state-dict file or UNet folder, or a Hub file as "
                       "owner/name/file.safetensors")


def local_unet(spec: str) -> Path:
    """The local file or folder of `spec`, downloading a Hub file into the Hugging Face cache first."""
    if Path(spec).exists():
        return Path(spec)
    from huggingface_hub import hf_hub_download

    parts = spec.split("/")
    try:
        return Path(hf_hub_download("/".join(parts[:2]), "/".join(parts[2:])))
    except Exception as exc:  # the Hub fails as many types (offline, 404, auth); the user needs its first line
        first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise SvdtoolError(f"could not download the UNet {spec} from the Hugging Face Hub: {first_line}") from exc


def read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    if path.is_dir():
        from diffusers import UNetSpatioTemporalConditionModel

        return UNetSpatioTemporalConditionModel.from_pretrained(path).state_dict()
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            return load_file(path)
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # safetensors and torch raise their own types for a damaged or foreign file
        raise SvdtoolError(f"--unet {path}: not a readable state dict ({str(exc).strip().splitlines()[0]})") from exc
    if not isinstance(state, dict):
        raise SvdtoolError(f"--unet {path}: holds a {type(state).__name__}, not a state dict")
    return state


def load_unet_weights(unet: torch.nn.Module, spec: str) -> torch.nn.Module:
    """Load `spec`'s weights into `unet` (the pipeline's own UNet, of its config), strictly; one-line error otherwise."""
    state = read_state_dict(local_unet(spec))
    expected = unet.state_dict()
    missing = [key for key in expected if key not in state]
    unexpected = [key for key in state if key not in expected]
    reshaped = [key for key in expected if key in state and tuple(state[key].shape) != tuple(expected[key].shape)]
    if missing or unexpected or reshaped:
        problems = [f"{len(found)} {what} (e.g. {', '.join(found[:EXAMPLES])})" for what, found in
                    (("missing", missing), ("unexpected", unexpected), ("of another shape", reshaped)) if found]
        raise SvdtoolError(f"--unet {spec} does not fit this pipeline's UNet: keys {'; '.join(problems)}: give the UNet "
                           "of this architecture (SVD-XT for AnimateLCM-SVD-xt)")
    unet.load_state_dict(state, strict=True)
    return unet


def unet_sha256(spec: str) -> str:
    """sha256 of the UNet's weights (a folder: of its weight files, in name order)."""
    path = local_unet(spec)
    stat = path.stat()
    return _sha256(str(path.resolve()), stat.st_mtime_ns, stat.st_size)


@cache
def _sha256(path: str, _mtime_ns: int, _size: int) -> str:  # cached per file version: a 3 GB UNet takes seconds
    folder = Path(path)
    if not folder.is_dir():
        return sha256_file(folder)
    digest = hashlib.sha256()
    for file in sorted(p for p in folder.iterdir() if p.suffix in WEIGHT_SUFFIXES):
        digest.update(f"{file.name}:{sha256_file(file)}\n".encode())
    return digest.hexdigest()


def describe_unet(spec: str) -> dict[str, Any]:
    return {"ref": spec, "sha256": unet_sha256(spec)}
