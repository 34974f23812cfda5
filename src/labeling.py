"""The labeling loop: suggest pool images to label, apply labels (a person's or pseudo-labels),
and find labeled images whose class folder is probably wrong.

    python src/labeling.py suggest --data-dir D --models-dir models --budget 40 [--strategy typical]
    python src/labeling.py apply --data-dir D --labels labeled.csv [--dry-run] [--new-classes]
    python src/labeling.py apply --data-dir D --labels models/pseudo_labels.csv   # the rows training recommends
    python src/labeling.py issues --data-dir D [--models-dir models]

Exit codes: 0 done, 2 bad input or data (nothing moved), 3 model problem, 4 store, 5 W&B.
Applies on one data dir run one at a time (a second one waits); an apply that was killed is
completed by the next one, and rows an earlier apply already moved are recognised, not refused.
The work lives in :mod:`src.curation`; this script parses flags and prints.
"""

from __future__ import annotations

import sys
from pathlib import Path

if not __package__:  # `python CHECKOUT/src/x.py` runs CHECKOUT's package, not the one the venv installed
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import argparse
from typing import Any, Sequence

from src.core.cli import STORE_HELP, add_common_flags, print_json, run_cli
from src.core.paths import DEFAULT_DATA_DIR
from src.tracking import MODES

__all__ = ["apply_labels", "find_issues", "suggest", "main"]


def __getattr__(name: str) -> Any:  # the library is imported lazily, so --help is instant
    if name in ("apply_labels", "find_issues", "suggest"):
        import src.curation as c

        return getattr(c, name)
    raise AttributeError(name)


def _common() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(add_help=False)
    add_common_flags(p)
    p.add_argument("--data-dir", "--data_dir", required=True, help="dataset folder with train/ and unlabeled/")
    p.add_argument("--store", metavar="DIR", help=STORE_HELP)
    return p


def build_parser() -> argparse.ArgumentParser:
    common = _common()
    parser = argparse.ArgumentParser(prog="labeling.py", description="Suggest, apply and check labels.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    p = sub.add_parser("suggest", parents=[common], help="pool images whose labels would help most")
    p.add_argument("--models-dir", "--models_dir", default="models", help="training outputs for this dataset")
    p.add_argument("--budget", type=int, required=True, help="how many images to suggest")
    p.add_argument("--strategy", choices=("typical", "diverse", "margin", "random"), default="typical",
                   help="typical: the most typical image of each feature cluster no label covers yet (default); "
                        "diverse: the least sure per cluster; margin: the least sure; random")
    p.add_argument("--out", default=None, help="folder for suggestions.csv/.html (default MODELS_DIR/labeling)")
    p.add_argument("--seed", type=int, default=0)
    p = sub.add_parser("apply", parents=[common], help="move labeled pool images into train/<label>/")
    p.add_argument("--labels", required=True, help="CSV with path and label columns (other columns ignored)")
    p.add_argument("--dry-run", action="store_true", help="check and report, move nothing")
    p.add_argument("--new-classes", action="store_true", help="create train/<label>/ for classes not seen yet")
    p.add_argument("--min-confidence", type=float, default=None,
                   help="only rows with confidence >= this, in [0, 1]; others stay in the pool (default: the rows "
                        "training recommends, accept 1 in pseudo_labels.csv)")
    p.add_argument("--source", choices=("human", "pseudo"), default=None,
                   help="label source recorded in the version (default: pseudo when the CSV has an algorithm "
                        "column, as pseudo_labels.csv does, else human)")
    p.add_argument("--artifact-name", default=None,
                   help="dataset name for the new version (default: as training and data_versioning.py name it, "
                        f"grocery-dataset for {DEFAULT_DATA_DIR}, else the data folder's name)")
    p.add_argument("--wandb-mode", choices=MODES, default=None)
    p = sub.add_parser("issues", parents=[common], help="labeled images whose class folder is probably wrong")
    p.add_argument("--models-dir", "--models_dir", default=None,
                   help="reuse its extractor only when it was not fine-tuned (default: pretrained backbone)")
    p.add_argument("--image-size", type=int, default=224)
    p.add_argument("--top", type=int, default=None, help="print only the N most suspicious")
    return parser


def _print_apply(r: dict) -> None:
    if r.get("resumed"):
        print(f"completed an interrupted apply first: {r['resumed']['moves']} images, {r['resumed']['version']}")
    if r["already_applied"] and not r["moves"]:
        print(f"nothing to do: all {len(r['already_applied'])} labeled row(s) of {r['labels']} are already applied "
              f"(e.g. {r['already_applied'][0]['path']} is {r['already_applied'][0]['to']})")
        return
    verb = "would label" if r["dry_run"] else "labeled"
    print(f"{verb} {r['labeled']} image(s) ({r['source']} labels)")
    if r["already_applied"]:
        print(f"  already applied by an earlier apply: {len(r['already_applied'])} row(s), left as they are")
    for m in r["left"]:
        print(f"  left where it is: {m['path']} ({m['why']})")
    for m in r["renamed"]:
        print(f"  name taken: {m['path']} -> {m['to']}")
    if r["new_classes"]:
        print(f"  new classes: {', '.join(r['new_classes'])}")
    if r["skipped_blank"] or r["skipped_low_confidence"]:
        print(f"  left in the pool: {r['skipped_blank']} without a label, "
              f"{r['skipped_low_confidence']} below --min-confidence")
    if r.get("skipped_not_accepted"):
        print(f"  left in the pool: {r['skipped_not_accepted']} not recommended by training (accept 0: below the "
              "confidence validation shows 95 % right); label them by hand, or pass --min-confidence to override")
    if r.get("interrupted_apply_pending"):
        print("  an interrupted apply is pending: the next apply (not --dry-run) completes it first")
    if r.get("version"):
        print(f"dataset version {r['version']}{'' if r['created'] else ' (same content as before)'}")


def command(args: argparse.Namespace) -> int:
    import src.curation as c

    if args.command == "suggest":
        r = c.suggest(args.data_dir, args.models_dir, args.budget, args.strategy, args.out, args.store, args.seed)
        if args.json:
            print_json(r["suggestions"])
        else:
            for s in r["suggestions"]:
                print(f"{s['confidence']:.3f}  {s['suggested_label']:<16} {s['path']}")
            print(f"{len(r['suggestions'])} of {r['pool_size']} pool images ({r['strategy']}); "
                  f"label them in {r['csv']} (contact sheet {r['html']})")
    elif args.command == "apply":
        r = c.apply_labels(args.data_dir, args.labels, dry_run=args.dry_run, new_classes=args.new_classes,
                           min_confidence=args.min_confidence, source=args.source, store=args.store,
                           artifact_name=args.artifact_name, wandb_mode=args.wandb_mode)
        print_json(r) if args.json else _print_apply(r)
    else:
        r = c.find_issues(args.data_dir, args.models_dir, args.store, args.image_size)
        issues = r["issues"][:args.top] if args.top else r["issues"]
        if args.json:
            print_json(issues)
        else:
            for i in issues:
                print(f"{i['score']:.3f}  {i['given_label']:<14} -> {i['likely_label']:<14} {i['path']}")
            print(f"{len(r['issues'])} suspicious of {r['checked']} labeled images (lowest score first)")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    return run_cli(build_parser(), argv, command)


if __name__ == "__main__":
    raise SystemExit(main())
