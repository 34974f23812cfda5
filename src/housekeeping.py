"""Store housekeeping: remove what nothing needs any more, and show what takes the space.

    python src/housekeeping.py gc [--older-than DAYS] [--dry-run] [--store DIR] [--json]
    python src/housekeeping.py du [--store DIR] [--json]

``gc`` removes monitoring rows older than DAYS (default 30), fine-tuned extractors, ONNX exports
and cached features of extractors that no registered version and no run of the last DAYS uses
(the newest run keeps every extractor it used), and blobs no record references (untouched for a
day). Whatever a registered version, an alias or a dataset version needs is never removed, nor what
running commands hold: a serving or monitoring process's open session, a training's extractors
(safe next to them at any --older-than). ``--dry-run`` lists what would go and how many bytes.
The work is in :mod:`src.upkeep`; each package that owns tables says what may be pruned.
"""

from __future__ import annotations

import sys
from pathlib import Path

if not __package__:  # `python CHECKOUT/src/x.py` runs CHECKOUT's package, not the one the venv installed
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import argparse
from typing import Sequence

from src.core.cli import STORE_HELP, add_common_flags, print_json, run_cli
from src.upkeep.gc import DEFAULT_DAYS, KINDS, gc
from src.upkeep.usage import disk_usage

__all__ = ["disk_usage", "gc", "main"]
SHOWN_ITEMS = 10


def human(n: int) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1024 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n} B"


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="housekeeping.py", description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="command", required=True)
    g = sub.add_parser("gc", help="remove old monitoring rows, unused extractors and exports, orphan blobs")
    g.add_argument("--older-than", type=float, default=DEFAULT_DAYS, metavar="DAYS",
                   help="age in days past which monitoring rows and unused extractors go (default %(default)g)")
    g.add_argument("--dry-run", action="store_true", help="show what would be removed; remove nothing")
    sub.add_parser("du", help="bytes the store takes, per kind")
    for s in (g, sub.choices["du"]):
        s.add_argument("--store", default=None, help=STORE_HELP)
        add_common_flags(s)
    return p


def _print_gc(r: dict) -> None:
    verb = "would remove" if r["dry_run"] else "removed"
    print(f"{verb} from {r['store']} (older than {r['older_than_days']:g} days):")
    for kind in KINDS:
        k = r["kinds"][kind]
        print(f"  {kind:<22} {k['count']:>8}  {human(k['bytes']):>9}")
        if r["dry_run"]:
            for item in k["items"][:SHOWN_ITEMS]:
                print(f"      {item}")
            if len(k["items"]) > SHOWN_ITEMS:
                print(f"      ... and {len(k['items']) - SHOWN_ITEMS} more (--json lists all)")
    print(f"  {'total':<22} {'':>8}  {human(r['total_bytes']):>9}")


def main(argv: Sequence[str] | None = None) -> int:
    def run(a: argparse.Namespace) -> int:
        if a.command == "gc":
            r = gc(a.store, a.older_than, dry_run=a.dry_run)
            print_json(r) if a.json else _print_gc(r)
        else:
            r = disk_usage(a.store)
            if a.json:
                print_json(r)
            else:
                print(f"store {r['store']}:")
                for kind, n in r["kinds"].items():
                    print(f"  {kind:<30} {human(n):>9}")
                print(f"  {'total':<30} {human(r['total']):>9}")
                print(f"  (monitoring rows take about {human(r['monitoring_rows_bytes'])} of the database)")
        return 0

    return run_cli(build_parser(), argv, run, flags={"days": "--older-than"})


if __name__ == "__main__":
    raise SystemExit(main())
