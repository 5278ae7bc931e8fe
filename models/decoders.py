"""A tiny VAE decoder that replaces a pipeline's temporal one at export (`--vae-decoder`): a diffusers `AutoencoderTiny`
folder or Hub id (TAESD's architecture: `madebyollin/taesd` decodes the Stable Diffusion latents SVD's VAE encoder
makes; `svdtool.models.tiny_decoder` trains one for another latent space, such as svd-mini's). It decodes frame by
frame from latents in diffusion space, at a fraction of the temporal decoder's cost; approximate: check with validate.
One trained with `--context k` sees the latents of the k frames on each side too, stacked on its input channels
(`latent_channels` = (2k+1) x the VAE's), so a frame's texture can follow its neighbours'."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

from svdtool.errors import SvdtoolError

if TYPE_CHECKING:
    import torch

TINY_CLASS = "AutoencoderTiny"


def check_decoder_spec(spec: str, option: str = "--vae-decoder") -> str:
    """Without loading weights: an absolute local AutoencoderTiny folder, or a Hub id as given; one-line error (naming
    `option`) otherwise."""
    path = Path(spec).expanduser()
    if path.exists():
        config = path / "config.json"
        if not config.is_file():
            raise SvdtoolError(f"{option} {spec}: give a diffusers AutoencoderTiny folder (with config.json) or a Hub id")
        try:
            found = json.loads(config.read_text()).get("_class_name")
        except (OSError, ValueError, AttributeError) as exc:
            raise SvdtoolError(f"{option} {spec}: config.json is not readable JSON ({exc})") from exc
        if found != TINY_CLASS:
            raise SvdtoolError(f"{option} {spec} holds a {found or 'model of no class'}, not an {TINY_CLASS} (TAESD's architecture)")
        return str(path.resolve())
    if spec.count("/") == 1 and all(spec.split("/")):
        return spec
    raise SvdtoolError(f"{option} {spec} does not exist: give a local AutoencoderTiny folder or a Hub id like madebyollin/taesd")


def decoder_config(spec: str, option: str = "--vae-decoder") -> dict[str, Any]:
    """The tiny decoder's config (read without loading weights; a Hub id downloads config.json only)."""
    from diffusers import AutoencoderTiny

    try:
        return dict(AutoencoderTiny.load_config(spec))
    except Exception as exc:  # local and Hub failures come as many types; the user needs the first line
        first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise SvdtoolError(f"could not read the config of {option} {spec}: {first_line}") from exc


def check_decoder_fits(spec: str, vae_config: dict[str, Any], option: str = "--vae-decoder") -> None:
    """The tiny decoder must take the pipeline VAE's latents (same channel count) and upscale them as much as the VAE
    downscales; one-line error otherwise."""
    config = decoder_config(spec, option)
    channels, wanted = config.get("latent_channels", 4), vae_config["latent_channels"]
    if context_frames(channels, wanted) is None:
        raise SvdtoolError(f"{option} {spec} decodes {channels}-channel latents, but this pipeline's VAE makes {wanted} "
                           f"({3 * wanted} with a frame's neighbours): give a tiny decoder trained for this latent space "
                           "(python -m svdtool.models.tiny_decoder)")
    upscale = config.get("upsampling_scaling_factor", 2) ** (len(config.get("decoder_block_out_channels", (64,) * 4)) - 1)
    downscale = 2 ** (len(vae_config["block_out_channels"]) - 1)
    if upscale != downscale:
        raise SvdtoolError(f"{option} {spec} upscales latents {upscale}x, but this pipeline's VAE downscales frames {downscale}x")


def context_frames(tiny_channels: int, vae_channels: int) -> int | None:
    """The frames on each side a tiny decoder taking `tiny_channels` sees, for a VAE of `vae_channels` latent channels
    (0: frame by frame); None where `tiny_channels` is not an odd multiple of `vae_channels`."""
    stacked, rest = divmod(tiny_channels, vae_channels)
    return (stacked - 1) // 2 if not rest and stacked % 2 else None


def with_neighbours(latents: torch.Tensor, context: int) -> torch.Tensor:
    """[F, C, h, w] -> [F, (2k+1)C, h, w]: each frame's latents after those of the k frames before it and before those
    of the k after it, the first and last frame standing in past the ends (a tiny decoder's input with `--context k`).
    Shifts by slicing, so a traced graph keeps the frame count dynamic."""
    import torch

    before, after = [latents], [latents]
    for _ in range(context):
        before.insert(0, torch.cat([before[0][:1], before[0][:-1]]))
        after.append(torch.cat([after[-1][1:], after[-1][-1:]]))
    return torch.cat([*before, *after[1:]], dim=1)


def load_tiny_decoder(spec: str):
    from diffusers import AutoencoderTiny

    try:
        return AutoencoderTiny.from_pretrained(spec).eval()
    except Exception as exc:  # see decoder_config
        first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise SvdtoolError(f"could not load --vae-decoder {spec}: {first_line}") from exc


def latent_scale(tiny, vae_config: dict[str, Any]) -> float:
    """What the pipeline's latents (divided by its VAE's scaling factor) are multiplied by to be the tiny decoder's."""
    return float(vae_config["scaling_factor"]) / float(tiny.config.scaling_factor)


def describe_decoder(spec: str, scale: float, context: int = 0) -> dict[str, Any]:
    """The manifest's record: where the tiny decoder came from, its weights' sha256 (a local folder), the latent
    scale baked into its IR and the neighbouring frames it sees on each side."""
    from svdtool.outputs import sha256_file

    info: dict[str, Any] = {"name": "tiny", "class": TINY_CLASS, "ref": spec, "latent_scale": scale, "context_frames": context,
                            "why": "decodes frame by frame at a fraction of the temporal decoder's cost; approximate"
                                   f"{f' (each frame sees {context} on each side, within a decode chunk)' if context else ''}"}
    path = Path(spec)
    if path.is_dir():
        info["sha256"] = {file.name: sha256_file(file) for file in sorted(path.glob("*.safetensors"))}
    return info
