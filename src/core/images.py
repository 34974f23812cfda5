"""Safe image decoding shared by training, versioning, monitoring and serving.

One place decides what counts as a usable image, under the limits of :mod:`src.core.limits`:
only the accepted formats are decoded (``Image.open(formats=...)``: no other Pillow plugin is
reachable), and decompression bombs, absurd aspect ratios, truncated and zero-byte files and
non-images raise :class:`ImageRefused` (a :class:`DataError`) naming the file; CMYK,
grayscale, palette, RGBA and 16-bit images are converted to 8-bit RGB (:func:`to_rgb`), and photos are
turned upright from their EXIF orientation (phones store the rotation there, not in the pixels).
:func:`load_image` takes what a notebook has at hand (a path, a PIL image or a numpy array)
and converts in-memory images by the same rules as files.
"""

from __future__ import annotations

import contextlib
import io
import os
import threading
import warnings
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from src.core.errors import DataError
from src.core.limits import LIMITS

IMAGE_EXTENSIONS = LIMITS.extensions  # the files a dataset folder may hold: exactly the accepted formats
MAX_PIXELS = LIMITS.max_pixels  # kept for importers; the check reads LIMITS
_BIG_DECODES = threading.Lock()  # one image over LIMITS.big_pixels decodes at a time in this process


class ImageRefused(DataError):
    """An image that is not decoded; ``kind`` says why: ``empty``, ``format`` (not an image in an
    accepted format), ``too_large`` (pixels), ``aspect`` (aspect ratio) or ``corrupt``."""

    def __init__(self, message: str, kind: str, hint: str | None = None):
        super().__init__(message, hint=hint)
        self.kind = kind


def is_image_name(path: str | os.PathLike) -> bool:
    return Path(path).suffix.lower() in IMAGE_EXTENSIONS


def _check_size(img: Image.Image, path) -> None:
    _check_dims(*img.size, path)


def _check_dims(w: int, h: int, path) -> None:
    problem = LIMITS.size_problem(w, h)
    if problem is None:
        return
    if "aspect" in problem:
        raise ImageRefused(f"{path}: image {problem}", "aspect",
                           hint="crop it to the object; the network sees only the centre square")
    if "no pixels" in problem:
        raise ImageRefused(f"{path}: image {problem}", "corrupt", hint="remove it from the dataset")
    raise ImageRefused(f"{path}: image {problem}", "too_large",
                       hint="downscale it or remove it from the dataset (possible decompression bomb)")


def _format_names() -> str:
    return ", ".join(LIMITS.formats)


STRIP_PIXELS = 1 << 20  # a big image is converted a band of this many pixels at a time


def to_rgb(img: Image.Image) -> Image.Image:
    """8-bit RGB from any PIL mode (16-bit and float are rescaled, alpha composited on white).

    Converted a band of rows at a time, so the memory is the input and the output, whatever the
    mode (a 64 Mpixel float image was 1.5 GB of float64 temporaries converted at once)."""
    if img.mode == "RGB":
        return img
    w, h = img.size
    extrema = img.getextrema() if img.mode in _RESCALED else None
    rows = max(1, STRIP_PIXELS // max(w, 1))
    if h <= rows:
        return _band_to_rgb(img, extrema)
    out = Image.new("RGB", (w, h))
    for y in range(0, h, rows):
        out.paste(_band_to_rgb(img.crop((0, y, w, min(h, y + rows))), extrema), (0, y))
    return out


_RESCALED = ("I;16", "I;16B", "I;16L", "I", "F")


def _band_to_rgb(img: Image.Image, extrema) -> Image.Image:
    if img.mode in _RESCALED:  # rescaled by the whole image's range, not the band's
        a = np.asarray(img, dtype=np.float64)
        lo, hi = float(extrema[0]), float(extrema[1])
        a = (a - lo) / (hi - lo) * 255.0 if hi > lo else np.zeros_like(a)
        return Image.fromarray(a.astype(np.uint8), "L").convert("RGB")
    if img.mode == "P" and "transparency" in img.info:
        img = img.convert("RGBA")
    if img.mode in ("RGBA", "LA", "PA"):
        img = img.convert("RGBA")
        bg = Image.new("RGBA", img.size, (255, 255, 255, 255))
        return Image.alpha_composite(bg, img).convert("RGB")
    return img.convert("RGB")


def open_image(path: str | os.PathLike, draft_size: int | None = None) -> Image.Image:
    """Decode ``path`` fully into an RGB image or raise DataError with one clear line.

    ``draft_size`` lets JPEG decoding skip detail below that shorter side (``Image.draft``),
    which is several times faster for large photos fed to a 224-px network.
    """
    path = Path(path)
    try:
        if path.stat().st_size == 0:
            raise ImageRefused(f"{path}: file is empty (0 bytes)", "empty", hint="remove or replace it")
        with open(path, "rb") as f:
            return _decode(f, path, draft_size)
    except FileNotFoundError as e:
        raise DataError(f"{path}: file not found", hint="check the path") from e
    except OSError as e:
        raise ImageRefused(f"{path}: corrupted or truncated image ({e})", "corrupt",
                           hint="remove or re-export it") from e


def decode_image_bytes(data: bytes, name: str = "upload", draft_size: int | None = None) -> Image.Image:
    """:func:`open_image` for bytes already in memory (an HTTP upload): the same checks, the same errors."""
    if not data:
        raise ImageRefused(f"{name}: file is empty (0 bytes)", "empty", hint="send the image's bytes")
    return _decode(io.BytesIO(data), name, draft_size)


def _open(source, name) -> Image.Image:
    """``Image.open`` restricted to the accepted formats, the size limits checked from the header."""
    try:
        img = Image.open(source, formats=LIMITS.formats)
    except UnidentifiedImageError as e:
        raise ImageRefused(f"{name}: not an image in an accepted format ({_format_names()})", "format",
                           hint="convert it to JPEG or PNG") from e
    _check_size(img, name)
    return img


def _decode(source, name, draft_size: int | None) -> Image.Image:
    """The image in ``source`` (a file object the caller closes) as RGB; nothing is copied on the way
    (the EXIF rotation is applied in place), so the memory is the decoded image and its RGB form."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            img = _open(source, name)
            if draft_size and img.format == "JPEG":
                w, h = img.size
                scale = min(w, h) / draft_size
                if scale >= 2:
                    img.draft("RGB", (int(w / scale) + 1, int(h / scale) + 1))
            with _BIG_DECODES if img.size[0] * img.size[1] > LIMITS.big_pixels else contextlib.nullcontext():
                img.load()
                ImageOps.exif_transpose(img, in_place=True)
                return to_rgb(img)
    except DataError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
        raise ImageRefused(f"{name}: image too large ({e})", "too_large", hint="downscale it or remove it") from e
    except FileNotFoundError as e:
        raise DataError(f"{name}: file not found", hint="check the path") from e
    except (OSError, SyntaxError, ValueError, EOFError) as e:
        raise ImageRefused(f"{name}: corrupted or truncated image ({e})", "corrupt",
                           hint="remove or re-export it") from e


def is_path(source: object) -> bool:
    """Whether ``source`` names a file (``str`` or path-like) rather than holding pixels."""
    return isinstance(source, (str, os.PathLike))


def describe_source(source: object) -> str:
    """A short name for an image in messages and records: the path, or e.g. ``<array 64x48>``."""
    if is_path(source):
        return str(source)
    if isinstance(source, Image.Image):
        return f"<PIL image {source.size[0]}x{source.size[1]} {source.mode}>"
    if isinstance(source, np.ndarray):
        return f"<array {'x'.join(map(str, source.shape))} {source.dtype}>"
    return f"<{type(source).__name__}>"


def from_pil(img: Image.Image, name: str = "image") -> Image.Image:
    """8-bit RGB from an in-memory PIL image: the size checks, EXIF orientation and mode rules of a file."""
    _check_size(img, name)
    try:
        img.load()
        return to_rgb(ImageOps.exif_transpose(img))
    except (OSError, SyntaxError, ValueError) as e:
        raise DataError(f"{name}: corrupted or truncated image ({e})", hint="re-open or re-export it") from e


def from_array(a: np.ndarray, name: str = "image") -> Image.Image:
    """8-bit RGB from an ``H x W`` (grayscale) or ``H x W x C`` array (C = 1, 3 or 4; uint8 or uint16).

    uint16 grayscale is rescaled as a 16-bit file is; uint16 colour keeps its high byte; an
    alpha channel is composited on white.
    """
    hint = "pass an HxWx3 uint8 array (RGB), an HxW grayscale array, or a PIL image"
    if a.ndim == 3 and a.shape[2] == 1:
        a = a[:, :, 0]
    if a.ndim not in (2, 3) or (a.ndim == 3 and a.shape[2] not in (3, 4)):
        raise DataError(f"{name}: an array of shape {a.shape} is not an image", hint=hint)
    if a.dtype not in (np.uint8, np.uint16):
        raise DataError(f"{name}: array of {a.dtype} pixels; images are uint8 (or uint16)",
                        hint="convert floats in [0, 1] with (a * 255).round().astype(np.uint8)")
    h, w = a.shape[:2]
    if h < 1 or w < 1 or h * w > LIMITS.max_pixels:
        raise ImageRefused(f"{name}: {w}x{h} pixels is outside 1..{LIMITS.max_pixels:,}",
                           "corrupt" if h < 1 or w < 1 else "too_large", hint=hint)
    _check_dims(w, h, name)  # the aspect ratio
    a = np.ascontiguousarray(a)
    if a.dtype == np.uint16 and a.ndim == 3:
        a = (a >> 8).astype(np.uint8)
    return to_rgb(Image.fromarray(a))  # uint16 -> I;16, uint8 -> L, RGB or RGBA


def load_image(source, draft_size: int | None = None) -> Image.Image:
    """8-bit RGB from a file path (:func:`open_image`), a PIL image (:func:`from_pil`) or a numpy
    array (:func:`from_array`); anything else raises :class:`DataError`."""
    if is_path(source):
        return open_image(source, draft_size)
    if isinstance(source, Image.Image):
        return from_pil(source, describe_source(source))
    if isinstance(source, np.ndarray):
        return from_array(source, describe_source(source))
    raise DataError(f"cannot read an image from a {type(source).__name__}",
                    hint="pass a file path, a PIL image or a numpy array (HxWx3 uint8 or HxW grayscale)")
