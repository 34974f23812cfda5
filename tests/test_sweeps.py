"""Sweeps: YAML validation and Optuna translation, the local runner, parallel agents, resume, pruning."""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from src import sweep_config as sc
from src import sweep_runner as sr
from src.core.errors import ConfigError, GroceryError
from src.core.store import Store
from sweep_fakes import fake_objective

ROOT = Path(__file__).resolve().parents[1]

BASE = {
    "program": "src/train_with_wandb.py",
    "method": "random",
    "metric": {"name": "test_accuracy", "goal": "maximize"},
    "parameters": {"region": {"values": ["good", "bad"]}, "fine_tune_epochs": {"value": 4}},
}


@pytest.fixture(autouse=True)
def _drop_log_handlers():
    """main() binds logging to the captured stderr of its test; unbind it afterwards."""
    yield
    for h in logging.root.handlers[:]:
        logging.root.removeHandler(h)


def write_yaml(tmp_path: Path, cfg: dict, name: str = "sweep.yaml") -> Path:
    p = tmp_path / name
    p.write_text(yaml.safe_dump(cfg), encoding="utf-8")
    return p


def with_(**changes) -> dict:
    cfg = json.loads(json.dumps(BASE))
    cfg.update(changes)
    return cfg


def sweep_with_queued_regions(cfg: dict, regions) -> str:
    """A new local sweep whose first trials are ``{"region": r}`` for each of ``regions``, in order."""
    import optuna

    sweep_id = sr.create_local_sweep(sc.validate_sweep_config(cfg))
    study = optuna.load_study(study_name=sweep_id, storage=sr.default_storage_url(Store()))
    for region in regions:
        study.enqueue_trial({"region": region})
    return sweep_id


# -- translation ------------------------------------------------------------------------------
@pytest.mark.parametrize("spec, expected", [
    ({"values": [1, 2, 3]}, ("CategoricalDistribution", {"choices": (1, 2, 3)})),
    ({"distribution": "categorical", "values": ["a", "b"]}, ("CategoricalDistribution", {"choices": ("a", "b")})),
    ({"distribution": "int_uniform", "min": 5, "max": 20}, ("IntDistribution", {"low": 5, "high": 20, "log": False})),
    ({"min": 1, "max": 4}, ("IntDistribution", {"low": 1, "high": 4})),  # inferred from int bounds
    ({"distribution": "uniform", "min": 0.1, "max": 0.5}, ("FloatDistribution", {"low": 0.1, "high": 0.5, "log": False})),
    ({"min": 0.0, "max": 1.5}, ("FloatDistribution", {"low": 0.0, "high": 1.5})),  # inferred from float bounds
    ({"distribution": "q_uniform", "min": 0.0, "max": 1.0, "q": 0.25}, ("FloatDistribution", {"step": 0.25})),
    ({"distribution": "log_uniform_values", "min": 1e-5, "max": 1e-3},
     ("FloatDistribution", {"low": 1e-5, "high": 1e-3, "log": True})),
    ({"distribution": "inv_log_uniform_values", "min": 1e-5, "max": 1e-3},
     ("FloatDistribution", {"low": 1e-5, "high": 1e-3, "log": True})),
    ({"distribution": "q_log_uniform_values", "min": 1.0, "max": 100.0, "q": 5},
     ("FloatDistribution", {"low": 1.0, "high": 100.0, "log": True})),  # then round(x/5)*5
    ({"distribution": "normal", "mu": 0, "sigma": 1}, ("FloatDistribution", {"low": 0.0, "high": 1.0})),  # quantile
    ({"distribution": "beta", "a": 2, "b": 5}, ("FloatDistribution", {"low": 0.0, "high": 1.0})),  # quantile
])
def test_every_distribution_translates(spec, expected):
    cfg = sc.validate_sweep_config(with_(parameters={"p": spec}))
    dist = sc.to_optuna_space(cfg)["p"]
    kind, attrs = expected
    assert type(dist).__name__ == kind
    for k, v in attrs.items():
        assert getattr(dist, k) == (pytest.approx(v) if isinstance(v, float) else v)


def test_constant_is_fixed_and_what_has_no_local_meaning_is_refused_locally():
    cfg = sc.validate_sweep_config(with_(parameters={"a": {"value": 3}, "b": {"distribution": "normal", "mu": 0, "sigma": 1}}))
    assert sc.fixed_params(cfg) == {"a": 3} and set(sc.to_optuna_space(cfg)) == {"b"}
    for change, message in ((dict(method="custom"), "method: custom"), (dict(job="me/jobs/train:v0"), "'job'"),
                            (dict(parameters={"o": {"parameters": {"lr": {"value": 1}}}}), "nested parameters")):
        with pytest.raises(ConfigError, match=message):
            sc.to_optuna_space(sc.validate_sweep_config(with_(**change)))


def test_methods_and_hyperband_map_to_samplers_and_pruner():
    import optuna

    grid = sc.validate_sweep_config(with_(method="grid", parameters={"k": {"distribution": "int_uniform", "min": 1, "max": 3},
                                                                     "a": {"values": ["x", "y"]}}))
    assert sc.grid_space(grid) == {"k": [1, 2, 3], "a": ["x", "y"]}
    assert type(sc.make_sampler(grid)).__name__ == "QueuedPointsSampler"  # grid points are queued at create
    assert isinstance(sc.make_sampler(with_(method="random")), optuna.samplers.RandomSampler)
    assert isinstance(sc.make_sampler(with_(method="bayes")), optuna.samplers.TPESampler)
    assert isinstance(sc.make_pruner(BASE), optuna.pruners.NopPruner)
    pruner = sc.make_pruner(with_(early_terminate={"type": "hyperband", "min_iter": 2, "eta": 3}))
    assert isinstance(pruner, optuna.pruners.HyperbandPruner)
    assert (pruner._min_resource, pruner._reduction_factor) == (2, 3)


def test_shipped_yaml_parses_as_documented():
    from src import wandb_config

    cfg = sc.load_sweep_config(ROOT / "sweep_config.yaml")
    assert cfg["program"] == "src/train_with_wandb.py" and cfg["method"] == "bayes"
    assert cfg["metric"] == {"name": "val_accuracy", "goal": "maximize"}  # validation picks, test only reports
    assert cfg["early_terminate"]["type"] == "hyperband" and {"min_iter", "eta"} <= set(cfg["early_terminate"])
    p = cfg["parameters"]
    assert p["labeled_ratio"]["values"] == [0.1, 0.15, 0.2, 0.25, 0.3]
    assert p["algorithm"]["values"] == ["label_propagation", "label_spreading", "self_training"]
    assert (p["n_neighbors"]["distribution"], p["n_neighbors"]["min"], p["n_neighbors"]["max"]) == ("int_uniform", 5, 20)
    assert p["fine_tune_epochs"]["values"] == [5, 10, 15]
    assert (p["fine_tune_lr"]["distribution"], p["fine_tune_lr"]["min"], p["fine_tune_lr"]["max"]) == (
        "log_uniform_values", 1e-5, 1e-3)
    assert "${program}" in cfg["command"] and "${args}" in cfg["command"]
    assert wandb_config.SWEEP_CONFIG == cfg
    assert set(sc.to_optuna_space(cfg)) == set(p)


@pytest.mark.parametrize("cfg, message", [
    (with_(metrc={"name": "x"}), "unknown top-level key 'metrc'"),
    (with_(parameters={"k": {"values": [1], "mni": 3}}), "key 'mni' does not apply to distribution categorical"),
    (with_(parameters={"k": {"values": [1], "min": 3}}), "key 'min' does not apply to distribution categorical"),
    (with_(parameters={"k": {"distribution": "int_uniform", "min": 20, "max": 5}}), "min 20 is not less than max 5"),
    (with_(parameters={"k": {"distribution": "gaussian", "min": 0, "max": 1}}), "unknown distribution 'gaussian'"),
    (with_(parameters={"k": {"distribution": "log_uniform_values", "min": 0, "max": 1}}), "min must be > 0"),
    (with_(parameters={"k": {"distribution": "int_uniform", "min": 1.5, "max": 3}}), "min must be an integer"),
    (with_(parameters={"k": {"distribution": "log_uniform_values", "min": "1e-5", "max": 1.0e-3}}),
     "min must be a number, got '1e-5' (YAML 1.1 reads 1e-5 as a string: write 1.0e-5"),
    (with_(parameters={"k": {"values": []}}), "values must not be empty"),
    (with_(metric={"name": "test_accuracy", "goal": "maximise"}), "metric.goal must be one of minimize, maximize"),
    (with_(method="hyperopt"), "method must be one of bayes, random, grid, custom, got 'hyperopt'"),
    (with_(early_terminate={"type": "hyperband", "eta": 3}), "hyperband needs min_iter, or max_iter together with s"),
    (with_(early_terminate={"type": "hyperband", "max_iter": 9}), "hyperband needs min_iter, or max_iter together"),
    (with_(early_terminate={"type": "hyperband", "min_iter": 1, "eta": 1}), "early_terminate.eta must be > 1"),
    (with_(parameters={"k": {"distribution": "log_uniform", "min": 1, "max": 1000}}), "use log_uniform_values"),
    (with_(parameters={"opt": {"parameters": [1, 2]}}), "parameter 'opt' parameters must be a mapping"),
    (with_(parameters={"opt": {"parameters": {}}}), "parameter 'opt' parameters must not be empty"),
    (with_(parameters={"a": {"distribution": ["x"], "min": 1, "max": 2}}), "unknown distribution ['x']"),
    # accepted by W&B, refused by the local runner or by training
    (with_(method="grid", parameters={"labeled_ratio": {"min": 0.1, "max": 1.0}}), "grid search needs a finite set"),
    (with_(parameters={"fine_tune_epochs": {"distribution": "q_uniform", "min": 1.1, "max": 1.2, "q": 1}}),
     "no multiple of q=1"),
    (with_(), "sweep parameter 'region' is not a training option"),
    (with_(parameters={"labeled_ratio": {"values": [0.5, 1.5, -1]}}),
     "parameter 'labeled_ratio': 1.5 (one of its values) is refused by training: labeled_ratio must be in (0, 1]"),
])
def test_bad_yaml_is_one_error_line(tmp_path, capsys, cfg, message):
    rc = sr.main(["create", str(write_yaml(tmp_path, cfg))])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc != 0
    assert len(err) == 1 and err[0].startswith("error: ") and message in err[0], err


def test_missing_yaml_and_unknown_sweep_are_errors(tmp_path, capsys):
    assert sr.main(["create", str(tmp_path / "nope.yaml")]) == 2
    assert sr.main(["status", "abcdefgh"]) != 0
    assert sr.main(["agent", "../etc", "--count", "1"]) != 0
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 3 and all(line.startswith("error: ") for line in err), err


def test_a_sweep_yaml_that_is_not_utf8_is_one_error_line(tmp_path, capsys):
    bad = tmp_path / "bad.yaml"
    bad.write_bytes(b"method: grid\nmetric: {name: test_accuracy}\n\xff\xfe: 1\n")
    assert sc.main([str(bad)]) == 2
    assert sr.main(["create", str(bad)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 2 and all(line.startswith("error: ") and "not UTF-8" in line and "line 3" in line
                                 for line in err), err


# -- local runner -------------------------------------------------------------------------------
def test_count_6_records_6_trials_and_reports_best(tmp_path, monkeypatch, capsys):
    from src.wandb_config import SWEEP_CONFIG, create_sweep

    sweep_id = create_sweep(SWEEP_CONFIG, mode="offline")  # offline: a local sweep id
    capsys.readouterr()
    assert sr.main(["agent", sweep_id, "--count", "6", "--json", "--wandb-mode", "offline"],
                   objective=fake_objective) == 0
    status = json.loads(capsys.readouterr().out)
    assert len(status["trials"]) == 6 and status["agent_trials"] == list(range(6))
    assert all(t["state"] in ("COMPLETE", "PRUNED") for t in status["trials"])
    best = status["best"]
    assert best["value"] == max(t["value"] for t in status["trials"] if t["state"] == "COMPLETE")
    assert set(best["params"]) == {"labeled_ratio", "algorithm", "n_neighbors", "fine_tune_epochs", "fine_tune_lr"}
    assert Path(status["summary"]["plots"]["optimization_history"]).is_file()
    assert list((Path(os.environ["WANDB_DIR"]) / "wandb").glob("offline-run-*"))  # the sweep-summary run
    assert sr.main(["status", sweep_id]) == 0
    out = capsys.readouterr().out
    assert f"sweep {sweep_id}" in out and "best: trial" in out


def test_hyperband_prunes_the_bad_region(tmp_path):
    cfg = with_(parameters={"region": {"values": ["good", "bad"]}, "fine_tune_epochs": {"value": 6}},
                early_terminate={"type": "hyperband", "min_iter": 1, "max_iter": 2, "eta": 3})
    sweep_id = sweep_with_queued_regions(cfg, ("good", "bad", "good", "bad"))
    epochs_run: dict[int, int] = {}

    def objective(params, epoch_callback, ctx):
        def counting(epoch, value):
            epochs_run[ctx.number] = epoch
            epoch_callback(epoch, value)
        return fake_objective(params, counting, ctx)

    status = sr.run_agent(sweep_id, 4, objective=objective, options=sr.AgentOptions(summary=False))
    by_region = {t["number"]: (t["params"]["region"], t["state"]) for t in status["trials"]}
    assert by_region[0] == ("good", "COMPLETE") and epochs_run[0] == 6
    for n in (1, 3):
        assert by_region[n] == ("bad", "PRUNED") and epochs_run[n] < 6
    assert status["best"]["params"] == {"region": "good", "fine_tune_epochs": 6}  # fixed params included


def test_a_pruned_trials_value_is_marked_as_intermediate(tmp_path, capsys):
    """Optuna gives a pruned trial its last epoch score as `value`: status says so, text and JSON."""
    cfg = with_(parameters={"region": {"values": ["good", "bad"]}, "fine_tune_epochs": {"value": 6}},
                early_terminate={"type": "hyperband", "min_iter": 1, "max_iter": 2, "eta": 3})
    sweep_id = sweep_with_queued_regions(cfg, ("good", "bad", "good", "bad"))
    status = sr.run_agent(sweep_id, 4, objective=fake_objective, options=sr.AgentOptions(summary=False))
    pruned = [t for t in status["trials"] if t["state"] == "PRUNED"]
    complete = [t for t in status["trials"] if t["state"] == "COMPLETE"]
    assert pruned and complete
    for t in pruned:
        assert t["value"] is not None and t["value_is_intermediate"] is True
        assert t["pruned_at"] == t["epochs_reported"] < 6  # the epoch whose score `value` is
    assert all(t["value_is_intermediate"] is False and t["pruned_at"] is None for t in complete)
    assert sr.main(["status", sweep_id]) == 0
    out = capsys.readouterr().out
    t = pruned[0]
    assert f"{t['value']:.4f} (pruned at epoch {t['pruned_at']})" in out
    assert f"{complete[0]['value']:.4f} (pruned" not in out
    assert sr.main(["status", sweep_id, "--json"]) == 0
    js = json.loads(capsys.readouterr().out)
    assert {t["number"]: t["pruned_at"] for t in js["trials"]} == {t["number"]: t["pruned_at"] for t in status["trials"]}


def test_sweep_summary_keeps_the_trial_count_and_the_trials_table_apart(tmp_path):
    from src.hpo.status import summarize_sweep
    from wandb_records import read_run

    sweep_id = sweep_with_queued_regions(with_(), ("good", "bad", "good"))
    sr.run_agent(sweep_id, 3, objective=fake_objective, options=sr.AgentOptions(summary=False))
    summarize_sweep(sr.open_sweep(sweep_id), wandb_mode="offline")
    [run_dir] = (Path(os.environ["WANDB_DIR"]) / "wandb").glob("offline-run-*")
    rec = read_run(run_dir)
    assert rec["summary"]["sweep/trial_count"] == 3  # a number, not overwritten by the table
    assert rec["summary"]["sweep/trials_table/_type"] == "table-file"
    assert rec["summary"]["sweep/trials_table/nrows"] == 3
    assert not [k for k in rec["summary"] if k == "sweep/trials" or k.startswith("sweep/trials/")]


def _agent_cmd(sweep_id: str, *extra: str, sleep: float = 0.0) -> list[str]:
    """An agent in its own process, running the fake objective through the test-owned entry point."""
    return [sys.executable, str(ROOT / "tests" / "sweep_fakes.py"), "--sleep", str(sleep), "agent", sweep_id,
            "--no-summary", "-q", *extra]


def test_killed_agent_is_requeued_and_the_sweep_resumes(tmp_path):
    sweep_id = sr.create_local_sweep(sc.validate_sweep_config(with_()))
    proc = subprocess.Popen(_agent_cmd(sweep_id, "--count", "5", "--heartbeat-interval", "1", "--grace-period", "2",
                                       sleep=0.5), cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.time() + 60
        while time.time() < deadline:
            trials = sr.open_sweep(sweep_id).study.get_trials()
            if any(t.state.name == "RUNNING" and t.intermediate_values for t in trials):
                break
            time.sleep(0.2)
        else:
            pytest.fail("the agent never started a trial")
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
    killed = [t.number for t in trials if t.state.name == "RUNNING"]
    time.sleep(2.5)  # past the grace period: the dead agent's heartbeat is stale
    status = sr.run_agent(sweep_id, 2, options=sr.AgentOptions(heartbeat_interval=1, grace_period=2, summary=False),
                          objective=fake_objective)
    states = {t["number"]: t for t in status["trials"]}
    assert "RUNNING" not in status["counts"] and "WAITING" not in status["counts"]
    assert [states[n]["state"] for n in killed] == ["FAIL"]
    retried = [t for t in status["trials"] if t["retry_of"] == killed[0]]
    assert len(retried) == 1 and retried[0]["state"] == "COMPLETE" and retried[0]["number"] in status["agent_trials"]
    assert len(status["agent_trials"]) == 2


def test_count_is_required_for_open_ended_sweeps():
    sweep_id = sr.create_local_sweep(sc.validate_sweep_config(with_()))
    with pytest.raises(ConfigError, match="`count` is required"):
        sr.run_agent(sweep_id, None, objective=fake_objective, options=sr.AgentOptions(summary=False))


def test_grid_sweep_stops_when_exhausted():
    cfg = sc.validate_sweep_config(with_(method="grid", run_cap=10))
    sweep_id = sr.create_local_sweep(cfg)
    status = sr.run_agent(sweep_id, None, objective=fake_objective, options=sr.AgentOptions(summary=False))
    assert sorted(t["params"]["region"] for t in status["trials"]) == ["bad", "good"]


# -- real training through the agent ----------------------------------------------------------------
@pytest.mark.slow
def test_agent_runs_real_training(tmp_path):
    synth = pytest.importorskip("src.data.synth")
    data = synth.generate_dataset(tmp_path / "data", n_classes=3, train_per_class=6, test_per_class=3,
                                  image_size=48, seed=0)
    cfg = with_(parameters={"labeled_ratio": {"values": [0.5, 1.0]}, "algorithm": {"values": ["label_spreading"]},
                            "n_neighbors": {"min": 2, "max": 3}, "fine_tune_epochs": {"value": 1},
                            "fine_tune_lr": {"distribution": "log_uniform_values", "min": 1e-4, "max": 1e-3}},
                early_terminate={"type": "hyperband", "min_iter": 1, "eta": 3})
    sweep_id = sr.create_local_sweep(sc.validate_sweep_config(cfg))
    assert sr.main(["agent", sweep_id, "--count", "2", "--data-dir", str(data), "--wandb-mode", "offline"]) == 0
    status = sr.sweep_status(sr.open_sweep(sweep_id))
    assert len(status["trials"]) == 2 and status["counts"].get("COMPLETE", 0) >= 1
    assert 0.0 <= status["best"]["value"] <= 1.0


def test_a_failing_trial_fails_alone_and_a_failure_streak_stops_the_agent():
    from src.core.errors import DataError

    sweep_id = sweep_with_queued_regions(with_(), ("bad", "good"))

    def picky(params, epoch_callback, ctx):
        if params["region"] == "bad":
            raise ConfigError("fewer labeled samples than classes")
        return fake_objective(params, epoch_callback, ctx)

    status = sr.run_agent(sweep_id, 2, objective=picky, options=sr.AgentOptions(summary=False))
    assert [(t["state"], t["error"]) for t in status["trials"]] == [
        ("FAIL", "fewer labeled samples than classes"), ("COMPLETE", None)]

    def broken(params, epoch_callback, ctx):
        raise DataError("dataset folder DS2GROCERIES/train is empty")

    with pytest.raises(DataError, match="3 trials of sweep .* failed, the last with: dataset folder"):
        sr.run_agent(sweep_id, 10, objective=broken, options=sr.AgentOptions(summary=False))
    assert len(sr.open_sweep(sweep_id).study.trials) == 5


# -- fixes: validation and translation -----------------------------------------------------------------
def test_q_uniform_draws_multiples_of_q_like_wandb():
    """W&B returns round(X/q)*q: multiples of q, not steps from min."""
    cfg = sc.validate_sweep_config(with_(method="grid", parameters={
        "i": {"distribution": "q_uniform", "min": 1, "max": 10, "q": 2},
        "f": {"distribution": "q_uniform", "min": 0.05, "max": 1.0, "q": 0.25}}))
    space = sc.to_optuna_space(cfg)
    assert type(space["i"]).__name__ == "IntDistribution"
    assert (space["i"].low, space["i"].high, space["i"].step) == (2, 10, 2)
    assert type(space["f"]).__name__ == "FloatDistribution"
    assert (space["f"].low, space["f"].high, space["f"].step) == (0.25, 1.0, 0.25)
    grid = sc.grid_space(cfg)
    assert grid["i"] == [2, 4, 6, 8, 10] and all(type(v) is int for v in grid["i"])
    assert grid["f"] == [0.25, 0.5, 0.75, 1.0]


def test_hyperband_eta_is_an_int_for_optuna():
    """W&B takes any eta > 1; Optuna's reduction factor is an int >= 2: rounded, with a note when it changes."""
    for eta, factor, noted in ((2.0, 2, False), (3, 3, False), (2.5, 2, True), (1.2, 2, True), (3.6, 4, True)):
        cfg = sc.validate_sweep_config(with_(early_terminate={"type": "hyperband", "min_iter": 1, "eta": eta}))
        pruner = sc.make_pruner(cfg)
        assert pruner._reduction_factor == factor and type(pruner._reduction_factor) is int
        assert bool(sc.local_notes(cfg)) == noted


def test_train_config_coerces_integral_floats_and_rejects_others():
    from src.training.pipeline import TrainConfig

    cfg = TrainConfig(fine_tune_epochs=1.0, n_neighbors=5.0, batch_size=8.0, image_size=64.0, seed=3.0).validated()
    assert (cfg.fine_tune_epochs, cfg.n_neighbors, cfg.batch_size, cfg.image_size, cfg.seed) == (1, 5, 8, 64, 3)
    assert all(type(v) is int for v in (cfg.fine_tune_epochs, cfg.n_neighbors, cfg.batch_size, cfg.image_size, cfg.seed))
    for bad in ({"fine_tune_epochs": 1.5}, {"n_neighbors": "5"}, {"seed": True}, {"batch_size": float("nan")}):
        with pytest.raises(ConfigError, match="must be an integer"):
            TrainConfig(**bad).validated()


# -- fixes: the agent -------------------------------------------------------------------------------------
TRAINING_CFG = with_(parameters={"labeled_ratio": {"values": [0.5, 1.0]}, "fine_tune_epochs": {"value": 1}})


def _trials(sweep_id):
    return sr.open_sweep(sweep_id).study.get_trials()


def test_agent_with_a_missing_data_dir_is_one_error_before_any_trial(tmp_path, capfd):
    sweep_id = sr.create_local_sweep(sc.validate_sweep_config(TRAINING_CFG))
    capfd.readouterr()
    rc = sr.main(["agent", sweep_id, "--count", "1", "--data-dir", str(tmp_path / "nodata"),
                  "--wandb-mode", "disabled", "--no-summary"])
    err = capfd.readouterr().err.strip().splitlines()
    assert rc == 2
    assert len(err) == 1 and err[0].startswith("error: ") and "does not exist" in err[0], err
    assert _trials(sweep_id) == []


def test_agent_refuses_parameters_that_are_not_training_options(tmp_path, capfd):
    sweep_id = sr.create_local_sweep(sc.validate_sweep_config(with_()))  # `region` is not a training flag
    capfd.readouterr()
    rc = sr.main(["agent", sweep_id, "--count", "1", "--data-dir", str(tmp_path / "nodata"), "--no-summary"])
    err = capfd.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and err[0].startswith("error: ") and "'region' is not a training option" in err[0]
    assert _trials(sweep_id) == []


def test_agent_whose_every_trial_failed_exits_nonzero_with_one_error_line(monkeypatch, capfd):
    from src.core.errors import DataError

    def broken(params, epoch_callback, ctx):
        raise DataError(f"dataset broken in trial {ctx.number}")

    sweep_id = sr.create_local_sweep(sc.validate_sweep_config(with_()))
    capfd.readouterr()
    rc = sr.main(["agent", sweep_id, "--count", "2", "--no-summary"], objective=broken)
    err = capfd.readouterr().err
    assert rc == 2, err
    errors = [line for line in err.splitlines() if line.startswith("error: ")]
    assert errors == [f"error: all 2 trials this agent ran in sweep {sweep_id} failed, "
                      "the first with: dataset broken in trial 0"], err
    assert "nan" not in err and "Traceback" not in err and "[W " not in err, err
    assert [t.state.name for t in _trials(sweep_id)] == ["FAIL", "FAIL"]


def test_a_non_project_exception_fails_only_its_trial(capfd):
    sweep_id = sweep_with_queued_regions(with_(), ("bad", "good"))

    def buggy(params, epoch_callback, ctx):
        if params["region"] == "bad":
            range(float(params["fine_tune_epochs"]))  # TypeError, as a float epoch count used to raise
        return fake_objective(params, epoch_callback, ctx)

    status = sr.run_agent(sweep_id, 2, objective=buggy, options=sr.AgentOptions(summary=False))
    assert [t["state"] for t in status["trials"]] == ["FAIL", "COMPLETE"]
    assert status["trials"][0]["error"].startswith("TypeError: 'float' object cannot be interpreted as an integer")
    assert "Traceback" not in capfd.readouterr().err
    with pytest.raises(GroceryError, match="all 1 trial this agent ran .* failed, the first with: TypeError"):
        sr.run_agent(sweep_id, 1, objective=lambda p, cb, ctx: range(1.0), options=sr.AgentOptions(summary=False))


def test_q_uniform_epochs_reach_training_as_ints():
    cfg = with_(parameters={"fine_tune_epochs": {"distribution": "q_uniform", "min": 1, "max": 2, "q": 1}})
    sweep_id = sr.create_local_sweep(sc.validate_sweep_config(cfg))
    seen = []

    def objective(params, epoch_callback, ctx):
        seen.append(params["fine_tune_epochs"])
        return fake_objective(params, epoch_callback, ctx)

    status = sr.run_agent(sweep_id, 2, objective=objective, options=sr.AgentOptions(summary=False))
    assert status["counts"] == {"COMPLETE": 2} and all(type(v) is int and v in (1, 2) for v in seen)


def test_wandb_style_sweep_names_are_slugified(tmp_path, capsys):
    path = write_yaml(tmp_path, {**TRAINING_CFG, "name": "My HB sweep (v2)"})
    assert sr.main(["create", str(path), "--json"]) == 0
    sweep_id = json.loads(capsys.readouterr().out)["sweep_id"]
    status = sr.sweep_status(sr.open_sweep(sweep_id))
    assert status["name"] == f"My-HB-sweep-v2-{sweep_id}" and status["display_name"] == "My HB sweep (v2)"
    assert sr.slugify("..__") == "sweep" and sr.slugify("a..b/c") == "a.b-c" and len(sr.slugify("x" * 300)) == 100


def test_best_config_includes_fixed_parameters():
    sweep_id = sr.create_local_sweep(sc.validate_sweep_config(with_()))
    status = sr.run_agent(sweep_id, 3, objective=fake_objective, options=sr.AgentOptions(summary=False))
    assert status["best"]["params"]["fine_tune_epochs"] == 4
    assert set(status["best"]["params"]) == {"region", "fine_tune_epochs"}


def test_an_exhausted_grid_sweep_runs_no_duplicates_and_is_finished(capsys):
    sweep_id = sr.create_local_sweep(sc.validate_sweep_config(with_(method="grid")))
    first = sr.run_agent(sweep_id, None, objective=fake_objective, options=sr.AgentOptions(summary=False))
    assert len(first["trials"]) == 2 and first["state"] == "FINISHED"
    again = sr.run_agent(sweep_id, 3, objective=fake_objective, options=sr.AgentOptions(summary=False))
    assert again["agent_trials"] == [] and len(again["trials"]) == 2 and again["state"] == "FINISHED"
    assert sr.main(["status", sweep_id]) == 0
    assert ": FINISHED, grid" in capsys.readouterr().out


# -- fixes: the default dataset -------------------------------------------------------------------------------
@pytest.fixture
def default_root(tmp_path, monkeypatch) -> Path:
    """An empty working folder (the cwd) where the default DS2GROCERIES would be copied, from a tiny sample."""
    from src.training import pipeline

    sample = tmp_path / "sample"
    (sample / "train" / "apple").mkdir(parents=True)
    (sample / "train" / "apple" / "a.jpg").write_bytes(b"x")
    monkeypatch.setattr(pipeline, "SAMPLE_DIR", sample)
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    return work / "DS2GROCERIES"


def test_default_dataset_appears_only_complete(default_root, monkeypatch):
    import shutil

    from src.training import pipeline

    root, work = default_root, default_root.parent
    copytree = shutil.copytree

    def watched_copy(src, dst, *a, **kw):
        out = copytree(src, dst, *a, **kw)
        assert not root.exists(), "the dataset folder is visible while it is being written"
        return out

    monkeypatch.setattr(shutil, "copytree", watched_copy)
    assert pipeline.ensure_dataset(pipeline.TrainConfig()) == Path("DS2GROCERIES")
    assert (root / "train" / "apple" / "a.jpg").is_file()
    assert sorted(p.name for p in work.iterdir()) == ["DS2GROCERIES"]  # no temp folder left


def test_a_dataset_copied_concurrently_by_another_process_wins(default_root, monkeypatch):
    import shutil

    from src.training import pipeline

    root, work = default_root, default_root.parent
    copytree = shutil.copytree

    def racing_copy(src, dst, *a, **kw):
        (root / "train" / "theirs").mkdir(parents=True, exist_ok=True)  # the other agent finishes first
        (root / "train" / "theirs" / "t.jpg").write_bytes(b"t")
        return copytree(src, dst, *a, **kw)

    monkeypatch.setattr(shutil, "copytree", racing_copy)
    pipeline.ensure_dataset(pipeline.TrainConfig())
    assert sorted(p.name for p in (root / "train").iterdir()) == ["theirs"]
    assert sorted(p.name for p in work.iterdir()) == ["DS2GROCERIES"]


# -- grid sweeps: every point queued at create, retried when it fails ------------------------------------------
GRID_CFG = with_(method="grid", parameters={"region": {"values": ["good", "bad"]}, "fine_tune_epochs": {"value": 1}})


def test_a_grid_point_that_fails_once_is_retried_and_the_grid_finishes():
    sweep_id = sr.create_local_sweep(sc.validate_sweep_config(GRID_CFG))
    fresh = sr.sweep_status(sr.open_sweep(sweep_id))
    assert fresh["state"] == "PENDING" and fresh["counts"] == {"WAITING": 2}
    assert [t["params"] for t in fresh["trials"]] == [{"region": "good"}, {"region": "bad"}]
    failures = []

    def flaky(params, epoch_callback, ctx):
        if params["region"] == "bad" and not failures:
            failures.append(ctx.number)
            raise RuntimeError("lost the GPU")
        return fake_objective(params, epoch_callback, ctx)

    status = sr.run_agent(sweep_id, None, objective=flaky, options=sr.AgentOptions(summary=False))
    assert [(t["number"], t["state"], t["params"]["region"], t["retry_of"]) for t in status["trials"]] == [
        (0, "COMPLETE", "good", None), (1, "FAIL", "bad", None), (2, "COMPLETE", "bad", 1)]
    assert status["state"] == "FINISHED" and status["agent_trials"] == [0, 1, 2]
    assert status["grid"] == {"points": 2, "done": 2, "failed": 0, "remaining": 0, "failed_points": []}


def test_a_grid_point_failing_every_attempt_is_reported_failed_after_two_retries(capsys):
    sweep_id = sr.create_local_sweep(sc.validate_sweep_config(GRID_CFG))

    def bad_region_breaks(params, epoch_callback, ctx):
        if params["region"] == "bad":
            raise ConfigError("fewer labeled samples than classes")
        return fake_objective(params, epoch_callback, ctx)

    first = sr.run_agent(sweep_id, 2, objective=bad_region_breaks, options=sr.AgentOptions(summary=False))
    assert [t["state"] for t in first["trials"]] == ["COMPLETE", "FAIL", "WAITING"]  # #2: the queued retry
    assert first["state"] == "IDLE" and first["grid"]["remaining"] == 1  # a retry is due: not finished
    with pytest.raises(ConfigError, match="all 2 trials this agent ran .* failed"):
        sr.run_agent(sweep_id, None, objective=bad_region_breaks, options=sr.AgentOptions(summary=False))
    status = sr.sweep_status(sr.open_sweep(sweep_id))
    bad = [t for t in status["trials"] if t["params"]["region"] == "bad"]
    assert [(t["state"], t["retry_of"]) for t in bad] == [("FAIL", None), ("FAIL", 1), ("FAIL", 1)]
    assert len(status["trials"]) == 4 and status["state"] == "FINISHED"
    assert status["grid"] == {"points": 2, "done": 1, "failed": 1, "remaining": 0, "failed_points": [{"region": "bad"}]}
    assert sr.run_agent(sweep_id, 1, objective=bad_region_breaks,
                        options=sr.AgentOptions(summary=False))["agent_trials"] == []  # nothing is queued again
    capsys.readouterr()
    assert sr.main(["status", sweep_id]) == 0
    out = capsys.readouterr().out
    assert ": FINISHED, grid" in out and "grid: 2 points, 1 done, 1 failed after 3 attempts, 0 to run" in out
    assert 'failed point: {"region": "bad"}' in out


def test_an_incomplete_grid_sweep_is_refused_by_agents_and_shown_incomplete(capsys):
    """A grid whose points were never all queued (created before points were queued at create, or by an
    older create that was killed part-way) is never run or shown as a normal grid."""
    import optuna

    sr.create_local_sweep(sc.validate_sweep_config(with_()))  # creates the store and its optuna.db
    old = optuna.create_study(storage=sr.default_storage_url(Store()), study_name="oldgrid1")
    old.set_user_attr("sweep_config", sc.validate_sweep_config(GRID_CFG))  # no grid_points
    old.enqueue_trial({"region": "good"})  # one of its two points
    with pytest.raises(ConfigError, match="grid sweep oldgrid1 is incomplete"):
        sr.run_agent("oldgrid1", None, objective=fake_objective, options=sr.AgentOptions(summary=False))
    assert sr.sweep_status(sr.open_sweep("oldgrid1"))["state"] == "INCOMPLETE"  # status (and the report) still work
    assert sr.main(["status", "oldgrid1"]) == 0
    assert "grid incomplete: its points were never all queued" in capsys.readouterr().out


def test_an_interrupted_grid_agent_leaves_its_point_queued_again():
    sweep_id = sr.create_local_sweep(sc.validate_sweep_config(GRID_CFG))

    def interrupted(params, epoch_callback, ctx):
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        sr.run_agent(sweep_id, None, objective=interrupted, options=sr.AgentOptions(summary=False))
    status = sr.run_agent(sweep_id, None, objective=fake_objective, options=sr.AgentOptions(summary=False))
    assert [(t["state"], t["params"]["region"], t["retry_of"]) for t in status["trials"]] == [
        ("FAIL", "good", None), ("COMPLETE", "bad", None), ("COMPLETE", "good", 0)]
    assert status["state"] == "FINISHED"
