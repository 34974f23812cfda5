"""HTML building blocks of the offline dashboard: escaping, one date format, tables, images."""

from __future__ import annotations

import base64
import datetime as dt
import html
from pathlib import Path
from typing import Any, Mapping

CSS = """body{font:14px/1.4 system-ui,sans-serif;margin:2em auto;max-width:1200px;color:#222;padding:0 1em}
h1{font-size:1.6em}h2{border-bottom:2px solid #ddd;padding-bottom:.2em;margin-top:2em}h3 .muted{font-weight:normal}
table{border-collapse:collapse;margin:.5em 0 1em}td,th{border:1px solid #ddd;padding:3px 8px;text-align:left;vertical-align:top}
th{background:#f4f4f4}tr.best td{background:#eefbea}.muted{color:#777}img{max-width:380px;margin:4px;border:1px solid #eee}
figure{display:inline-block;margin:0 8px 8px 0}figcaption{text-align:center;color:#555}
.bad{color:#b00;font-weight:bold}.ok{color:#070}code{font-size:.95em}"""
DATE_FORMAT = "%Y-%m-%d %H:%M UTC"  # every date on the page


class Raw(str):
    """Already-escaped HTML inside a table cell."""


def esc(v: Any) -> str:
    """A cell's text: floats to 4 places, ``None`` as ``-``, mappings and lists readable, escaped."""
    if isinstance(v, Raw):
        return v
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, float):
        return f"{v:.4f}"
    if isinstance(v, Mapping):
        return html.escape(pairs(v)) if v else "-"
    if isinstance(v, (list, tuple)):
        return html.escape(", ".join(str(x) for x in v)) if v else "-"
    return html.escape("-" if v is None else str(v))


def pairs(d: Mapping[str, Any]) -> str:
    """``{"a": 1, "b": 0.5}`` → ``a 1, b 0.5000`` (plain text, not escaped)."""
    def one(v: Any) -> str:
        return f"{v:.4f}" if isinstance(v, float) else pairs(v) if isinstance(v, Mapping) else str(v)

    return ", ".join(f"{k} {one(v)}" for k, v in d.items())


def when(ts: float | str | None) -> str:
    """Epoch seconds or an ISO-8601 string → ``YYYY-MM-DD HH:MM UTC``."""
    if ts is None or ts == "":
        return "-"
    if isinstance(ts, str):
        try:
            parsed = dt.datetime.fromisoformat(ts.replace("Z", "+00:00"))
        except ValueError:
            return html.escape(ts)
        if parsed.tzinfo is None:
            parsed = parsed.replace(tzinfo=dt.timezone.utc)
        return parsed.astimezone(dt.timezone.utc).strftime(DATE_FORMAT)
    return dt.datetime.fromtimestamp(ts, dt.timezone.utc).strftime(DATE_FORMAT)


def table(headers: list[str], rows: list[list[Any]], best_row: int | None = None) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in headers)
    body = "".join(f"<tr{' class=best' if i == best_row else ''}>" + "".join(f"<td>{esc(c)}</td>" for c in r)
                   + "</tr>" for i, r in enumerate(rows))
    return f"<table><tr>{head}</tr>{body}</table>"


def png_bytes(data: bytes, title: str = "") -> str:
    """An embedded PNG with its caption."""
    b64 = base64.b64encode(data).decode()
    t = html.escape(title)
    return f'<figure><img src="data:image/png;base64,{b64}" title="{t}" alt="{t}"><figcaption>{t}</figcaption></figure>'


def img(path: str | Path, title: str = "") -> str:
    p = Path(path)
    return png_bytes(p.read_bytes(), title) if p.is_file() else ""


def muted(text: str) -> str:
    return f"<p class=muted>{html.escape(text)}</p>"
