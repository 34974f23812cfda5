"""The one rule for class names, applied wherever a class name is born: a label in a labels CSV
(``labeling.py apply``, with or without ``--new-classes``) and a class folder found when a
dataset is scanned.

A class name is a folder name under ``train/``, a column in CSV files people open in a
spreadsheet, and a caption in reports, so it must be all three safely:

- NFC-normalised Unicode: "café" typed as ``e`` + combining accent (NFD, as macOS keyboards
  and file systems often produce) is the same class as the precomposed "café". A label is
  normalised before it is checked; a folder whose name is not NFC is refused (a folder
  that equals another one once normalised is reported as a clash), since the two would
  look identical in every listing;
- printable: no control characters (``\\x00``-``\\x1f``, ``\\x7f``, C1), no format characters
  (zero-width space, soft hyphen, the bidi overrides ``\\u202e`` and isolates), no private-use
  or unassigned code points, no separators other than the plain space;
- no leading ``= + - @`` (a spreadsheet would run it as a formula), no leading dot (hidden
  folders are never classes), no leading or trailing space, no ``/`` or ``\\``;
- at most :data:`MAX_BYTES` bytes in UTF-8, well under the file systems' 255-byte NAME_MAX,
  so ``train/<class>/`` can always be created.
"""

from __future__ import annotations

import re
import unicodedata

MAX_BYTES = 100
FORMULA_LEAD = "=+-@"
# Unicode categories refused anywhere in a name: Cc control, Cf format (zero-width, bidi), Cs
# surrogate, Co private use, Cn unassigned, Zl/Zp line and paragraph separators
_REFUSED_CATEGORIES = {"Cc", "Cf", "Cs", "Co", "Cn", "Zl", "Zp"}
RULE = (f"a class name is printable NFC text of at most {MAX_BYTES} UTF-8 bytes, without control, "
        f"format or bidi characters, '/' or '\\', and not starting with a dot, a space or one of {FORMULA_LEAD}")


def normalize_class_name(name: str) -> str:
    """``name`` in NFC, the form every class name is compared and stored in."""
    return unicodedata.normalize("NFC", name)


def class_name_problem(name: str) -> str | None:
    """Why ``name`` cannot be a class name (None when it can); see the module doc for the rule."""
    if not isinstance(name, str) or not name:
        return "empty class name"
    shown = repr(name) if len(name) <= 40 else repr(name[:40])[:-1] + "...'"
    try:
        size = len(name.encode("utf-8"))
    except UnicodeEncodeError:
        return f"invalid class name {shown}: not valid Unicode text"
    if size > MAX_BYTES:
        return f"class name {shown} is too long ({size} bytes in UTF-8; at most {MAX_BYTES})"
    if unicodedata.normalize("NFC", name) != name:
        return f"class name {shown} is not in Unicode NFC form (it would look like another name)"
    for ch in name:
        cat = unicodedata.category(ch)
        if cat in _REFUSED_CATEGORIES or (cat == "Zs" and ch != " "):
            what = f"{unicodedata.name(ch, 'a control character')} (U+{ord(ch):04X})"
            return f"invalid class name {shown}: it holds {what}, an invisible or control character"
        if ch in "/\\":
            return f"invalid class name {shown}: no '/' or '\\' (a class is one folder)"
    if name in (".", "..") or name.startswith("."):
        return f"invalid class name {shown}: it starts with a dot (hidden folders are never classes)"
    if name != name.strip():
        return f"invalid class name {shown}: it starts or ends with a space"
    if name[0] in FORMULA_LEAD:
        return f"invalid class name {shown}: it starts with {name[0]!r}, which a spreadsheet runs as a formula"
    return None


def slug(text: str, limit: int, fallback: str) -> str:
    """``text`` as a store- and W&B-safe name: runs of other characters become ``-``, dot runs one dot,
    at most ``limit`` characters, no leading or trailing ``-._``; ``fallback`` when nothing is left."""
    out = re.sub(r"\.{2,}", ".", re.sub(r"[^A-Za-z0-9._-]+", "-", text)).strip("-._")[:limit].rstrip("-._")
    return out or fallback
