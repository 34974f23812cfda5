"""Read a labels CSV (``path,label`` plus any other columns) into rows, refusing it whole on any
problem with one line that names the file and line.

Cells escaped against spreadsheet formulas (``'=...``, see :mod:`src.core.csv_cells`) read back
as written. A ``confidence`` must be a finite number in [0, 1]; an error names the physical line
of the file it was found on, a record spanning several lines included.

An ``accept`` column (``pseudo_labels.csv`` has one: 1 where training's validation shows the row's
confidence ≥ 95 % right, learning/calibration.py) is the default selection: without a minimum
confidence, only rows with ``accept`` 1 are read; a minimum confidence given replaces it.
"""

from __future__ import annotations

import csv
import math
import os
from dataclasses import dataclass
from pathlib import Path

from src.core.csv_cells import unescape_cell
from src.core.errors import ConfigError, DataError


@dataclass(frozen=True)
class LabelRow:
    line: int
    path: str
    label: str
    confidence: float | None


@dataclass(frozen=True)
class LabelsFile:
    rows: list[LabelRow]
    columns: list[str]
    skipped_blank: int        # rows with an empty label: not labeled yet
    skipped_confidence: int   # rows below --min-confidence
    skipped_not_accepted: int = 0  # rows with accept 0 (no minimum confidence given)


def _bad(path: Path, line: int, what: str) -> DataError:
    return DataError(f"{path} line {line}: {what}", hint="fix the CSV; nothing was moved")


class _Lines:
    """The file's lines, counting them: ``csv.reader.line_num`` lags a line behind on an error."""

    def __init__(self, f):
        self.f, self.n = f, 0

    def __iter__(self):
        for line in self.f:
            self.n += 1
            yield line


def check_min_confidence(min_confidence: float | None) -> None:
    if min_confidence is not None and not (math.isfinite(min_confidence) and 0 <= min_confidence <= 1):
        raise ConfigError(f"--min-confidence must be a number in [0, 1], got {min_confidence}")


def _confidence(path: Path, line: int, text: str) -> float:
    try:
        conf = float(text)
    except ValueError:
        raise _bad(path, line, f"confidence {text!r} is not a number") from None
    if not (math.isfinite(conf) and 0 <= conf <= 1):
        raise _bad(path, line, f"confidence {text.strip()!r} is not a number in [0, 1]")
    return conf


def read_labels(path: str | os.PathLike, min_confidence: float | None = None) -> LabelsFile:
    path = Path(path)
    hint = "pass --labels FILE.csv with path,label columns"
    try:
        found = path.is_file()
    except OSError as e:  # a name longer than the system allows raises instead of answering False
        raise ConfigError(f"labels file {path}: {e.strerror}", hint=hint) from e
    if not found:
        raise ConfigError(f"labels file {path} does not exist", hint=hint)
    check_min_confidence(min_confidence)
    rows: list[LabelRow] = []
    blank = low = refused = 0
    lines = None
    try:
        with open(path, newline="", encoding="utf-8-sig") as f:
            lines = _Lines(f)
            reader = csv.DictReader(lines, strict=True)
            columns = [unescape_cell(c.strip()) for c in (reader.fieldnames or [])]
            missing = [c for c in ("path", "label") if c not in columns]
            if missing:
                raise _bad(path, 1, f"malformed CSV: no {' or '.join(missing)} column (a header with path,label "
                                    f"is needed; found {', '.join(columns) or 'nothing'})")
            if min_confidence is not None and "confidence" not in columns:
                raise _bad(path, 1, "--min-confidence needs a confidence column")
            reader.fieldnames = columns
            use_accept = min_confidence is None and "accept" in columns
            for rec in reader:
                line = reader.line_num
                if None in rec or any(v is None for v in rec.values()):
                    raise _bad(path, line, f"malformed CSV: {len(columns)} columns expected")
                rec = {k: unescape_cell(v.strip()) for k, v in rec.items()}
                p, label = rec["path"], rec["label"]
                if not p:
                    raise _bad(path, line, "empty path")
                conf = _confidence(path, line, rec["confidence"]) if rec.get("confidence") else None
                if not label:
                    blank += 1
                    continue
                if min_confidence is not None and (conf is None or conf < min_confidence):
                    low += 1
                    continue
                if use_accept:
                    if rec["accept"] not in ("0", "1"):
                        raise _bad(path, line, f"accept {rec['accept']!r} is not 0 or 1")
                    if rec["accept"] != "1":
                        refused += 1
                        continue
                rows.append(LabelRow(line, p, label, conf))
    except csv.Error as e:
        raise _bad(path, max(lines.n, 1) if lines else 1, f"malformed CSV ({e})") from e
    except UnicodeDecodeError as e:
        raise DataError(f"{path}: not UTF-8 text ({e.reason})", hint="save the CSV as UTF-8") from e
    return LabelsFile(rows, columns, blank, low, refused)
