"""Distil a pipeline's temporal VAE decoder into a tiny per-frame decoder (TAESD's architecture) for `--vae-decoder`.

    python -m svdtool.models.tiny_decoder --teacher models/mini --out mini-taesd/ --minutes 30 [--state .tiny/]

TAESD (Bohan 2023) decodes Stable Diffusion's latents — the latent space SVD's VAE encoder shares — with a network a
tenth of the VAE decoder's cost; diffusers' `AutoencoderTiny` is its architecture and loader, and
`madebyollin/taesd` its weights for SD's latents. svd-mini has a latent space of its own (32 channels), so its tiny
decoder is trained here: clips rendered as svd-mini's training renders them are encoded by the teacher's VAE
(`latent_dist.sample()`, as the UNet's training latents are) and decoded by the teacher's temporal decoder; the tiny
decoder learns the teacher's frames (L1 + MSE), frame by frame, from the latents in diffusion space (× the teacher's
scaling factor), as TAESD takes SD's; `--temporal W` adds the change between neighbouring frames (L1, weight W), which
a decoder that sees one frame at a time otherwise gets wrong frame by frame, `--context k` gives it the latents of the
k frames on each side too (models/decoders.py), and `--init` fine-tunes an earlier one (widening a frame-by-frame one
to `--context`: it starts out decoding exactly as before).
A pool of clips is encoded and decoded once per call, so each step costs only
the tiny decoder. Runs on a GPU or, slowly, on a CPU (bf16 autocast where it has AMX or AVX512-BF16).

Written by hand: TAESD's training code is not published and diffusers has no AutoencoderTiny training example.
"""

from __future__ import annotations

import itertools
import json
import time
from pathlib import Path

import torch
import typer
from diffusers import AutoencoderKLTemporalDecoder, AutoencoderTiny

from svdtool.errors import SvdtoolError

from .decoders import check_decoder_fits, check_decoder_spec, context_frames, decoder_config
from .scenes import MOSAIC_SHARE, SceneMix
from .train_mini import _train, optimizer_for, read_state, require_pipeline, write_state
from .training_data import clip_batches

app = typer.Typer(add_completion=False)
CLIP_FRAMES = 8  # frames of each rendered clip, kept together in the pool


def new_tiny_decoder(latent_channels: int, channels: int = 64, context: int = 0) -> AutoencoderTiny:
    """TAESD's architecture (diffusers' defaults: `channels` 64) for `latent_channels` latents, taking latents in
    diffusion space (scaling factor 1, as madebyollin/taesd); a wider decoder has `channels` in each of its blocks, and
    one with `context` takes the latents of that many frames on each side too."""
    return AutoencoderTiny(latent_channels=latent_channels * (2 * context + 1), scaling_factor=1.0,
                           decoder_block_out_channels=(channels,) * 4)


def widen_to_context(tiny: AutoencoderTiny, context: int) -> AutoencoderTiny:
    """A frame-by-frame tiny decoder taking the `context` frames on each side too, decoding exactly as before: its
    first convolution's weights for the neighbours start at zero (the unused encoder's last layer is new)."""
    channels = tiny.config.latent_channels
    wide = AutoencoderTiny.from_config({**tiny.config, "latent_channels": channels * (2 * context + 1)})
    state = {key: value.clone() for key, value in wide.state_dict().items()}
    state.update({key: value for key, value in tiny.state_dict().items() if value.shape == state[key].shape})
    first = "decoder.layers.0.weight"
    state[first] = torch.zeros_like(state[first])
    state[first][:, context * channels:(context + 1) * channels] = tiny.state_dict()[first]
    wide.load_state_dict(state)
    return wide


def pool_latents(latents: torch.Tensor, index: torch.Tensor, context: int) -> torch.Tensor:
    """The pool's frames `index` as a tiny decoder with `context` takes them: each with the latents of its clip's
    `context` frames on each side, the clip's first and last standing in past its ends (decoders.with_neighbours)."""
    if context == 0:
        return latents[index]
    position = index % CLIP_FRAMES
    offsets = torch.arange(-context, context + 1, device=index.device)
    neighbours = (index - position)[:, None] + (position[:, None] + offsets).clamp(0, CLIP_FRAMES - 1)
    return latents[neighbours].flatten(1, 2)


def compiled_teacher(vae: AutoencoderKLTemporalDecoder, latent_channels: int):
    """The teacher's VAE encoder and temporal decoder compiled by OpenVINO for this CPU (the exported components'
    wrappers): on a 2-core CPU they encode and decode a pool about five times faster than PyTorch does."""
    import warnings

    import openvino as ov

    from svdtool.convert.wrappers import VaeDecoderWrapper, VaeEncoderWrapper

    warnings.filterwarnings("ignore", category=torch.jit.TracerWarning)  # diffusers' shape checks, traced as constants
    core = ov.Core()
    encoder = core.compile_model(ov.convert_model(VaeEncoderWrapper(vae), example_input=(torch.zeros(1, 3, 128, 128),),
                                                  input=[("sample", [-1, 3, -1, -1])]), "CPU")
    decoder = core.compile_model(ov.convert_model(VaeDecoderWrapper(vae), example_input=(torch.zeros(8, latent_channels, 16, 16),),
                                                  input=[("latent_sample", [-1, latent_channels, -1, -1])]), "CPU")
    return encoder, decoder


@torch.no_grad()
def build_pool(vae: AutoencoderKLTemporalDecoder, clips: int, seed: int, device: str, workers: int, autocast,
               mix: SceneMix = SceneMix()) -> dict:
    """`clips` rendered clips (backgrounds as `mix` says) as (latents in diffusion space, the teacher's decoded frames
    as uint8), frame by frame; on a CPU the teacher runs on OpenVINO (`compiled_teacher`)."""
    latents, frames = [], []
    scaling_factor, channels = float(vae.config.scaling_factor), int(vae.config.latent_channels)
    if device == "cpu":
        encoder, decoder = compiled_teacher(vae, channels)
    stream = clip_batches(min(16, clips), seed, device, workers, "zoom", mix)
    generator = torch.Generator(device).manual_seed(seed)
    while sum(len(part) for part in latents) < clips * CLIP_FRAMES:
        batch = next(stream)[0]
        num_frames = batch.shape[1]
        if device == "cpu":
            mean, logvar = torch.from_numpy(encoder(batch.flatten(0, 1).numpy())[0]).chunk(2, dim=1)
            encoded = mean + (0.5 * logvar).exp() * torch.randn(mean.shape, generator=generator)
            decoded = torch.cat([torch.from_numpy(decoder(clip.numpy())[0]) for clip in encoded.split(num_frames)])
        else:
            with autocast:
                encoded = vae.encode(batch.flatten(0, 1)).latent_dist.sample(generator)
                decoded = vae.decode(encoded, num_frames=num_frames).sample
        latents.append((encoded * scaling_factor).to(torch.bfloat16))
        frames.append(((decoded.float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8))
    del stream
    return {"latents": torch.cat(latents)[:clips * CLIP_FRAMES], "frames": torch.cat(frames)[:clips * CLIP_FRAMES]}


def decoder_loss(tiny: AutoencoderTiny, pool: dict, batch: int, generator: torch.Generator, temporal: float = 0.0,
                 edges: float = 0.0, context: int = 0, laplacian: float = 0.0) -> torch.Tensor:
    """L1 + MSE against the teacher's frames, `batch` frames drawn at random; with `temporal` > 0 the batch is whole
    clips, and the differences between neighbouring frames are matched too (L1, times `temporal`); with `edges` > 0 the
    differences between neighbouring pixels, across and down (L1, times `edges`: a frame that comes out softer or
    sharper than the teacher's is off there even where its mean error is small); with `laplacian` > 0 each pixel's
    Laplacian (L1, times `laplacian`: the second differences whose variance is validate's sharpness)."""
    device = pool["frames"].device
    if temporal > 0:
        clips = torch.randint(0, len(pool["frames"]) // CLIP_FRAMES, (max(1, batch // CLIP_FRAMES),), generator=generator, device=device)
        index = (clips[:, None] * CLIP_FRAMES + torch.arange(CLIP_FRAMES, device=device)).flatten()
    else:
        index = torch.randint(0, len(pool["frames"]), (batch,), generator=generator, device=device)
    target = pool["frames"][index].float() / 127.5 - 1
    decoded = tiny.decode(pool_latents(pool["latents"], index, context).float()).sample.float()
    loss = (decoded - target).abs().mean() + ((decoded - target) ** 2).mean()
    if temporal > 0:
        clip_shape = (-1, CLIP_FRAMES, *decoded.shape[1:])
        loss = loss + temporal * (decoded.view(clip_shape).diff(dim=1) - target.view(clip_shape).diff(dim=1)).abs().mean()
    if edges > 0:
        loss = loss + edges * sum((decoded.diff(dim=d) - target.diff(dim=d)).abs().mean() for d in (-1, -2))
    if laplacian > 0:
        loss = loss + laplacian * (_laplacian(decoded) - _laplacian(target)).abs().mean()
    return loss


def _laplacian(frames: torch.Tensor) -> torch.Tensor:
    """The 4-neighbour Laplacian of each channel (the kernel OpenCV's Laplacian applies), inside the frame."""
    return (frames[..., 1:-1, :-2] + frames[..., 1:-1, 2:] + frames[..., :-2, 1:-1] + frames[..., 2:, 1:-1]
            - 4 * frames[..., 1:-1, 1:-1])


def save_decoder(tiny: AutoencoderTiny, folder: Path, record: dict) -> None:
    """The tiny model as a diffusers folder (fp32: it is small) with its training record, written beside `folder` and
    renamed into place."""
    from svdtool.outputs import atomic_output_dir, file_inventory

    with atomic_output_dir(folder, overwrite=True) as tmp:
        tiny.save_pretrained(tmp, safe_serialization=True)
        (tmp / "training.json").write_text(json.dumps({**record, "files": file_inventory(tmp)}, indent=2))


@app.command()
def main(
    teacher: Path = typer.Option(..., exists=True, file_okay=False, help="the pipeline whose VAE decoder is distilled"),
    out: Path = typer.Option(..., help="folder for the tiny decoder (an AutoencoderTiny folder, with training.json)"),
    state: Path = typer.Option(Path(".tiny-decoder"), help="state to resume from and save to"),
    init: Path | None = typer.Option(None, help="a tiny decoder folder to start from when --state has none (fine-tuning)"),
    temporal: float = typer.Option(0.0, min=0.0, help="weight of the loss on the change between neighbouring frames"),
    edges: float = typer.Option(0.0, min=0.0, help="weight of the loss on the change between neighbouring pixels (sharpness)"),
    laplacian: float = typer.Option(0.0, min=0.0, help="weight of the loss on each pixel's Laplacian (fine detail)"),
    channels: int = typer.Option(64, min=8, help="a new decoder's width (TAESD's: 64; a fine-tune keeps --init's)"),
    context: int = typer.Option(0, min=0, max=2, help="frames on each side a new decoder sees besides its own (0: frame "
                                                      "by frame); widens a frame-by-frame --init"),
    minutes: float = typer.Option(30.0, min=0.0),
    batch: int = typer.Option(32, min=1, help="frames per step"),
    lr: float = typer.Option(1e-3),
    anneal: bool = typer.Option(True, help="decay the learning rate linearly to 0 over --minutes"),
    pool_clips: int = typer.Option(512, min=1, help="clips (x8 frames) encoded and decoded once per call"),
    mosaics: float = typer.Option(MOSAIC_SHARE, min=0.0, max=1.0,
                                  help="share of the pool's clips showing four whole photos at the clip's size (the "
                                       "held-out inputs' scale)"),
    leaves: float = typer.Option(0.0, min=0.0, max=1.0, help="share of the pool's clips showing dead-leaves scenes "
                                                             "(photo colours and textures, edges at every scale)"),
    workers: int = typer.Option(2, min=0, help="CPU processes rendering clips"),
) -> None:
    require_pipeline(teacher, "--teacher")
    saved = read_state(state, ("tiny", "optimizer", "steps", "log", "runs"))
    vae_config = json.loads((teacher / "vae" / "config.json").read_text())
    vae_channels = int(vae_config["latent_channels"])
    if init is not None and not saved:  # the checks export runs on --vae-decoder
        try:
            check_decoder_fits(check_decoder_spec(str(init), "--init"), vae_config, "--init")
        except SvdtoolError as exc:
            raise typer.BadParameter(str(exc)) from exc
        init_context = context_frames(decoder_config(str(init), "--init")["latent_channels"], vae_channels)
        if context and init_context not in (0, context):
            raise typer.BadParameter(f"--init {init} sees {init_context} frame{'s' if init_context > 1 else ''} on each side: "
                                     "leave --context out or give "
                                     f"a frame-by-frame decoder to widen to {context}")
    device = "cuda" if torch.cuda.is_available() else "cpu"
    vae = AutoencoderKLTemporalDecoder.from_pretrained(teacher / "vae").to(device).eval().requires_grad_(False)
    tiny = new_tiny_decoder(vae_channels, *((saved.get("channels", 64), saved.get("context", 0)) if saved else (channels, context)))
    steps, log, runs, trained_on = {"decoder": 0}, [], [], None
    if saved:
        tiny.load_state_dict(saved["tiny"])
        steps, log, runs, trained_on = saved["steps"], saved["log"], saved["runs"], saved.get("trained_on")
    elif init is not None:
        tiny = AutoencoderTiny.from_pretrained(init)
        earlier = json.loads((init / "training.json").read_text()) if (init / "training.json").is_file() else {}
        steps, runs = dict(earlier.get("steps", steps)), [*earlier.get("runs", []), f"fine-tuned from {init.name}"]
        trained_on = earlier.get("trained_on")
        if context and context_frames(tiny.config.latent_channels, vae_channels) == 0:
            tiny = widen_to_context(tiny, context)
            runs[-1] += f", widened to see {context} frame{'s' if context > 1 else ''} on each side"
    context = context_frames(tiny.config.latent_channels, vae_channels)
    tiny.to(device).train()
    tiny.encoder.requires_grad_(False)  # only the decoder is used (--vae-decoder); the encoder stays as built
    parameters = list(tiny.decoder.parameters())
    optimizer = optimizer_for(parameters, lr, 0.0, device)
    if saved:
        optimizer.load_state_dict(saved["optimizer"])
    bf16 = device == "cuda" or torch.backends.mkldnn.is_available() and _cpu_has_bf16()
    autocast = torch.autocast(device, dtype=torch.bfloat16, enabled=bf16)

    start = time.time()
    pool = build_pool(vae, pool_clips, 9_000_000 + steps["decoder"] * 7919, device, workers, autocast,
                      SceneMix(mosaics, leaves))
    print(f"pooled {pool_clips} clips in {time.time() - start:.0f} s; resumed at step {steps['decoder']}", flush=True)
    del vae
    generator = torch.Generator(device).manual_seed(steps["decoder"])
    first = steps["decoder"]
    _train(lambda _: decoder_loss(tiny, pool, batch, generator, temporal, edges, context, laplacian), parameters, optimizer,
           None, itertools.repeat(None), minutes, "decoder", steps, log, autocast, anneal=anneal)
    runs.append(f"decoder distillation: {first:,} -> {steps['decoder']:,} steps at lr {lr:g}, {batch} frames a step "
                f"(a pool of {pool_clips:,} clips{f', mosaics {mosaics:g}' if mosaics != MOSAIC_SHARE else ''}"
                f"{f', dead leaves {leaves:g}' if leaves else ''}), L1 + MSE against the teacher's decoded frames"
                f"{f', + {temporal:g} x L1 of the change between neighbouring frames' if temporal else ''}"
                f"{f', + {edges:g} x L1 of the change between neighbouring pixels' if edges else ''}"
                f"{f', + {laplacian:g} x L1 of the Laplacian' if laplacian else ''}"
                f"{', lr decayed linearly to 0' if anneal else ''}")
    this_device = torch.cuda.get_device_name() if device == "cuda" else "cpu"  # appended where the run before had another
    trained_on = this_device if not trained_on else trained_on if trained_on.endswith(this_device) else f"{trained_on}, then {this_device}"
    write_state(state, {"tiny": tiny.state_dict(), "optimizer": optimizer.state_dict(), "steps": steps, "log": log, "runs": runs,
                        "trained_on": trained_on, "channels": tiny.config.decoder_block_out_channels[0], "context": context})
    save_decoder(tiny.cpu().eval(), out, training_record(teacher, steps, runs, trained_on, context))
    print(f"saved {out} after steps {steps}", flush=True)


def _cpu_has_bf16() -> bool:
    from svdtool.cpu import cpu_info

    return bool({"AMX-BF16", "AVX512-BF16"} & set(cpu_info()["isa"]))


def training_record(teacher: Path, steps: dict, runs: list[str], device: str, context: int = 0) -> dict:
    from svdtool.outputs import library_versions

    return {"model": "tiny VAE decoder (AutoencoderTiny)", "teacher": teacher.name, "trained_on": device, "steps": steps,
            "context_frames": context,
            "objective": "the teacher's temporal decoder's frames from its encoder's latents (diffusion space), L1 + MSE "
                         "(runs: any loss on the change between neighbouring frames or pixels)",
            "versions": library_versions(), "runs": runs}


if __name__ == "__main__":
    app()
