from dataclasses import replace

import numpy as np
import pytest
from PIL import Image

from src.core import images as images
from src.core.errors import DataError
from src.core.images import open_image


def _sixteen_bit(a, mode):
    img = Image.fromarray(a)  # uint16 → I;16
    return img if mode == "I;16" else img.convert(mode)


@pytest.mark.parametrize("mode", ["CMYK", "L", "P", "RGBA", "LA", "I;16", "I", "F", "1"])
def test_modes_become_rgb(tmp_path, mode):
    img = Image.new("RGB", (20, 10), (200, 100, 50)).convert(mode) if mode not in ("I;16", "I", "F") \
        else _sixteen_bit((np.arange(200).reshape(10, 20) * 300).astype(np.uint16), mode)
    ext = "tiff" if mode in ("CMYK", "I;16", "I", "F") else "png"
    p = tmp_path / f"x.{ext}"
    img.save(p)
    out = open_image(p)
    assert out.mode == "RGB" and out.size == (20, 10)


def test_sixteen_bit_uses_full_range(tmp_path):
    a = np.linspace(0, 65535, 100, dtype=np.uint16).reshape(10, 10)
    p = tmp_path / "x.png"
    Image.fromarray(a).save(p)
    assert Image.open(p).mode.startswith("I")
    rgb = np.asarray(open_image(p))
    assert rgb.min() == 0 and rgb.max() == 255


def test_truncated_jpeg(tmp_path):
    p = tmp_path / "t.jpg"
    Image.effect_noise((64, 64), 50).convert("RGB").save(p, quality=90)
    p.write_bytes(p.read_bytes()[:300])
    with pytest.raises(DataError, match="truncated"):
        open_image(p)


def test_zero_byte_and_non_image(tmp_path):
    (tmp_path / "z.jpg").write_bytes(b"")
    (tmp_path / "n.jpg").write_text("not an image at all")
    with pytest.raises(DataError, match="0 bytes"):
        open_image(tmp_path / "z.jpg")
    with pytest.raises(DataError, match="not an image"):
        open_image(tmp_path / "n.jpg")


def test_decompression_bomb_refused(tmp_path, monkeypatch):
    p = tmp_path / "big.png"
    Image.new("L", (300, 300)).save(p)
    monkeypatch.setattr(images, "LIMITS", replace(images.LIMITS, max_pixels=10_000))
    with pytest.raises(DataError, match="pixel limit"):
        open_image(p)


def test_draft_decodes_large_jpeg_smaller(tmp_path):
    p = tmp_path / "l.jpg"
    Image.new("RGB", (1600, 1200), (10, 20, 30)).save(p)
    assert min(open_image(p, draft_size=256).size) >= 256
    assert open_image(p, draft_size=256).size[0] < 1600


def _png(size, mode="L") -> bytes:
    import io

    buf = io.BytesIO()
    Image.new(mode, size).save(buf, "PNG")
    return buf.getvalue()


EPS = b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 10 10\nshowpage\n"


def test_a_thin_strip_is_refused_in_one_line_before_it_is_scaled_up(tmp_path):
    # 100000x1 in a few hundred bytes: scaled to a 256-px shorter side it asked for a 25.6 M x 256 buffer (3.3 GB)
    from src.features.backbone import Preprocessing
    from src.features.extraction import _Serial, load_batch

    data = _png((100_000, 1))
    assert len(data) < 1000
    with pytest.raises(images.ImageRefused, match=r"100000x1 pixels, an aspect ratio of 100,000:1, over the 20:1") \
            as e:
        images.decode_image_bytes(data)
    assert e.value.kind == "aspect" and "\n" not in str(e.value)
    (tmp_path / "strip.png").write_bytes(data)
    with pytest.raises(DataError, match="aspect ratio"):  # training and batch monitoring: the same decoding
        load_batch([tmp_path / "strip.png"], Preprocessing.for_size(32), _Serial())
    with pytest.raises(DataError, match="aspect ratio"):
        images.load_image(np.zeros((1, 4000), np.uint8))
    assert images.decode_image_bytes(_png((200, 10))).size == (200, 10)  # 20:1 is still a picture


def test_only_the_accepted_formats_reach_a_decoder(tmp_path, monkeypatch):
    import io

    from PIL import EpsImagePlugin

    called = []
    monkeypatch.setattr(EpsImagePlugin, "Ghostscript", lambda *a, **k: called.append(a) or Image.new("RGB", (10, 10)))
    with pytest.raises(images.ImageRefused, match="not an image in an accepted format") as e:
        images.decode_image_bytes(EPS)
    assert e.value.kind == "format" and not called  # Ghostscript is never handed an upload
    (tmp_path / "x.jpg").write_bytes(EPS)  # the extension does not matter: the content decides
    with pytest.raises(DataError, match="accepted format"):
        open_image(tmp_path / "x.jpg")
    for fmt in ("ICO", "TGA", "PCX", "SGI"):  # Pillow reads these; no camera writes them
        buf = io.BytesIO()
        Image.new("RGB", (16, 16), (1, 2, 3)).save(buf, fmt)
        with pytest.raises(images.ImageRefused, match="accepted format"):
            images.decode_image_bytes(buf.getvalue(), fmt)


def test_accepted_formats_and_extensions_agree(tmp_path):
    from src.core.limits import LIMITS

    registered = Image.registered_extensions()
    assert images.IMAGE_EXTENSIONS == LIMITS.extensions
    assert {registered[e] for e in images.IMAGE_EXTENSIONS} == set(LIMITS.formats)
    for ext in sorted(images.IMAGE_EXTENSIONS):  # each extension a dataset may hold decodes
        p = tmp_path / f"x{ext}"
        Image.new("RGB", (8, 6), (10, 20, 30)).save(p)
        assert images.is_image_name(p) and open_image(p).size == (8, 6)
    mpo = tmp_path / "phone.jpg"  # many phones write multi-picture JPEGs; Pillow calls them MPO
    Image.new("RGB", (8, 6), (9, 9, 9)).save(mpo, "MPO", save_all=True, append_images=[Image.new("RGB", (8, 6))])
    assert Image.open(mpo).format == "MPO" and open_image(mpo).size == (8, 6)


@pytest.mark.parametrize("mode", ["RGBA", "LA", "P", "I;16", "I", "F", "CMYK", "1"])
def test_banded_conversion_equals_converting_at_once(monkeypatch, mode):
    rng = np.random.default_rng(0)
    if mode in ("I;16", "I", "F"):
        a = rng.integers(100, 60000, (37, 23)).astype({"I;16": np.uint16, "I": np.int32, "F": np.float32}[mode])
        img = Image.fromarray(a) if mode != "I" else Image.fromarray(a, "I")
    else:
        img = Image.fromarray(rng.integers(0, 256, (37, 23, 4), dtype=np.uint8), "RGBA").convert(mode)
    whole = np.asarray(images.to_rgb(img))
    monkeypatch.setattr(images, "STRIP_PIXELS", 50)  # bands of 2 rows: the rescale uses the whole image's range
    assert np.array_equal(np.asarray(images.to_rgb(img)), whole)


def test_big_images_decode_one_at_a_time(monkeypatch):
    # a 64 Mpixel RGBA PNG takes ~500 MB to decode: N threads at once took N times that
    import threading
    import time
    from concurrent.futures import ThreadPoolExecutor

    inside, most = [0], [0]
    lock = threading.Lock()
    to_rgb = images.to_rgb

    def counting(img):
        with lock:
            inside[0] += 1
            most[0] = max(most[0], inside[0])
        time.sleep(0.05)
        with lock:
            inside[0] -= 1
        return to_rgb(img)

    monkeypatch.setattr(images, "to_rgb", counting)
    monkeypatch.setattr(images, "LIMITS", replace(images.LIMITS, big_pixels=50 * 50))
    with ThreadPoolExecutor(4) as pool:
        out = list(pool.map(images.decode_image_bytes, [_png((60, 60), "RGBA")] * 4))
    assert most[0] == 1 and all(o.size == (60, 60) for o in out)
