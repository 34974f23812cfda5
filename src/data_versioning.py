"""Dataset versions that understand images and labels, on the local store, mirrored to W&B.

A version is an immutable, content-addressed manifest (per file: path, split, class,
sha256, size, dimensions, mode) of an ImageFolder dataset; the bytes live once in the
store's blobs whatever the number of versions. The same content never makes a second
version; ``find_or_create_version`` is what training calls to pin its input data.

    python src/data_versioning.py --data-dir DS2GROCERIES --artifact-name grocery-dataset
    python src/data_versioning.py --quality-check --data-dir DS2GROCERIES --fail-on-issues
    python src/data_versioning.py --list | --show v2 | --diff v1 v2 | --restore v1 --to DIR
    python src/data_versioning.py --mirror-pending --wandb-mode offline   # versions whose W&B mirror failed
"""

from __future__ import annotations

import sys
from pathlib import Path

if not __package__:  # `python CHECKOUT/src/x.py` runs CHECKOUT's package, not the one the venv installed
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import argparse
import logging

from src.core.errors import ConfigError
from src.core.paths import DEFAULT_DATA_DIR as DATA_DIR
from src.data.scan import dataset_digest
from src.data.version_builder import (DEFAULT_SAMPLES_PER_CLASS, build_metadata, create_dataset_artifact,
                                 find_or_create_version, mirror_pending, quality_check)
from src.data.version_store import (DEFAULT_NAME, default_dataset_name, diff_versions, list_versions,
                               load_dataset_artifact, restore_version)

log = logging.getLogger(__name__)

__all__ = ["create_dataset_artifact", "load_dataset_artifact", "find_or_create_version", "dataset_digest",
           "diff_versions", "restore_version", "list_versions", "quality_check", "build_metadata", "mirror_pending",
           "main"]

DEFAULT_DATA_DIR = Path(DATA_DIR)  # in the working directory, as training's default


# -- CLI -----------------------------------------------------------------------------------
def build_parser() -> argparse.ArgumentParser:
    from src.core.cli import STORE_HELP, add_common_flags
    from src.tracking import MODES

    p = argparse.ArgumentParser(prog="data_versioning.py", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data-dir", default=None, help=f"dataset folder (default {DEFAULT_DATA_DIR.name}/)")
    p.add_argument("--artifact-name", help=f"dataset name (default {DEFAULT_NAME} for {DATA_DIR}, else the "
                                           "--data-dir folder's name, as training does; --list: all)")
    p.add_argument("--version", help="explicit version vN for a new version (default: next)")
    p.add_argument("--description", help="free-text description stored with the version")
    p.add_argument("--samples-per-class", type=int, default=DEFAULT_SAMPLES_PER_CLASS,
                   help="sample images per class logged to W&B (default %(default)s)")
    p.add_argument("--link", action="store_true",
                   help="hard-link new bytes into the store instead of copying (files become read-only; "
                        "never edit them in place afterwards)")
    act = p.add_mutually_exclusive_group()
    act.add_argument("--quality-check", action="store_true", help="check the dataset only; no version")
    act.add_argument("--list", action="store_true", help="list versions")
    act.add_argument("--show", metavar="VERSION", help="show one version (vN or latest)")
    act.add_argument("--diff", nargs=2, metavar=("A", "B"), help="compare two versions")
    act.add_argument("--restore", metavar="VERSION", help="rebuild a version's tree (with --to)")
    act.add_argument("--mirror-pending", action="store_true",
                     help="mirror to W&B every version whose mirror failed or never ran (--artifact-name: only it)")
    p.add_argument("--to", help="target folder for --restore (new or empty)")
    p.add_argument("--fail-on-issues", action="store_true", help="exit 1 when the quality check finds anything")
    p.add_argument("--store", help=STORE_HELP)
    p.add_argument("--wandb-mode", choices=MODES, help="W&B mode")
    add_common_flags(p)
    return p


def _data_dir(args) -> Path:
    return Path(args.data_dir) if args.data_dir else DEFAULT_DATA_DIR


def _print_diff(d: dict) -> None:
    """The diff for people: names escaped (a newline in a file name must not split a line; ``--json`` keeps
    them raw), as the quality report prints them."""
    from src.core.cli import printable as esc

    print(f"{esc(d['name'])}: {d['a']} -> {d['b']}: " + ", ".join(f"{n} {k}" for k, n in d["counts"].items()))
    for k in ("added", "removed", "modified"):
        for p in d[k]:
            print(f"  {k:9s} {esc(p)}")
    for kind in ("labeled", "relabeled", "moved"):
        for r in d.get(kind, []):
            src = f" ({esc(r['source'])})" if r.get("source") else ""
            print(f"  {kind:9s} {esc(r['from'])} -> {esc(r['to'])}{src}")
    for c, n in d["class_changes"].items():
        print(f"  class {esc(c)}: {n['a']} -> {n['b']} ({n['delta']:+d})")


def _command(args) -> int:
    from src.core.cli import print_json, printable, show_progress
    from src.data.quality import format_report

    out = print_json if args.json else None
    name, store = args.artifact_name or default_dataset_name(args.data_dir), args.store
    if args.list:
        vs = list_versions(args.artifact_name, store)
        if out:
            return out(vs) or 0
        for v in vs:  # names and descriptions escaped, one line per version (--json keeps them raw)
            print(f"{printable(v['name'])}:{v['version']}  {v['created_at']}  {v['total_samples']} samples  "
                  f"{v['num_classes']} classes  {v['quality_issues']} issues  {v['digest'][:12]}"
                  f"{'' if v['mirrored'] else '  (W&B mirror pending)'}"
                  f"{'  ' + printable(v['description']) if v['description'] else ''}")
        return 0
    if args.show:
        info = load_dataset_artifact(name, args.show, store)
        if out:
            return out(info) or 0
        m = info["metadata"]
        print(f"{name}:{info['version']}  digest {info['digest'][:12]}  created {info['created_at']}")
        print(f"  {m['total_samples']} samples, {m['num_classes']} classes, splits {m['split_counts']}, "
              f"imbalance ratio {m['imbalance_ratio']:.2f}")
        print(f"  classes {m['class_distribution']}")
        print(format_report(info["quality"]))
        print("  history: " + ", ".join(h["version"] for h in info["history"]))
        return 0
    if args.diff:
        d = diff_versions(name, args.diff[0], args.diff[1], store)
        return (out(d) or 0) if out else (_print_diff(d) or 0)
    if args.mirror_pending:
        done = mirror_pending(args.artifact_name, store, args.wandb_mode)
        if out:
            return out({"mirrored": done}) or 0
        print(f"mirrored {len(done)} pending version(s) to W&B" + (": " + ", ".join(done) if done else ""))
        return 0
    if args.restore:
        if not args.to:
            raise ConfigError("--restore needs --to DIR", hint="give a new or empty target folder")
        r = restore_version(name, args.restore, args.to, store)
        return (out(r) or 0) if out else (print(f"restored {name}:{r['version']} ({r['files']} files) to {r['to']}") or 0)
    if args.quality_check:
        rep = quality_check(_data_dir(args), store, progress=show_progress(args))
        print_json(rep) if out else print(format_report(rep, rep["data_dir"]))
        return 1 if args.fail_on_issues and not rep["ok"] else 0
    r = create_dataset_artifact(_data_dir(args), name, args.version, args.description, args.samples_per_class,
                                store, args.wandb_mode, link=args.link, progress=show_progress(args))
    if out:
        out(r)
    elif r["created"]:
        print(f"created {name}:{r['version']} ({r['metadata']['total_samples']} samples, "
              f"{r['new_blobs']} new blobs, digest {r['digest'][:12]})")
        print(format_report(r["quality"]))
    else:
        print(f"unchanged: content equals {name}:{r['equals']} (digest {r['digest'][:12]})"
              + ("; description updated" if r.get("description_updated") else "")
              + ("; its pending W&B mirror is done now" if r.get("mirrored") else ""))
        if args.fail_on_issues and r.get("quality") and not r["quality"]["ok"]:
            print(format_report(r["quality"]))
    return 1 if args.fail_on_issues and r.get("quality") and not r["quality"]["ok"] else 0


def main(argv: list[str] | None = None) -> int:
    from src.core.cli import run_cli

    return run_cli(build_parser(), argv, _command, flags={"to_dir": "--to", "list_versions": "--list"})


if __name__ == "__main__":
    raise SystemExit(main())
