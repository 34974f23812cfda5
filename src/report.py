"""The offline dashboard: one static HTML page of runs, datasets, registry, sweeps and monitoring.

    python src/report.py --out report.html [--store DIR]

The page is built by :mod:`src.reporting.html` (``build_report``); this script parses and prints.
"""

from __future__ import annotations

import sys
from pathlib import Path

if not __package__:  # `python CHECKOUT/src/x.py` runs CHECKOUT's package, not the one the venv installed
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import argparse
from typing import Sequence

from src.core.cli import STORE_HELP, add_common_flags, print_json, run_cli
from src.reporting.html import build_report

__all__ = ["build_report", "main"]


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="report.py", description="Write the offline HTML dashboard from the local store.")
    p.add_argument("--out", default="report.html")
    p.add_argument("--store", default=None, help=STORE_HELP)
    add_common_flags(p)

    def run(a: argparse.Namespace) -> int:
        path = build_report(a.out, a.store)
        print_json({"report": str(path)}) if a.json else print(path)
        return 0

    return run_cli(p, argv, run)


if __name__ == "__main__":
    raise SystemExit(main())
