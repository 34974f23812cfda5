"""``du``: bytes the store takes, per kind (blobs by what references them)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from src.core.errors import StoreError
from src.core.paths import tree_bytes
from src.core.store import Store
from src.upkeep.references import blob_kinds, existing_store, referenced_blobs, stored_blobs


def _db(path: Path) -> int:
    return sum(tree_bytes(Path(f"{path}{suffix}")) for suffix in ("", "-wal", "-shm", "-journal"))


def disk_usage(store: Store | str | os.PathLike | None = None) -> dict[str, Any]:
    """``{"kinds": {kind: bytes}, "total": bytes, ...}``; blob kinds are ``blobs: <what references them>``."""
    from src.monitoring.records import stored_bytes

    st = existing_store(store)
    if not st.db_path.is_file():
        raise StoreError(f"no store database at {st.db_path}",
                         hint="pass `store` (or MLOPS_STORE) pointing at a grocery-mlops store folder",
                         params=("store",))
    with st.read() as con:
        refs = referenced_blobs(con)
        monitoring = stored_bytes(con)
    kinds = {"database": _db(st.db_path), "feature cache": _db(st.root / "features.db"),
             "sweeps": _db(st.root / "optuna.db") + tree_bytes(st.root / "sweeps"), "onnx exports": tree_bytes(st.root / "onnx")}
    blobs = {k: 0 for k in (*blob_kinds(), "unreferenced")}
    counted = 0
    for p in stored_blobs(st.blob_root):
        size = p.stat().st_size
        blobs[refs.get(p.name, "unreferenced")] += size
        counted += size
    kinds |= {f"blobs: {k}": v for k, v in blobs.items()}
    kinds["scratch (tmp)"] = tree_bytes(st.root / "tmp")
    total = tree_bytes(st.root)
    kinds["other"] = max(total - sum(kinds.values()), 0)
    return {"store": str(st.root), "kinds": kinds, "total": total, "monitoring_rows_bytes": monitoring}
