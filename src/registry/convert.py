"""Turning old pickle bundles into skops files, once, after the user says they trust them.

Converts ``{models_dir}/*_model.pkl`` (with their sidecars and the training results
record) and every registered version whose stored model is a pickle. Registered
versions keep their number, aliases, metrics, lineage and audit log; the registry row
gets the new digest (the old one stays in its metadata as ``converted_from``) and the
audit log one ``converted`` event per version. Every file is read and checked first
(sidecar, results record and registry digests; :mod:`src.learning.legacy` refuses any
pickle that asks for more than a suite bundle is made of), so a refusal changes nothing.
A pickle seen both in ``models_dir`` and in the registry gets the same new bytes.
"""

from __future__ import annotations

import json
import logging
import os
import sqlite3
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from src.core.errors import ConfigError, ModelError, StoreError
from src.core.paths import write_text_atomic
from src.core.store import sha256_bytes
from src.learning.bundles import (CONVERT_COMMAND, LEGACY_SUFFIX, MODEL_SUFFIX, bundle_bytes, is_pickle, sidecar,
                                  write_model_file)
from src.learning.legacy import read_legacy_bundle
from src.registry.tables import all_versions, get_version, open_registry

log = logging.getLogger(__name__)
RESULTS_FILE = "training_results.json"


@dataclass
class _Plan:
    files: list[Path] = field(default_factory=list)
    versions: list[Any] = field(default_factory=list)  # ModelVersion rows whose model blob is a pickle

    def describe(self, models_dir: Path) -> str:
        parts = []
        if self.files:
            parts.append(f"{len(self.files)} model files in {models_dir} ({', '.join(p.name for p in self.files)})")
        if self.versions:
            parts.append(f"{len(self.versions)} registered versions ({', '.join(mv.ref for mv in self.versions)})")
        return " and ".join(parts)


def _plan(models_dir: Path, st) -> _Plan:
    plan = _Plan(sorted(models_dir.glob(f"*_model{LEGACY_SUFFIX}")) if models_dir.is_dir() else [])
    with st.read() as con:
        for mv in all_versions(con):
            blob = st.blob_path(mv.digest)
            if blob.is_file():
                with open(blob, "rb") as f:
                    if is_pickle(f.read(2)):
                        plan.versions.append(mv)
    return plan


def _results(models_dir: Path) -> dict[str, Any] | None:
    path = models_dir / RESULTS_FILE
    try:
        results = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    ok = isinstance(results, dict) and isinstance(results.get("algorithms"), dict)
    return results if ok and all(isinstance(v, dict) for v in results["algorithms"].values()) else None


def _checked_file(path: Path, results: dict[str, Any] | None) -> bytes:
    """The bytes of a legacy file whose sidecar and results record (where present) agree with it."""
    data = path.read_bytes()
    digest = sha256_bytes(data)
    expected = [sidecar(path).read_text().strip()] if sidecar(path).is_file() else []
    expected += [info["model_digest"] for info in (results or {}).get("algorithms", {}).values()
                 if info.get("model_path") == path.name and info.get("model_digest")]
    if any(e != digest for e in expected):
        raise ModelError(f"refusing to convert {path}: it fails its digest check (found {digest[:12]})",
                         hint="the file was modified or swapped since training; retrain instead")
    return data


def _checked_blob(st, mv) -> bytes:
    blob = st.blob_path(mv.digest)
    data = blob.read_bytes()
    if sha256_bytes(data) != mv.digest:
        raise ModelError(f"refusing to convert {mv.ref}: its stored model fails its digest check",
                         hint="the store was tampered with; re-register the model from a trusted file")
    return data


def _write_results(path: Path, results: dict[str, Any]) -> None:
    write_text_atomic(path, json.dumps(results, indent=2))


def convert_legacy(models_dir: str | os.PathLike = "models", *, consent: bool = False, store: Any = None,
                   wandb_mode: str | None = None) -> dict[str, Any]:
    """Convert every pickle bundle in ``models_dir`` and the registry; ``consent`` is the user's word."""
    models_dir = Path(models_dir)
    st = open_registry(store)
    plan = _plan(models_dir, st)
    if not plan.files and not plan.versions:
        return {"files": [], "versions": []}
    if not consent:
        raise ConfigError(f"would convert {plan.describe(models_dir)} to {MODEL_SUFFIX}; converting reads "
                          "pickles, which can run code",
                          hint=f"only if you trust these files: {CONVERT_COMMAND} --models-dir {models_dir}")
    clash = [p for p in plan.files if p.with_suffix(MODEL_SUFFIX).exists()]
    if clash:
        raise ModelError(f"{clash[0].with_suffix(MODEL_SUFFIX)} already exists; converting {clash[0].name} would "
                         "replace it", hint="move or delete one of them, then convert again")
    results = _results(models_dir)
    converted: dict[str, bytes] = {}  # old digest → new bytes

    def convert(data: bytes, where: str) -> bytes:
        old = sha256_bytes(data)
        if old not in converted:
            converted[old] = bundle_bytes(read_legacy_bundle(data, where))
        return converted[old]

    new_files = {p: convert(_checked_file(p, results), str(p)) for p in plan.files}
    new_blobs = {mv.ref: convert(_checked_blob(st, mv), mv.ref) for mv in plan.versions}
    # Everything read and checked: now write. Files first, then the registry in one transaction.
    files_out = []
    for old_path, data in new_files.items():
        new_path = old_path.with_suffix(MODEL_SUFFIX)
        digest = write_model_file(new_path, data)
        for info in (results or {}).get("algorithms", {}).values():
            if info.get("model_path") == old_path.name:
                info.update(model_path=new_path.name, model_digest=digest)
        files_out.append({"from": str(old_path), "to": str(new_path), "digest": digest})
    if results is not None and files_out:
        _write_results(models_dir / RESULTS_FILE, results)
    for old_path in new_files:
        old_path.unlink()
        sidecar(old_path).unlink(missing_ok=True)
    versions_out = _convert_versions(st, plan.versions, new_blobs, wandb_mode) if plan.versions else []
    for f in files_out:
        log.info("converted %s -> %s", f["from"], f["to"])
    return {"files": files_out, "versions": versions_out}


def _convert_versions(st, versions: list, new_blobs: dict[str, bytes], wandb_mode: str | None) -> list[dict]:
    from src.registry.mirror import mirror_run, publish_recorded

    out, updated = [], []
    digests = {mv.ref: st.put_bytes(new_blobs[mv.ref]) for mv in versions}
    with st.transaction() as con:
        for mv in versions:
            new = digests[mv.ref]
            meta = {**mv.metadata, "converted_from": mv.digest, "size_bytes": len(new_blobs[mv.ref])}
            try:
                cur = con.execute("UPDATE registry_versions SET digest = ?, metadata = ? WHERE name = ? AND "
                                  "version = ? AND digest = ?", (new, json.dumps(meta), mv.name, mv.version, mv.digest))
            except sqlite3.IntegrityError as e:  # the same bytes under another version of this name
                raise StoreError(f"cannot convert {mv.ref}: {e}") from e
            if cur.rowcount != 1:
                raise StoreError(f"{mv.ref} changed while it was being converted", hint="run convert again")
            con.execute("INSERT INTO registry_events (name, alias, from_version, to_version, action, reason, "
                        "details, at) VALUES (?, '', ?, ?, 'converted', ?, ?, ?)",
                        (mv.name, mv.version, mv.version, f"pickle to {MODEL_SUFFIX} ({CONVERT_COMMAND})",
                         json.dumps({"from_digest": mv.digest, "to_digest": new}), time.time()))
            updated.append(get_version(con, mv.name, mv.version))
            out.append({"ref": mv.ref, "from_digest": mv.digest, "to_digest": new})
    with mirror_run(None, wandb_mode, "convert") as t:
        for mv in updated:
            publish_recorded(t, mv, st)
    for o in out:
        log.info("converted %s (%s -> %s)", o["ref"], o["from_digest"][:12], o["to_digest"][:12])
    return out
