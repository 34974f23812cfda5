"""The W&B mirror state of registry versions, and dataset mirrors that check the stored bytes first."""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path

import pytest

from helpers import make_image_folder
from src import data_versioning as dv
from src import model_registry as mr
from src.core.errors import ConfigError, StoreError, TrackingError
from src.core.store import Store
from test_model_registry import NAME, make_bundle


@pytest.fixture(autouse=True)
def _drop_log_handlers():
    import logging

    yield
    for h in list(logging.getLogger().handlers):
        logging.getLogger().removeHandler(h)


@pytest.fixture
def logged(monkeypatch) -> list[str]:
    """Names of the artifacts the W&B tracker logged; the first call fails, as an unreachable W&B would."""
    from src.tracking import Tracker

    calls: list[str] = []
    original = Tracker.log_artifact

    def flaky(self, name, *a, **k):
        calls.append(name)
        if len(calls) == 1:
            raise TrackingError("upload failed: connection reset")
        return original(self, name, *a, **k)

    monkeypatch.setattr(Tracker, "log_artifact", flaky)
    return calls


def run(capsys, *args) -> tuple[int, str, str]:
    rc = mr.main(list(args))
    out, err = capsys.readouterr()
    return rc, out, err


def error_lines(err: str) -> list[str]:
    """The error lines of stderr (progress and info lines aside); never a traceback."""
    assert "Traceback" not in err, err
    return [ln for ln in err.strip().splitlines() if ln.startswith("error: ")]


def _pending(name: str | None = None) -> list[tuple[str, int]]:
    from src.registry.tables import open_registry, pending_mirrors

    with open_registry().read() as con:
        return pending_mirrors(con, name)


# -- registry ------------------------------------------------------------------------------
def test_a_version_whose_mirror_failed_is_mirrored_on_the_next_register(tmp_path, logged, capsys):
    path = make_bundle(tmp_path / "m", 0, accuracy=0.9)
    rc, _, err = run(capsys, "register", str(path), "--name", NAME, "--wandb-mode", "offline")
    lines = error_lines(err)
    assert rc == TrackingError.exit_code and len(lines) == 1, err
    assert f"{NAME}:v0 is stored locally" in lines[0] and "mirror-pending" in lines[0]
    assert _pending() == [(NAME, 0)] and logged == [NAME]
    rc, out, _ = run(capsys, "register", str(path), "--name", NAME, "--wandb-mode", "offline")
    assert rc == 0 and "already registered as" in out and "pending W&B mirror is done now" in out
    assert logged == [NAME, NAME] and _pending() == []
    rc, out, _ = run(capsys, "register", str(path), "--name", NAME, "--wandb-mode", "offline")
    assert rc == 0 and "done now" not in out and logged == [NAME, NAME]  # mirrored once, not on every run


def test_register_all_mirrors_what_a_crashed_run_left_pending(tmp_path, logged, capsys):
    import json

    d = tmp_path / "models"
    paths = [make_bundle(d, s, accuracy=0.9) for s in (0, 1)]
    from src.core.store import sha256_file

    algos = {f"algo{s}": {"model_path": p.name, "model_digest": sha256_file(p), "test_accuracy": 0.9,
                          "f1_score": 0.88} for s, p in enumerate(paths)}
    (d / "training_results.json").write_text(json.dumps({"algorithms": algos}))
    assert run(capsys, "register-all", "--models-dir", str(d), "--wandb-mode", "offline")[0] == TrackingError.exit_code
    assert len(_pending()) == 1  # the first model's mirror failed, the run stopped there
    assert run(capsys, "register-all", "--models-dir", str(d), "--wandb-mode", "offline")[0] == 0
    assert _pending() == [] and len(logged) == 3


def test_mirror_pending_mirrors_failed_and_disabled_versions(tmp_path, logged, capsys):
    a, b = make_bundle(tmp_path / "a", 0, accuracy=0.9), make_bundle(tmp_path / "b", 1, accuracy=0.9)
    with pytest.raises(TrackingError):
        mr.register_model(a, NAME, wandb_mode="offline")
    mr.register_model(b, NAME, wandb_mode="disabled")  # nothing was sent: not mirrored
    mr.register_model(b, "other-model", wandb_mode="disabled")
    assert _pending() == [(NAME, 0), (NAME, 1), ("other-model", 0)]
    rc, out, _ = run(capsys, "mirror-pending", "--name", NAME, "--wandb-mode", "offline")
    assert rc == 0 and f"mirrored 2 pending version(s) to W&B: {NAME}:v0, {NAME}:v1" in out
    assert _pending() == [("other-model", 0)]
    rc, out, _ = run(capsys, "mirror-pending", "--wandb-mode", "offline")
    assert rc == 0 and "mirrored 1 pending version(s) to W&B: other-model:v0" in out
    rc, out, _ = run(capsys, "mirror-pending", "--wandb-mode", "offline")
    assert rc == 0 and "mirrored 0 pending" in out
    rc, _, err = run(capsys, "mirror-pending", "--wandb-mode", "disabled")
    assert rc == ConfigError.exit_code and len(error_lines(err)) == 1
    rc, _, err = run(capsys, "mirror-pending", "--name", "nobody", "--wandb-mode", "offline")
    assert rc == StoreError.exit_code and "no model named 'nobody'" in err


def test_mirror_pending_refuses_a_tampered_blob_and_keeps_it_pending(tmp_path, capsys):
    mv = mr.register_model(make_bundle(tmp_path / "m", 0, accuracy=0.9), NAME, wandb_mode="disabled")
    blob = Store().blob_path(mv["digest"])
    os.chmod(blob, 0o644)
    blob.write_bytes(blob.read_bytes()[:-1] + b"x")
    rc, _, err = run(capsys, "mirror-pending", "--wandb-mode", "offline")
    assert rc != 0 and len(error_lines(err)) == 1 and "fails its digest check" in err
    assert _pending() == [(NAME, 0)]


def test_a_registry_made_before_the_mirror_state_is_migrated(tmp_path, store_path, capsys):
    mr.register_model(make_bundle(tmp_path / "m", 0, accuracy=0.9), NAME, wandb_mode="offline")
    con = sqlite3.connect(store_path / "mlops.db")
    con.execute("ALTER TABLE registry_versions DROP COLUMN mirrored")  # the table as older versions made it
    con.commit()
    con.close()
    assert run(capsys, "list")[0] == 0
    con = sqlite3.connect(store_path / "mlops.db")
    assert "mirrored" in {r[1] for r in con.execute("PRAGMA table_info(registry_versions)")}
    con.close()
    assert _pending() == [(NAME, 0)]  # from before the column: pending, as dataset versions are
    rc, out, _ = run(capsys, "mirror-pending", "--wandb-mode", "offline")
    assert rc == 0 and f"{NAME}:v0" in out and _pending() == []


@pytest.fixture
def store_path(tmp_path) -> Path:
    return tmp_path / "store"


# -- dataset mirrors check the stored bytes ------------------------------------------------
def test_a_tampered_dataset_blob_blocks_its_mirror_and_stays_pending(tmp_path, capsys):
    ds = make_image_folder(tmp_path / "ds", classes=("apple", "milk"), per_split={"train": 3, "test": 2})
    r = dv.create_dataset_artifact(ds, "groc", wandb_mode="disabled")
    victim = sorted(dv.load_dataset_artifact("groc", "v1")["manifest"], key=lambda e: e["path"])[2]
    blob = Store().blob_path(victim["sha256"])
    os.chmod(blob, 0o644)
    blob.write_bytes(blob.read_bytes() + b"tampered")
    wandb_root = tmp_path / "wandb_root"
    for args in (["--data-dir", str(ds), "--artifact-name", "groc"], ["--mirror-pending"]):
        assert dv.main([*args, "--wandb-mode", "offline"]) == StoreError.exit_code
        lines = error_lines(capsys.readouterr().err)
        assert len(lines) == 1 and "groc:v1 was not mirrored" in lines[0], lines
        assert f"data/{victim['path']}" in lines[0] and "fails its digest check" in lines[0]
        assert [v["mirrored"] for v in dv.list_versions("groc")] == [False]
        assert not list(wandb_root.rglob("offline-run-*"))  # nothing logged, no run opened
    assert r["version"] == "v1"


def test_an_intact_dataset_version_still_mirrors(tmp_path):
    ds = make_image_folder(tmp_path / "ds", classes=("apple", "milk"), per_split={"train": 3, "test": 2})
    dv.create_dataset_artifact(ds, "groc", wandb_mode="disabled")
    assert dv.mirror_pending(wandb_mode="offline") == ["groc:v1"]
    assert [v["mirrored"] for v in dv.list_versions("groc")] == [True]
