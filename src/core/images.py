"""Safe image decoding shared by training, versioning and monitoring.

One place decides what counts as a usable image: decompression bombs, truncated and
zero-byte files and non-images raise :class:`DataError` naming the file; CMYK,
grayscale, palette, RGBA and 16-bit images are converted to 8-bit RGB, and photos are
turned upright from their EXIF orientation (phones store the rotation there, not in the pixels).
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
