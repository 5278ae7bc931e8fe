"""Video quality metrics (numpy + OpenCV + scikit-image), on 8-bit grayscale frames unless said otherwise.

- temporal_mse: mean over consecutive frame pairs of the mean squared difference (0 for a still video).
- sharpness: variance of the Laplacian (cv2.Laplacian, CV_64F), mean over frames.
- brightness: mean pixel intensity (0-255).
- noise: Immerkær (1996) fast noise sigma, σ = √(π/2) / (6 (W-2)(H-2)) · Σ |I ∗ M|, M = [[1,-2,1],[-2,4,-2],[1,-2,1]];
  mean over frames.
- flicker: mean |Δ| of the per-frame mean intensity between consecutive frames.
- colourfulness: mean CIELAB chroma √(a*² + b*²) of the RGB frames (0 for grey; a grey-green cast lowers it).
- warp_error: Farneback flow from frame t+1 back to t; frame t warped along it; mean absolute error to frame
  t+1 in intensity levels, mean over pairs. motion: mean magnitude of that flow in pixels.
- With a reference video of the same shape: per-frame PSNR (RGB, peak 255, capped at 100 dB for identical frames)
  and SSIM (grayscale), reported as mean and min.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from skimage.metrics import structural_similarity

PSNR_CAP = 100.0
_IMMERKAER = np.array([[1, -2, 1], [-2, 4, -2], [1, -2, 1]], dtype=np.float64)


def grayscale(frames: np.ndarray) -> np.ndarray:
    """uint8 [F, H, W, 3] RGB → uint8 [F, H, W]."""
    import cv2  # imported here, not at the top: PSNR/SSIM/colourfulness run on GPU hosts without OpenCV

    return np.stack([cv2.cvtColor(np.ascontiguousarray(frame), cv2.COLOR_RGB2GRAY) for frame in frames])


def temporal_mse(gray: np.ndarray) -> float:
    if len(gray) < 2:
        return 0.0
    diffs = np.diff(gray.astype(np.float64), axis=0)
    return float(np.mean(diffs**2, axis=(1, 2)).mean())


def sharpness(gray: np.ndarray) -> float:
    import cv2

    return float(np.mean([cv2.Laplacian(frame, cv2.CV_64F).var() for frame in gray]))


def brightness(gray: np.ndarray) -> float:
    return float(gray.astype(np.float64).mean())


def noise_sigma(gray: np.ndarray) -> float:
    import cv2

    sigmas = []
    for frame in gray.astype(np.float64):
        height, width = frame.shape
        response = cv2.filter2D(frame, cv2.CV_64F, _IMMERKAER)[1:-1, 1:-1]
        sigmas.append(np.sqrt(np.pi / 2) * np.abs(response).sum() / (6 * (width - 2) * (height - 2)))
    return float(np.mean(sigmas))


def flicker(gray: np.ndarray) -> float:
    if len(gray) < 2:
        return 0.0
    return float(np.abs(np.diff(gray.astype(np.float64).mean(axis=(1, 2)))).mean())


def colourfulness(frames: np.ndarray) -> float:
    """Mean CIELAB chroma of uint8 RGB frames [F, H, W, 3] (or one frame [H, W, 3])."""
    from skimage.color import rgb2lab

    lab = rgb2lab(np.asarray(frames, dtype=np.float64) / 255.0)
    return float(np.hypot(lab[..., 1], lab[..., 2]).mean())


def farneback_flow(source: np.ndarray, target: np.ndarray) -> np.ndarray:
    """Dense flow (H, W, 2) between two uint8 grayscale frames, OpenCV's Farneback with the settings every metric here
    uses: pixel (x, y) of `source` shows what `target` has at (x, y) + flow."""
    import cv2

    return cv2.calcOpticalFlowFarneback(source, target, None, 0.5, 3, 15, 3, 5, 1.2, 0)


def warp_error_and_motion(gray: np.ndarray) -> tuple[float, float]:
    import cv2

    if len(gray) < 2:
        return 0.0, 0.0
    height, width = gray.shape[1:]
    grid_x, grid_y = np.meshgrid(np.arange(width, dtype=np.float32), np.arange(height, dtype=np.float32))
    errors, motions = [], []
    for previous, current in zip(gray[:-1], gray[1:]):
        flow = farneback_flow(current, previous)
        warped = cv2.remap(previous, grid_x + flow[..., 0], grid_y + flow[..., 1], cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
        errors.append(np.abs(warped.astype(np.float64) - current.astype(np.float64)).mean())
        motions.append(np.linalg.norm(flow, axis=-1).mean())
    return float(np.mean(errors)), float(np.mean(motions))


def psnr_per_frame(frames: np.ndarray, reference: np.ndarray) -> np.ndarray:
    mse = np.mean((frames.astype(np.float64) - reference.astype(np.float64)) ** 2, axis=tuple(range(1, frames.ndim)))
    with np.errstate(divide="ignore"):
        values = 10 * np.log10(255.0**2 / mse)
    return np.minimum(values, PSNR_CAP)


def ssim_per_frame(frames: np.ndarray, reference: np.ndarray) -> np.ndarray:
    gray, gray_reference = grayscale(frames), grayscale(reference)
    return np.array([structural_similarity(a, b, data_range=255) for a, b in zip(gray, gray_reference)])


def video_metrics(frames: np.ndarray, reference: np.ndarray | None = None) -> dict[str, float]:
    """All metrics of uint8 RGB frames [F, H, W, 3]; fidelity ones too when `reference` has the same shape."""
    gray = grayscale(frames)
    warp, motion = warp_error_and_motion(gray)
    metrics = {
        "temporal_mse": temporal_mse(gray),
        "sharpness": sharpness(gray),
        "brightness": brightness(gray),
        "noise": noise_sigma(gray),
        "flicker": flicker(gray),
        "colourfulness": colourfulness(frames),
        "warp_error": warp,
        "motion": motion,
    }
    if reference is not None:
        if reference.shape != frames.shape:
            raise ValueError(f"reference shape {reference.shape} differs from {frames.shape}")
        psnr, ssim = psnr_per_frame(frames, reference), ssim_per_frame(frames, reference)
        metrics.update(psnr_mean=float(psnr.mean()), psnr_min=float(psnr.min()), ssim_mean=float(ssim.mean()), ssim_min=float(ssim.min()))
    return {key: round(value, 4) for key, value in metrics.items()}


def per_frame_fidelity(frames: np.ndarray, reference: np.ndarray) -> dict[str, Any]:
    return {"psnr": psnr_per_frame(frames, reference).round(3).tolist(), "ssim": ssim_per_frame(frames, reference).round(4).tolist()}
