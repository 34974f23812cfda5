"""Read a labels CSV (``path,label`` plus any other columns) into rows, refusing it whole on any
problem with one line that names the file and line."""

from __future__ import annotations

import csv
import math
import os
from dataclasses import dataclass
from pathlib import Path

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


def _bad(path: Path, line: int, what: str) -> DataError:
    return DataError(f"{path} line {line}: {what}", hint="fix the CSV; nothing was moved")


def read_labels(path: str | os.PathLike, min_confidence: float | None = None) -> LabelsFile:
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"labels file {path} does not exist", hint="pass --labels FILE.csv with path,label columns")
    if min_confidence is not None and not 0 <= min_confidence <= 1:
        raise ConfigError(f"--min-confidence must be in [0, 1], got {min_confidence}")
    rows: list[LabelRow] = []
    blank = low = 0
    reader = None
    try:
        with open(path, newline="", encoding="utf-8-sig") as f:
            reader = csv.DictReader(f, strict=True)
            columns = [c.strip() for c in (reader.fieldnames or [])]
            missing = [c for c in ("path", "label") if c not in columns]
            if missing:
                raise _bad(path, 1, f"malformed CSV: no {' or '.join(missing)} column (a header with path,label "
                                    f"is needed; found {', '.join(columns) or 'nothing'})")
            if min_confidence is not None and "confidence" not in columns:
                raise _bad(path, 1, "--min-confidence needs a confidence column")
            reader.fieldnames = columns
            for rec in reader:
                line = reader.line_num
                if None in rec or any(v is None for v in rec.values()):
                    raise _bad(path, line, f"malformed CSV: {len(columns)} columns expected")
                p, label = rec["path"].strip(), rec["label"].strip()
                if not p:
                    raise _bad(path, line, "empty path")
                conf = None
                if "confidence" in rec and rec["confidence"].strip():
                    try:
                        conf = float(rec["confidence"])
                    except ValueError:
                        raise _bad(path, line, f"confidence {rec['confidence']!r} is not a number") from None
                    if math.isnan(conf):
                        raise _bad(path, line, "confidence is NaN")
                if not label:
                    blank += 1
                    continue
                if min_confidence is not None and (conf is None or conf < min_confidence):
                    low += 1
                    continue
                rows.append(LabelRow(line, p, label, conf))
    except csv.Error as e:
        raise _bad(path, reader.line_num if reader else 1, f"malformed CSV ({e})") from e
    except UnicodeDecodeError as e:
        raise DataError(f"{path}: not UTF-8 text ({e.reason})", hint="save the CSV as UTF-8") from e
    return LabelsFile(rows, columns, blank, low)
