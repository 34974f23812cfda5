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
    monkeypatch.setattr(images, "MAX_PIXELS", 10_000)
    with pytest.raises(DataError, match="pixel limit"):
        open_image(p)


def test_draft_decodes_large_jpeg_smaller(tmp_path):
    p = tmp_path / "l.jpg"
    Image.new("RGB", (1600, 1200), (10, 20, 30)).save(p)
    assert min(open_image(p, draft_size=256).size) >= 256
    assert open_image(p, draft_size=256).size[0] < 1600
