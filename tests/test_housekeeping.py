"""Store housekeeping: gc removes what nothing needs (and frees the space), keeps every referenced
object, is safe next to writers; du accounts for the store's bytes."""

from __future__ import annotations

import json
import multiprocessing as mp
import os
import re
import sqlite3
import time
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from helpers import make_image_folder
from test_model_registry import NAME, make_bundle, reg
from test_report import fake_results

from src import housekeeping
from src.core.ownership import BLOB
from src.core.store import Store, sha256_file
from src.features.extraction import FeatureCache
from src.features.finetune import ExtractorCache, FineTuneResult
from src.monitoring import records
from src.training.runs import record_run
from src.upkeep.references import DIGEST, owners, referenced_blobs

DAY = 86400.0
OLD = time.time() - 40 * DAY


def age(store: Store, sql: str, *params) -> None:
    with store.transaction() as con:
        con.execute(sql, params)


def extractor_file(folder: Path, content: bytes) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    p = folder / "feature_extractor.pth"
    p.write_bytes(content)
    return p


def snapshot(store: Store) -> dict:
    files = {str(p.relative_to(store.root)): p.stat().st_size for p in store.root.rglob("*")
             if p.is_file() and not p.name.endswith(("-wal", "-shm")) and p.name != "mlops.db"}
    with store.read() as con:
        rows = {t: con.execute(f"SELECT COUNT(*) FROM {t}").fetchone()[0]
                for t in ("monitor_predictions", "monitor_alerts", "monitor_sessions", "finetune_cache", "runs",
                          "registry_versions", "dataset_files", "blob_pins")}
    return {"files": files, "rows": rows}


@pytest.fixture
def world(tmp_path):
    """A store with everything gc must keep and one of each thing it must remove."""
    from src.data_versioning import create_dataset_artifact

    store = Store()
    w = {"store": store}
    data = make_image_folder(tmp_path / "d")
    create_dataset_artifact(data, "groceries", store=store, wandb_mode="disabled")
    make_image_folder(data, classes=("d",))  # v2 shares v1's files and adds a class
    create_dataset_artifact(data, "groceries", store=store, wandb_mode="disabled")
    age(store, "UPDATE dataset_versions SET created_at = '2020-01-01T00:00:00+00:00'")
    reg(make_bundle(tmp_path / "m0", 0, accuracy=0.9), aliases=["production"])
    extractor_file(tmp_path / "m1", b"a second registered extractor")
    reg(make_bundle(tmp_path / "m1", 1, accuracy=0.91))
    age(store, "UPDATE registry_versions SET created_at = ?", OLD)
    cache = ExtractorCache(store)
    digests = {}
    for key, content in [("registered", None), ("old", b"an unused extractor"), ("run", b"a recent run's extractor"),
                         ("fresh", b"a just fine-tuned extractor")]:
        path = (tmp_path / "m0" / "feature_extractor.pth" if content is None
                else extractor_file(tmp_path / f"x-{key}", content))
        cache.put(key, path, "w" * 64, FineTuneResult(epochs_run=1))
        digests[key] = sha256_file(path)
    age(store, "UPDATE finetune_cache SET created_at = ? WHERE key != 'fresh'", OLD)
    w["digests"] = digests
    onnx = store.root / "onnx"
    onnx.mkdir()
    for key, d in digests.items():
        for name in (f"{d}-224.onnx", f"{d}-224-int8.onnx"):
            (onnx / name).write_bytes(b"o" * 1000)
            os.utime(onnx / name, (OLD, OLD))
    (onnx / "notes.txt").write_text("not an export")
    features = FeatureCache(store)
    for key, d in digests.items():
        features.put(["f" * 64, "e" * 64], f"{d}:pre224", np.ones((2, 1280), dtype=np.float32))
    models = tmp_path / "models"
    models.mkdir()
    from src.learning.evaluation import save_confusion_png

    save_confusion_png([0, 1], [0, 1], ["a", "b"], models / "label_spreading_confusion_matrix.png")
    old_run = fake_results(models) | {"extractor": {"digest": digests["old"]}}
    record_run(store, old_run, name="old", files_dir=models)
    age(store, "UPDATE runs SET created_at = ?", OLD)
    record_run(store, fake_results(models) | {"extractor": {"digest": digests["run"]}}, name="recent")
    st = records.open_monitor_store(store)
    gone = records.start_session(st, "m:production", "d" * 64)
    kept = records.start_session(st, "m:production", "d" * 64)
    feat = [0.5] * 640
    records.add_predictions(st, [(gone, OLD, "x.png", "e" * 64, "a", 0.9, 1.0, 1.0, "a", feat)] * 5
                            + [(kept, OLD, "y.png", "e" * 64, "a", 0.9, 1.0, 1.0, "a", feat)] * 5
                            + [(kept, time.time(), "z.png", "e" * 64, "a", 0.9, 1.0, 1.0, "a", feat)] * 2)
    records.finish_session(st, gone, {}, None)
    records.finish_session(st, kept, {}, None)
    age(store, "UPDATE monitor_sessions SET started_at = ?, finished_at = ? WHERE id = ?", OLD, OLD, gone)
    records.add_alert(st, gone, "WARN", "old", "an old alert", {})
    records.add_alert(st, kept, "WARN", "new", "a new alert", {})
    age(store, "UPDATE monitor_alerts SET at = ? WHERE title = 'old'", OLD)
    w["pinned"] = store.put_bytes(b'{"a W&B mirror": "manifest"}')
    store.pin([w["pinned"]], "test mirror")
    w["orphan"] = store.put_bytes(b"nobody references this")
    w["kept_session"] = kept
    return w


def everything_needed_is_intact(store: Store, tmp_path: Path) -> None:
    from src.data.version_store import list_versions, load_dataset_artifact, restore_version
    from src.registry.api import (
        get_model_version,
        list_models,
        load_registered_bundle,
        verified_blobs,
    )

    versions = list_versions(None, store)
    assert len(versions) == 2
    for v in versions:  # restore re-hashes every file against the manifest
        out = restore_version(v["name"], v["version"], tmp_path / f"restored-{v['version']}", store)
        assert out["files"] == len(load_dataset_artifact(v["name"], v["version"], store)["manifest"]) > 0
    (model,) = list_models(store=store)
    assert len(model["versions"]) == 2
    for tag in ["v0", "v1", "production", "latest"]:
        bundle = load_registered_bundle(NAME, tag, store=store)
        assert bundle["class_names"] == ["apple", "milk", "bread"]
        verified_blobs(store, get_model_version(f"{NAME}:{tag}", store=store))


def test_gc_removes_what_nothing_needs_and_keeps_everything_referenced(world, tmp_path, capsys):
    store, d = world["store"], world["digests"]
    before = snapshot(store)
    assert housekeeping.main(["gc", "--dry-run", "--json"]) == 0
    plan = json.loads(capsys.readouterr().out)
    assert snapshot(store) == before  # a dry run removes nothing
    kinds = plan["kinds"]
    assert kinds["monitoring rows"]["count"] == 10 + 1 + 1  # 10 old predictions, 1 alert, 1 session
    assert kinds["monitoring rows"]["bytes"] > 10 * 640 * 2  # float16 features
    assert kinds["fine-tuned extractors"]["count"] == 1 and kinds["fine-tuned extractors"]["items"] == [d["old"]]
    assert sorted(kinds["onnx exports"]["items"]) == [f"{d['old']}-224-int8.onnx", f"{d['old']}-224.onnx"]
    assert kinds["cached features"]["items"] == [f"{d['old']}:pre224"]
    assert kinds["orphan blobs"]["count"] == 0  # just written: within the grace period
    assert plan["total_bytes"] == sum(k["bytes"] for k in kinds.values()) > 0

    result = housekeeping.gc(store, 30, grace_s=0)
    assert {k: v["count"] for k, v in result["kinds"].items()} == {
        "monitoring rows": 12, "fine-tuned extractors": 1, "onnx exports": 2, "cached features": 2, "orphan blobs": 1}  # features: rows
    assert result["kinds"]["orphan blobs"]["items"] == [world["orphan"]]
    assert not store.has_blob(world["orphan"]) and not store.has_blob(d["old"])
    assert store.has_blob(world["pinned"])
    for key in ("registered", "run", "fresh"):
        assert store.has_blob(d[key]) and ExtractorCache(store).get(key) is not None
        assert (store.root / "onnx" / f"{d[key]}-224.onnx").is_file()
    assert ExtractorCache(store).get("old") is None
    assert (store.root / "onnx" / "notes.txt").is_file()
    assert FeatureCache(store).get(["f" * 64], f"{d['registered']}:pre224")
    assert not FeatureCache(store).get(["f" * 64], f"{d['old']}:pre224")
    st = records.open_monitor_store(store)
    assert [s["id"] for s in records.sessions(st)] == [world["kept_session"]]
    assert len(records.predictions(st, world["kept_session"])) == 2
    assert [a["title"] for a in records.alerts(st)] == ["new"]
    from src.training.runs import list_runs

    for run in list_runs(store):  # runs are history: never collected, their pictures neither
        assert all(store.has_blob(b) for b in run["images"].values())
    everything_needed_is_intact(store, tmp_path)

    again = housekeeping.gc(store, 30, grace_s=0)
    assert again["total_bytes"] == 0  # nothing left to collect


def test_gc_frees_the_space(world):
    store = world["store"]
    usage = housekeeping.disk_usage(store)
    assert usage["total"] == sum(usage["kinds"].values())
    assert usage["kinds"]["blobs: unreferenced"] > 0 and usage["kinds"]["onnx exports"] == 8000 + len("not an export")
    assert usage["kinds"]["blobs: dataset file"] > 0 and usage["kinds"]["blobs: registered model"] > 0
    housekeeping.gc(store, 30, grace_s=0)
    after = housekeeping.disk_usage(store)
    assert after["kinds"]["blobs: unreferenced"] == 0 and after["kinds"]["onnx exports"] == 6000 + len("not an export")
    assert after["monitoring_rows_bytes"] < usage["monitoring_rows_bytes"]
    assert after["kinds"]["feature cache"] < usage["kinds"]["feature cache"]  # vacuumed, not just deleted
    assert after["total"] < usage["total"]


def test_older_than_decides_what_is_old(world):
    store = world["store"]
    r = housekeeping.gc(store, 100, grace_s=0)  # nothing is 100 days old
    assert all(v["count"] == 0 for k, v in r["kinds"].items() if k != "orphan blobs")
    r = housekeeping.gc(store, 0, grace_s=0, dry_run=True)  # everything is old: registered and newest run stay
    d = world["digests"]
    assert r["kinds"]["fine-tuned extractors"]["items"] == sorted([d["old"], d["fresh"]])
    assert {i.split("-")[0] for i in r["kinds"]["onnx exports"]["items"]} == {d["old"], d["fresh"]}


def test_a_blob_stored_again_is_not_an_orphan(tmp_path):
    """A writer that finds its blob already there refreshes it: gc within the grace period keeps it."""
    store = Store()
    ExtractorCache(store)  # a database to collect in
    digest = store.put_bytes(b"about to be recorded")
    time.sleep(1.2)
    assert housekeeping.gc(store, 30, dry_run=True, grace_s=1.0)["kinds"]["orphan blobs"]["items"] == [digest]
    assert store.put_bytes(b"about to be recorded") == digest  # a writer stores the same bytes again
    assert housekeeping.gc(store, 30, grace_s=1.0)["kinds"]["orphan blobs"]["count"] == 0
    assert store.has_blob(digest)


def _register_many(folder: str, start: int, store: str) -> None:
    for i in range(start, start + 3):
        reg(make_bundle(Path(folder) / f"m{i}", i, accuracy=0.9), store=store)


def test_gc_next_to_concurrent_registrations(tmp_path):
    store = Store()
    ExtractorCache(store)
    ctx = mp.get_context("spawn")
    procs = [ctx.Process(target=_register_many, args=(str(tmp_path), 10 * k, str(store.root))) for k in range(3)]
    for p in procs:
        p.start()
    runs = 0
    while any(p.is_alive() for p in procs) or runs < 3:
        housekeeping.gc(store, 0, grace_s=60)
        runs += 1
    for p in procs:
        p.join(60)
        assert p.exitcode == 0
    from src.registry.api import list_models, load_registered_bundle

    (model,) = list_models(store=store)
    assert len(model["versions"]) == 9
    for v in model["versions"]:
        load_registered_bundle(NAME, v["version"], store=store)


@pytest.mark.parametrize("args, message", [
    (["gc", "--older-than", "-1"], "--older-than must be a number of days >= 0"),
    (["gc", "--older-than", "nan"], "--older-than must be a number of days >= 0"),
    (["gc", "--older-than", "soon"], "invalid float value"),
    (["du", "--store", "{missing}"], "no store database at"),
    (["gc", "--store", "{missing}"], "no store database at"),
])
def test_bad_input_is_one_line(tmp_path, capsys, args, message):
    missing = tmp_path / "no-store"
    rc = housekeeping.main([a.replace("{missing}", str(missing)) for a in args])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc != 0 and len(err) == 1 and message in err[0] and "Traceback" not in err[0]
    assert not missing.exists()  # nothing is created for a mistyped --store


def test_text_output(world, capsys):
    assert housekeeping.main(["gc", "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "would remove" in out and "onnx exports" in out and world["digests"]["old"] in out
    assert housekeeping.main(["du"]) == 0
    out = capsys.readouterr().out
    assert "blobs: dataset file" in out and "total" in out


# -- gc next to live work: a serving process's monitoring session, a training in progress ---------------------
def _wait(condition, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)


def test_gc_next_to_a_live_server_keeps_its_session_and_its_later_records(capsys):
    """``gc --older-than 0`` used to delete the live session: every later record then failed its foreign key."""
    from src.monitoring.live import LiveMonitor

    store = Store()
    mon = LiveMonitor(store, wandb_mode="disabled", flush_every=1, flush_ms=10)
    try:
        session = mon.start_model("m:production", {"_digest": "d" * 64, "class_names": ["a", "b"]})
        mon.record("before", session, "e" * 64, "a", 0.9, 1.0, 1.0, np.zeros(8, dtype=np.float32))
        _wait(lambda: mon.written == 1)
        assert housekeeping.main(["gc", "--older-than", "0", "--json"]) == 0
        result = json.loads(capsys.readouterr().out)
        assert result["kinds"]["monitoring rows"]["count"] == 1  # the older prediction went, as asked; not the session
        mon.record("after", session, "e" * 64, "b", 0.8, 1.0, 1.0, np.zeros(8, dtype=np.float32))
        _wait(lambda: mon.written == 2)
    finally:
        mon.close()
    assert mon.write_errors == 0
    st = records.open_monitor_store(store)
    (row,) = [s for s in records.sessions(st) if s["id"] == session]
    assert row["finished_at"] is not None  # closed normally
    assert [p["image"] for p in records.predictions(st, session)] == ["request:after"]
    housekeeping.gc(store, 0)  # finished now: an old session like any other
    assert records.sessions(st) == []


def _hold_a_session(store_root: str, ready: str) -> None:
    st = records.open_monitor_store(Store(store_root))
    Path(ready).write_text(str(records.start_session(st, "m:production", "d" * 64)))
    time.sleep(600)


def test_a_live_process_holds_its_session_until_it_dies(tmp_path):
    """The hold is an OS file lock: no heartbeat, and a killed holder's session is collected, not kept forever."""
    store = Store()
    records.open_monitor_store(store)
    ready = tmp_path / "ready"
    p = mp.get_context("spawn").Process(target=_hold_a_session, args=(str(store.root), str(ready)))
    p.start()
    try:
        _wait(lambda: ready.is_file() and ready.read_text(), timeout=120)
        session = int(ready.read_text())
        assert housekeeping.gc(store, 0)["kinds"]["monitoring rows"]["count"] == 0
        assert [s["id"] for s in records.sessions(records.open_monitor_store(store))] == [session]
    finally:
        p.kill()
        p.join(60)
    assert housekeeping.gc(store, 0)["kinds"]["monitoring rows"]["count"] == 1  # its holder is gone
    assert records.sessions(records.open_monitor_store(store)) == []
    assert list((store.root / "leases").iterdir()) == []  # the dead holder's lease file went too


def test_a_hold_that_cannot_be_written_does_not_stop_the_work(caplog):
    store = Store()
    (store.root / "leases").write_text("not a folder")  # as a full disk would refuse the lease file
    st = records.open_monitor_store(store)
    session = records.start_session(st, "m:production", "d" * 64)
    records.finish_session(st, session, {}, None)
    assert [s["id"] for s in records.sessions(st)] == [session]
    assert "a gc now may remove it" in caplog.text


def test_a_training_in_progress_keeps_its_caches(tmp_path):
    """gc in a loop during a training deleted the run's fine-tune cache entry, ONNX export and cached features."""
    from src.core import leases

    store = Store()
    cache = ExtractorCache(store)
    reused = extractor_file(tmp_path / "old", b"an extractor from an old cache entry")
    cache.put("reused", reused, "w" * 64, FineTuneResult(epochs_run=1))
    age(store, "UPDATE finetune_cache SET created_at = ?", OLD)
    (store.root / "onnx").mkdir()

    def caches(digest: str) -> None:  # what a training makes of an extractor: its export and its features
        (store.root / "onnx" / f"{digest}-224.onnx").write_bytes(b"o" * 100)
        os.utime(store.root / "onnx" / f"{digest}-224.onnx", (OLD, OLD))
        FeatureCache(store).put(["f" * 64], f"{digest}:pre224", np.ones((1, 1280), dtype=np.float32))

    def intact(key: str, digest: str) -> bool:
        return (ExtractorCache(store).get(key) is not None and store.has_blob(digest)
                and (store.root / "onnx" / f"{digest}-224.onnx").is_file()
                and bool(FeatureCache(store).get(["f" * 64], f"{digest}:pre224")))

    with leases.working(store):  # what run_training does
        assert cache.get("reused") is not None  # a cache hit
        fresh = extractor_file(tmp_path / "new", b"fine-tuned by this run")
        cache.put("fresh", fresh, "w" * 64, FineTuneResult(epochs_run=1))
        digests = {"reused": sha256_file(reused), "fresh": sha256_file(fresh)}
        for d in digests.values():
            caches(d)
        for _ in range(2):
            r = housekeeping.gc(store, 0, grace_s=0)
            assert {k: v["count"] for k, v in r["kinds"].items()} == dict.fromkeys(housekeeping.KINDS, 0)
            assert all(intact(k, d) for k, d in digests.items())
    r = housekeeping.gc(store, 0, grace_s=0)  # the training ended without recording a run: nothing needs them
    assert r["kinds"]["fine-tuned extractors"]["count"] == 2 and r["kinds"]["onnx exports"]["count"] == 2
    assert not any(intact(k, d) for k, d in digests.items())


def test_the_newest_run_keeps_the_caches_of_every_extractor_it_used(tmp_path):
    """A run with a pseudo-label round uses two extractors; a re-run finds both rounds in the cache only if
    gc kept both (it kept the final one alone)."""
    from src.core import leases
    from src.core.ownership import HELD_EXTRACTOR

    store = Store()
    cache = ExtractorCache(store)
    first, second = extractor_file(tmp_path / "1", b"first round"), extractor_file(tmp_path / "2", b"second round")
    with leases.working(store) as work:  # what run_training records as results["extractor"]["used"]
        cache.put("first", first, "w" * 64, FineTuneResult(epochs_run=1))
        cache.put("second", second, "w" * 64, FineTuneResult(epochs_run=1))
        used = sorted(work.held(HELD_EXTRACTOR))
    assert used == sorted([sha256_file(first), sha256_file(second)])
    record_run(store, fake_results(tmp_path) | {"extractor": {"digest": sha256_file(second), "used": used}})
    age(store, "UPDATE runs SET created_at = ?", OLD)
    age(store, "UPDATE finetune_cache SET created_at = ?", OLD)
    assert housekeeping.gc(store, 0, grace_s=0)["kinds"]["fine-tuned extractors"]["count"] == 0
    assert cache.get("first") is not None and cache.get("second") is not None


# -- owners declare their tables and digest columns; gc asks them ------------------------------------------
SRC = Path(__file__).resolve().parents[1] / "src"
_CREATE = re.compile(r"CREATE\s+(?:TEMP\s+)?TABLE\s+(?:IF\s+NOT\s+EXISTS\s+)?(?!IF\s)(\w+)", re.IGNORECASE)


def undeclared_tables(created: set[str]) -> list[str]:
    """Tables nobody declares, and tables two owners claim."""
    declared = Counter(t for o in owners() for t in o.tables)
    return sorted([f"{t}: no owner declares it" for t in created - set(declared)]
                  + [f"{t}: declared by {n} owners" for t, n in declared.items() if n > 1])


def digest_columns(store: Store) -> dict[str, set[str]]:
    """``table.column`` → the sha256-like strings found in it, over every table of the store's databases."""
    found: dict[str, set[str]] = {}
    for db in ("mlops.db", "features.db"):
        con = sqlite3.connect(store.root / db)
        try:
            for (t,) in con.execute("SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%'"):
                cols = [r[1] for r in con.execute(f"PRAGMA table_info({t})")]
                for row in con.execute(f"SELECT * FROM {t}"):
                    for col, value in zip(cols, row):
                        if isinstance(value, str) and DIGEST.search(value):
                            found.setdefault(f"{t}.{col}", set()).update(DIGEST.findall(value))
        finally:
            con.close()
    return found


def undeclared_digests(store: Store) -> list[str]:
    """Columns holding digests that no owner declares, and declared blob columns whose digests gc would not keep."""
    declared = {col: (roles,) if isinstance(roles, str) else roles for o in owners() for col, roles in o.digests.items()}
    found = digest_columns(store)
    with store.read() as con:
        refs = referenced_blobs(con)
    return sorted([f"{col}: holds digests, declared by no owner" for col in set(found) - set(declared)]
                  + [f"{col}: declared a blob column, but gc would not keep {sorted(found[col] - set(refs))}"
                     for col, roles in declared.items() if BLOB in roles and found.get(col, set()) - set(refs)])


def test_every_table_in_src_has_one_owner():
    created = {name for p in SRC.rglob("*.py") for name in _CREATE.findall(p.read_text())}
    assert {"registry_versions", "finetune_cache", "features", "monitor_sessions", "blob_pins"} <= created
    assert undeclared_tables(created) == []
    assert undeclared_tables(created | {"model_cards"}) == ["model_cards: no owner declares it"]  # a new table fails


def test_every_digest_in_the_store_is_in_a_column_its_owner_declares(world):
    """gc keeps what the owners declare: a digest column nobody declared would be invisible to it."""
    store = world["store"]
    with store.read() as con:
        tables = {t for (t,) in con.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    assert undeclared_tables(tables - {"sqlite_sequence"}) == []
    found = digest_columns(store)
    assert {"registry_versions.digest", "dataset_files.sha256", "runs.images", "finetune_cache.blob",
            "blob_pins.digest"} <= set(found)
    assert undeclared_digests(store) == []
    with store.read() as con:  # and every declared column exists
        for col in (c for o in owners() for c in o.digests if c.split(".")[0] in tables):
            assert col.split(".")[1] in {r[1] for r in con.execute(f"PRAGMA table_info({col.split('.')[0]})")}, col
    age(store, "ALTER TABLE runs ADD COLUMN report TEXT")  # an owner adds a column holding a blob's digest ...
    age(store, "UPDATE runs SET report = ?", world["pinned"])
    assert undeclared_digests(store) == ["runs.report: holds digests, declared by no owner"]  # ... and forgets to say
