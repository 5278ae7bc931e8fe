"""What the service accepts: limits that protect a replica, and the request → (image, settings) parsing, each refusal
an `ApiError` with an HTTP status and a one-line message (the client sees JSON, never a stack trace)."""

from __future__ import annotations

import base64
import binascii
import io
import secrets
from dataclasses import dataclass, fields
from typing import Any

from PIL import Image, UnidentifiedImageError

from svdtool.errors import SvdtoolError
from svdtool.runtime import GenerationSettings

FORMATS = {"mp4": "video/mp4", "gif": "image/gif"}
SETTING_FIELDS = {"frames": "num_frames", "height": "height", "width": "width", "steps": "num_inference_steps",
                  "fps": "fps", "motion_bucket_id": "motion_bucket_id", "noise_aug_strength": "noise_aug_strength",
                  "decode_chunk_size": "decode_chunk_size", "min_guidance": "min_guidance_scale",
                  "max_guidance": "max_guidance_scale", "seed": "seed", "speed": "speed"}
FLOAT_SETTINGS = {"noise_aug_strength", "min_guidance_scale", "max_guidance_scale"}
# Decoded formats: Image.open would also take TIFF, PSD or EPS (which runs Ghostscript where it is installed).
IMAGE_FORMATS = ("JPEG", "PNG", "WEBP")
FIELDS_ALLOWANCE = 64 * 2**10  # bytes of a body beyond the image: multipart headers, the setting fields


class ApiError(Exception):
    def __init__(self, status: int, message: str, headers: dict[str, str] | None = None):
        super().__init__(message)
        self.status, self.message, self.headers = status, message, headers or {}


@dataclass(frozen=True)
class ServeLimits:
    max_image_bytes: int = 10 * 2**20
    max_image_pixels: int = 4096 * 4096
    max_video_pixels: int = 14 * 576 * 1024  # frames x height x width: one SVD-XT video at its own size
    max_steps: int = 50
    max_queue: int = 4  # requests waiting per replica beyond the one it runs; more get 429
    timeout_s: float = 600.0
    body_timeout_s: float = 60.0  # a whole request body must arrive within this (a slow upload is a 408)
    # (height, width, frames) a request may ask for; empty: any within the limits above. Each new shape (and decode
    # chunk, guidance on/off) reshapes and recompiles a replica's pipeline: a client alternating them makes every
    # request pay a compile, which --sizes bounds.
    sizes: tuple[tuple[int, int, int], ...] = ()

    @property
    def max_body_bytes(self) -> int:
        """The largest body holding an image of `max_image_bytes`: base64 in JSON takes 4/3 of its bytes."""
        return self.max_image_bytes * 4 // 3 + 4 + FIELDS_ALLOWANCE

    def as_dict(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in fields(self)}


def token_matches(authorization: str, token: str) -> bool:
    """The Authorization header is `Bearer TOKEN`, compared in constant time as bytes: `secrets.compare_digest` raises
    on a str with non-ASCII characters, which a client controls (a 500 instead of a 401)."""
    return secrets.compare_digest(authorization.encode("utf-8", "surrogatepass"), f"Bearer {token}".encode())


def decode_image(data: bytes, limits: ServeLimits) -> Image.Image:
    if not data:
        raise ApiError(400, "no image: send one as multipart field 'image' or as base64 in JSON field 'image'")
    if len(data) > limits.max_image_bytes:
        raise ApiError(413, f"image of {len(data)} bytes is over this service's limit of {limits.max_image_bytes}")
    try:
        with Image.open(io.BytesIO(data), formats=IMAGE_FORMATS) as image:
            if image.width * image.height > limits.max_image_pixels:
                raise ApiError(413, f"image of {image.width}x{image.height} pixels is over this service's limit of "
                                    f"{limits.max_image_pixels} pixels")
            return image.convert("RGB")
    except (UnidentifiedImageError, OSError, ValueError, Image.DecompressionBombError) as exc:
        raise ApiError(400, f"the image could not be read ({type(exc).__name__}): send a JPEG, PNG or WebP") from exc


def negotiate_format(accept: str) -> str | None:
    """The video format an `Accept` header prefers (RFC 9110 media ranges with q-values), or None when it names
    neither: `image/gif;q=0` refuses GIF, `video/mp4, image/gif;q=0.5` prefers MP4."""
    weights: dict[str, float] = {}
    for part in accept.split(","):
        media, *parameters = (piece.strip() for piece in part.split(";"))
        quality = 1.0
        for parameter in parameters:
            name, _, value = parameter.partition("=")
            if name.strip().lower() == "q":
                try:
                    quality = float(value)
                except ValueError:
                    quality = 0.0
        for video_format, mime in FORMATS.items():
            if media.lower() == mime:
                weights[video_format] = max(weights.get(video_format, 0.0), quality)
    acceptable = {name: weight for name, weight in weights.items() if weight > 0}
    return max(acceptable, key=lambda name: (acceptable[name], name == "mp4")) if acceptable else None


def image_from_base64(text: str) -> bytes:
    try:
        return base64.b64decode(text.split(",", 1)[-1], validate=True)  # a data: URL or plain base64
    except (binascii.Error, ValueError) as exc:
        raise ApiError(400, "field 'image' is not valid base64") from exc


def parse_settings(fields_in: dict[str, Any], defaults: dict[str, Any], limits: ServeLimits) -> tuple[GenerationSettings, str]:
    """The request's settings (names as the CLI's options) resolved against the model's defaults and checked; and the
    video format."""
    unknown = set(fields_in) - set(SETTING_FIELDS) - {"image", "format", "async"}
    if unknown:
        raise ApiError(400, f"unknown field(s) {', '.join(sorted(unknown))}; known: {', '.join(SETTING_FIELDS)}, format, async")
    video_format = str(fields_in.get("format") or "mp4")
    if video_format not in FORMATS:
        raise ApiError(400, f"format must be one of {', '.join(FORMATS)}, not {video_format!r}")
    values = {}
    for name, attribute in SETTING_FIELDS.items():
        if fields_in.get(name) not in (None, ""):
            kind = str if attribute == "speed" else float if attribute in FLOAT_SETTINGS else int  # speed: resolved() checks it
            try:
                values[attribute] = kind(fields_in[name])
            except (TypeError, ValueError, OverflowError) as exc:  # OverflowError: int(float("inf")) from a JSON Infinity
                raise ApiError(400, f"{name} must be a finite number, not {fields_in[name]!r}") from exc
    try:
        settings = GenerationSettings(**values).resolved(defaults)
    except SvdtoolError as exc:
        raise ApiError(400, str(exc).replace("--", "")) from exc
    pixels = settings.num_frames * settings.height * settings.width
    if pixels > limits.max_video_pixels:
        raise ApiError(413, f"{settings.num_frames} frames of {settings.width}x{settings.height} is over this service's limit "
                            f"of {limits.max_video_pixels} frame pixels")
    if settings.num_inference_steps > limits.max_steps:
        raise ApiError(413, f"{settings.num_inference_steps} steps is over this service's limit of {limits.max_steps}")
    if limits.sizes and (settings.height, settings.width, settings.num_frames) not in limits.sizes:
        allowed = ", ".join(format_size(size) for size in limits.sizes)
        raise ApiError(400, f"{format_size((settings.height, settings.width, settings.num_frames))} (height x width x frames) "
                            f"is not served here; this service serves {allowed}")
    if limits.sizes and "decode_chunk_size" in values:
        raise ApiError(400, "decode_chunk_size is fixed by this service (--sizes): leave it out")
    return settings, video_format


def format_size(size: tuple[int, int, int]) -> str:
    return "x".join(map(str, size))


def parse_sizes(text: str) -> tuple[tuple[int, int, int], ...]:
    """`--sizes 576x1024x14,320x512x8` (height x width x frames) -> ((576, 1024, 14), (320, 512, 8))."""
    sizes = []
    for part in filter(None, (piece.strip() for piece in text.split(","))):
        try:
            height, width, frames = (int(value) for value in part.lower().split("x"))
        except ValueError:
            raise SvdtoolError(f"--sizes {text!r}: give HEIGHTxWIDTHxFRAMES, comma-separated (e.g. 576x1024x14,320x512x8)") from None
        if min(height, width, frames) < 1:
            raise SvdtoolError(f"--sizes {part!r}: height, width and frames must be 1 or more")
        sizes.append((height, width, frames))
    if not sizes:
        raise SvdtoolError("--sizes names no size: give HEIGHTxWIDTHxFRAMES, comma-separated")
    return tuple(sizes)
