"""Dataset versions that understand images and labels, on the local store, mirrored to W&B.

A version is an immutable, content-addressed manifest (per file: path, split, class,
sha256, size, dimensions, mode) of an ImageFolder dataset; the bytes live once in the
store's blobs whatever the number of versions. The same content never makes a second
version; ``find_or_create_version`` is what training calls to pin its input data.

    python src/data_versioning.py --data-dir DS2GROCERIES --artifact-name grocery-dataset
    python src/data_versioning.py --quality-check --data-dir DS2GROCERIES --fail-on-issues
    python src/data_versioning.py --list | --show v2 | --diff v1 v2 | --restore v1 --to DIR
"""

from __future__ import annotations

import argparse
import json
import logging
import os
from pathlib import Path
from typing import Any

from src.data.scan import dataset_digest
from src.data.versions import (DEFAULT_NAME, insert_version, lookup_digest, diff_versions, list_versions,
                               load_dataset_artifact, open_store, parse_version, restore_version)
from src.core.errors import ConfigError, DataError

log = logging.getLogger(__name__)

__all__ = ["create_dataset_artifact", "load_dataset_artifact", "find_or_create_version", "dataset_digest",
           "diff_versions", "restore_version", "list_versions", "quality_check", "main"]

DEFAULT_DATA_DIR = Path(__file__).resolve().parents[1] / "DS2GROCERIES"
DEFAULT_SAMPLES_PER_CLASS = 4


def build_metadata(manifest: list[dict]) -> dict[str, Any]:
    """Counts a user looks at first: samples, classes, splits, imbalance."""
    from collections import Counter

    from src.data.quality import imbalance_ratio

    valid = [e for e in manifest if not e.get("error")]
    classes = Counter(e["class"] for e in valid)
    split_class: dict[str, dict[str, int]] = {}
    for e in valid:
        d = split_class.setdefault(e["split"], {})
        d[e["class"]] = d.get(e["class"], 0) + 1
    return {
        "total_samples": len(valid),
        "total_files": len(manifest),
        "invalid_files": len(manifest) - len(valid),
        "total_bytes": sum(e["size"] for e in manifest),
        "num_classes": len(classes),
        "classes": sorted(classes),
        "class_distribution": dict(sorted(classes.items())),
        "split_counts": {s: sum(c.values()) for s, c in sorted(split_class.items())},
        "split_class_counts": {s: dict(sorted(c.items())) for s, c in sorted(split_class.items())},
        "imbalance_ratio": imbalance_ratio(classes),
    }


_store = open_store  # kept for callers of the first version


# -- create --------------------------------------------------------------------------------
def _mirror(tracker, name: str, version: int, root: Path, manifest: list[dict], meta: dict, quality: dict,
            description: str | None, samples_per_class: int, st, tables: bool = True) -> None:
    """Log the version as a W&B ``dataset`` artifact plus sample and statistics tables.

    ``tables=False`` (a caller's run, e.g. training) logs only the artifact, so the
    caller's step counter is left alone.
    """
    import tempfile

    with tempfile.TemporaryDirectory(dir=st.root / "tmp") as tmp:
        (Path(tmp) / "manifest.json").write_text(json.dumps(manifest))
        (Path(tmp) / "quality.json").write_text(json.dumps(quality))
        files = {"manifest.json": Path(tmp) / "manifest.json", "quality.json": Path(tmp) / "quality.json"}
        blobs = {f"data/{e['path']}": st.blob_path(e["sha256"]) for e in manifest if st.has_blob(e["sha256"])}
        tracker.log_artifact(name, "dataset", files=files, immutable_files=blobs,
                             metadata={**meta, "local_version": f"v{version}"},
                             aliases=["latest", f"v{version}"], description=description)
    if not tables:
        return
    rows, seen = [], {}
    for e in manifest:
        key = (e["split"], e["class"])
        if not e.get("error") and seen.get(key, 0) < samples_per_class:
            seen[key] = seen.get(key, 0) + 1
            rows.append([e["split"], e["class"], e["path"], str(root / e["path"])])
    if rows:
        tracker.image_table("dataset/samples", ["split", "class", "path", "image"], rows, image_col=3)
    stats = [[s, c, n] for s, cc in meta["split_class_counts"].items() for c, n in cc.items()]
    tracker.table("dataset/statistics", ["split", "class", "count"], stats)
    tracker.summary({f"dataset/{k}": v for k, v in meta.items() if isinstance(v, (int, float, str))}
                    | {"dataset/quality_issues": quality["issue_count"]})


def _mirror_or_explain(tracker, name: str, version: int, root: Path, manifest: list[dict], meta: dict,
                       quality: dict, description, samples_per_class: int, st, wandb_mode, result: dict) -> None:
    """Mirror a committed version to W&B (the caller's run, or a run of our own)."""
    from src.core.errors import TrackingError
    from src.wandb_config import Tracker

    own = tracker is None
    try:
        tr = tracker
        if own:
            config = {"artifact_name": name, "data_dir": str(root), "version": f"v{version}"}
            tr = Tracker("dataset-version", config, mode=wandb_mode, name=f"{name}-v{version}")
        try:
            _mirror(tr, name, version, root, manifest, meta, quality, description, samples_per_class, st,
                    tables=own)
            result["run_dir"] = tr.run_dir
        finally:
            if own:
                tr.finish()
    except TrackingError as e:
        raise TrackingError(f"{name}:v{version} is stored locally, but mirroring it to W&B failed: {e.args[0]}",
                            hint="run with --wandb-mode offline and `wandb sync` later") from e


def _create(data_dir, name: str, version, description, samples_per_class: int, store, wandb_mode,
            tracker, link: bool) -> dict:
    from src.data.scan import scan_dataset
    from src.data.quality import analyze
    from src.core.store import validate_name

    validate_name(name, "artifact name")
    want = parse_version(version) if version not in (None, "") else None
    if samples_per_class < 0:
        raise ConfigError(f"--samples-per-class must be >= 0, got {samples_per_class}")
    if tracker is None:
        from src.wandb_config import resolve_mode

        wandb_mode = resolve_mode(wandb_mode)  # a bad mode fails before anything is stored
    st = open_store(store)
    scan = scan_dataset(data_dir, st)
    manifest, root = scan["manifest"], Path(scan["root"])
    digest = dataset_digest(manifest)
    result = {"name": name, "digest": digest, "scan": scan["stats"]}
    with st.read() as con:
        same = lookup_digest(con, name, digest)
    if same is None:
        meta = build_metadata(manifest) | {"digest": digest, "data_dir": str(root)}
        if not meta["total_samples"]:
            raise DataError(f"{root} has no usable images ({len(manifest)} unreadable or non-image files)",
                            hint="run --quality-check to see what is wrong with them")
        quality = analyze(manifest, scan["notes"])
        stored = 0
        for sha, e in {e["sha256"]: e for e in manifest}.items():
            if not st.has_blob(sha):
                try:
                    st.put_file(root / e["path"], sha, link=link)
                except OSError as err:
                    raise DataError(f"{root / e['path']}: disappeared or became unreadable while versioning "
                                    f"({err.strerror})", hint="re-run when the dataset is not being modified") from err
                stored += 1
        result["new_blobs"] = stored
        same, created = insert_version(st, name, want, digest, manifest, meta, quality, description, str(root))
        if created:
            log.debug("created %s:v%d (%d files, %d new blobs)", name, same, len(manifest), stored)
            tr = tracker
            _mirror_or_explain(tr, name, same, root, manifest, meta, quality, description,
                               samples_per_class, st, wandb_mode, result)
            return result | {"version": f"v{same}", "created": True, "quality": quality, "metadata": meta}
    if want is not None and want != same:
        log.warning("content equals %s:v%d; v%d not created", name, same, want)
    with st.read() as con:  # the same content keeps its verdict: --fail-on-issues must not flip
        row = con.execute("SELECT quality FROM dataset_versions WHERE name=? AND version=?", (name, same)).fetchone()
    return result | {"version": f"v{same}", "created": False, "equals": f"v{same}",
                     "quality": json.loads(row["quality"]) if row else None}


def create_dataset_artifact(data_dir: str | os.PathLike, artifact_name: str = DEFAULT_NAME,
                            version: str | None = None, description: str | None = None,
                            samples_per_class: int = DEFAULT_SAMPLES_PER_CLASS, store=None,
                            wandb_mode: str | None = None, link: bool = False) -> dict:
    """Version ``data_dir`` (or find the version with the same content).

    Returns ``{"name", "version", "digest", "created", ...}``; a new version also carries
    ``metadata`` and its ``quality`` report. ``version`` (``vN``) must be new unless the
    content is the same. Bytes are copied into the store once per distinct content;
    ``link=True`` hard-links instead (no extra space, but the dataset files become
    read-only and editing one in place as root would corrupt the stored version).
    """
    return _create(data_dir, artifact_name, version, description, samples_per_class, store, wandb_mode,
                   None, link)


def find_or_create_version(data_dir: str | os.PathLike, artifact_name: str = DEFAULT_NAME, store=None,
                           tracker=None) -> dict:
    """The version whose content digest matches ``data_dir``, created if none; for lineage."""
    r = _create(data_dir, artifact_name, None, None, DEFAULT_SAMPLES_PER_CLASS, store, None, tracker, False)
    return {k: r[k] for k in ("name", "version", "digest", "created")}


def quality_check(data_dir: str | os.PathLike, store=None) -> dict:
    """Quality report of ``data_dir`` without creating a version (see :mod:`src.data.quality`)."""
    from src.data.quality import quality_check as _qc

    return _qc(data_dir, store=open_store(store))


# -- CLI -----------------------------------------------------------------------------------
def build_parser() -> argparse.ArgumentParser:
    from src.core.cli import add_common_flags

    p = argparse.ArgumentParser(prog="data_versioning.py", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data-dir", default=None, help=f"dataset folder (default {DEFAULT_DATA_DIR.name}/)")
    p.add_argument("--artifact-name", help=f"dataset name (default {DEFAULT_NAME}; --list: all)")
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
    p.add_argument("--to", help="target folder for --restore (new or empty)")
    p.add_argument("--fail-on-issues", action="store_true", help="exit 1 when the quality check finds anything")
    p.add_argument("--store", help="local store folder (default $MLOPS_STORE or .mlops/)")
    p.add_argument("--wandb-mode", choices=("online", "offline", "disabled"), help="W&B mode")
    add_common_flags(p)
    return p


def _data_dir(args) -> Path:
    return Path(args.data_dir) if args.data_dir else DEFAULT_DATA_DIR


def _print_diff(d: dict) -> None:
    print(f"{d['name']}: {d['a']} -> {d['b']}: " + ", ".join(f"{n} {k}" for k, n in d["counts"].items()))
    for k in ("added", "removed", "modified"):
        for p in d[k]:
            print(f"  {k:9s} {p}")
    for r in d["relabeled"] + d["moved"]:
        kind = "relabeled" if r in d["relabeled"] else "moved"
        print(f"  {kind:9s} {r['from']} -> {r['to']}")
    for c, n in d["class_changes"].items():
        print(f"  class {c}: {n['a']} -> {n['b']} ({n['delta']:+d})")


def _command(args) -> int:
    from src.core.cli import print_json
    from src.data.quality import format_report

    out = print_json if args.json else None
    name, store = args.artifact_name or DEFAULT_NAME, args.store
    if args.list:
        vs = list_versions(args.artifact_name, store)
        if out:
            return out(vs) or 0
        for v in vs:
            print(f"{v['name']}:{v['version']}  {v['created_at']}  {v['total_samples']} samples  "
                  f"{v['num_classes']} classes  {v['quality_issues']} issues  {v['digest'][:12]}"
                  f"{'  ' + v['description'] if v['description'] else ''}")
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
    if args.restore:
        if not args.to:
            raise ConfigError("--restore needs --to DIR", hint="give a new or empty target folder")
        r = restore_version(name, args.restore, args.to, store)
        return (out(r) or 0) if out else (print(f"restored {name}:{r['version']} ({r['files']} files) to {r['to']}") or 0)
    if args.quality_check:
        rep = quality_check(_data_dir(args), store)
        print_json(rep) if out else print(format_report(rep, rep["data_dir"]))
        return 1 if args.fail_on_issues and not rep["ok"] else 0
    r = create_dataset_artifact(_data_dir(args), name, args.version, args.description, args.samples_per_class,
                                store, args.wandb_mode, link=args.link)
    if out:
        out(r)
    elif r["created"]:
        print(f"created {name}:{r['version']} ({r['metadata']['total_samples']} samples, "
              f"{r['new_blobs']} new blobs, digest {r['digest'][:12]})")
        print(format_report(r["quality"]))
    else:
        print(f"unchanged: content equals {name}:{r['equals']} (digest {r['digest'][:12]})")
        if args.fail_on_issues and r.get("quality") and not r["quality"]["ok"]:
            print(format_report(r["quality"]))
    return 1 if args.fail_on_issues and r.get("quality") and not r["quality"]["ok"] else 0


def main(argv: list[str] | None = None) -> int:
    from src.core.cli import run_cli

    return run_cli(build_parser(), argv, _command)


if __name__ == "__main__":
    raise SystemExit(main())
