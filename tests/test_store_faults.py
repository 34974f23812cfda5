"""The store under faults: a full disk, a read-only store, killed runs, a W&B mirror that failed."""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import os
import shutil
import sqlite3
import subprocess
import sys
import sysconfig
import tempfile
import time
from pathlib import Path

import pytest

from helpers import make_image_folder
from src import data_versioning as dv
from src.core import store as store_mod
from src.core.errors import TrackingError
from src.core.paths import temp_prefix
from src.core.store import Store

D = "disabled"
ROOT = Path(__file__).resolve().parents[1]


pytestmark = pytest.mark.usefixtures("drop_log_handlers")  # main() points logging at captured stderr


@pytest.fixture
def ds(tmp_path) -> Path:
    return make_image_folder(tmp_path / "ds", classes=("apple", "milk"), per_split={"train": 6, "test": 3})


@pytest.fixture
def store(tmp_path) -> Path:
    return tmp_path / "store"


def _blob_files(store: Path) -> list[Path]:
    return [p for p in (store / "blobs").rglob("*") if p.is_file()]


def _tmp_entries(store: Path) -> list[Path]:
    return list((store / "tmp").iterdir()) if (store / "tmp").is_dir() else []


def _copy_then_full(monkeypatch, after: int):
    """``shutil.copyfile`` in the store writes ``after`` files, then half of one and fails with ENOSPC."""
    real, calls = shutil.copyfile, {"n": 0}

    def copyfile(src, dst, *a, **k):
        calls["n"] += 1
        if calls["n"] > after:
            Path(dst).write_bytes(Path(src).read_bytes()[:10])
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(dst))
        return real(src, dst, *a, **k)

    monkeypatch.setattr(store_mod.shutil, "copyfile", copyfile)


# -- a full disk ---------------------------------------------------------------------------
def test_full_disk_during_versioning_leaves_no_orphan_and_a_usable_store(ds, store, capsys):
    with pytest.MonkeyPatch.context() as mp:
        _copy_then_full(mp, after=5)
        assert dv.main(["--data-dir", str(ds), "--artifact-name", "groc", "--wandb-mode", D]) == 4
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "no space left" in err[0], err
    assert _blob_files(store) == []       # the five blobs written before the failure are gone
    assert _tmp_entries(store) == []      # and so is the half-written temporary file
    assert dv.main(["--list", "--json"]) == 0
    assert json.loads(capsys.readouterr().out) == []
    assert dv.create_dataset_artifact(ds, "groc", wandb_mode=D)["version"] == "v1"
    assert len(_blob_files(store)) == len({hashlib.sha256(p.read_bytes()).digest() for p in ds.rglob("*.png")})


def test_full_disk_when_the_version_row_is_written_removes_the_new_blobs(ds, store, monkeypatch, capsys):
    from src.data import version_builder

    def full(st, *a, **k):
        with st.transaction() as con:
            con.execute("SELECT 1")
            raise sqlite3.OperationalError("database or disk is full")

    monkeypatch.setattr(version_builder, "insert_version", full)
    assert dv.main(["--data-dir", str(ds), "--artifact-name", "groc", "--wandb-mode", D]) == 4
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "no space left" in err[0], err
    assert _blob_files(store) == []
    assert dv.main(["--list"]) == 0


def test_a_failed_version_keeps_the_blobs_of_existing_versions(ds, store):
    dv.create_dataset_artifact(ds, "groc", wandb_mode=D)
    before = sorted(_blob_files(store))
    for i in range(4):
        shutil.copy(ds / "train" / "apple" / "apple_0.png", ds / "train" / "apple" / f"extra{i}.png")
        (ds / "train" / "apple" / f"extra{i}.png").write_bytes(
            (ds / "train" / "apple" / f"extra{i}.png").read_bytes() + bytes([i]))
    with pytest.MonkeyPatch.context() as mp:
        _copy_then_full(mp, after=2)
        assert dv.main(["--data-dir", str(ds), "--artifact-name", "groc", "--wandb-mode", D]) == 4
    assert sorted(_blob_files(store)) == before
    assert dv.restore_version("groc", "v1", ds.parent / "back")["files"] == 18


def test_put_bytes_leaves_no_temporary_file_on_a_full_disk(store, monkeypatch):
    st = Store()

    def fsync(fd):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(store_mod.os, "fsync", fsync)
    with pytest.raises(OSError):
        st.put_bytes(b"payload")
    assert _tmp_entries(store) == [] and _blob_files(store) == []


# -- a read-only store ---------------------------------------------------------------------
def _register_row(store: Path) -> None:
    from src.registry.tables import open_registry

    st = open_registry(store)
    with st.transaction() as con:
        con.execute("INSERT INTO registry_versions (name, version, digest, extractor_digest, metrics, metadata, "
                    "created_at) VALUES (?,?,?,?,?,?,?)",
                    ("label-spreading-classifier", 1, "ab" * 32, "cd" * 32, json.dumps({"test_accuracy": 0.9}),
                     json.dumps({}), time.time()))


def _digest_tree(folder: Path) -> dict[str, str]:
    """Every file's digest; SQLite's WAL index files, which a reader makes where it can, aside."""
    return {p.relative_to(folder).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file() and not p.name.endswith(("-wal", "-shm"))}


def test_a_read_only_store_answers_read_commands(ds, store, monkeypatch, capsys):
    from src import model_registry

    dv.create_dataset_artifact(ds, "groc", wandb_mode=D)
    _register_row(store)
    before = _digest_tree(store)
    monkeypatch.setattr(Store, "writable", property(lambda self: False))  # what chmod -w does for non-root
    assert dv.main(["--list", "--json"]) == 0
    assert [v["version"] for v in json.loads(capsys.readouterr().out)] == ["v1"]
    assert dv.main(["--show", "v1", "--artifact-name", "groc"]) == 0
    assert "18 samples" in capsys.readouterr().out
    assert dv.main(["--quality-check", "--data-dir", str(ds)]) == 0
    assert "Quality report" in capsys.readouterr().out
    assert model_registry.main(["list", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)[0]["name"] == "label-spreading-classifier"
    assert dv.main(["--data-dir", str(ds), "--artifact-name", "other", "--wandb-mode", D]) == 4
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "read-only" in err[0]
    assert _digest_tree(store) == before  # nothing written, nothing created


def test_a_read_only_store_without_registry_tables_lists_nothing(ds, store, monkeypatch, capsys):
    from src import model_registry

    dv.create_dataset_artifact(ds, "groc", wandb_mode=D)
    monkeypatch.setattr(Store, "writable", property(lambda self: False))
    assert model_registry.main(["list", "--json"]) == 0
    assert json.loads(capsys.readouterr().out) == []


def _drop_to_nobody():
    os.setgid(65534)
    os.setuid(65534)


def _unprivileged(env: dict) -> tuple[list[str], object] | None:
    """(python, preexec) for a process without write access to root-owned files, or None.

    Not root: this process itself, chmod applies. Root: a child that drops to uid 65534 and runs
    an interpreter it may execute (this one, or the system's with this environment's packages).
    """
    if os.geteuid() != 0:
        return [sys.executable], None
    site = sysconfig.get_paths()["purelib"]
    version = f"python{sys.version_info.major}.{sys.version_info.minor}"
    system = shutil.which(version, path="/usr/local/bin:/usr/bin:/bin")
    for exe in dict.fromkeys([sys.executable, system or sys.executable]):
        try:
            r = subprocess.run([exe, "-c", "import src.data_versioning, src.model_registry"], cwd=ROOT,
                               env={**env, "PYTHONPATH": f"{ROOT}{os.pathsep}{site}"}, capture_output=True,
                               timeout=120, preexec_fn=_drop_to_nobody)
        except OSError:
            continue
        if r.returncode == 0:
            return [exe], _drop_to_nobody
    return None


@pytest.mark.skipif(not hasattr(os, "geteuid"), reason="POSIX permissions")
def test_a_chmod_read_only_store_answers_reads_in_a_real_process(ds):
    """The real thing: the store folder and database without write permission (chmod a-w)."""
    base = Path(tempfile.mkdtemp(prefix="ro-store-", dir="/tmp"))
    os.chmod(base, 0o755)
    try:
        store = base / "store"
        dv.create_dataset_artifact(ds, "groc", store=store, wandb_mode=D)
        con = sqlite3.connect(store / "mlops.db")  # a clean close: no -wal/-shm beside the database
        con.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        con.close()
        for p in [*store.rglob("*"), store]:
            os.chmod(p, 0o555 if p.is_dir() else 0o444)
        env = {**os.environ, "MLOPS_STORE": str(store), "HOME": str(base), "PYTHONDONTWRITEBYTECODE": "1"}
        how = _unprivileged(env)
        if how is None:
            pytest.skip("no interpreter a process without write access may run (chmod does not stop root)")
        (python, preexec), site = how, sysconfig.get_paths()["purelib"]
        env["PYTHONPATH"] = f"{ROOT}{os.pathsep}{site}"
        for cmd, want in ((["src/data_versioning.py", "--list"], "groc:v1"),
                          (["src/model_registry.py", "list"], "registry is empty")):
            r = subprocess.run(python + cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=120,
                               preexec_fn=preexec)
            assert r.returncode == 0, r.stderr
            assert want in r.stdout
        r = subprocess.run(python + ["src/data_versioning.py", "--data-dir", str(ds), "--artifact-name", "x",
                                     "--wandb-mode", D], cwd=ROOT, env=env, capture_output=True, text=True,
                           timeout=120, preexec_fn=preexec)
        assert r.returncode == 4 and r.stderr.count("\n") == 1 and "read-only" in r.stderr, r.stderr
        assert sorted(p.name for p in store.iterdir()) == ["blobs", "mlops.db", "tmp"]
    finally:
        for p in [base, *base.rglob("*")]:
            os.chmod(p, 0o755 if p.is_dir() else 0o644)
        shutil.rmtree(base, ignore_errors=True)


# -- leftovers of killed runs --------------------------------------------------------------
def _dead_pid() -> int:
    p = subprocess.Popen([sys.executable, "-c", "pass"])
    p.wait()
    return p.pid


def test_temporary_files_of_killed_runs_are_cleaned_never_a_live_ones(ds, store):
    Store()  # creates the folders
    host = temp_prefix().split("-")[0]
    live = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        dead_file = store / "tmp" / f"{host}-{_dead_pid()}-abc"
        dead_dir = store / "tmp" / f"{host}-{_dead_pid()}-dir"
        live_file = store / "tmp" / f"{host}-{live.pid}-abc"
        other_host = store / "tmp" / f"elsewhere-{_dead_pid()}-abc"
        legacy_old, legacy_new = store / "tmp" / "tmpold", store / "tmp" / "tmpnew"
        for p in (dead_file, live_file, other_host, legacy_old, legacy_new):
            p.write_bytes(b"x" * 100)
        (dead_dir / "sub").mkdir(parents=True)
        os.utime(legacy_old, (time.time() - 3 * 86400,) * 2)
        dv.create_dataset_artifact(ds, "groc", wandb_mode=D)
        assert not dead_file.exists() and not dead_dir.exists() and not legacy_old.exists()
        assert live_file.exists() and other_host.exists() and legacy_new.exists()
    finally:
        live.kill()
        live.wait()


def test_a_killed_default_dataset_generation_is_cleaned_on_the_next_run(tmp_path, monkeypatch):
    from src.training.config import DEFAULT_DATA_DIR, TrainConfig
    from src.training.pipeline import ensure_dataset

    monkeypatch.chdir(tmp_path)
    make_image_folder(tmp_path / DEFAULT_DATA_DIR)  # present, so nothing is generated
    live = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        dead = tmp_path / f".{DEFAULT_DATA_DIR}.tmp-{_dead_pid()}"
        alive = tmp_path / f".{DEFAULT_DATA_DIR}.tmp-{live.pid}"
        for d in (dead, alive):
            (d / "train" / "a").mkdir(parents=True)
        ensure_dataset(TrainConfig())
        assert not dead.exists() and alive.exists()
    finally:
        live.kill()
        live.wait()


def test_a_killed_restore_leaves_nothing_that_the_next_one_keeps(ds, tmp_path):
    dv.create_dataset_artifact(ds, "groc", wandb_mode=D)
    leftover = tmp_path / f".back.partial-{_dead_pid()}"
    (leftover / "train").mkdir(parents=True)
    dv.restore_version("groc", "v1", tmp_path / "back")
    assert not leftover.exists()
    assert not [p for p in tmp_path.iterdir() if ".partial-" in p.name]


# -- the W&B mirror state ------------------------------------------------------------------
@contextlib.contextmanager
def _refuse_wandb():
    """W&B unreachable while the context lasts."""
    import src.tracking

    def refuse(*a, **k):
        raise TrackingError("W&B init failed in online mode at http://nowhere: timeout")

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(src.tracking, "Tracker", refuse)
        yield


def test_a_failed_mirror_is_mirrored_on_the_next_run_of_the_same_content(ds, tmp_path, capsys):
    from wandb_records import read_run

    with _refuse_wandb():
        assert dv.main(["--data-dir", str(ds), "--artifact-name", "groc", "--wandb-mode", "offline"]) == 5
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "mirrored again on the next run" in err[0]
    assert [v["mirrored"] for v in dv.list_versions("groc")] == [False]
    r = dv.create_dataset_artifact(ds, "groc", wandb_mode="offline")
    assert (r["created"], r["mirrored"]) == (False, True)
    assert "groc" in read_run(r["run_dir"])["artifacts"]
    assert [v["mirrored"] for v in dv.list_versions("groc")] == [True]
    again = dv.create_dataset_artifact(ds, "groc", wandb_mode="offline")
    assert "run_dir" not in again  # mirrored once, not on every run


def test_mirror_pending_mirrors_every_failed_version(ds, tmp_path, capsys):
    with _refuse_wandb():
        with pytest.raises(TrackingError):
            dv.create_dataset_artifact(ds, "groc", wandb_mode="offline")
        shutil.copy(ds / "train" / "apple" / "apple_0.png", ds / "train" / "milk" / "moved.png")
        with pytest.raises(TrackingError):
            dv.create_dataset_artifact(ds, "groc", wandb_mode="offline")
    assert dv.main(["--mirror-pending", "--wandb-mode", "offline"]) == 0
    assert "mirrored 2 pending version(s) to W&B: groc:v1, groc:v2" in capsys.readouterr().out
    assert dv.main(["--mirror-pending", "--wandb-mode", "offline"]) == 0
    assert "mirrored 0 pending" in capsys.readouterr().out
    assert dv.main(["--mirror-pending", "--wandb-mode", D]) == 2


def test_a_store_made_before_the_mirror_state_is_migrated(ds, store, capsys):
    dv.create_dataset_artifact(ds, "groc", wandb_mode=D)
    con = sqlite3.connect(store / "mlops.db")
    con.execute("ALTER TABLE dataset_versions DROP COLUMN mirrored")  # the table as older versions made it
    con.close()
    assert dv.main(["--list", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)[0]["mirrored"] is False
    con = sqlite3.connect(store / "mlops.db")
    assert "mirrored" in {r[1] for r in con.execute("PRAGMA table_info(dataset_versions)")}
    con.close()
    shutil.copy(ds / "train" / "apple" / "apple_0.png", ds / "train" / "milk" / "moved.png")
    assert dv.create_dataset_artifact(ds, "groc", wandb_mode=D)["version"] == "v2"


@pytest.mark.parametrize("code, words", [(errno.ENOSPC, "no space left to write"), (errno.EDQUOT, "no space left"),
                                         (errno.EROFS, "cannot write")])
def test_a_refused_write_anywhere_is_one_line_and_exit_4(capsys, code, words):
    """The CLI plumbing maps a full disk, a quota or a read-only file system from any command (exit 4, as the
    guide's table says); other OSErrors are bugs and keep their traceback."""
    import argparse

    from src.core.cli import run_cli
    from src.core.errors import StoreError

    def command(args):
        raise OSError(code, os.strerror(code), "/data/out/new\nfile.bin")

    assert run_cli(argparse.ArgumentParser(prog="x"), [], command) == StoreError.exit_code == 4
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"error: {words}") and "/data/out/new\\nfile.bin" in err[0], err
    with pytest.raises(FileNotFoundError):
        run_cli(argparse.ArgumentParser(prog="x"), [], lambda a: open("/nonexistent/x"))


def test_a_full_disk_during_a_copy_names_the_destination(capsys):
    """shutil.copyfile's ENOSPC carries (source, destination): the line names where it was writing."""
    import argparse

    from src.core.cli import run_cli

    def command(args):
        raise OSError(errno.ENOSPC, "No space left on device", "/store/blobs/ab/abcd", None, "/full/models/x.pth")

    assert run_cli(argparse.ArgumentParser(prog="x"), [], command) == 4
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert "/full/models/x.pth" in line and "/store/blobs" not in line
