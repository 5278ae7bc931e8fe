"""Metrics on synthetic videos whose answers are known."""

import cv2
import numpy as np
import pytest

from svdtool.validate import video_metrics
from svdtool.validate.metrics import brightness, flicker, grayscale, noise_sigma, sharpness, temporal_mse, warp_error_and_motion


def textured(height=128, width=160, seed=0, smooth=4.0) -> np.ndarray:
    """A random texture (noise blurred by `smooth` px) as one RGB frame."""
    rng = np.random.default_rng(seed)
    base = cv2.GaussianBlur(rng.uniform(0, 255, (height, width)).astype(np.float32), (0, 0), smooth)
    base = (base - base.min()) / (base.max() - base.min()) * 200 + 20
    return np.repeat(base[..., None], 3, axis=2).astype(np.uint8)


def test_constant_video_has_no_temporal_change():
    frames = np.repeat(textured()[None], 5, axis=0)
    metrics = video_metrics(frames)
    assert metrics["temporal_mse"] == 0 and metrics["flicker"] == 0
    assert metrics["warp_error"] < 0.01 and metrics["motion"] < 0.01  # flow and remap numerics only


def test_temporal_mse_of_a_known_step():
    frames = np.stack([np.full((32, 32, 3), 100, np.uint8), np.full((32, 32, 3), 110, np.uint8), np.full((32, 32, 3), 100, np.uint8)])
    assert temporal_mse(grayscale(frames)) == pytest.approx(100.0)
    assert flicker(grayscale(frames)) == pytest.approx(10.0)
    assert brightness(grayscale(frames)) == pytest.approx(310 / 3)


def test_blur_lowers_sharpness():
    frame = textured(seed=1, smooth=1.0)
    blurred = cv2.GaussianBlur(frame, (0, 0), 2)
    assert sharpness(grayscale(blurred[None])) < 0.5 * sharpness(grayscale(frame[None]))


@pytest.mark.parametrize("sigma", [5.0, 10.0])
def test_noise_sigma_is_estimated_within_10_percent(sigma):
    rng = np.random.default_rng(2)
    clean = cv2.GaussianBlur(rng.uniform(60, 190, (256, 256)).astype(np.float64), (0, 0), 6)
    noisy = np.clip(clean + rng.normal(0, sigma, clean.shape), 0, 255)[None]
    assert noise_sigma(noisy) == pytest.approx(sigma, rel=0.10)


def test_warp_error_is_small_for_a_pure_pan():
    frame = textured(160, 200, seed=3)
    pan = np.stack([frame[:, i : i + 160] for i in range(0, 8, 2)])  # 2 px per frame to the left
    gray = grayscale(pan)
    warp, motion = warp_error_and_motion(gray)
    assert motion == pytest.approx(2.0, rel=0.25)
    assert warp < 0.3 * np.sqrt(temporal_mse(gray))


def test_fidelity_psnr_and_ssim():
    frames = np.stack([textured(seed=s) for s in range(3)])
    identical = video_metrics(frames, frames)
    assert identical["psnr_mean"] == 100.0 and identical["ssim_min"] == pytest.approx(1.0)
    shifted = np.clip(frames.astype(int) + 5, 0, 255).astype(np.uint8)  # +5 levels everywhere → MSE 25
    assert video_metrics(shifted, frames)["psnr_mean"] == pytest.approx(10 * np.log10(255**2 / 25), abs=0.1)
    with pytest.raises(ValueError):
        video_metrics(frames[:2], frames)
