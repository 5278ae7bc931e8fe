"""`svdtool export`: PyTorch → OpenVINO IR."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from svdtool.console import console
from svdtool.errors import SvdtoolError

from .common import Overwrite, SamplerName, UnetFile, Verbose, run_command


def export(
    source: str = typer.Argument(..., help="named model (mini, its 4-step student mini-lcm; random-weight tiny, svd, svd-xt), local diffusers folder, or Hub id"),
    output: Path = typer.Option(..., "-o", "--output", help="folder to write the OpenVINO IR pipeline into"),
    weights: str = typer.Option("fp16", help="IR weight precision: fp16 or fp32"),
    static: bool = typer.Option(False, "--static", help="bake --height/--width/--frames into the IR"),
    height: Optional[int] = typer.Option(None, help="static height (with --static)"),
    width: Optional[int] = typer.Option(None, help="static width (with --static)"),
    frames: Optional[int] = typer.Option(None, help="static frame count (with --static)"),
    via: str = typer.Option("openvino", help="openvino (direct) or onnx (torch → ONNX → OpenVINO, ONNX kept)"),
    variant: Optional[str] = typer.Option(None, help="weights variant of a diffusers source, e.g. fp16"),
    revision: Optional[str] = typer.Option(None, help="Hub revision of the source"),
    cache_branch: Optional[list[int]] = typer.Option(None, "--cache-branch", help="also export DeepCache's full and shallow "
                                                     "UNet IRs for this skip branch (0 = top level; repeatable)"),
    cross_attention: str = typer.Option("folded", help="folded (exact: SVD's cross-attention sees one key, so it is its "
                                        "value projection; faster) or full (traced as diffusers computes it)"),
    kv_downsample: int = typer.Option(1, help="keys and values of the top level's spatial self-attention from every Nth "
                                              "token row and column (ToDo; 1 = exact, 2 = 4x fewer keys: faster at 576x1024, "
                                              "approximate, check with validate)"),
    unet: UnetFile = None,
    sampler: SamplerName = None,
    vae_decoder: Optional[str] = typer.Option(None, "--vae-decoder", help="a tiny decoder that replaces the VAE's temporal one: "
                                              "an AutoencoderTiny folder or Hub id (TAESD: madebyollin/taesd for SVD's "
                                              "latents); several times faster, approximate: check with validate"),
    overwrite: Overwrite = False,
    verbose: Verbose = False,
) -> None:
    """Export image encoder, UNet, VAE encoder and VAE temporal decoder to OpenVINO IR."""

    def work() -> None:
        from svdtool.convert import ExportShape, check_shape, export as export_pipeline
        from svdtool.convert.fold import CROSS_ATTENTION_MODES
        from svdtool.convert.tokens import KV_DOWNSAMPLE_FACTORS
        from svdtool.models import generation_defaults, resolve_source

        if weights not in ("fp16", "fp32"):
            raise SvdtoolError(f"--weights must be fp16 or fp32, not {weights!r}")
        if via not in ("openvino", "onnx"):
            raise SvdtoolError(f"--via must be openvino or onnx, not {via!r}")
        if cross_attention not in CROSS_ATTENTION_MODES:
            raise SvdtoolError(f"--cross-attention must be one of {', '.join(CROSS_ATTENTION_MODES)}, not {cross_attention!r}")
        if kv_downsample not in KV_DOWNSAMPLE_FACTORS:
            raise SvdtoolError(f"--kv-downsample must be one of {', '.join(map(str, KV_DOWNSAMPLE_FACTORS))} (1 = exact), not {kv_downsample}")
        if output.exists() and not overwrite:
            raise SvdtoolError(f"{output} already exists; pass --overwrite to replace it")
        if not static and any(v is not None for v in (height, width, frames)):
            raise SvdtoolError("--height/--width/--frames need --static (a dynamic IR takes any shape at run time)")
        resolved = resolve_source(source, variant, revision, unet=unet, sampler=sampler)
        shape = None
        if static:
            defaults = generation_defaults(resolved)
            shape = ExportShape(height or defaults.height, width or defaults.width, frames or defaults.num_frames, static=True)
            check_shape(shape.height, shape.width, shape.num_frames, defaults.size_multiple)
        manifest = export_pipeline(resolved, output, weights=weights, shape=shape, via=via, overwrite=overwrite,
                                   cache_branches=tuple(cache_branch or ()), cross_attention=cross_attention,
                                   kv_downsample=kv_downsample, vae_decoder=vae_decoder)
        size = sum(entry["bytes"] for entry in manifest["files"].values()) / 2**20
        console.print(f"[green]exported[/] {resolved.label()} → {output} ({size:.1f} MiB)")

    run_command(work, verbose)
