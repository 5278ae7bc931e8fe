"""svd-mini's VAE on photos it never saw: reconstruction PSNR (per channel), colourfulness kept, and the singular
values of the temporal decoder's last colour-mixing layer (where v1 lost its colour).

python models/training/mini_vae_check.py FOLDER [FOLDER ...] [--json OUT.json] [--grid OUT.png] [--pick] [--fit-latents] [--capacity]
    [--tiles] [--pale]

Each FOLDER is a diffusers SVD pipeline folder (or its `vae/`). Held-out photos (bench/heldout/, none of them in
the training data): chelsea and coffee (scikit-image), china and flower (scikit-learn, CC BY 2.0) and grace_hopper
(matplotlib). 128x128, resized as the pipeline does. `--pick` prints
the folder to train on last: the fewest latent channels whose mean PSNR reaches TARGET_PSNR, else the best.
`--fit-latents` asks where the reconstruction's error comes from (CPU, ~4 min a folder): each photo's latent is
optimised through the frozen decoder (Adam, FIT_STEPS steps from the encoder's latent), which bounds what a better
encoder could reach with this decoder -- and how far from the encoder's latent it lies (an encoder reaching it would
move the latent space the UNet learned that far, and how much of its gain is left when that shift is smoothed over
3x3 latent pixels) -- and the training photos (scikit-image's, whole, resized as the inputs are)
are reconstructed too, which tells unseen content from detail the VAE cannot keep.
`--capacity` (CPU, ~9 min a folder): a copy of the decoder is trained on the held-out photos' own encoder latents
alone (CAPACITY_STEPS Adam steps on their MSE) and decodes them again. An upper bound only: that decoder has seen the
photos and can store five of them in its weights, so a high score does not show that the latents hold their detail
(bench/results/mini_vae_plateau.md), and it is never a model to ship.
`--tiles`: each photo also reconstructed as four 64 px tiles, each encoded and decoded alone, as training shows them.
`--pale`: each photo also reconstructed with its Lab chroma scaled by each of CHROMA_SCALES first (paler and more
colourful versions of it), and its colourfulness kept at each: v5's VAE greyed faint colour (a quarter of chelsea's
chroma came back at x0.67), which a colourful photo's own ratio hides (chelsea's x1.00). Beside it, two controls: the
colourfulness a Gaussian blur of BLUR_SIGMA px keeps (lost detail alone), and how far the photo's latent lies from
its grey version's, in posterior standard deviations (median over latent pixels): whether the latent holds the colour.
"""

from __future__ import annotations

import contextlib
import copy
import json
import sys
from pathlib import Path

import cv2
import numpy as np
import torch
import torch.nn.functional as F
from diffusers import AutoencoderKLTemporalDecoder
from diffusers.video_processor import VideoProcessor
from PIL import Image

HERE = Path(__file__).parent
PHOTOS = {path.stem: path for path in sorted((HERE.parents[1] / "bench" / "heldout").glob("*.jpg"))}
SIZE = 128
TARGET_PSNR = 26.0
FIT_STEPS = 150
CAPACITY_STEPS = 300
NOISE_DRAWS = 4
CHROMA_SCALES = (0.25, 0.5, 2.0)
BLUR_SIGMA = 1.0


def held_out_pixels(size: int = SIZE) -> dict[str, torch.Tensor]:
    """Each held-out photo as the pipeline preprocesses it: (1, 3, size, size) in [-1, 1]."""
    processor = VideoProcessor(vae_scale_factor=8)
    return {name: processor.preprocess(Image.open(path).convert("RGB"), size, size) for name, path in PHOTOS.items()}


def to_uint8(pixels: torch.Tensor) -> np.ndarray:
    return ((pixels[0].float().clamp(-1, 1).permute(1, 2, 0).cpu().numpy() + 1) * 127.5).round().astype(np.uint8)


def load_vae(folder: Path, device: str) -> AutoencoderKLTemporalDecoder:
    folder = folder / "vae" if (folder / "vae").is_dir() else folder
    return AutoencoderKLTemporalDecoder.from_pretrained(folder, torch_dtype=torch.float32).to(device).eval()


@torch.no_grad()
def reconstruct(vae: AutoencoderKLTemporalDecoder, pixels: torch.Tensor) -> torch.Tensor:
    """`pixels` (N, 3, H, W) encoded to the posterior's mode and decoded as still frames."""
    return vae.decode(vae.encode(pixels).latent_dist.mode(), num_frames=1).sample


def chroma_scaled(pixels: torch.Tensor, scale: float) -> torch.Tensor:
    """`pixels` (1, 3, H, W) in [-1, 1] with their CIELAB chroma (a*, b*) scaled by `scale`, lightness kept."""
    from skimage.color import lab2rgb, rgb2lab

    lab = rgb2lab(to_uint8(pixels) / 255.0)
    lab[..., 1:] *= scale
    rgb = np.clip(lab2rgb(lab), 0, 1)
    return torch.from_numpy(rgb * 2 - 1).permute(2, 0, 1)[None].float().to(pixels.device)


@torch.no_grad()
def grey_latent_distance(vae: AutoencoderKLTemporalDecoder, pixels: torch.Tensor) -> float:
    """How far `pixels`' latent lies from that of their grey version (chroma 0), in the posterior's standard
    deviations: the median over latent pixels of the scaled distance across channels."""
    posterior, grey = vae.encode(pixels).latent_dist, vae.encode(chroma_scaled(pixels, 0.0)).latent_dist
    return round(float(((posterior.mean - grey.mean) / posterior.std).pow(2).sum(1).sqrt().median()), 2)


def colour_ratio(rebuilt: np.ndarray, original: np.ndarray) -> float:
    """Colourfulness (mean Lab chroma) of `rebuilt` over that of `original`, (H, W, 3) uint8 images."""
    from svdtool.validate.metrics import colourfulness

    return round(colourfulness(rebuilt[None]) / max(colourfulness(original[None]), 1e-6), 3)


def worst(ratios) -> float:
    """The ratio farthest from 1."""
    return max(ratios, key=lambda r: abs(r - 1))


def psnr(decoded: torch.Tensor, pixels: torch.Tensor) -> float:
    from svdtool.validate.metrics import psnr_per_frame

    return round(float(psnr_per_frame(to_uint8(decoded)[None], to_uint8(pixels)[None])[0]), 2)


def minimise_mse(vae: AutoencoderKLTemporalDecoder, latents: torch.Tensor, pixels: torch.Tensor, parameters,
                 lr: float, steps: int) -> None:
    """Adam on the MSE of `latents`' decoding to `pixels`, over `parameters` (the decoder's weights)."""
    optimizer = torch.optim.Adam(parameters, lr=lr)
    for _ in range(steps):
        loss = torch.nn.functional.mse_loss(vae.decode(latents, num_frames=1).sample, pixels)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()


def fitted_latent(vae: AutoencoderKLTemporalDecoder, pixels: torch.Tensor) -> dict[str, float]:
    """PSNR of the decoder's output from the latent that minimises its MSE to `pixels` (from the encoder's), and how far
    that latent is from the encoder's: relative to its norm, and in the encoder's posterior standard deviations. Both
    latents are also decoded with the posterior's noise added (the mean PSNR of NOISE_DRAWS draws), as training
    decodes them: a fitted latent that held only while exact would be one the encoder is trained away from."""
    from svdtool.models.fit_encoder import fit_latents

    with torch.no_grad():
        posterior = vae.encode(pixels).latent_dist
        encoded = posterior.mode()
    latent = fit_latents(vae, pixels, FIT_STEPS, contextlib.nullcontext())  # as fit_encoder fits its targets
    with torch.no_grad():
        shift = latent - encoded
        generator = torch.Generator(device=pixels.device).manual_seed(0)

        def with_noise(centre: torch.Tensor) -> float:
            draws = [centre + posterior.std * torch.randn(centre.shape, generator=generator, device=centre.device)
                     for _ in range(NOISE_DRAWS)]
            return round(float(np.mean([psnr(vae.decode(z, num_frames=1).sample, pixels) for z in draws])), 2)

        return {"psnr_fitted_latent": psnr(vae.decode(latent, num_frames=1).sample, pixels),
                "psnr_with_posterior_noise": with_noise(encoded),
                "psnr_fitted_latent_with_posterior_noise": with_noise(latent),
                "posterior_std_over_latent_std": round(float(posterior.std.mean() / encoded.std()), 3),
                # the shift smoothed over 3x3 latent pixels: how much of the gain is fine structure in the latent,
                # which an encoder (and a UNet) would have to draw exactly
                "psnr_fitted_latent_smoothed": psnr(vae.decode(encoded + F.avg_pool2d(
                    shift, 3, stride=1, padding=1, count_include_pad=False), num_frames=1).sample, pixels),
                "fitted_latent_shift": round(float(shift.norm() / encoded.norm()), 3),
                "fitted_latent_shift_in_posterior_std": round(float((shift / posterior.std).pow(2).mean().sqrt()), 1)}


def capacity(vae: AutoencoderKLTemporalDecoder, photos: dict[str, torch.Tensor]) -> dict[str, float]:
    """PSNR per photo after a copy of the decoder is trained on these photos' encoder latents (the encoder frozen)."""
    decoder_vae = copy.deepcopy(vae).requires_grad_(False)
    decoder_vae.decoder.requires_grad_(True)
    pixels = torch.cat(list(photos.values()))
    with torch.no_grad():
        latents = decoder_vae.encode(pixels).latent_dist.mode()
    minimise_mse(decoder_vae, latents, pixels, decoder_vae.decoder.parameters(), lr=1e-4, steps=CAPACITY_STEPS)
    with torch.no_grad():
        decoded = decoder_vae.decode(latents, num_frames=1).sample
    return {name: psnr(decoded[i:i + 1], pixels[i:i + 1]) for i, name in enumerate(photos)}


def training_photo_psnr(vae: AutoencoderKLTemporalDecoder, device: str) -> dict[str, float]:
    """Reconstruction PSNR of each training photo, whole, resized to SIZE as the held-out inputs are."""
    from svdtool.models.scenes import TRAIN_PHOTOS, photo_bank

    photos = torch.nn.functional.interpolate(photo_bank(), size=(SIZE, SIZE), mode="bilinear", antialias=True).to(device)
    return {name: psnr(reconstruct(vae, photo[None]), photo[None]) for name, photo in zip(TRAIN_PHOTOS, photos)}


def tiled_reconstruction(vae: AutoencoderKLTemporalDecoder, pixels: torch.Tensor, size: int = 64) -> torch.Tensor:
    """Each size x size tile encoded and decoded on its own and stitched: the frames as training shows them to the VAE
    (`train_mini --vae-crop`), so that PSNR whole against tiled tells whether its mid-block attention, trained on 8x8
    latents, loses anything on a whole frame's 16x16."""
    decoded = torch.empty_like(pixels)
    for top in range(0, pixels.shape[-2], size):
        for left in range(0, pixels.shape[-1], size):
            decoded[..., top:top + size, left:left + size] = reconstruct(vae, pixels[..., top:top + size, left:left + size])
    return decoded


def mixing_spectrum(vae: AutoencoderKLTemporalDecoder) -> dict:
    """Singular values of the decoder's last layer summed over its 3 frame taps (a still video's colour matrix)."""
    matrix = vae.decoder.time_conv_out.weight.detach().float().cpu().sum(dim=(2, 3, 4))
    left, values, _ = torch.linalg.svd(matrix)
    return {"singular_values": values.round(decimals=3).tolist(), "weakest_rgb_direction": left[:, -1].round(decimals=3).tolist()}


def check(folder: Path, device: str, fit_latents: bool = False, capacity_bound: bool = False,
          tiles: bool = False, pale: bool = False) -> tuple[dict, dict[str, np.ndarray]]:
    from svdtool.validate.metrics import psnr_per_frame

    vae = load_vae(folder, device).requires_grad_(False)
    rows, reconstructions = {}, {}
    for name, pixels in held_out_pixels().items():
        pixels = pixels.to(device)
        decoded = reconstruct(vae, pixels)
        original, rebuilt = to_uint8(pixels), to_uint8(decoded)
        reconstructions[name] = rebuilt
        rows[name] = {
            "psnr": psnr(decoded, pixels),
            "psnr_rgb": [round(float(psnr_per_frame(rebuilt[None, ..., c], original[None, ..., c])[0]), 2) for c in range(3)],
            "colourfulness_ratio": colour_ratio(rebuilt, original),
        }
        if fit_latents:
            rows[name].update(fitted_latent(vae, pixels))
        if tiles:
            rows[name]["psnr_tiled_64"] = psnr(tiled_reconstruction(vae, pixels), pixels)
        if pale:
            scaled = {str(scale): chroma_scaled(pixels, scale) for scale in CHROMA_SCALES}
            rows[name]["colourfulness_ratio_at_chroma_scale"] = {
                scale: colour_ratio(to_uint8(reconstruct(vae, photo)), to_uint8(photo)) for scale, photo in scaled.items()}
            rows[name]["colourfulness_ratio_blurred"] = colour_ratio(cv2.GaussianBlur(original, (0, 0), BLUR_SIGMA), original)
            rows[name]["grey_latent_distance"] = grey_latent_distance(vae, pixels)
    summary = {"folder": str(folder), "latent_channels": vae.config.latent_channels,
               "parameters_m": round(sum(p.numel() for p in vae.parameters()) / 1e6, 2),
               "mean_psnr": round(float(np.mean([r["psnr"] for r in rows.values()])), 2),
               "min_colourfulness_ratio": min(r["colourfulness_ratio"] for r in rows.values()),
               "max_colourfulness_ratio": max(r["colourfulness_ratio"] for r in rows.values()),
               "mixing": mixing_spectrum(vae), "photos": rows}
    if pale:
        ratios = [r["colourfulness_ratio_at_chroma_scale"] for r in rows.values()]
        summary["worst_colourfulness_ratio_at_chroma_scale"] = {
            str(scale): worst(r[str(scale)] for r in ratios) for scale in CHROMA_SCALES}
    if tiles:
        summary["mean_psnr_tiled_64"] = round(float(np.mean([r["psnr_tiled_64"] for r in rows.values()])), 2)
    if fit_latents:
        summary["mean_psnr_fitted_latent"] = round(float(np.mean([r["psnr_fitted_latent"] for r in rows.values()])), 2)
        for key in ("fitted_latent_shift", "psnr_with_posterior_noise", "psnr_fitted_latent_with_posterior_noise",
                    "psnr_fitted_latent_smoothed",
                    "posterior_std_over_latent_std"):
            summary[f"mean_{key}"] = round(float(np.mean([r[key] for r in rows.values()])), 3)
        summary["training_photos_psnr"] = training_photo_psnr(vae, device)
    if capacity_bound:
        trained = capacity(vae, {name: pixels.to(device) for name, pixels in held_out_pixels().items()})
        for name, value in trained.items():
            rows[name]["psnr_decoder_trained_on_it"] = value
        summary["mean_psnr_decoder_trained_on_them"] = round(float(np.mean(list(trained.values()))), 2)
    return summary, reconstructions


def grid(path: Path, results: list[tuple[dict, dict[str, np.ndarray]]], labels: list[str]) -> None:
    """Rows: held-out photos; columns: input, then each model's reconstruction."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    pixels = held_out_pixels()
    figure, axes = plt.subplots(len(pixels), 1 + len(results), figsize=(2.2 * (1 + len(results)), 2.2 * len(pixels)), squeeze=False)
    for row, name in enumerate(pixels):
        images = [to_uint8(pixels[name])] + [recon[name] for _, recon in results]
        titles = [f"{name} (input)"] + [f"{label}: {summary['photos'][name]['psnr']:.1f} dB, chroma ×{summary['photos'][name]['colourfulness_ratio']:.2f}"
                                        for label, (summary, _) in zip(labels, results)]
        for column, (image, title) in enumerate(zip(images, titles)):
            axes[row, column].imshow(image)
            axes[row, column].set_title(title, fontsize=7)
            axes[row, column].axis("off")
    figure.tight_layout()
    figure.savefig(path, dpi=110)


def main(argv: list[str]) -> None:
    args, options = [a for a in argv if not a.startswith("--")], {}
    for flag in ("--json", "--grid", "--labels"):
        if flag in argv:
            options[flag] = argv[argv.index(flag) + 1]
            args.remove(options[flag])
    device = "cuda" if torch.cuda.is_available() else "cpu"
    folders = [Path(a) for a in args]
    for folder in folders:
        if not ((folder / "vae" / "config.json").is_file() or (folder / "config.json").is_file()):
            sys.exit(f"{folder} is neither an SVD pipeline folder nor its vae/ (no vae/config.json or config.json)")
    results = [check(folder, device, "--fit-latents" in argv, "--capacity" in argv, "--tiles" in argv, "--pale" in argv)
               for folder in folders]
    for summary, _ in results:
        print(f"{summary['folder']}: {summary['latent_channels']} latent channels, {summary['parameters_m']} M, "
              f"PSNR {summary['mean_psnr']} dB, colourfulness x{summary['min_colourfulness_ratio']}-{summary['max_colourfulness_ratio']}, "
              f"mixing {summary['mixing']}", file=sys.stderr)
        if "mean_psnr_fitted_latent" in summary:
            print(f"  fitted latents {summary['mean_psnr_fitted_latent']} dB ({summary['mean_psnr_fitted_latent_smoothed']} dB "
                  f"with the shift smoothed over 3x3), {summary['mean_fitted_latent_shift']:.0%} of the "
                  f"encoder's latent away; with the posterior's noise (its std {summary['mean_posterior_std_over_latent_std']:.0%} "
                  f"of the latents'): encoded {summary['mean_psnr_with_posterior_noise']} dB, fitted "
                  f"{summary['mean_psnr_fitted_latent_with_posterior_noise']} dB; training photos "
                  f"{summary['training_photos_psnr']}", file=sys.stderr)
        if "worst_colourfulness_ratio_at_chroma_scale" in summary:
            print(f"  colourfulness kept, worst photo, with its chroma scaled by "
                  f"{summary['worst_colourfulness_ratio_at_chroma_scale']}", file=sys.stderr)
        if "mean_psnr_tiled_64" in summary:
            print(f"  as 64 px tiles stitched: {summary['mean_psnr_tiled_64']} dB", file=sys.stderr)
        if "mean_psnr_decoder_trained_on_them" in summary:
            print(f"  a decoder trained on the photos' latents: {summary['mean_psnr_decoder_trained_on_them']} dB", file=sys.stderr)
    if "--json" in options:
        Path(options["--json"]).write_text(json.dumps([summary for summary, _ in results], indent=2))
    if "--grid" in options:
        labels = options.get("--labels", ",".join(f.name for f in folders)).split(",")
        grid(Path(options["--grid"]), results, labels)
    if "--pick" in argv:
        passing = [s for s, _ in results if s["mean_psnr"] >= TARGET_PSNR]
        chosen = min(passing, key=lambda s: s["latent_channels"]) if passing else max((s for s, _ in results), key=lambda s: s["mean_psnr"])
        print(chosen["folder"])


if __name__ == "__main__":
    main(sys.argv[1:])
