"""Safe image decoding shared by training, versioning and monitoring.

One place decides what counts as a usable image: decompression bombs, truncated and
zero-byte files and non-images raise :class:`DataError` naming the file; CMYK,
grayscale, palette, RGBA and 16-bit images are converted to 8-bit RGB (:func:`to_rgb`), and photos are
turned upright from their EXIF orientation (phones store the rotation there, not in the pixels).
:func:`load_image` takes what a notebook has at hand (a path, a PIL image or a numpy array)
and converts in-memory images by the same rules as files.
"""

from __future__ import annotations

import io
import os
import warnings
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from src.core.errors import DataError

IMAGE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm"})
# Anything above this many pixels is treated as a decompression bomb (PIL warns at 89M).
MAX_PIXELS = 64_000_000


def is_image_name(path: str | os.PathLike) -> bool:
    return Path(path).suffix.lower() in IMAGE_EXTENSIONS


def _check_size(img: Image.Image, path) -> None:
    w, h = img.size
    if w * h > MAX_PIXELS:
        raise DataError(f"{path}: image is {w}x{h} pixels, over the {MAX_PIXELS:,}-pixel limit",
                        hint="downscale it or remove it from the dataset (possible decompression bomb)")
    if w < 1 or h < 1:
        raise DataError(f"{path}: image has no pixels", hint="remove it from the dataset")


def to_rgb(img: Image.Image) -> Image.Image:
    """8-bit RGB from any PIL mode (16-bit and float are rescaled, alpha composited on white)."""
    if img.mode == "RGB":
        return img
    if img.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        a = np.asarray(img, dtype=np.float64)
        lo, hi = float(a.min()), float(a.max())
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
            raise DataError(f"{path}: file is empty (0 bytes)", hint="remove or replace it")
    except FileNotFoundError as e:
        raise DataError(f"{path}: file not found", hint="check the path") from e
    except OSError as e:
        raise DataError(f"{path}: corrupted or truncated image ({e})", hint="remove or re-export it") from e
    return _decode(path, path, draft_size)


def decode_image_bytes(data: bytes, name: str = "upload", draft_size: int | None = None) -> Image.Image:
    """:func:`open_image` for bytes already in memory (an HTTP upload): the same checks, the same errors."""
    if not data:
        raise DataError(f"{name}: file is empty (0 bytes)", hint="send the image's bytes")
    return _decode(io.BytesIO(data), name, draft_size)


def _decode(source, name, draft_size: int | None) -> Image.Image:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(source) as img:
                _check_size(img, name)
                if draft_size and img.format == "JPEG":
                    w, h = img.size
                    scale = min(w, h) / draft_size
                    if scale >= 2:
                        img.draft("RGB", (int(w / scale) + 1, int(h / scale) + 1))
                img.load()
                return to_rgb(ImageOps.exif_transpose(img))
    except DataError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
        raise DataError(f"{name}: image too large ({e})", hint="downscale it or remove it") from e
    except UnidentifiedImageError as e:
        raise DataError(f"{name}: not an image PIL can read", hint="remove it or convert it to JPEG/PNG") from e
    except FileNotFoundError as e:
        raise DataError(f"{name}: file not found", hint="check the path") from e
    except (OSError, SyntaxError, ValueError) as e:
        raise DataError(f"{name}: corrupted or truncated image ({e})", hint="remove or re-export it") from e


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
    if a.shape[0] < 1 or a.shape[1] < 1 or a.shape[0] * a.shape[1] > MAX_PIXELS:
        raise DataError(f"{name}: {a.shape[1]}x{a.shape[0]} pixels is outside 1..{MAX_PIXELS:,}", hint=hint)
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


def probe_image(path: str | os.PathLike) -> dict:
    """Width, height, mode and format of a readable image, after a full decode."""
    path = Path(path)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        try:
            with Image.open(path) as img:
                info = {"width": img.size[0], "height": img.size[1], "mode": img.mode, "format": img.format}
        except UnidentifiedImageError as e:
            raise DataError(f"{path}: not an image PIL can read", hint="remove it") from e
        except OSError as e:
            raise DataError(f"{path}: unreadable ({e})", hint="remove it") from e
    open_image(path)  # full decode: catches truncation and bombs
    return info
