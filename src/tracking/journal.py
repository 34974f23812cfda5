"""The lineage W&B could not record yet: input edges and Model Registry links, pending until a server has them.

W&B 0.31 refuses ``use_artifact`` and ``link_artifact`` offline, so an offline run's inputs and the
registry's links would never reach W&B: ``wandb sync`` uploads what a run logged, not what it used. Each
such edge is one row here, written when the run makes it:

* ``use``  — a run used an artifact version: dataset version → training run, registered model version →
  monitoring run, feature extractor → the registry run that logs the model it serves;
* ``link`` — a registered version is linked into the W&B Model Registry with its aliases (each
  registration and each alias move is one row, with the version's aliases of that moment).

Artifacts are named by an alias that the logging run gave them and that pins one version (``local-vN``:
the local version; ``sha-…``: an extractor's content), since W&B numbers its own versions. Once the runs are
synced, :func:`sync_lineage` (``python src/model_registry.py sync-lineage``, online) declares each edge
through W&B's public API and marks it done only when W&B confirmed it; an edge whose run or artifact the
server does not have yet stays pending and says which ``wandb sync`` is missing. A second sync declares
nothing. Online runs make the same edges in-run and record none here.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass
from typing import Any, Iterable

from src.core.errors import ConfigError, TrackingError
from src.core.ownership import Owner
from src.core.store import Store

log = logging.getLogger(__name__)

SCHEMA = """
CREATE TABLE IF NOT EXISTS wandb_lineage (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    kind TEXT NOT NULL,
    run_path TEXT NOT NULL,
    run_dir TEXT,
    artifact TEXT NOT NULL,
    artifact_type TEXT NOT NULL,
    target TEXT NOT NULL DEFAULT '',
    aliases TEXT NOT NULL DEFAULT '[]',
    created_at REAL NOT NULL,
    done_at REAL,
    last_error TEXT,
    UNIQUE (kind, run_path, artifact, target, aliases)
);
"""
SYNC_COMMAND = "python src/model_registry.py sync-lineage"
OWNER = Owner("tracking.journal", tables=("wandb_lineage",))  # names runs and aliases, never a blob


def local_alias(version: int | str) -> str:
    """The W&B alias that pins the artifact of local version ``version`` (``3``, ``"v3"`` → ``local-v3``): W&B
    reads ``vN`` as its own version index, and its numbers differ from the local store's."""
    return f"local-v{int(str(version).removeprefix('v'))}"


def content_alias(digest: str) -> str:
    """The W&B alias that pins an artifact by its content (an extractor: ``sha-`` and 12 hex digits)."""
    return f"sha-{digest[:12]}"


def extractor_artifact_name(dataset: str) -> str:
    """The W&B artifact a training run logs its feature extractor under (one collection per dataset)."""
    return f"{dataset}-feature-extractor"


@dataclass(frozen=True)
class Edge:
    id: int
    kind: str          # "use" or "link"
    run_path: str      # entity/project/run_id of the run that used the artifact, or that logged the version
    run_dir: str | None
    artifact: str      # NAME:ALIAS in the run's project
    artifact_type: str
    target: str        # "link": the registered model name
    aliases: tuple[str, ...]
    done: bool

    def describe(self) -> str:
        if self.kind == "use":
            return f"{self.artifact} -> run {self.run_path.rpartition('/')[2]}"
        return f"{self.artifact} -> Model Registry {self.target} [{', '.join(self.aliases) or '-'}]"

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "run": self.run_path, "artifact": self.artifact, "type": self.artifact_type,
                "target": self.target or None, "aliases": list(self.aliases), "done": self.done}


def open_journal(store: Store | str | None = None) -> Store:
    st = Store.of(store)
    st.ensure_schema("tracking.journal", SCHEMA)
    return st


def _record(store, tracker, kind: str, artifact: str, artifact_type: str, target: str = "",
            aliases: Iterable[str] = ()) -> None:
    if tracker is None or not tracker.enabled or tracker.mode == "online":
        return  # online the run made the edge itself; disabled runs exist nowhere
    st = open_journal(store)
    if not st.writable:
        log.warning("the store is read-only: lineage %s of %s is not recorded", kind, artifact)
        return
    with st.transaction() as con:
        con.execute("INSERT OR IGNORE INTO wandb_lineage (kind, run_path, run_dir, artifact, artifact_type, target, "
                    "aliases, created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                    (kind, tracker.run_path, tracker.run_dir, artifact, artifact_type, target,
                     json.dumps(sorted(set(aliases))), time.time()))


def record_use(store, tracker, artifact: str, artifact_type: str) -> None:
    """An offline run used ``artifact`` (``NAME:ALIAS``): pending until :func:`sync_lineage` declares it."""
    _record(store, tracker, "use", artifact, artifact_type)


def record_link(store, tracker, artifact: str, target: str, aliases: Iterable[str]) -> None:
    """``artifact`` (``NAME:ALIAS``, logged by ``tracker``'s run) belongs in the Model Registry as ``target``
    with ``aliases``; W&B manages ``latest`` itself, so it is never sent."""
    _record(store, tracker, "link", artifact, "model", target, [a for a in aliases if a != "latest"])


def edges(store=None, *, pending_only: bool = False) -> list[Edge]:
    """Every recorded edge, oldest first (alias moves replay in the order they happened)."""
    st = open_journal(store)
    with st.read() as con:
        try:
            rows = con.execute("SELECT * FROM wandb_lineage" + (" WHERE done_at IS NULL" if pending_only else "")
                               + " ORDER BY id").fetchall()
        except Exception:  # a read-only store that never had the table
            return []
    return [Edge(r["id"], r["kind"], r["run_path"], r["run_dir"], r["artifact"], r["artifact_type"], r["target"],
                 tuple(json.loads(r["aliases"])), r["done_at"] is not None) for r in rows]


def _mark(st: Store, edge: Edge, error: str | None) -> None:
    with st.transaction() as con:
        if error is None:
            con.execute("UPDATE wandb_lineage SET done_at = ?, last_error = NULL WHERE id = ?", (time.time(), edge.id))
        else:
            con.execute("UPDATE wandb_lineage SET last_error = ? WHERE id = ?", (error, edge.id))


def sync_lineage(store=None, *, wandb_mode: str | None = None, api: Any = None) -> dict[str, list]:
    """Declare every pending edge on the W&B server (online only); returns ``{"done": [...], "waiting": [...]}``.

    ``api`` is a :class:`~src.tracking.wandb_tracker.LineageApi` (default: one for the configured server).
    An edge is marked done only after W&B confirmed it; one the server cannot take yet stays pending with
    the reason (a run never synced, an artifact not uploaded) and the next sync tries it again.
    """
    from src.tracking.wandb_tracker import LineageApi, NotOnServer, resolve_mode

    if resolve_mode(wandb_mode) != "online":
        raise ConfigError("sync-lineage needs the W&B server: the mode is not online",
                          hint="set WANDB_API_KEY (or wandb login) and run `wandb sync` on the offline runs first")
    st = open_journal(store)
    st.require_writable()
    todo = edges(st, pending_only=True)
    out: dict[str, list] = {"done": [], "waiting": []}
    if not todo:
        return out
    api = api or LineageApi()
    for e in todo:
        try:
            if e.kind == "use":
                api.declare_use(e.run_path, e.artifact, e.artifact_type)
            else:
                api.link(e.run_path, e.artifact, e.target, e.aliases)
        except NotOnServer as why:
            sync = f"`wandb sync {e.run_dir}`" if e.run_dir else "`wandb sync` of its run"
            out["waiting"].append({**e.to_dict(), "reason": f"{why}; run {sync} first"})
            _mark(st, e, str(why))
            continue
        except TrackingError as why:
            out["waiting"].append({**e.to_dict(), "reason": str(why)})
            _mark(st, e, str(why))
            continue
        _mark(st, e, None)
        out["done"].append(e.to_dict())
        log.info("W&B lineage: %s", e.describe())
    return out
