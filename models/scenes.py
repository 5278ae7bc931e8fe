"""Procedural training clips for svd-mini: textured scenes moved by known camera and object motions.

Every clip is a function of (seed, index), so the data set is reproducible without being stored. Backgrounds are
photos bundled with scikit-image, multi-octave noise textures, stripes and gradients, and (when asked) dead-leaves
scenes coloured and textured by those photos. With `motion="random"` the
camera pans, zooms and rotates over them in a random mix and direction while 0-3 shaded shapes move on their own;
with `motion="zoom"` the camera only zooms in on the centre, so the motion is a function of its strength alone. The
mean per-pixel displacement in the clip's own pixels (px/frame, known exactly from the motion) sets
`motion_bucket_id`, as optical-flow magnitude does in SVD.

Written with torch (affine grids + `grid_sample`) rather than OpenCV so a batch renders on the training GPU.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F

CLIP_SIZE = 128
CANVAS_SIZE = 256
MAX_FLOW = 4.0  # mean px/frame (at 128 px) that maps to motion_bucket_id 255
TRAIN_PHOTOS = (
    "astronaut.png", "rocket.jpg", "motorcycle_left.png", "motorcycle_right.png", "hubble_deep_field.jpg",
    "ihc.png", "retina.jpg", "brick.png", "grass.png", "gravel.png", "camera.png", "coins.png", "moon.png",
    "page.png", "text.png", "color.png",
)
HELD_OUT_PHOTOS = ("chelsea.png", "coffee.png")  # never seen in training: evaluation and README inputs
Motion = Literal["random", "zoom"]
MOSAIC_SHARE = 0.25  # clips whose canvas is a mosaic of four whole photos, unless render_clips is told otherwise


@dataclass(frozen=True)
class SceneMix:
    """What the clips' backgrounds are: a share `mosaics` mosaics of four whole photos (the rest a third each photo
    crops, noise textures and patterns), then a share `leaves` of all clips dead-leaves scenes instead; a share `casts`
    of the photo canvases under a colour cast (`_colour_cast`). All need render_clips' photos (without them every
    canvas is a texture or a pattern). Shares other than the defaults draw more numbers, so only the default mix
    renders the stream earlier runs trained on."""

    mosaics: float = MOSAIC_SHARE
    leaves: float = 0.0
    casts: float = 0.0


@dataclass
class Clips:
    """A batch of clips: `frames` (B, F, 3, H, W) in [-1, 1], true mean flow (px/frame) and its motion bucket."""

    frames: torch.Tensor
    mean_flow: torch.Tensor
    motion_bucket_id: torch.Tensor


def to_uint8(frames: torch.Tensor) -> np.ndarray:
    """(F, 3, H, W) in [-1, 1] -> (F, H, W, 3) uint8, the layout the metrics and video writers take."""
    return ((frames.detach().cpu().permute(0, 2, 3, 1) + 1) * 127.5).round().clamp(0, 255).byte().numpy()


def flow_to_bucket(mean_flow: torch.Tensor) -> torch.Tensor:
    return (mean_flow / MAX_FLOW).clamp(0, 1).mul(255).round().long()


def bucket_to_flow(bucket: float) -> float:
    return bucket / 255 * MAX_FLOW


@lru_cache(maxsize=4)
def photo_bank(names: tuple[str, ...] = TRAIN_PHOTOS, size: int = 320) -> torch.Tensor:
    """scikit-image's bundled photos as (N, 3, size, size) in [-1, 1] (centre square, grey ones as RGB)."""
    from skimage import io
    import skimage

    folder = Path(skimage.__file__).parent / "data"
    images = []
    for name in names:
        path = folder / name
        if not path.is_file():  # scikit-image versions ship slightly different sets; use what is there
            continue
        image = np.asarray(io.imread(path), dtype=np.float32)
        image = image / (255.0 if image.max() > 1.5 else 1.0)
        if image.ndim == 2:
            image = np.repeat(image[..., None], 3, axis=2)
        image = torch.from_numpy(image[..., :3].copy()).permute(2, 0, 1)[None]
        side = min(image.shape[-2:])
        top, left = (image.shape[-2] - side) // 2, (image.shape[-1] - side) // 2
        image = image[..., top:top + side, left:left + side]
        images.append(F.interpolate(image, size=(size, size), mode="bilinear", antialias=True, align_corners=False))
    if not images:
        raise FileNotFoundError(f"none of {names} found in {folder}")
    return torch.cat(images).mul(2).sub(1).clamp(-1, 1)


class _Draw:
    """Random draws from a CPU generator (the same numbers on every host), placed on the rendering device."""

    def __init__(self, seed: int, device: torch.device | str) -> None:
        self.generator, self.device = torch.Generator().manual_seed(seed), torch.device(device)

    def uniform(self, *shape: int, low: float = 0.0, high: float = 1.0) -> torch.Tensor:
        return (torch.rand(*shape, generator=self.generator) * (high - low) + low).to(self.device)

    def integers(self, high: int, *shape: int) -> torch.Tensor:
        return torch.randint(0, high, shape, generator=self.generator).to(self.device)


def _palette(draw: _Draw, n: int) -> tuple[torch.Tensor, torch.Tensor]:
    return draw.uniform(n, 3, 1, 1, low=-1, high=1), draw.uniform(n, 3, 1, 1, low=-1, high=1)


def _noise_texture(draw: _Draw, n: int, size: int) -> torch.Tensor:
    """Multi-octave value noise coloured by a random two-colour palette."""
    total = torch.zeros(n, 1, size, size, device=draw.device)
    for octave, resolution in enumerate((4, 8, 16, 32, 64)):
        coarse = draw.uniform(n, 1, resolution, resolution)
        weight = draw.uniform(n, 1, 1, 1) * 0.5 ** octave
        total += weight * F.interpolate(coarse, size=(size, size), mode="bicubic", align_corners=False)
    total = (total - total.amin((2, 3), keepdim=True)) / (total.amax((2, 3), keepdim=True) - total.amin((2, 3), keepdim=True) + 1e-6)
    first, second = _palette(draw, n)
    return first + (second - first) * total


def _pattern_texture(draw: _Draw, n: int, size: int) -> torch.Tensor:
    """Stripes or a checkerboard at a random angle and period, or a linear gradient."""
    coords = torch.arange(size, dtype=torch.float32, device=draw.device)
    ys, xs = torch.meshgrid(coords, coords, indexing="ij")
    angle = draw.uniform(n, 1, 1, high=math.pi)
    period = draw.uniform(n, 1, 1, low=8, high=48)
    u = (xs * torch.cos(angle) + ys * torch.sin(angle)) / period
    v = (-xs * torch.sin(angle) + ys * torch.cos(angle)) / period
    kind = draw.integers(3, n, 1, 1)
    stripes = 0.5 + 0.5 * torch.sin(2 * math.pi * u)
    checker = ((torch.floor(u) + torch.floor(v)) % 2)
    gradient = (u - u.amin((1, 2), keepdim=True)) / (u.amax((1, 2), keepdim=True) - u.amin((1, 2), keepdim=True))
    t = torch.where(kind == 0, stripes, torch.where(kind == 1, checker, gradient))[:, None]
    first, second = _palette(draw, n)
    return first + (second - first) * t


def _colour_jitter(draw: _Draw, images: torch.Tensor) -> torch.Tensor:
    """A random hue rotation (about the grey axis) and saturation scale (0.6-1.4) per image, in [-1, 1] RGB: the
    bundled colour photos are a dozen, with a handful of palettes."""
    n = images.shape[0]
    angle = draw.uniform(n, high=2 * math.pi)
    saturation = draw.uniform(n, low=0.6, high=1.4)
    grey = torch.full((3, 3), 1 / 3, device=images.device)
    axis = torch.tensor([[0.0, -1.0, 1.0], [1.0, 0.0, -1.0], [-1.0, 1.0, 0.0]], device=images.device) / math.sqrt(3)
    eye = torch.eye(3, device=images.device)
    cos, sin = torch.cos(angle)[:, None, None], torch.sin(angle)[:, None, None]
    rotation = grey + cos * (eye - grey) + sin * axis  # Rodrigues' formula about (1, 1, 1) / sqrt(3)
    matrix = grey + saturation[:, None, None] * (rotation - grey)
    return torch.einsum("nij,njhw->nihw", matrix, images).clamp(-1, 1)


def _colour_cast(draw: _Draw, images: torch.Tensor, spread: float = 0.25) -> torch.Tensor:
    """A random white-balance error per image: each RGB channel (in [0, 1]) scaled by exp(u - mean(u)), u uniform in
    ±s and s uniform in [0, `spread`], so the brightness stays and greys take a tint from none to clear. Half the
    bundled photos are grey, which hue and saturation jitter keep grey: without casts few clips lie between grey and
    colourful (mean Lab chroma: 14 % below 2, 7 % in 2-8), where near-grey inputs (china: 11) lie."""
    strength = draw.uniform(images.shape[0], 1, high=spread)
    log_gain = draw.uniform(images.shape[0], 3, low=-1, high=1) * strength
    gain = torch.exp(log_gain - log_gain.mean(1, keepdim=True))[:, :, None, None]
    return ((images + 1) * gain - 1).clamp(-1, 1)


def _mosaic(draw: _Draw, photos: torch.Tensor) -> torch.Tensor:
    """A canvas of 2x2 photos, each a random 60-100 % crop shrunk to CLIP_SIZE: a clip then shows whole photos at
    the detail density of a photo resized to the clip (the held-out inputs' scale), where a single crop is 2.5x
    zoomed in."""
    tiles = []
    for _ in range(4):
        index = int(torch.randint(0, photos.shape[0], (1,), generator=draw.generator))
        side = int(photos.shape[-1] * (0.6 + 0.4 * float(torch.rand(1, generator=draw.generator))))
        top, left = (int(x) for x in torch.randint(0, photos.shape[-1] - side + 1, (2,), generator=draw.generator))
        crop = photos[index:index + 1, :, top:top + side, left:left + side]
        tiles.append(F.interpolate(crop, size=(CLIP_SIZE, CLIP_SIZE), mode="bilinear", antialias=True, align_corners=False)[0])
    return torch.cat([torch.cat(tiles[:2], dim=-1), torch.cat(tiles[2:], dim=-1)], dim=-2)


def _backgrounds(draw: _Draw, n: int, photos: torch.Tensor | None, mix: SceneMix) -> torch.Tensor:
    """n canvases (n, 3, CANVAS_SIZE, CANVAS_SIZE) as `mix` says: photo mosaics, photo crops, noise textures, patterns
    (stripes, checkerboards, gradients) and dead leaves (photos flipped, channels permuted; photos and leaves hue and
    saturation jittered)."""
    size = CANVAS_SIZE
    kind = draw.integers(4, n)  # 0 pattern, 1 noise, 2 photo crop, 3 mosaic
    if mix.mosaics != MOSAIC_SHARE:  # drawn only then, so the default stream is the one earlier runs trained on
        kind = torch.where(draw.uniform(n) < mix.mosaics, 3, draw.integers(3, n))
    canvas = torch.where((kind == 0)[:, None, None, None], _pattern_texture(draw, n, size), _noise_texture(draw, n, size))
    if photos is not None:
        photos = photos.to(draw.device)
        index = torch.randint(0, photos.shape[0], (n,), generator=draw.generator)
        span = photos.shape[-1] - size
        crops = []
        for i in range(n):
            if int(kind[i]) == 3:
                crop = _mosaic(draw, photos)
            else:
                top, left = (int(x) for x in torch.randint(0, span + 1, (2,), generator=draw.generator))
                crop = photos[int(index[i]), :, top:top + size, left:left + size]
            if torch.rand(1, generator=draw.generator) < 0.5:
                crop = crop.flip(-1)
            crops.append(crop[torch.randperm(3, generator=draw.generator).to(draw.device)])
        canvas = torch.where((kind >= 2)[:, None, None, None], _colour_jitter(draw, torch.stack(crops)), canvas)
        if mix.casts:
            cast = (kind >= 2) & (draw.uniform(n) < mix.casts)
            canvas = torch.where(cast[:, None, None, None], _colour_cast(draw, canvas), canvas)
        if mix.leaves:
            chosen = torch.nonzero(draw.uniform(n) < mix.leaves).flatten()
            if len(chosen):
                canvas[chosen] = _colour_jitter(draw, _dead_leaves(draw, len(chosen), photos))
    return canvas


def _dead_leaves(draw: _Draw, n: int, photos: torch.Tensor, count: int = 1200, smallest: float = 3.0,
                 largest: float = 80.0) -> torch.Tensor:
    """n dead-leaves scenes (n, 3, CANVAS_SIZE, CANVAS_SIZE): `count` ellipses (radius p(r) ~ r^-3 between `smallest` and
    `largest` px, aspect 1-2.5) fallen one over another, each the colour of a pixel of a colour photo, flat or carrying
    a photo's texture. Such scenes have natural images' occlusions, edges at every scale and 1/f^2 spectrum, and
    train restoration networks nearly as well as photos (Achddou, Gousseau, Ladjal 2021); the bundled colour photos
    are seven. Each leaf is painted by hand in its own bounding box (about 0.1 s of one CPU core a scene): OpenCV
    fills ellipses with one colour, antialiased in 8-bit images only, where a textured leaf needs its coverage."""
    size = CANVAS_SIZE
    colourful = photos[(photos - photos.mean(1, keepdim=True)).abs().mean((1, 2, 3)) > 0.02]
    photos = colourful if len(colourful) else photos
    u = draw.uniform(n, count).cpu()
    radius = (smallest ** -2 - u * (smallest ** -2 - largest ** -2)) ** -0.5  # inverse CDF of p(r) ~ r^-3
    aspect = draw.uniform(n, count, low=1.0, high=2.5).cpu()
    angle = draw.uniform(n, count, high=math.pi).cpu()
    centre = draw.uniform(n, count, 2, high=size).cpu()
    pixel = draw.integers(photos.shape[-1], n, count, 2).cpu()
    colour = photos[draw.integers(len(photos), n, count).cpu(), :, pixel[..., 0], pixel[..., 1]]  # (n, count, 3)
    texture_of = draw.integers(3, n, count).cpu()  # 0: flat, else the scene's texture 1 or 2
    contrast = draw.uniform(n, count, low=0.3, high=1.0).cpu()
    texture_photo = draw.integers(len(photos), n, 2).cpu()
    texture_at = draw.integers(photos.shape[-1] - size + 1, n, 2, 2).cpu()
    scenes = torch.empty(n, 3, size, size, device=photos.device)
    for i in range(n):
        textures = []
        for k in range(2):
            top, left = (int(x) for x in texture_at[i, k])
            textures.append(photos[int(texture_photo[i, k]), :, top:top + size, left:left + size])
        textures = torch.stack(textures)
        textures = torch.cat([torch.zeros_like(textures[:1]), textures - textures.mean(dim=(2, 3), keepdim=True)])
        canvas = colour[i, 0, :, None, None] + textures[1]
        for j in range(count):
            r, a, cy, cx = float(radius[i, j]), float(aspect[i, j]), float(centre[i, j, 0]), float(centre[i, j, 1])
            top, bottom = max(int(cy - r) - 1, 0), min(int(cy + r) + 2, size)
            left, right = max(int(cx - r) - 1, 0), min(int(cx + r) + 2, size)
            ys = torch.arange(top, bottom, dtype=torch.float32, device=photos.device)[:, None] - cy
            xs = torch.arange(left, right, dtype=torch.float32, device=photos.device)[None] - cx
            cos, sin = math.cos(float(angle[i, j])), math.sin(float(angle[i, j]))
            distance = torch.sqrt((xs * cos + ys * sin) ** 2 + ((ys * cos - xs * sin) * a) ** 2)
            cover = ((r - distance) / a).clamp(-0.5, 0.5) + 0.5  # antialiased over about a pixel of the minor axis
            k = int(texture_of[i, j])
            fill = colour[i, j, :, None, None] + float(contrast[i, j]) * textures[k, :, top:bottom, left:right]
            window = canvas[:, top:bottom, left:right]
            canvas[:, top:bottom, left:right] = window + (fill - window) * cover
        scenes[i] = canvas
    return scenes.clamp(-1, 1)


def _camera_motion(draw: _Draw, n: int, motion: Motion) -> torch.Tensor:
    """Per clip (direction, pan px/frame, zoom log-scale/frame, spin rad/frame) at unit strength: a random mix and
    direction, or ("zoom") a zoom in on the centre."""
    if motion == "zoom":
        return torch.tensor([0.0, 0.0, 0.02, 0.0], device=draw.device).repeat(n, 1)
    direction = draw.uniform(n, high=2 * math.pi)
    mix = -torch.log(draw.uniform(n, 3).clamp_min(1e-6))  # Dirichlet(1, 1, 1)
    mix = mix / mix.sum(1, keepdim=True)
    zoom_sign, spin_sign = torch.sign(draw.uniform(2, n) - 0.5)
    return torch.stack([direction, mix[:, 0] * 2.0, mix[:, 1] * 0.02 * zoom_sign, mix[:, 2] * 0.025 * spin_sign], 1)


def _camera(motion: torch.Tensor, strength: torch.Tensor, t: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """The camera at times `t` (T,): scale, angle and shift (x, y) of the map from a pixel of the clip (relative to its
    centre) to the canvas, each (n, T, 1, 1)."""
    t = t[None, :, None, None]
    direction, pan, zoom, spin = (motion[:, i, None, None, None] for i in range(4))
    k = strength[:, None, None, None]
    return torch.exp(-zoom * k * t), spin * k * t, pan * k * torch.cos(direction) * t, pan * k * torch.sin(direction) * t


def _pixel_grid(stride: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """The clip's pixel centres relative to its centre, (y, x) of (H, W) each; with `stride`, every stride-th pixel's
    (the centres of stride x stride cells)."""
    coords = torch.arange((stride - 1) / 2, CLIP_SIZE, stride, dtype=torch.float32, device=device) - (CLIP_SIZE - 1) / 2
    return torch.meshgrid(coords, coords, indexing="ij")


def _canvas_points(camera: tuple[torch.Tensor, ...], xs: torch.Tensor, ys: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Where `camera` (`_camera`'s scale, angle, shift) shows the clip's pixels (xs, ys) on the canvas, relative to its
    centre."""
    scale, angle, shift_x, shift_y = camera
    cos, sin = torch.cos(angle), torch.sin(angle)
    return scale * (cos * xs - sin * ys) + shift_x, scale * (sin * xs + cos * ys) + shift_y


def _camera_grids(motion: torch.Tensor, strength: torch.Tensor, frames: int) -> torch.Tensor:
    """Per frame, the canvas pixel (x, y) each output pixel shows: (n, frames, H, W, 2)."""
    ys, xs = _pixel_grid(1, motion.device)
    x, y = _canvas_points(_camera(motion, strength, torch.arange(frames, dtype=torch.float32, device=motion.device)), xs, ys)
    return torch.stack([x, y], dim=-1) + (CANVAS_SIZE - 1) / 2


def _camera_flow(motion: torch.Tensor, strength: torch.Tensor, frames: int, stride: int = 1) -> torch.Tensor:
    """Per step between frames, how far (px) the scene point each output pixel shows moves in the clip: the optical
    flow a viewer sees, (n, frames-1, H, W); with `stride`, only every stride-th pixel's.

    Measured in the clip's pixels, not the canvas's: as the camera zooms in, one clip pixel covers less canvas, so a
    zoom at a constant rate moves the picture steadily while its canvas steps shrink. Measured on the canvas, bucket
    127's zoom clips moved 1.21x and bucket 255's 1.58x the flow their bucket stands for, and svd-mini learned that.
    """
    ys, xs = _pixel_grid(stride, motion.device)
    times = torch.arange(frames - 1, dtype=torch.float32, device=motion.device)
    next_scale, next_angle, next_x, next_y = _camera(motion, strength, times + 1)
    # The canvas point shown at (xs, ys) now, then where the next frame shows it (the next camera's map inverted).
    x, y = _canvas_points(_camera(motion, strength, times), xs, ys)
    x, y = x - next_x, y - next_y
    cos, sin = torch.cos(next_angle), torch.sin(next_angle)
    next_xs, next_ys = (cos * x + sin * y) / next_scale, (-sin * x + cos * y) / next_scale
    return torch.hypot(next_xs - xs, next_ys - ys)


def _camera_strength(camera: torch.Tensor, target: torch.Tensor, frames: int, iterations: int = 6) -> torch.Tensor:
    """Per clip, the strength whose camera moves the clip's pixels `target` px/frame on average over the clip: the
    first step's aim, then fixed-point steps on the clip's mean flow (pans and spins seen through a zoom speed up or
    slow down over the clip). The flow is measured on every 8th pixel (the camera's motion is smooth: within 0.2 % of
    all pixels', at 1/64 the cost that otherwise doubled render_clips' time)."""
    strength = target / _camera_flow(camera, torch.ones_like(target), 2, stride=8).mean(dim=(1, 2, 3)).clamp_min(1e-3)
    for _ in range(iterations if frames > 1 else 0):  # one frame has no steps: its first step's aim is kept
        mean_flow = _camera_flow(camera, strength, frames, stride=8).mean(dim=(1, 2, 3))
        strength = strength * target / mean_flow.clamp_min(1e-3)
    return strength.clamp(max=20.0)


def _add_moving_shapes(draw: _Draw, video: torch.Tensor, flow: torch.Tensor, target: torch.Tensor) -> None:
    """Paint 0-3 shaded circles or polygons per clip into `video` (n, F, 3, H, W), each moving on its own at about the
    clip's target flow, and write their speed into `flow` (n, F-1, H, W) where they cover it."""
    n, frames = video.shape[:2]
    coords = torch.arange(CLIP_SIZE, dtype=torch.float32, device=draw.device)
    ys, xs = torch.meshgrid(coords, coords, indexing="ij")
    objects = draw.integers(4, n)
    for slot in range(3):
        present = (objects > slot).float()
        radius = draw.uniform(n, low=8, high=28)
        sides = draw.integers(6, n)  # 0-2: circle, else a regular polygon of 3-5 sides
        start = draw.uniform(n, 2, low=20, high=CLIP_SIZE - 20)
        heading = draw.uniform(n, high=2 * math.pi)
        speed = target * draw.uniform(n, low=0.6, high=1.6)  # px/frame
        velocity = torch.stack([torch.cos(heading), torch.sin(heading)], 1) * speed[:, None]
        colour_a, colour_b = _palette(draw, n)
        orientation = draw.uniform(n, high=2 * math.pi)
        for frame in range(frames):
            centre = start + velocity * frame
            dx = xs[None] - centre[:, 0, None, None]
            dy = ys[None] - centre[:, 1, None, None]
            distance = torch.sqrt(dx ** 2 + dy ** 2)
            polygon_sides = (sides.clamp_min(3)).float()[:, None, None]
            theta = torch.atan2(dy, dx) - orientation[:, None, None]
            sector = 2 * math.pi / polygon_sides
            polygon_radius = radius[:, None, None] * torch.cos(sector / 2) / torch.cos((theta % sector) - sector / 2)
            edge = torch.where((sides < 3)[:, None, None], radius[:, None, None], polygon_radius)
            mask = ((edge - distance).clamp(-0.5, 0.5) + 0.5) * present[:, None, None]
            shade = (distance / radius[:, None, None]).clamp(0, 1)[:, None]
            fill = colour_a + (colour_b - colour_a) * shade
            video[:, frame] = video[:, frame] * (1 - mask[:, None]) + fill * mask[:, None]
            if frame < frames - 1:
                flow[:, frame] = flow[:, frame] * (1 - mask) + speed[:, None, None] * mask


def render_clips(seed: int, n: int, frames: int = 8, photos: torch.Tensor | None = None, device: str = "cpu",
                 motion: Motion = "random", mix: SceneMix = SceneMix()) -> Clips:
    """Render n clips of `frames` frames at CLIP_SIZE on `device`; the same scenes for the same (seed, n, frames).

    `motion="zoom"`: the camera always moves (zooming in, from still at bucket 0 to MAX_FLOW) and no shapes move on
    their own, so a clip's motion follows from its first frame and bucket -- a small model can commit to it, where
    random directions leave it to average them into blur. `mix`: what the backgrounds are (SceneMix); its mosaics
    show whole photos at the detail density of a photo resized to the clip (as the pipeline's inputs are)."""
    draw = _Draw(seed, device)
    size = CLIP_SIZE
    canvas = _backgrounds(draw, n, photos, mix)
    # Aim each clip at a mean flow drawn uniformly (6 % static): camera flow is close to linear in its strength.
    target = draw.uniform(n, high=MAX_FLOW) * (draw.uniform(n) > 0.06).float()
    camera_on = (draw.uniform(n) > 0.1).float() if motion == "random" else torch.ones(n, device=draw.device)  # 10 % object-only
    camera = _camera_motion(draw, n, motion)
    strength = _camera_strength(camera, target, frames) * camera_on
    grids = _camera_grids(camera, strength, frames)
    normalised = grids / (CANVAS_SIZE - 1) * 2 - 1
    video = F.grid_sample(
        canvas.repeat_interleave(frames, 0), normalised.reshape(n * frames, size, size, 2),
        mode="bilinear", padding_mode="reflection", align_corners=True,
    ).reshape(n, frames, 3, size, size)
    flow = _camera_flow(camera, strength, frames)  # (n, frames-1, H, W)

    if motion == "random":
        _add_moving_shapes(draw, video, flow, target)
    mean_flow = flow.mean(dim=(1, 2, 3)).cpu()
    return Clips(video.clamp(-1, 1), mean_flow, flow_to_bucket(mean_flow))


def save_samples(folder: Path, seed: int = 0, count: int = 16, frames: int = 8, motion: Motion = "random") -> Path:
    """Write `count` clips as GIFs plus a JSON of their flow and bucket, to look at the data."""
    import json

    import imageio.v3 as iio

    folder.mkdir(parents=True, exist_ok=True)
    clips = render_clips(seed, count, frames, photo_bank(), motion=motion)
    labels = []
    for i in range(count):
        name = f"clip{i:02d}_bucket{int(clips.motion_bucket_id[i]):03d}.gif"
        iio.imwrite(folder / name, to_uint8(clips.frames[i]), duration=1000 / 7, loop=0)
        labels.append({"file": name, "mean_flow_px_per_frame": float(clips.mean_flow[i]), "motion_bucket_id": int(clips.motion_bucket_id[i])})
    (folder / "labels.json").write_text(json.dumps(labels, indent=2))
    return folder
