"""CSV files written for people (``pseudo_labels.csv``, ``suggestions.csv``, a synthetic pool's
truth): cells that a spreadsheet would run as a formula are escaped, and the suite's own
reader undoes that escaping.

A text cell starting with ``= + - @``, a TAB or a CR is written with a leading apostrophe
(``'=1+1``), the OWASP advice against CSV injection: Excel, LibreOffice and Google Sheets
show it as text and never evaluate it. A cell that already starts with an apostrophe
followed by one of those characters or by another apostrophe gets one more, so
:func:`unescape_cell` (strip one apostrophe before those characters) gives back exactly
what was written, and a cell a person typed without the apostrophe reads as typed.
Numbers are written as numbers (a negative number is not a formula).
"""

from __future__ import annotations

import csv
import io
from typing import Any, Iterable, Sequence

FORMULA_LEAD = ("=", "+", "-", "@", "\t", "\r")
_QUOTED = FORMULA_LEAD + ("'",)


def escape_cell(value: Any) -> Any:
    """``value`` safe to open in a spreadsheet (text cells only; see the module doc)."""
    if not isinstance(value, str) or not value:
        return value
    if value.startswith(FORMULA_LEAD) or (value[0] == "'" and value[1:2] in _QUOTED):
        return "'" + value
    return value


def unescape_cell(value: str) -> str:
    """The text :func:`escape_cell` was given (a cell nobody escaped comes back unchanged)."""
    if len(value) >= 2 and value[0] == "'" and value[1] in _QUOTED:
        return value[1:]
    return value


def csv_text(header: Sequence[str], rows: Iterable[Sequence[Any]]) -> str:
    """A whole CSV file as text, every cell (header included) passed through :func:`escape_cell`."""
    buf = io.StringIO(newline="")
    w = csv.writer(buf)
    w.writerow([escape_cell(h) for h in header])
    w.writerows([escape_cell(v) for v in row] for row in rows)
    return buf.getvalue()
