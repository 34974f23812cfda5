"""Sweeps as Optuna studies: create, open, where they are stored (SPEC §3.3).

The same ``sweep_config.yaml`` that ``wandb sweep`` takes is translated to an Optuna study
(:mod:`src.hpo.optuna_space`). The study lives in the local store (``<store>/optuna.db``) or in
any SQLAlchemy database given with ``--storage`` (e.g. ``postgresql://...``), so several
agents — on one machine or many — share one sweep without running the same trial twice.
Agents (:mod:`src.hpo.agent`) send a heartbeat; a trial whose agent died (SIGKILL, lost
machine) is marked failed and re-queued by the next agent. A grid sweep queues every grid point
at ``create``; agents only take queued points, so each point runs once however many share it.

``create`` writes the study and every queued point in one database transaction
(:func:`one_transaction`): a refused, interrupted or killed create leaves no sweep, never a partial
grid. In-memory SQLite URLs are refused: no other process (agent) could ever open the sweep.
"""

from __future__ import annotations

import contextlib
import dataclasses
import itertools
import json
import logging
import os
import secrets
import string
import sys
import time
import warnings
from pathlib import Path
from typing import Any, Mapping

from src.core.errors import ConfigError, StoreError, quote
from src.core.ownership import Owner
from src.core.store import Store, validate_name
from src.hpo.optuna_space import direction, make_pruner, make_sampler, to_optuna_space
from src.hpo.space import check_grid_size, grid_space, validate_sweep_config
from src.tracking import create_wandb_sweep, resolve_mode

log = logging.getLogger(__name__)

SCHEMA = """
CREATE TABLE IF NOT EXISTS sweep_sweeps (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    storage TEXT NOT NULL,
    config TEXT NOT NULL,
    created_at REAL NOT NULL
);
"""
OWNER = Owner("hpo", tables=("sweep_sweeps",))  # names no digest; the studies themselves are in optuna.db
MAX_RETRIES = 2  # a failed or abandoned trial runs again at most twice (three attempts in all)


# -- storage --------------------------------------------------------------------------------
def default_storage_url(store: Store) -> str:
    return f"sqlite:///{store.root.resolve()}/optuna.db"


def redact(url: str) -> str:
    """The URL with any password hidden, safe to store and print."""
    try:
        from sqlalchemy.engine import make_url

        return make_url(url).render_as_string(hide_password=True)
    except Exception:  # noqa: BLE001 - an unparsable URL is reported when it is opened
        return url


def open_storage(url: str, heartbeat_interval: int | None = None, grace_period: int | None = None):
    """An Optuna RDBStorage; heartbeats let the next agent fail and re-queue a dead agent's trial."""
    import optuna

    _refuse_in_memory(url)
    kwargs: dict[str, Any] = {}
    if url.startswith("sqlite"):
        kwargs["engine_kwargs"] = {"connect_args": {"timeout": 60}}
    _quiet_optuna()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        if heartbeat_interval:
            kwargs.update(heartbeat_interval=heartbeat_interval, grace_period=grace_period or 4 * heartbeat_interval,
                          heartbeat_stale_trial_callback=optuna.storages.RetryHeartbeatStaleTrialCallback(
                              max_retry=MAX_RETRIES))
        try:
            rdb = optuna.storages.RDBStorage(url, **kwargs)
        except (ImportError, ModuleNotFoundError) as e:
            raise ConfigError(f"no database driver for {redact(url)}: {e}", hint=_driver_hint(url)) from e
        except Exception as e:  # sqlalchemy raises ArgumentError/OperationalError for bad or unreachable URLs
            raise ConfigError(f"cannot open sweep storage {redact(url)}: {str(e).splitlines()[0]}",
                              hint="pass a SQLAlchemy URL such as sqlite:///path/optuna.db or "
                                   "postgresql+psycopg://user@host/db (password in PGPASSWORD)") from e
    if rdb.engine.dialect.name == "sqlite":
        _serialize_sqlite(rdb.engine)
    return rdb


def _refuse_in_memory(url: str) -> None:
    """An in-memory SQLite database lives and dies with one process: no agent could ever see the sweep."""
    try:
        from sqlalchemy.engine import make_url

        u = make_url(url)
    except Exception:  # noqa: BLE001 - an unparsable URL is reported when it is opened
        return
    if u.get_backend_name() != "sqlite":
        return
    db = u.database or ""
    if db in ("", ":memory:") or db.startswith("file::memory:") or "mode=memory" in db or u.query.get("mode") == "memory":
        raise ConfigError(f"the sweep database {quote(url)} is an in-memory database: it exists only inside one "
                          "process, so agents cannot share the sweep and it is gone when the command exits",
                          hint="pass a file URL such as sqlite:////abs/path/optuna.db or a postgresql+psycopg:// URL, "
                               "or leave `storage` out to use the store's optuna.db", params=("storage",))


def _driver_hint(url: str) -> str:
    if url.startswith("postgresql"):
        return ("install the pinned requirements (pip install -r requirements.txt): they include psycopg[binary], "
                "the driver for postgresql:// and postgresql+psycopg:// URLs")
    return "install the SQLAlchemy driver for this database, or use sqlite:/// or postgresql+psycopg://"


def _serialize_sqlite(engine) -> None:
    """Begin every SQLite transaction with BEGIN IMMEDIATE (SQLAlchemy's pysqlite recipe).

    Python's sqlite3 begins a transaction only at the first write, so two agents could both read
    a queued trial as WAITING and both claim it; taking the write lock at BEGIN makes the
    read-then-claim atomic, as ``SELECT ... FOR UPDATE`` does on PostgreSQL.
    """
    from sqlalchemy import event

    @event.listens_for(engine, "connect")
    def _connect(dbapi_connection, _record) -> None:
        dbapi_connection.isolation_level = None  # sqlite3 emits no BEGIN of its own; _begin does

    @event.listens_for(engine, "begin")
    def _begin(connection) -> None:
        connection.exec_driver_sql("BEGIN IMMEDIATE")

    engine.dispose()  # connections made while opening the storage predate the listeners


def _quiet_optuna() -> None:
    """Optuna's own INFO lines repeat ours; show them only with -v."""
    import optuna

    debug = logging.getLogger().getEffectiveLevel() <= logging.DEBUG
    optuna.logging.set_verbosity(logging.INFO if debug else logging.WARNING)


def _record(store: Store, sweep_id: str, name: str, url: str, cfg: Mapping[str, Any]) -> None:
    store.ensure_schema("sweep", SCHEMA)
    with store.transaction() as con:
        con.execute("INSERT INTO sweep_sweeps (id, name, storage, config, created_at) VALUES (?, ?, ?, ?, ?)",
                    (sweep_id, name, redact(url), json.dumps(cfg), time.time()))


def _lookup_storage(store: Store, sweep_id: str) -> str:
    store.ensure_schema("sweep", SCHEMA)
    with store.read() as con:
        row = con.execute("SELECT storage FROM sweep_sweeps WHERE id = ?", (sweep_id,)).fetchone()
    if row is None:
        return default_storage_url(store)
    if "***" in row["storage"]:
        raise ConfigError(f"sweep {sweep_id} lives in {row['storage']}", hint="pass `storage=URL`, the full URL",
                          params=("storage",))
    return row["storage"]


def list_sweeps(store: Store) -> list[str]:
    """The ids of the sweeps this store records, newest first (none yet: an empty list).

    The public way to enumerate sweeps: ``sweep_sweeps`` is this module's table, read by no one else."""
    store.ensure_schema("sweep", SCHEMA)
    with store.read() as con:
        return [r["id"] for r in con.execute("SELECT id FROM sweep_sweeps ORDER BY created_at DESC, id")]


def sweep_dir(store: Store, sweep_id: str) -> Path:
    return store.root / "sweeps" / sweep_id


# -- create ---------------------------------------------------------------------------------
def create_local_sweep(cfg: Mapping[str, Any], store: str | os.PathLike | Store | None = None,
                       storage: str | None = None, name: str | None = None, progress: bool = True) -> str:
    """Create an Optuna-backed sweep from a validated W&B sweep config; returns its id.

    The study, its attributes and (for a grid) every queued point are written in one database
    transaction: a create that is refused, interrupted or killed leaves no sweep at all, never a
    partial grid that agents would run as if it were complete.
    """
    import optuna

    cfg = validate_sweep_config(cfg)
    to_optuna_space(cfg), make_sampler(cfg), make_pruner(cfg)  # fail now (grid size included), not in the agent
    if storage:
        _refuse_in_memory(storage)  # before the store folder is made
    st = Store.of(store)
    url = storage or default_storage_url(st)
    sweep_id = "".join(secrets.choice(string.ascii_lowercase + string.digits) for _ in range(8))
    display_name = str(name or cfg.get("name") or "sweep")
    sweep_name = validate_name(f"{slugify(display_name)}-{sweep_id}", "sweep name")
    rdb = open_storage(url)
    try:
        with one_transaction(rdb):
            study = optuna.create_study(storage=rdb, study_name=sweep_id, direction=(
                "maximize" if direction(cfg) == "maximize" else "minimize"))
            study.set_user_attr("sweep_config", cfg)
            study.set_user_attr("sweep_name", sweep_name)
            study.set_user_attr("display_name", display_name)
            if cfg["method"] == "grid":
                queue_grid(study, cfg, progress=progress)
        try:
            _record(st, sweep_id, sweep_name, url, cfg)
        except BaseException:  # the store refused the record: take the study back, leave nothing behind
            optuna.delete_study(study_name=sweep_id, storage=rdb)
            raise
    finally:
        rdb.engine.dispose()
    sweep_dir(st, sweep_id).mkdir(parents=True, exist_ok=True)
    log.info("created sweep %s (%s) in %s", sweep_id, sweep_name, redact(url))
    return sweep_id


@contextlib.contextmanager
def one_transaction(rdb):
    """Every write through the Optuna storage ``rdb`` inside the block commits at its end, or not at all.

    Optuna commits each call on its own (one commit per queued point: ~30-80 points/s on SQLite, and
    a killed create kept the points queued so far). Here its session is bound to one connection
    whose transaction we own, so Optuna's commits become savepoints (SQLAlchemy's "join a session
    into an external transaction" recipe); the transaction commits when the block ends and rolls
    back on any exception, and the database drops it if the process dies.
    """
    with rdb.engine.connect() as conn, conn.begin():
        rdb.scoped_session.remove()
        rdb.scoped_session.configure(bind=conn, join_transaction_mode="create_savepoint")
        try:
            yield
        finally:
            rdb.scoped_session.remove()
            rdb.scoped_session.configure(bind=rdb.engine, join_transaction_mode="conservative_savepoint")


def queue_grid(study, cfg: Mapping[str, Any], progress: bool = True) -> int:
    """Queue every grid point as a WAITING trial; agents claim them one by one (atomically in the database).

    ``grid_points`` is set last: a grid without it is incomplete and agents refuse it. Call inside
    :func:`one_transaction` so the points appear all at once.
    """
    from src.core.progress import progress_bar

    total = check_grid_size(cfg)
    grid = grid_space(cfg)
    names = list(grid)
    points = (dict(zip(names, values)) for values in itertools.product(*(grid[n] for n in names)))
    log.info("queueing %d grid points in one transaction", total)
    for params in progress_bar(points, progress=progress, total=total, minimum=500, desc="queueing grid points", unit="point"):
        study.enqueue_trial(params)
    study.set_user_attr("grid_points", total)
    return total


def slugify(name: str) -> str:
    """A sweep name W&B accepts ("My HB sweep (v2)") as a store-safe name ("My-HB-sweep-v2")."""
    from src.core.names import slug

    return slug(name, 100, "sweep")


@dataclasses.dataclass
class Sweep:
    """An opened sweep: its id, config and Optuna study."""

    id: str
    name: str
    config: dict[str, Any]
    study: Any
    store: Store
    storage_url: str
    display_name: str | None = None
    storage: Any = None  # the study's Optuna storage (claiming queued trials, heartbeats)


def open_sweep(sweep_id: str, storage: str | None = None, store: str | os.PathLike | Store | None = None,
               heartbeat_interval: int | None = None, grace_period: int | None = None) -> Sweep:
    import optuna

    sweep_id = validate_name(sweep_id.rsplit("/", 1)[-1], "sweep id")
    st = Store.of(store)
    url = storage or _lookup_storage(st, sweep_id)
    rdb = open_storage(url, heartbeat_interval, grace_period)
    try:
        study_id = rdb.get_study_id_from_name(sweep_id)
    except KeyError:
        raise StoreError(f"no sweep {quote(sweep_id)} in {redact(url)}",
                         hint="create one with: python src/sweep_runner.py create sweep_config.yaml") from None
    attrs = rdb.get_study_user_attrs(study_id)
    cfg = attrs.get("sweep_config")
    if not cfg:
        raise StoreError(f"study {quote(sweep_id)} in {redact(url)} was not created by the sweep runner")
    study = optuna.load_study(study_name=sweep_id, storage=rdb, sampler=make_sampler(cfg), pruner=make_pruner(cfg))
    return Sweep(sweep_id, attrs.get("sweep_name", sweep_id), cfg, study, st, url, attrs.get("display_name"),
                 study_storage(study))


def study_storage(study: Any) -> Any:
    """The storage ``study`` itself reads and writes through: claims and heartbeats must use it.

    ``optuna.load_study`` wraps an ``RDBStorage`` in a cache of the trials this process touches; a trial
    claimed or changed behind the cache's back (straight on the ``RDBStorage``) leaves the study reading
    stale state. Optuna has no public accessor for that cache, so this is the one place that reads
    ``Study._storage`` (tests/test_optuna_storage.py fails if an Optuna upgrade moves it).
    """
    return study._storage




def create_sweep(config: Mapping[str, Any] | None = None, *, mode: str | None = None,
                 store: str | os.PathLike | Store | None = None) -> str:
    """Create a sweep: a W&B sweep id online, a local Optuna-backed sweep id otherwise.

    ``config`` defaults to the project's ``sweep_config.yaml`` (:func:`src.core.paths.default_sweep_config`).
    """
    if config is None:
        from src.core.paths import default_sweep_config
        from src.hpo.space import load_sweep_config

        config = load_sweep_config(default_sweep_config())
    cfg = validate_sweep_config(dict(config))
    if resolve_mode(mode) == "online":
        sweep_id = create_wandb_sweep(cfg)
        log.info("run an agent with: wandb agent %s", sweep_id)
        return sweep_id
    sweep_id = create_local_sweep(cfg, store=store)
    # printed, not logged: a notebook shows no INFO, and `wandb agent ID` cannot work without a server
    print(f"local sweep {sweep_id} (W&B is not online; `wandb agent` needs a server). Run an agent with: "
          f"python src/sweep_runner.py agent {sweep_id} --count 10", file=sys.stderr)
    return sweep_id
