"""What every command shares: option types, the settings helper, and the error/exit handling."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Callable, Optional

import typer
from rich.markup import escape

from svdtool import logs
from svdtool.console import console
from svdtool.errors import SvdtoolError

# Generation options shared by generate, reference, validate and bench.
Frames = Annotated[Optional[int], typer.Option("--frames", help="frames to generate")]
Height = Annotated[Optional[int], typer.Option("--height", help="video height (a multiple of the model's size multiple: 64 for SVD)")]
Width = Annotated[Optional[int], typer.Option("--width", help="video width (a multiple of the model's size multiple: 64 for SVD)")]
Steps = Annotated[Optional[int], typer.Option("--steps", help="denoising steps")]
Fps = Annotated[Optional[int], typer.Option("--fps", help="frames per second (conditioning and output), 1 or more")]
MotionBucket = Annotated[Optional[int], typer.Option("--motion-bucket-id", help="amount of motion, 0-255 (SVD conditioning, default 127)")]
NoiseAug = Annotated[Optional[float], typer.Option("--noise-aug-strength", help="noise added to the conditioning image, 0 or more")]
DecodeChunk = Annotated[Optional[int], typer.Option("--decode-chunk-size", help="frames decoded at once (lower = less memory)")]
MinGuidance = Annotated[Optional[float], typer.Option("--min-guidance", help="guidance scale at the first frame, 1 or more")]
MaxGuidance = Annotated[Optional[float], typer.Option("--max-guidance", help="guidance scale at the last frame, 1 or more")]
Memory = Annotated[str, typer.Option("--memory", help="standard, or low: the UNet's two guidance halves one after the "
                                                     "other and the VAE decoder 2 frames at a time (svd INT8 at 576x1024x14: "
                                                     "19.1 -> 8.5 GB peak; docs/true-size.md)")]
Speed = Annotated[str, typer.Option("--speed", help="exact (the model's steps: 25 for SVD), balanced (0.6 of them: 15) "
                                                   "or fast (0.4: 10); each passes validate on svd-mini (docs/speed.md); "
                                                   "--steps overrides it")]
# A source's UNet and sampler, shared by export and reference (models/unets.py, models/samplers.py).
UnetFile = Annotated[Optional[str], typer.Option("--unet", help="a UNet that replaces the source's: a state-dict file (e.g. "
                                                                "AnimateLCM-SVD-xt.safetensors), a diffusers UNet folder, or a Hub "
                                                                "file owner/name/file.safetensors; it must load strictly")]
SamplerName = Annotated[Optional[str], typer.Option("--sampler", help="euler (SVD's) or consistency (few-step students such "
                                                                      "as AnimateLCM-SVD: 4 steps, guidance 1.0-1.2); "
                                                                      "default: the source's own")]
Seed = Annotated[int, typer.Option("--seed", help="seed of the CPU generator for latents and noise augmentation")]
Overwrite = Annotated[bool, typer.Option("--overwrite", help="replace an existing output")]
Verbose = Annotated[bool, typer.Option("--verbose", "-v", help="also show library logs, warnings and progress bars "
                                                              "(always written to the log file of `svdtool cache`)")]
Precision = Annotated[str, typer.Option(help="OpenVINO execution precision: auto (the plugin's choice), f32, bf16, f16")]
CacheInterval = Annotated[int, typer.Option("--cache-interval", help="DeepCache: the full UNet every N steps, the shallow "
                                                                     "one in between (1 = off; needs export --cache-branch)")]
CacheBranch = Annotated[int, typer.Option("--cache-branch", help="DeepCache: the skip branch whose feature is cached (0 = the top level)")]
CacheSchedule = Annotated[str, typer.Option("--cache-schedule", help="DeepCache: uniform, or front (full steps denser at the start)")]
# Ray options shared by generate (batch), validate and reference.
RayEmbedded = Annotated[bool, typer.Option("--ray", help="run on Ray, embedded on this machine (pip install svdtool[ray])")]
RayAddress = Annotated[Optional[str], typer.Option("--ray-address", help="run on the Ray cluster at auto or HOST:PORT")]
Actors = Annotated[Optional[int], typer.Option("--actors", help="Ray: pipeline actors (default: the cluster's CPUs / --cpus-per-actor; "
                                                              "GPUs for a GPU reference)")]
CpusPerActor = Annotated[float, typer.Option("--cpus-per-actor", help="Ray: CPUs per actor, also its OpenVINO and torch threads")]


def settings(frames: int | None = None, height: int | None = None, width: int | None = None, steps: int | None = None,
             fps: int | None = None, motion_bucket_id: int | None = None, noise_aug_strength: float | None = None,
             decode_chunk_size: int | None = None, min_guidance: float | None = None, max_guidance: float | None = None,
             seed: int = 42, memory: str = "standard", speed: str = "exact") -> Any:
    """The CLI's generation options as `GenerationSettings` (unset ones are filled from the model's defaults later)."""
    from svdtool.runtime import GenerationSettings

    return GenerationSettings(num_frames=frames, height=height, width=width, num_inference_steps=steps, fps=fps,
                              motion_bucket_id=motion_bucket_id, noise_aug_strength=noise_aug_strength,
                              min_guidance_scale=min_guidance, max_guidance_scale=max_guidance,
                              decode_chunk_size=decode_chunk_size, seed=seed, memory=memory, speed=speed)


def deepcache(interval: int, branch: int, schedule: str) -> Any:
    """The DeepCache options as `DeepCacheSettings`, checked (cheap: values only)."""
    from svdtool.runtime.deepcache import DeepCacheSettings

    settings = DeepCacheSettings(interval, branch, schedule)
    settings.check()
    return settings


def ray_options(ray: bool, address: str | None, actors: int | None, cpus_per_actor: float) -> Any:
    """The Ray options as `RayOptions` (None: no Ray, and Ray is not imported), checked (cheap: values only)."""
    if actors is not None and actors < 1 or cpus_per_actor <= 0:
        raise SvdtoolError("--actors must be 1 or more and --cpus-per-actor above 0")
    if not (ray or address):
        return None
    from svdtool.batch.run import RayOptions

    return RayOptions(address, actors, cpus_per_actor)


def run_command(work: Callable[[], Any], verbose: bool = False) -> Any:
    """Run a command body: SvdtoolError → one red line and exit 2; Ctrl-C → exit 130. No tracebacks."""
    logs.configure(verbose)
    try:
        return work()
    except SvdtoolError as exc:
        console.print(f"[bold red]error:[/] {escape(str(exc))}", soft_wrap=True)  # one line, even when not a terminal
        raise typer.Exit(exc.exit_code) from None
    except KeyboardInterrupt:
        console.print("[yellow]interrupted[/]: nothing was written")
        raise typer.Exit(130) from None
    except MemoryError:
        console.print("[bold red]error:[/] out of memory; use a smaller --height/--width/--frames or --decode-chunk-size")
        raise typer.Exit(2) from None


def existing(path: Path, what: str) -> Path:
    """A cheap check before anything is loaded: `path` exists."""
    if not Path(path).exists():
        raise SvdtoolError(f"{what} {path} does not exist")
    return Path(path)
