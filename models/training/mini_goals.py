"""svd-mini v2's measured goals (issue #12) for one or more pipeline folders, on photos the model never saw.

python models/training/mini_goals.py NAME=FOLDER [NAME=FOLDER ...] [--out mini_goals]   (CPU, ~1 min per model)

Held-out photos: bench/heldout/ (chelsea, coffee, china, flower, grace_hopper). 128x128, 8 frames, 25 steps,
motion_bucket_id 127, seed 42, PyTorch fp32 on the CPU. Per model:
- VAE reconstruction PSNR and colourfulness (mean Lab chroma) ratio vs the input (models/training/mini_vae_check.py);
- frame 0 of the video vs the input (PSNR): SVD's first frame is the conditioning image;
- colour over time: each frame's colourfulness against the input's as that frame's camera shows it (the camera
  motion fitted from frame 0 to the frame, below, applied to the input), every frame within 15 %;
- motion that moves the scene rather than melting it: the last frame warped back to frame 0 by the one affine camera
  motion that best explains its optical flow (Farneback's flow fitted robustly, refined by OpenCV's ECC, between
  consecutive frames and chained), SSIM over the part of frame 0 still in view, >= 0.7 on every photo.
Beside them, the issue's wording of those two goals, which a perfect camera move fails: colourfulness against the
whole input (a zoom into a photo's colourful centre raises it), and SSIM with the last frame warped back pixel by pixel
by Farneback flow over the whole frame (the border of frame 0 leaves the view, and Farneback warps blotches onto frame
0 as well as it warps a moving scene: the melting video of svd-mini's random-motion model scored as high as a perfect
zoom, 0.63). The ceiling row measures each on the held-out photos zoomed in at bucket 127's flow.
Writes bench/results/OUT.{json,md}.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import torch

sys.path[:0] = [str(Path(__file__).parent), str(Path(__file__).parents[2] / "bench")]  # these tools, and bench/common
from common import machine, save  # noqa: E402
from mini_vae_check import PHOTOS, check, held_out_pixels, to_uint8, worst  # noqa: E402

from svdtool.models import BUILTIN_MODELS, load_pipeline  # noqa: E402
from svdtool.runtime import GenerationSettings, generate, load_image  # noqa: E402
from svdtool.models.scenes import bucket_to_flow  # noqa: E402
from svdtool.validate.metrics import colourfulness, farneback_flow, grayscale, psnr_per_frame  # noqa: E402

SETTINGS = GenerationSettings(num_frames=8, height=128, width=128, num_inference_steps=25, decode_chunk_size=8).resolved(
    BUILTIN_MODELS["mini"].defaults)  # svd-mini's own defaults: bucket 127, guidance 1.0 -> 2.5, seed 42
MELTING = {"blurred 2 px": {"blur": 2.0}, "smeared 2 px": {"smear": 2.0}}  # the perfect zoom melting by the last frame
GOALS = {"vae_psnr": 26.0, "vae_colour": 0.10, "frame0_psnr": 22.0, "colour_over_time": 0.15, "warped_ssim": 0.7}


def warped_last_frame_ssim(frames: np.ndarray) -> float:
    """SSIM of frame 0 with the last frame warped onto it by Farneback flow (the settings validate's warp error uses)."""
    import cv2
    from skimage.metrics import structural_similarity

    gray = grayscale(frames)
    first, last = gray[0], gray[-1]
    flow = farneback_flow(first, last)
    height, width = first.shape
    grid_x, grid_y = np.meshgrid(np.arange(width, dtype=np.float32), np.arange(height, dtype=np.float32))
    warped = cv2.remap(last, grid_x + flow[..., 0], grid_y + flow[..., 1], cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
    return float(structural_similarity(first, warped, data_range=255))


def camera_motion(first: np.ndarray, later: np.ndarray, start: np.ndarray | None = None) -> np.ndarray:
    """The affine camera motion (2x3) from grayscale frame `first` to `later`: pixel x of `first` shows what `later`
    shows at matrix @ (x, 1). Farneback's flow fitted robustly (or `start`), refined by OpenCV's ECC."""
    import cv2

    if start is None:
        height, width = first.shape
        flow = farneback_flow(first, later)
        ys, xs = np.mgrid[8:height - 8:4, 8:width - 8:4]
        points = np.stack([xs.ravel(), ys.ravel()], 1).astype(np.float32)
        start, _ = cv2.estimateAffine2D(points, points + flow[ys, xs].reshape(-1, 2), method=cv2.LMEDS)
    matrix = np.eye(2, 3, dtype=np.float32) if start is None else start.astype(np.float32)
    try:  # refine on the intensities; where ECC does not converge the robust fit stands
        _, matrix = cv2.findTransformECC(first.astype(np.float32), later.astype(np.float32), matrix, cv2.MOTION_AFFINE,
                                         (cv2.TERM_CRITERIA_EPS | cv2.TERM_CRITERIA_COUNT, 200, 1e-6), None, 5)
    except cv2.error:
        pass
    return matrix


def camera_motions(frames: np.ndarray) -> list[np.ndarray]:
    """The camera motion from frame 0 to each frame, fitted once for both measures that use it: each step between
    consecutive frames fitted (`camera_motion`), chained, and the chain refined against frame 0. Fitted from frame 0
    directly, a zoom of x1.4 (v6's at bucket 127) defeated Farneback's start on grace_hopper: a sheared fit (x1.44
    across, x1.06 down) that scored its last frame 0.32, where the chained steps give x1.39 and 0.78."""
    gray = grayscale(frames)
    motions, chain = [np.eye(2, 3, dtype=np.float32)], np.eye(3, dtype=np.float32)
    for previous, frame_gray in zip(gray, gray[1:]):
        chain = np.vstack([camera_motion(previous, frame_gray), [0, 0, 1]]).astype(np.float32) @ chain
        motions.append(camera_motion(gray[0], frame_gray, start=chain[:2]))
    return motions


def camera_warped_ssim(frames: np.ndarray, motion: np.ndarray | None = None) -> float:
    """SSIM of frame 0 with the last frame warped back by the best-fitting affine camera motion (`motion`, else
    `camera_motions`' last), over the pixels of frame 0 that the last frame still shows."""
    import cv2
    from skimage.metrics import structural_similarity

    gray = grayscale(frames)
    first, last = gray[0], gray[-1]
    height, width = first.shape
    matrix = camera_motions(frames)[-1] if motion is None else motion
    inverse = cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP
    back = cv2.warpAffine(last, matrix, (width, height), flags=inverse)
    seen = cv2.warpAffine(np.ones_like(last), matrix, (width, height), flags=cv2.INTER_NEAREST | cv2.WARP_INVERSE_MAP) > 0
    _, ssim_map = structural_similarity(first, back, data_range=255, full=True)
    return float(ssim_map[seen].mean())


def colour_against_input(frames: np.ndarray, source: np.ndarray) -> list[float]:
    """Each frame's colourfulness against the whole input's (the issue's colour-over-time measure)."""
    chroma = colourfulness(source[None])
    return [colourfulness(frame[None]) / chroma for frame in frames]


def colour_in_view(frames: np.ndarray, source: np.ndarray, motions: list[np.ndarray] | None = None) -> list[float]:
    """Each frame's colourfulness against that of the input as the frame's camera shows it: the input moved by the
    camera motion from frame 0 to the frame (`motions`, else fitted here). A zoom into a photo's colourful centre
    raises the frames' colourfulness against the whole input's without any colour drifting; against the view it does
    not."""
    import cv2

    height, width = frames.shape[1:3]
    ratios = []
    for frame, motion in zip(frames, motions or camera_motions(frames)):
        view = cv2.warpAffine(source, motion, (width, height), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)
        ratios.append(colourfulness(frame[None]) / max(colourfulness(view[None]), 1e-6))
    return ratios


def zoomed(image: np.ndarray, mean_flow: float, frames: int) -> np.ndarray:
    """`image` (H, W, 3) zoomed in on its centre at `mean_flow` px/frame (mean over pixels), as svd-mini's training
    clips move (motion="zoom")."""
    import cv2

    height, width = image.shape[:2]
    ys, xs = np.mgrid[:height, :width]
    centre_x, centre_y = (width - 1) / 2, (height - 1) / 2
    rate = mean_flow / float(np.hypot(xs - centre_x, ys - centre_y).mean())  # log-scale per frame
    clip = []
    for t in range(frames):
        scale = np.exp(rate * t)
        matrix = np.float32([[scale, 0, centre_x * (1 - scale)], [0, scale, centre_y * (1 - scale)]])
        clip.append(cv2.warpAffine(image, matrix, (width, height), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT))
    return np.stack(clip)


def melted(clip: np.ndarray, blur: float = 0.0, smear: float = 0.0, seed: int = 0) -> np.ndarray:
    """`clip` (T, H, W, 3) losing its detail over time, as a video that melts rather than moves: by the last frame
    blurred by a Gaussian of `blur` px and displaced by a smooth random field of `smear` px mean length."""
    import cv2

    frames, height, width = clip.shape[:3]
    field = cv2.GaussianBlur(np.random.default_rng(seed).normal(size=(height, width, 2)).astype(np.float32), (0, 0), 6)
    field *= smear / max(float(np.hypot(field[..., 0], field[..., 1]).mean()), 1e-6)
    grid_x, grid_y = np.meshgrid(np.arange(width, dtype=np.float32), np.arange(height, dtype=np.float32))
    out = []
    for t, frame in enumerate(clip):
        share = t / max(frames - 1, 1)
        frame = cv2.remap(frame, grid_x + share * field[..., 0], grid_y + share * field[..., 1], cv2.INTER_LINEAR,
                          borderMode=cv2.BORDER_REFLECT)
        out.append(cv2.GaussianBlur(frame, (0, 0), share * blur) if share * blur > 0 else frame)
    return np.stack(out)


def ceiling() -> dict:
    """What a perfect camera move scores -- each held-out photo zoomed in at bucket 127's flow: both warped SSIMs, and
    the worst frame's colourfulness against the input's and against the view's; and what the same zooms score as they
    melt (MELTING: detail lost or shapes smeared by 2 px by the last frame), both warped SSIMs."""
    flow = bucket_to_flow(SETTINGS.motion_bucket_id)
    sources = {name: to_uint8(pixels) for name, pixels in held_out_pixels().items()}
    clips = {name: zoomed(source, flow, SETTINGS.num_frames) for name, source in sources.items()}
    photos = {name: round(warped_last_frame_ssim(clip), 3) for name, clip in clips.items()}
    motions = {name: camera_motions(clip) for name, clip in clips.items()}
    camera = {name: round(camera_warped_ssim(clip, motions[name][-1]), 3) for name, clip in clips.items()}
    colour = {name: round(worst(colour_against_input(clip, sources[name])), 3) for name, clip in clips.items()}
    in_view = {name: round(worst(colour_in_view(clip, sources[name], motions[name])), 3)
               for name, clip in clips.items()}
    return {"mean_flow_px_per_frame": round(flow, 3), "photos": photos, "mean": round(float(np.mean(list(photos.values()))), 3),
            "camera_photos": camera, "camera_mean": round(float(np.mean(list(camera.values()))), 3),
            "colour_photos": colour, "colour_worst": worst(colour.values()),
            "colour_in_view_photos": in_view, "colour_in_view_worst": worst(in_view.values()),
            "melting": {name: melting_scores({photo: melted(clip, **how) for photo, clip in clips.items()})
                        for name, how in MELTING.items()}}


def melting_scores(clips: dict[str, np.ndarray]) -> dict:
    """Both warped SSIMs of clips that melt (`melted`), per photo and on average."""
    camera = {name: round(camera_warped_ssim(clip), 3) for name, clip in clips.items()}
    pixelwise = {name: round(warped_last_frame_ssim(clip), 3) for name, clip in clips.items()}
    return {"camera_photos": camera, "camera_mean": round(float(np.mean(list(camera.values()))), 3),
            "photos": pixelwise, "mean": round(float(np.mean(list(pixelwise.values()))), 3)}


def measure(folder: str) -> dict:
    vae, _ = check(Path(folder), "cpu")
    pipeline = load_pipeline(folder, torch.float32)
    inputs = {name: to_uint8(pixels) for name, pixels in held_out_pixels().items()}
    photos = {}
    for name, path in PHOTOS.items():
        frames = generate(pipeline, load_image(path), SETTINGS, show_progress=False).frames
        source, motions = inputs[name], camera_motions(frames)
        photos[name] = {
            "vae_psnr": vae["photos"][name]["psnr"], "vae_colour_ratio": vae["photos"][name]["colourfulness_ratio"],
            "frame0_psnr": round(float(psnr_per_frame(frames[:1], source[None])[0]), 2),
            "colour_ratio_worst": round(worst(colour_against_input(frames, source)), 3),
            "colour_in_view_worst": round(worst(colour_in_view(frames, source, motions)), 3),
            "warped_ssim": round(warped_last_frame_ssim(frames), 3),
            "camera_warped_ssim": round(camera_warped_ssim(frames, motions[-1]), 3),
        }
    rows = list(photos.values())
    summary = {
        "vae_psnr": round(float(np.mean([r["vae_psnr"] for r in rows])), 2),
        "vae_colour_worst": worst(r["vae_colour_ratio"] for r in rows),
        "frame0_psnr": round(float(np.mean([r["frame0_psnr"] for r in rows])), 2),
        "colour_over_time_worst": worst(r["colour_ratio_worst"] for r in rows),
        "colour_in_view_worst": worst(r["colour_in_view_worst"] for r in rows),
        "warped_ssim": round(float(np.mean([r["warped_ssim"] for r in rows])), 3),
        "camera_warped_ssim": round(float(np.mean([r["camera_warped_ssim"] for r in rows])), 3),
        "camera_warped_ssim_worst": min(r["camera_warped_ssim"] for r in rows),
    }
    summary["met"] = {
        "vae_psnr": summary["vae_psnr"] >= GOALS["vae_psnr"],
        "vae_colour": abs(summary["vae_colour_worst"] - 1) <= GOALS["vae_colour"],
        "frame0_psnr": summary["frame0_psnr"] >= GOALS["frame0_psnr"],
        "colour_over_time": abs(summary["colour_in_view_worst"] - 1) <= GOALS["colour_over_time"],
        "warped_ssim": summary["camera_warped_ssim_worst"] >= GOALS["warped_ssim"],
    }
    return {"folder": folder, "summary": summary, "photos": photos}


def markdown(results: dict[str, dict], ceiling: dict, info: dict) -> str:
    lines = [f"# svd-mini goals (issue #12), {', '.join(PHOTOS)}; 128x128x8, 25 steps, bucket 127, guidance "
             f"1.0 -> {SETTINGS.max_guidance_scale:g}, PyTorch fp32 on {info['cpu']}", "",
             "| model | VAE PSNR (≥ 26 dB) | VAE chroma, worst ratio (±10 %) | frame 0 vs input (≥ 22 dB) | chroma over time against the input in the camera's view, worst (±15 %) | the same against the whole input (the issue's wording) | last frame warped back by the camera motion, SSIM in view, mean (worst photo ≥ 0.7) | the same warped pixel by pixel by Farneback flow, whole frame (the issue's wording) |",
             "|---|---|---|---|---|---|---|---|"]
    for name, result in results.items():
        s, met = result["summary"], result["summary"]["met"]
        mark = lambda ok: "✓" if ok else "✗"  # noqa: E731
        lines.append(f"| {name} | {s['vae_psnr']} {mark(met['vae_psnr'])} | ×{s['vae_colour_worst']} {mark(met['vae_colour'])} | "
                     f"{s['frame0_psnr']} {mark(met['frame0_psnr'])} | ×{s['colour_in_view_worst']} {mark(met['colour_over_time'])} | "
                     f"×{s['colour_over_time_worst']} | {s['camera_warped_ssim']} (worst {s['camera_warped_ssim_worst']}) "
                     f"{mark(met['warped_ssim'])} | {s['warped_ssim']} |")
    lines.append(f"| *ceiling: the photos zoomed in at bucket 127's flow* | | | | ×{ceiling['colour_in_view_worst']} | "
                 f"×{ceiling['colour_worst']} | {ceiling['camera_mean']} "
                 f"(worst {min(ceiling['camera_photos'].values())}) | {ceiling['mean']} |")
    for name, scores in ceiling["melting"].items():
        lines.append(f"| *the same zoom melting: {name} by the last frame* | | | | | | {scores['camera_mean']} "
                     f"(best {max(scores['camera_photos'].values())}) | {scores['mean']} |")
    lines += ["", "Per photo (VAE PSNR / frame 0 PSNR / worst chroma ratio, against the view / against the input / "
              "camera-warped SSIM / Farneback-warped SSIM):", ""]
    for name, result in results.items():
        cells = ", ".join(f"{photo} {r['vae_psnr']} / {r['frame0_psnr']} / ×{r['colour_in_view_worst']} / ×{r['colour_ratio_worst']} / "
                          f"{r['camera_warped_ssim']} / {r['warped_ssim']}" for photo, r in result["photos"].items())
        lines.append(f"- {name}: {cells}")
    lines += ["", f"The ceiling: the photos zoomed in on their centre at bucket 127's flow "
              f"({ceiling['mean_flow_px_per_frame']} px/frame), a perfect camera move, score **{ceiling['mean']}** warped SSIM "
              f"({', '.join(f'{k} {v}' for k, v in ceiling['photos'].items())}); by one camera motion **{ceiling['camera_mean']}** "
              f"({', '.join(f'{k} {v}' for k, v in ceiling['camera_photos'].items())}). Their worst frame's chroma against "
              f"the input's: **×{ceiling['colour_worst']}** ({', '.join(f'{k} ×{v}' for k, v in ceiling['colour_photos'].items())}); "
              f"against the view's: ×{ceiling['colour_in_view_worst']} "
              f"({', '.join(f'{k} ×{v}' for k, v in ceiling['colour_in_view_photos'].items())})."]
    return "\n".join(lines) + "\n"


def main(argv: list[str]) -> None:
    out = argv[argv.index("--out") + 1] if "--out" in argv else "mini_goals"
    models = dict(arg.split("=", 1) for arg in argv if "=" in arg)
    if not models:
        raise SystemExit(__doc__)
    torch.manual_seed(0)
    info = machine()
    results = {name: measure(folder) for name, folder in models.items()}
    perfect = ceiling()
    save(out, {"machine": info, "settings": SETTINGS.as_dict(), "goals": GOALS, "models": results, "ceiling": perfect},
         markdown(results, perfect, info))


if __name__ == "__main__":
    main(sys.argv[1:])
