"""The dataset quality gate: what would silently hurt training or inflate test accuracy.

Findings (each a small dict with ``kind``, ``severity``, ``paths`` and ``message``):
undecodable/truncated files, zero-byte and non-image files, images over the pixel limit,
exact duplicates inside a split, the same bytes in train or the unlabeled pool and in
test/val (leakage: the pool is trained on too), a pool image already labeled in train, near
duplicates by 64-bit dHash (Hamming distance ≤ ``near_threshold``), class imbalance,
tiny images, unusual colour modes, empty class folders, stray files, links leading
outside the dataset folder (left out of the manifest, never read), and folders or files the
walk could not read: unreadable, nested too deep, or with a path over the system's limit
(:mod:`src.data.walk`; errors: they are left out of the manifest). Works on a
manifest from :mod:`src.data.scan`, so a version's check costs no extra decoding.

Every message is one line: control characters in file names are escaped (``\\n``, ``\\x1b``)
and very long paths are cut in the middle; ``paths`` keeps the names as they are.
"""

from __future__ import annotations

import os
from collections import Counter, defaultdict
from dataclasses import asdict, dataclass
from typing import Any

from src.core.cli import printable
from src.data.scan import ICONIC, POOL
from src.data.walk import MAX_DEPTH, WALK_PROBLEMS, shown

FILE_ERRORS = {
    "corrupt": ("error", "undecodable or truncated image"),
    "zero_byte": ("error", "zero-byte file"),
    "non_image": ("error", "not an image"),
    "too_large": ("error", "image over the pixel limit (possible decompression bomb)"),
    "bad_aspect_ratio": ("error", "image over the 20:1 aspect-ratio limit (every command refuses it)"),
}
MAX_LISTED = 200  # findings of one kind beyond this are counted, not listed


@dataclass(frozen=True)
class QualityConfig:
    near_threshold: int = 4      # dHash Hamming distance counted as a near duplicate
    min_side: int = 32           # images with a shorter side below this are "tiny"
    max_imbalance: float = 3.0   # largest / smallest class count above this is flagged
    ok_modes: tuple[str, ...] = ("RGB",)


def _finding(kind: str, severity: str, paths: list[str], message: str, **extra: Any) -> dict:
    return {"kind": kind, "severity": severity, "paths": paths, "message": printable(message), **extra}


def imbalance_ratio(counts: dict[str, int]) -> float:
    vals = [v for v in counts.values() if v > 0]
    return round(max(vals) / min(vals), 4) if vals else 0.0


def _hamming_pairs(hashes: list[int], threshold: int) -> list[tuple[int, int, int]]:
    """All (i, j, distance) with i < j and Hamming distance ≤ threshold.

    Pigeonhole: two 64-bit hashes within distance t agree exactly on at least one of t+1
    disjoint bit bands, so only hashes sharing a band value are compared (near-linear).
    """
    bands = threshold + 1
    edges = [round(64 * k / bands) for k in range(bands + 1)]
    found: dict[tuple[int, int], int] = {}
    for lo, hi in zip(edges, edges[1:]):
        mask = (1 << (hi - lo)) - 1
        buckets: dict[int, list[int]] = defaultdict(list)
        for i, h in enumerate(hashes):
            buckets[(h >> lo) & mask].append(i)
        for idx in buckets.values():
            for a in range(len(idx)):
                for b in idx[a + 1:]:
                    key = (idx[a], b)
                    if key not in found:
                        d = (hashes[idx[a]] ^ hashes[b]).bit_count()
                        if d <= threshold:
                            found[key] = d
    return sorted((i, j, d) for (i, j), d in found.items())


def _file_findings(manifest: list[dict], cfg: QualityConfig) -> list[dict]:
    found = []
    for e in manifest:
        err = e.get("error")
        if err:
            sev, what = FILE_ERRORS.get(err, ("error", err))
            found.append(_finding(err, sev, [e["path"]], f"{what}: {e['path']} ({e.get('error_detail')})"))
            continue
        w, h = e.get("width") or 0, e.get("height") or 0
        if min(w, h) < cfg.min_side:
            found.append(_finding("tiny_image", "warning", [e["path"]],
                                  f"tiny image {w}x{h} (< {cfg.min_side} px): {e['path']}"))
        if e.get("mode") not in cfg.ok_modes:
            found.append(_finding("unusual_mode", "warning", [e["path"]],
                                  f"unusual colour mode {e.get('mode')}: {e['path']}"))
    return found


def _duplicate_findings(manifest: list[dict]) -> list[dict]:
    by_sha: dict[str, list[dict]] = defaultdict(list)
    for e in manifest:
        if not e.get("error"):
            by_sha[e["sha256"]].append(e)
    found = []
    for sha, group in by_sha.items():
        if len(group) < 2:
            continue
        per_split: dict[str, list[str]] = defaultdict(list)
        for e in group:
            per_split[e["split"]].append(e["path"])
        for split, paths in sorted(per_split.items()):
            if len(paths) > 1:
                found.append(_finding("duplicate", "warning", paths,
                                      f"{len(paths)} identical files in {split}: {', '.join(paths)}"))
        fit = [s for s in ("train", ICONIC, POOL) if s in per_split]  # what training sees, labeled or not
        evals = [s for s in sorted(per_split) if s not in ("train", ICONIC, POOL)]
        if fit and evals:
            seen = [p for s in fit for p in per_split[s]]
            others = [p for s in evals for p in per_split[s]]
            found.append(_finding("leakage", "error", seen + others,
                                  f"same bytes in {' and '.join(fit)} and an evaluation split: "
                                  f"{seen[0]} == {', '.join(others)}"))
        elif POOL in per_split and len(fit) >= 2:
            labeled = [p for s in fit if s != POOL for p in per_split[s]]
            found.append(_finding("duplicate", "warning", labeled + per_split[POOL],
                                  f"a pool image is already labeled: {per_split[POOL][0]} == {labeled[0]}"))
    return found


def _near_duplicate_findings(manifest: list[dict], cfg: QualityConfig) -> list[dict]:
    # one representative per distinct content; exact copies are reported above
    reps: dict[str, dict] = {}
    for e in manifest:
        if e.get("dhash") and not e.get("error"):
            reps.setdefault(e["sha256"], e)
    items = list(reps.values())
    found = []
    for i, j, d in _hamming_pairs([int(e["dhash"], 16) for e in items], cfg.near_threshold):
        a, b = items[i], items[j]
        cross = a["split"] != b["split"] and bool({"train", POOL} & {a["split"], b["split"]})
        found.append(_finding("near_duplicate", "warning", [a["path"], b["path"]],
                              f"near duplicates (dHash distance {d}){' across splits' if cross else ''}: "
                              f"{a['path']} ~ {b['path']}", distance=d, cross_split=cross))
    return found


def analyze(manifest: list[dict], notes: list[str] = (), config: QualityConfig | None = None) -> dict:
    """Quality report for a scanned manifest (see module docstring)."""
    cfg = config or QualityConfig()
    findings = _file_findings(manifest, cfg) + _duplicate_findings(manifest)
    findings += _near_duplicate_findings(manifest, cfg)
    for note in notes:
        kind, _, where = note.partition(":")
        at = shown(where)
        msg = {"empty_class": f"class folder with no files: {at}",
               "stray": f"ignored: {at} is not inside a split/class folder",
               "outside_link": f"left out: {at} is a link leading outside the dataset folder (never read)",
               "unreadable": f"left out: {at} cannot be read (check its permissions)",
               "too_deep": f"left out: {at} is more than {MAX_DEPTH} folders below its class folder or unlabeled/",
               "too_long": f"left out: {at} is a path longer than the system allows",
               }.get(kind, note)
        severity = "error" if kind in ("outside_link", *WALK_PROBLEMS) else "warning"  # left out of the manifest
        findings.append(_finding(kind, severity, [where], msg))
    valid = [e for e in manifest if not e.get("error")]
    split_counts = Counter(e["split"] for e in valid)
    for split in ("train", "test"):
        if split_counts.get(split, 0) == 0:
            findings.append(_finding("missing_split", "warning", [split],
                                     f"no usable images in the {split} split"))
    per_class = Counter(e["class"] for e in valid if e["split"] not in (POOL, ICONIC))
    ratio = imbalance_ratio(per_class)
    if ratio > cfg.max_imbalance:
        lo, hi = min(per_class, key=per_class.get), max(per_class, key=per_class.get)
        findings.append(_finding("class_imbalance", "warning", [],
                                 f"class imbalance ratio {ratio:.2f} > {cfg.max_imbalance} "
                                 f"({hi}: {per_class[hi]}, {lo}: {per_class[lo]})", ratio=ratio))
    counts = Counter(f["kind"] for f in findings)
    listed, seen = [], Counter()
    for f in findings:
        seen[f["kind"]] += 1
        if seen[f["kind"]] <= MAX_LISTED:
            listed.append(f)
    return {
        "ok": not findings,
        "issue_count": len(findings),
        "counts": dict(sorted(counts.items())),
        "findings": listed,
        "stats": {"files": len(manifest), "valid_images": len(valid), "split_counts": dict(split_counts),
                  "imbalance_ratio": ratio, "modes": dict(Counter(e.get("mode") for e in valid))},
        "config": asdict(cfg),
    }


def format_report(report: dict, where: str = "") -> str:
    """A human-readable report, grouped by kind."""
    lines = [f"Quality report{' for ' + printable(where) if where else ''}: "
             f"{report['stats']['files']} files, {report['stats']['valid_images']} usable images, "
             f"imbalance ratio {report['stats']['imbalance_ratio']:.2f}"]
    if report["ok"]:
        lines.append("  no issues found")
        return "\n".join(lines)
    by_kind: dict[str, list[dict]] = defaultdict(list)
    for f in report["findings"]:
        by_kind[f["kind"]].append(f)
    for kind, n in report["counts"].items():
        sev = by_kind[kind][0]["severity"] if by_kind[kind] else "warning"
        lines.append(f"  [{sev}] {kind}: {n}")
        for f in by_kind[kind][:20]:
            lines.append(f"      {f['message']}")
        if n > 20:
            lines.append(f"      ... and {n - 20} more (use --json for all)")
    return "\n".join(lines)


def quality_check(data_dir: str | os.PathLike, store=None, config: QualityConfig | None = None,
                  progress: bool = True) -> dict:
    """Scan ``data_dir`` (using the store's stat cache when given) and return the report."""
    from src.data.scan import scan_dataset

    scan = scan_dataset(data_dir, store=store, progress=progress, keep_going=True)  # report, never refuse
    report = analyze(scan["manifest"], scan["notes"], config)
    report["data_dir"] = scan["root"]
    return report
