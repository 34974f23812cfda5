"""A self-contained HTML contact sheet: thumbnails inlined as base64, so the file can be mailed or opened offline."""

from __future__ import annotations

import base64
import html
import io
import os
from pathlib import Path
from typing import Sequence

from src.core.images import open_image

THUMB = 160

STYLE = """body{font-family:system-ui,sans-serif;margin:1em;background:#fafafa}
.grid{display:flex;flex-wrap:wrap;gap:10px}
figure{margin:0;width:%dpx;background:#fff;border:1px solid #ddd;padding:6px;font-size:12px}
figure img{width:%dpx;height:%dpx;object-fit:contain;background:#eee}
figcaption{overflow-wrap:anywhere}.label{font-weight:bold}""" % (THUMB, THUMB, THUMB)


def thumbnail_data_uri(path: str | os.PathLike, size: int = THUMB) -> str:
    """An upright (EXIF-applied) JPEG thumbnail as a ``data:`` URI."""
    img = open_image(path, draft_size=size)
    img.thumbnail((size, size))
    buf = io.BytesIO()
    img.save(buf, format="JPEG", quality=80)
    return "data:image/jpeg;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def contact_sheet(title: str, intro: str, items: Sequence[dict], root: Path, caption_keys: Sequence[str]) -> str:
    """HTML with one figure per item (``item["path"]`` relative to ``root``), captioned by ``caption_keys``."""
    figs = []
    for it in items:
        cap = "<br>".join(f'<span class="{html.escape(k)}">{html.escape(k)}: {html.escape(_fmt(it[k]))}</span>'
                          for k in caption_keys)
        figs.append(f'<figure><img alt="{html.escape(it["path"])}" src="{thumbnail_data_uri(root / it["path"])}">'
                    f'<figcaption>{html.escape(it["path"])}<br>{cap}</figcaption></figure>')
    return (f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
            f"<style>{STYLE}</style></head><body><h1>{html.escape(title)}</h1><p>{html.escape(intro)}</p>"
            f"<div class='grid'>{''.join(figs)}</div></body></html>\n")


def _fmt(v) -> str:
    return f"{v:.3f}" if isinstance(v, float) else str(v)
