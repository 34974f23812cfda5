"""What an image or a request may be, in one place: training, batch monitoring and serving all use these.

:mod:`src.core.images` decodes every image (dataset file, notebook array, HTTP upload) under
:data:`LIMITS`; the server takes its request limits from the same object, so a photo that
trains also serves and an upload the server refuses would be refused by training too.

Why these figures:

- ``max_pixels`` 64 M: above any phone camera's default output (48-50 MP sensors bin to 12 MP;
  a 50 MP full-resolution JPEG is 8160 x 6144 = 50 M). Decoded as RGB that is 192 MB at most.
- ``big_pixels`` 16 M: decoding such an image takes up to 2.5x its RGB size (an 8000 x 8000 RGBA
  PNG of 250 kB: +504 MB), so only one decodes at a time in a process; memory then no longer
  grows with the number of decoding threads (serving workers, training's decode pool). Phone
  photos stay under it (12 MP; JPEGs are drafted down to the network's size before decoding).
- ``max_aspect`` 20:1: the network sees the centre square of the image after scaling its
  shorter side up to ``resize``, so a thin strip is scaled up in proportion to its length (a
  100000 x 1 PNG of 372 bytes asked for a 25.6 M x 256 buffer, 3.3 GB peak). At 20:1 the
  scaled image is at most 256 x 5120 pixels (4 MB); phone panoramas are 3:1 to 10:1.
- ``formats``: what cameras and phones write (Pillow opens many phone JPEGs as ``MPO``) plus the
  lossless formats the dataset folders accept (``IMAGE_EXTENSIONS``); every other Pillow plugin
  stays unreachable, EPS included (it hands the file to Ghostscript).
- ``read_timeout_s``: a request's headers and body must arrive within this many seconds of the
  connection opening (or of the previous response on a kept-alive connection); a client
  holding half a request open is cut off with 408 instead of holding a file descriptor forever.
- ``max_buffered_bytes`` 128 MB: the uploads held at once (read, or waiting for inference); twelve
  10 MB uploads or forty phone photos. Past it requests get 503 instead of memory growing with the
  number of connections (512 slow 10 MB uploads would hold 5 GB).
- ``max_pending_records`` 10,000 (about 30 MB of rows with their features) and
  ``shutdown_timeout_s`` 3: a server whose store fails sheds load with 503 instead of growing, and
  stops on SIGTERM in about twice this figure, saying how many records could not be stored.
"""

from __future__ import annotations

from dataclasses import dataclass

# format (Pillow's plugin name, what ``Image.open(formats=...)`` takes) -> the file extensions that carry it.
# JPEG includes MPO: many phones write multi-picture JPEGs, which Pillow opens through its JPEG plugin.
FORMAT_EXTENSIONS: dict[str, tuple[str, ...]] = {
    "JPEG": (".jpg", ".jpeg"), "PNG": (".png",), "WEBP": (".webp",),
    "BMP": (".bmp",), "GIF": (".gif",), "TIFF": (".tif", ".tiff"), "PPM": (".ppm",),
}


@dataclass(frozen=True)
class Limits:
    """Image and request limits; :data:`LIMITS` holds the ones in force."""

    max_pixels: int = 64_000_000
    max_aspect: float = 20.0
    big_pixels: int = 16_000_000  # images above this (after JPEG draft) are decoded one at a time per process
    formats: tuple[str, ...] = tuple(FORMAT_EXTENSIONS)
    max_upload_bytes: int = 10 * 2**20  # an image POSTed to /predict (--max-upload-mb)
    max_feedback_bytes: int = 16 * 1024  # a /feedback JSON document
    max_buffered_bytes: int = 128 * 2**20  # request bodies held at once, all clients together (--max-buffered-mb)
    read_timeout_s: float = 30.0  # headers + body of one request (--read-timeout-s)
    max_connections: int = 512  # open connections before new requests get 503 (--max-connections)
    max_pending_records: int = 10_000  # monitoring records waiting for the store before 503 (--max-pending)
    shutdown_timeout_s: float = 3.0  # on SIGTERM, for requests in flight and again for storing records

    @property
    def extensions(self) -> frozenset[str]:
        """File extensions of the accepted formats (``.jpg``, ``.png`` …), lower case."""
        return frozenset(e for f in self.formats for e in FORMAT_EXTENSIONS.get(f, ()))

    def size_problem(self, width: int, height: int) -> str | None:
        """Why a ``width`` x ``height`` image is refused (one phrase), or None when it is within the limits."""
        if width < 1 or height < 1:
            return "has no pixels"
        if width * height > self.max_pixels:
            return f"is {width}x{height} pixels, over the {self.max_pixels:,}-pixel limit"
        long, short = max(width, height), min(width, height)
        if long > self.max_aspect * short:
            return (f"is {width}x{height} pixels, an aspect ratio of {long / short:,.0f}:1, over the "
                    f"{self.max_aspect:g}:1 limit")
        return None


LIMITS = Limits()
