"""Image upload decoding: PNG/JPEG bytes → the model's float32 (C, H, W) input in [0, 1].

The policy (formats, size guards before decoding, modes, MNIST-style polarity/crop/fit/centre, resampling)
is documented in docs/serving.md ("Image policy"); :class:`ImagePolicy` holds its parameters.
"""

from __future__ import annotations

import io
import threading
import warnings
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from .errors import ApiError, bad_request

DEFAULT_MAX_IMAGE_PIXELS = 4096 * 4096
DEFAULT_MAX_IMAGE_SIDE = 8192
MAX_ASPECT = 64
ALLOWED_FORMATS = ("PNG", "JPEG")
# Pillow's names for JPEG files: MPO is what phone cameras write (a JPEG plus further JPEGs; the first is used).
JPEG_FORMATS = ("JPEG", "MPO")
# Before preprocessing, images are reduced to about this many times the model's side: JPEGs while decoding (DCT
# scaling by 1/2, 1/4 or 1/8), others by box averaging; bounds the memory and time of what follows.
WORK_SIDE_FACTOR = 8
CONVERTIBLE_MODES = {
    "1",
    "L",
    "P",
    "RGB",
    "RGBA",
    "LA",
    "La",
    "RGBa",
    "PA",
    "CMYK",
    "YCbCr",
    "I;16",
    "I;16L",
    "I;16B",
    "I;16N",
}

# Fraction of the model's side the object's longer side is fitted to (MNIST: 20 px box in 28 px).
MNIST_STYLE_FIT = {"mnist": 20.0 / 28.0, "fashion-mnist": 1.0, "digits": 1.0}


def set_pillow_pixel_cap(max_pixels: int) -> None:
    """Pillow's own decompression-bomb cap (a second guard behind :func:`decode_image`'s header check)."""
    Image.MAX_IMAGE_PIXELS = max_pixels


@dataclass(frozen=True)
class ImagePolicy:
    """How uploads become model input: target shape and whether MNIST-style polarity/centering applies."""

    channels: int
    height: int
    width: int
    mnist_style: bool = False
    fit: float = 1.0
    centre_of_mass: bool = False
    max_pixels: int = DEFAULT_MAX_IMAGE_PIXELS
    max_side: int = DEFAULT_MAX_IMAGE_SIDE
    max_request_pixels: int = DEFAULT_MAX_IMAGE_PIXELS

    @classmethod
    def for_model(
        cls,
        channels: int,
        height: int,
        width: int,
        dataset: str | None,
        max_pixels: int = DEFAULT_MAX_IMAGE_PIXELS,
        max_side: int = DEFAULT_MAX_IMAGE_SIDE,
        max_request_pixels: int = DEFAULT_MAX_IMAGE_PIXELS,
    ) -> ImagePolicy:
        name = (dataset or "").lower()
        caps = {"max_pixels": max_pixels, "max_side": max_side, "max_request_pixels": max_request_pixels}
        if name in MNIST_STYLE_FIT and channels == 1:
            return cls(channels, height, width, True, MNIST_STYLE_FIT[name], name == "mnist", **caps)
        return cls(channels, height, width, **caps)

    def describe(self) -> dict:
        """Machine-readable summary for GET /model."""
        out = {
            "formats": list(ALLOWED_FORMATS),
            "color": "L (ITU-R 601-2 luma)" if self.channels == 1 else "RGB",
            "alpha": "composited over white",
            "resize_to": [self.height, self.width],
            "max_pixels": self.max_pixels,
            "max_request_pixels": self.max_request_pixels,
            "max_side": self.max_side,
            "mnist_style": self.mnist_style,
        }
        if self.mnist_style:
            out.update(
                as_is=f"a {self.height}x{self.width} image with a dark border is used unchanged",
                polarity="invert when the border median is > 127 (dark object on light background)",
                crop="bounding box of pixels > 10% of max",
                fit=self.fit,
                centre="centre of mass" if self.centre_of_mass else "bounding box",
            )
        return out


def _open(data: bytes, max_pixels: int) -> Image.Image:
    if not data:
        raise bad_request("invalid_image", "the uploaded file is empty; expected PNG or JPEG bytes")
    with warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        try:
            img = Image.open(io.BytesIO(data))
        except Image.DecompressionBombError as err:
            raise bad_request("decompression_bomb", f"image refused before decoding: {err}") from None
        except Image.DecompressionBombWarning:
            raise bad_request(
                "decompression_bomb",
                f"image has more than {max_pixels} pixels (possible decompression bomb)",
            ) from None
        except UnidentifiedImageError:
            raise bad_request(
                "invalid_image", "the uploaded bytes are not a recognisable image; expected PNG or JPEG bytes"
            ) from None
        except (OSError, ValueError, SyntaxError) as err:
            raise bad_request("invalid_image", f"could not read the image header: {err}") from None
    if img.format not in ALLOWED_FORMATS + JPEG_FORMATS:
        fmt = img.format
        img.close()
        raise ApiError(
            415, "unsupported_image_format", f"image format {fmt} is not accepted; send PNG or JPEG"
        )
    return img


def _check_dimensions(img: Image.Image, policy: ImagePolicy) -> None:
    w, h = img.size
    if w <= 0 or h <= 0:
        raise bad_request("invalid_image_dimensions", f"image has zero size ({w}×{h})")
    if w * h > policy.max_pixels:
        raise bad_request(
            "decompression_bomb",
            f"image is {w}×{h} = {w * h} pixels, above the cap of {policy.max_pixels} (possible decompression "
            "bomb); downscale it before upload",
        )
    if max(w, h) > policy.max_side:
        raise bad_request(
            "invalid_image_dimensions", f"image is {w}×{h}; the longest side may be at most {policy.max_side}"
        )
    if max(w, h) > MAX_ASPECT * min(w, h):
        raise bad_request(
            "invalid_image_dimensions", f"image is {w}×{h}; aspect ratios above {MAX_ASPECT}:1 are refused"
        )


def _check_jpeg_data(img: Image.Image, size: int) -> None:
    """A complete JPEG scan codes every 8×8 luma block with at least one bit, so fewer bytes than blocks/8
    mean the data ends early (libjpeg would fill the rest with grey and Pillow would not say so)."""
    w, h = img.size
    blocks = -(-w // 8) * -(-h // 8)
    if size * 8 < blocks:
        raise bad_request(
            "truncated_image",
            f"the JPEG declares {w}×{h} pixels but its {size} bytes cannot hold them (at least "
            f"{-(-blocks // 8)} bytes needed); the file ends early",
        )


def _load(img: Image.Image) -> Image.Image:
    with warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        try:
            img.load()
        except Image.DecompressionBombError as err:
            raise bad_request("decompression_bomb", str(err)) from None
        except Image.DecompressionBombWarning as err:
            raise bad_request("decompression_bomb", str(err)) from None
        except OSError as err:
            text = str(err)
            code = (
                "truncated_image" if "truncated" in text or "broken data stream" in text else "invalid_image"
            )
            raise bad_request(code, f"could not decode the image: {text}") from None
        except (ValueError, SyntaxError, EOFError, MemoryError) as err:
            raise bad_request("invalid_image", f"could not decode the image: {err}") from None
    return img


def _to_mode(img: Image.Image, channels: int) -> Image.Image:
    mode = img.mode
    if mode not in CONVERTIBLE_MODES:
        raise ApiError(
            415,
            "unsupported_image_mode",
            f"image mode {mode!r} is not supported; send 8-bit grayscale, RGB(A), palette or 16-bit grayscale",
        )
    if mode.startswith("I;16"):
        arr = np.asarray(img, dtype=np.uint16 if mode != "I;16B" else ">u2").astype(np.float32)
        img = Image.fromarray(np.round(arr / 257.0).astype(np.uint8))
        mode = "L"
    if mode == "P":
        img = img.convert("RGBA" if "transparency" in img.info else "RGB")
    elif mode == "PA":
        img = img.convert("RGBA")
    if img.mode in ("RGBA", "LA", "La", "RGBa"):
        rgba = img.convert("RGBA")
        canvas = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        img = Image.alpha_composite(canvas, rgba).convert("RGB")
    return img.convert("L" if channels == 1 else "RGB")


def _resize(img: Image.Image, size: tuple[int, int]) -> Image.Image:
    w, h = size
    shrinking = w <= img.width and h <= img.height
    return img.resize((w, h), Image.Resampling.BOX if shrinking else Image.Resampling.BILINEAR)


def _mnist_style(gray: np.ndarray, policy: ImagePolicy) -> np.ndarray:
    """Polarity, background removal, crop, fit and centre a grayscale uint8 image; returns float32 H×W in [0, 1]."""
    a = gray.astype(np.float32)
    border = np.concatenate([a[0], a[-1], a[1:-1, 0], a[1:-1, -1]]) if min(a.shape) > 1 else a.ravel()
    background = float(np.median(border))
    if a.shape == (policy.height, policy.width) and background <= 127.0:
        return a / 255.0  # already the dataset's size and polarity: used as is
    if background > 127.0:
        a = 255.0 - a
        background = 255.0 - background
    a = np.clip(a - background, 0.0, None)
    peak = float(a.max())
    H, W = policy.height, policy.width
    if peak <= 0.0:
        return np.zeros((H, W), dtype=np.float32)
    a *= 255.0 / peak  # stretch contrast so the object's brightest pixel is white, as in the datasets
    rows = np.flatnonzero((a > 25.5).any(axis=1))
    cols = np.flatnonzero((a > 25.5).any(axis=0))
    crop = a[rows[0] : rows[-1] + 1, cols[0] : cols[-1] + 1]
    ch, cw = crop.shape
    box = max(1.0, policy.fit * min(H, W))
    scale = box / max(ch, cw)
    nh, nw = max(1, min(H, round(ch * scale))), max(1, min(W, round(cw * scale)))
    small = _resize(Image.fromarray(crop.astype(np.uint8)), (nw, nh))
    out = np.zeros((H, W), dtype=np.float32)
    top, left = (H - nh) // 2, (W - nw) // 2
    out[top : top + nh, left : left + nw] = np.asarray(small, dtype=np.float32)
    if policy.centre_of_mass and out.sum() > 0:
        ys, xs = np.indices(out.shape)
        total = out.sum()
        dy = int(round((H - 1) / 2.0 - float((ys * out).sum() / total)))
        dx = int(round((W - 1) / 2.0 - float((xs * out).sum() / total)))
        out = _shift(out, dy, dx)
    return out / 255.0


def _shift(a: np.ndarray, dy: int, dx: int) -> np.ndarray:
    out = np.zeros_like(a)
    H, W = a.shape
    ys, yd = (slice(0, H - dy), slice(dy, H)) if dy >= 0 else (slice(-dy, H), slice(0, H + dy))
    xs, xd = (slice(0, W - dx), slice(dx, W)) if dx >= 0 else (slice(-dx, W), slice(0, W + dx))
    out[yd, xd] = a[ys, xs]
    return out


def open_image(data: bytes, policy: ImagePolicy) -> Image.Image:
    """Read the header only and refuse what the policy would not decode (size, format, too little data)."""
    img = _open(data, policy.max_pixels)
    try:
        _check_dimensions(img, policy)
        if img.format in JPEG_FORMATS:
            _check_jpeg_data(img, len(data))
    except ApiError:
        img.close()
        raise
    return img


def decode_image(data: bytes, policy: ImagePolicy) -> np.ndarray:
    """Bytes of one PNG/JPEG upload → float32 (C, H, W) in [0, 1] following ``policy``."""
    img = open_image(data, policy)
    try:
        side = WORK_SIDE_FACTOR * max(policy.height, policy.width)
        if img.format in JPEG_FORMATS:
            img.draft(img.mode, (side, side))  # decode at a reduced DCT scale, never below `side`
        img = _load(img)
        if img.format in JPEG_FORMATS:
            img = ImageOps.exif_transpose(img) or img
        img = _to_mode(img, policy.channels)
        if min(img.size) >= 2 * side:
            img = img.reduce(min(img.size) // side)
        if policy.mnist_style:
            arr = _mnist_style(np.asarray(img, dtype=np.uint8), policy)
            return arr[None, :, :].astype(np.float32, copy=False)
        img = _resize(img, (policy.width, policy.height))
        arr = np.asarray(img, dtype=np.float32) / 255.0
        if policy.channels == 1:
            return arr[None, :, :]
        return np.ascontiguousarray(arr.transpose(2, 0, 1))
    finally:
        img.close()


class DecodeCancelled(Exception):
    """The request that asked for the decode was given up (timeout or client gone)."""


def _named(files: Sequence[bytes], i: int, err: ApiError) -> ApiError:
    return ApiError(err.status, err.code, f"image[{i}]: {err.message}", err.detail) if len(files) > 1 else err


def check_images(files: Sequence[bytes], policy: ImagePolicy) -> None:
    """Every upload's header against the policy, and the pixels they declare together against
    ``policy.max_request_pixels``; cheap (no decoding), so a refusal never waits for the decode pool."""
    total = 0
    for i, data in enumerate(files):
        try:
            img = open_image(data, policy)
        except ApiError as err:
            raise _named(files, i, err) from None
        w, h = img.size
        img.close()
        total += w * h
    if total > policy.max_request_pixels:
        raise bad_request(
            "too_many_pixels",
            f"the {len(files)} images declare {total} pixels together, above the "
            f"cap of {policy.max_request_pixels} per request (BINENC_MAX_REQUEST_PIXELS); send fewer "
            "or smaller images per request",
        )


def decode_images(
    files: Sequence[bytes], policy: ImagePolicy, cancelled: threading.Event | None = None
) -> list[np.ndarray]:
    """Every upload of one request (already through :func:`check_images`) → float32 (C, H, W) arrays;
    ``cancelled`` is checked between images, so a given-up request stops after the image in progress."""
    out = []
    for i, data in enumerate(files):
        if cancelled is not None and cancelled.is_set():
            raise DecodeCancelled
        try:
            out.append(decode_image(data, policy))
        except ApiError as err:
            raise _named(files, i, err) from None
    return out
