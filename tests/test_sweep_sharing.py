"""Agents in separate processes (as on separate machines) share one sweep database: SQLite and a
real PostgreSQL server (tests/pg.py). No trial runs twice or gets lost, each grid point runs once,
a killed agent's trial is re-queued, and ``status`` from yet another process sees it all."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from pg import PASSWORD, PASSWORD_ROLE, postgres_server, postgresql_url  # noqa: F401 (fixtures)
from src import sweep_config as sc
from src import sweep_runner as sr

ROOT = Path(__file__).resolve().parents[1]
RANDOM = {"program": "src/train_with_wandb.py", "method": "random", "metric": {"name": "test_accuracy", "goal": "maximize"},
          "parameters": {"labeled_ratio": {"values": [0.1, 0.2, 0.3]}, "n_neighbors": {"min": 5, "max": 20},
                         "fine_tune_epochs": {"value": 2}}}
GRID = {**RANDOM, "method": "grid", "parameters": {"labeled_ratio": {"values": [0.1, 0.3]},
                                                   "algorithm": {"values": ["label_spreading", "self_training"]},
                                                   "fine_tune_epochs": {"value": 2}}}  # 4 points


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request, tmp_path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path}/shared.db"
    return request.getfixturevalue("postgresql_url")


def _agent(sweep_id: str, url: str, *extra: str, sleep: float = 0.0) -> subprocess.Popen:
    """An agent in its own process running the fake objective (tests/sweep_fakes.py)."""
    cmd = [sys.executable, str(ROOT / "tests" / "sweep_fakes.py"), "--sleep", str(sleep), "agent", sweep_id,
           "--storage", url, "--no-summary", "-q", "--json", *extra]
    return subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _agents(sweep_id: str, url: str, n: int, *extra: str, sleep: float = 0.0) -> list[dict]:
    procs = [_agent(sweep_id, url, *extra, sleep=sleep) for _ in range(n)]
    outs = [p.communicate(timeout=120) for p in procs]
    assert [p.returncode for p in procs] == [0] * n, [err[-2000:] for _, err in outs]
    return [json.loads(out) for out, _ in outs]


def _status_elsewhere(sweep_id: str, url: str) -> dict:
    """``status`` from another process, with its own empty store: the URL is all it needs."""
    proc = subprocess.run([sys.executable, "src/sweep_runner.py", "status", sweep_id, "--storage", url, "--json"],
                          cwd=ROOT, capture_output=True, text=True, timeout=60,
                          env={**os.environ, "MLOPS_STORE": os.environ["MLOPS_STORE"] + "-elsewhere"})
    assert proc.returncode == 0, proc.stderr[-2000:]
    return json.loads(proc.stdout)


def test_three_agents_share_a_sweep_without_duplicate_or_lost_trials(db_url):
    sweep_id = sr.create_local_sweep(sc.validate_sweep_config(RANDOM), storage=db_url)
    results = _agents(sweep_id, db_url, 3, "--count", "2", sleep=0.02)
    mine = [r["agent_trials"] for r in results]
    assert all(len(m) == 2 for m in mine) and len(set(sum(mine, []))) == 6, mine  # nobody ran another's trial
    status = sr.sweep_status(sr.open_sweep(sweep_id, storage=db_url))
    assert sorted(t["number"] for t in status["trials"]) == list(range(6))
    assert status["counts"] == {"COMPLETE": 6} and status["state"] == "IDLE"
    assert status["best"]["value"] == max(t["value"] for t in status["trials"])


def test_three_agents_run_each_grid_point_exactly_once(db_url):
    sweep_id = sr.create_local_sweep(sc.validate_sweep_config(GRID), storage=db_url)
    results = _agents(sweep_id, db_url, 3, "--count", "2", sleep=0.05)
    ran = sorted(sum((r["agent_trials"] for r in results), []))
    assert ran == [0, 1, 2, 3], results  # 6 slots, 4 points: the agents that found the queue empty stopped
    status = _status_elsewhere(sweep_id, db_url)
    points = [(t["params"]["labeled_ratio"], t["params"]["algorithm"]) for t in status["trials"]]
    assert len(points) == 4 and len(set(points)) == 4
    assert status["counts"] == {"COMPLETE": 4} and status["state"] == "FINISHED"
    assert status["grid"] == {"points": 4, "done": 4, "failed": 0, "remaining": 0, "failed_points": []}


def test_a_killed_agents_grid_point_is_requeued_and_runs_once(db_url):
    sweep_id = sr.create_local_sweep(sc.validate_sweep_config(GRID), storage=db_url)
    proc = _agent(sweep_id, db_url, "--heartbeat-interval", "1", "--grace-period", "2", sleep=0.5)
    try:
        deadline = time.time() + 60
        while time.time() < deadline:
            trials = sr.open_sweep(sweep_id, storage=db_url).study.get_trials()
            if any(t.state.name == "RUNNING" and t.intermediate_values for t in trials):
                break
            time.sleep(0.1)
        else:
            pytest.fail(f"the agent never started a trial: {proc.stderr.read() if proc.poll() is not None else ''}")
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.communicate()
    killed = [t.number for t in trials if t.state.name == "RUNNING"]
    assert len(killed) == 1
    time.sleep(2.5)  # past the grace period: the dead agent's heartbeat is stale
    (result,) = _agents(sweep_id, db_url, 1, "--heartbeat-interval", "1", "--grace-period", "2")
    status = _status_elsewhere(sweep_id, db_url)
    by_number = {t["number"]: t for t in status["trials"]}
    assert by_number[killed[0]]["state"] == "FAIL"
    (retry,) = [t for t in status["trials"] if t["retry_of"] == killed[0]]
    assert retry["state"] == "COMPLETE" and retry["number"] in result["agent_trials"]
    assert retry["params"] == by_number[killed[0]]["params"]
    done = [(t["params"]["labeled_ratio"], t["params"]["algorithm"]) for t in status["trials"] if t["state"] == "COMPLETE"]
    assert len(done) == 4 and len(set(done)) == 4  # every point once, none lost
    assert status["state"] == "FINISHED" and "RUNNING" not in status["counts"] and "WAITING" not in status["counts"]


def test_postgresql_password_comes_from_the_environment_and_is_never_stored(postgres_server, monkeypatch, capfd):
    db = postgres_server.create_database(owner=PASSWORD_ROLE)
    url = postgres_server.url(db, user=PASSWORD_ROLE)  # no password in the URL
    path = Path(os.environ["MLOPS_STORE"]).parent / "grid.yaml"
    path.write_text(json.dumps(GRID), encoding="utf-8")
    monkeypatch.delenv("PGPASSWORD", raising=False)
    assert sr.main(["create", str(path), "--storage", url]) == 2
    err = capfd.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: cannot open sweep storage") and "password" in err[0], err
    monkeypatch.setenv("PGPASSWORD", PASSWORD)
    assert sr.main(["create", str(path), "--storage", url]) == 0
    sweep_id = capfd.readouterr().out.strip()
    assert sr.main(["status", sweep_id]) == 0  # the store recorded the URL, the password comes from PGPASSWORD
    assert "PENDING, grid" in capfd.readouterr().out
    inline = url.replace(f"{PASSWORD_ROLE}@", f"{PASSWORD_ROLE}:{PASSWORD}@")
    monkeypatch.delenv("PGPASSWORD")
    assert sr.main(["create", str(path), "--storage", inline, "--json", "-v"]) == 0
    out, err = capfd.readouterr()
    other = json.loads(out)["sweep_id"]
    assert sr.main(["status", other, "--storage", inline, "--json"]) == 0
    out2, err2 = capfd.readouterr()
    assert json.loads(out2)["storage"] == url.replace(f"{PASSWORD_ROLE}@", f"{PASSWORD_ROLE}:***@")
    assert PASSWORD not in out + err + out2 + err2
    stored = b"".join(p.read_bytes() for p in Path(os.environ["MLOPS_STORE"]).rglob("*") if p.is_file())
    assert stored and PASSWORD.encode() not in stored
