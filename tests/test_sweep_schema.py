"""Sweep configs get W&B's verdict, and the local runner draws every distribution W&B accepts.

The verdict table: each row is a config, the verdict W&B's own rules give it (its JSON Schema,
``sweeps/config/schema.json``, plus the checks of ``sweeps/config/cfg.py``), why, and — for the
configs W&B accepts — whether the local runner can run it (or what it refuses, in one line).
"""

from __future__ import annotations

import json
import logging
import math
import statistics
from pathlib import Path

import pytest
import yaml

from src import sweep_config as sc
from src import sweep_runner as sr
from src.core.errors import ConfigError

ROOT = Path(__file__).resolve().parents[1]
BASE = {
    "program": "src/train_with_wandb.py",
    "method": "random",
    "metric": {"name": "test_accuracy", "goal": "maximize"},
    "parameters": {"labeled_ratio": {"values": [0.1, 0.2]}},
}


@pytest.fixture(autouse=True)
def _drop_log_handlers():
    """main() binds logging to the captured stderr of its test; unbind it afterwards."""
    yield
    for h in logging.root.handlers[:]:
        logging.root.removeHandler(h)


def cfg_with(params: dict | None = None, drop: tuple[str, ...] = (), **top) -> dict:
    cfg = json.loads(json.dumps(BASE))
    for key in drop:
        cfg.pop(key)
    cfg.update(top)
    if params:
        cfg["parameters"] = {**cfg["parameters"], **params}
    return cfg


HB = {"type": "hyperband"}
# (config, W&B accepts it?, what the local runner says about it (None: runs it), why)
TABLE = [
    (cfg_with({"fine_tune_lr": {"distribution": "log_uniform", "min": 1.0e-5, "max": 1.0e-3}}), False, None,
     "log_uniform is deprecated: min/max are base-e exponents (this one draws learning rates near 1); W&B refuses "
     "it whatever the numbers and says to use log_uniform_values"),
    (cfg_with({"fine_tune_lr": {"distribution": "log_uniform", "min": -11.5, "max": -6.9}}), False, None,
     "the same deprecation check refuses even sensible exponents"),
    (cfg_with({"fine_tune_lr": {"distribution": "q_log_uniform", "min": -11.5, "max": -6.9, "q": 1.0e-6}}), False,
     None, "q_log_uniform is deprecated too (q_log_uniform_values replaces it)"),
    (cfg_with(early_terminate={**HB, "max_iter": 9}), False, None,
     "hyperband needs min_iter, or max_iter together with s (the schema's anyOf)"),
    (cfg_with(early_terminate={**HB, "max_iter": 9, "s": 2}), True, None, "max_iter with s is the other hyperband form"),
    (cfg_with(early_terminate={**HB, "min_iter": 2, "eta": 2.5}), True, None,
     "eta is any number > 1 (Optuna's factor is an int: the local runner rounds it, with a note)"),
    (cfg_with(early_terminate={**HB, "min_iter": 2, "eta": 1}), False, None, "eta must be > 1 (exclusiveMinimum)"),
    (cfg_with({"fine_tune_lr": {"distribution": "q_log_uniform_values", "min": 1.0e-5, "max": 1.0e-3,
                                "q": 1.0e-5}}), True, None, "the *_values forms take the values themselves"),
    (cfg_with({"fine_tune_lr": {"distribution": "log_normal", "mu": -9.0, "sigma": 1.0}}), True, None,
     "log_normal: exp of a normal(mu, sigma)"),
    (cfg_with({"n_neighbors": {"distribution": "q_normal", "mu": 10, "sigma": 2, "q": 1}}), True, None,
     "q_normal: round(normal / q) * q, ints for an int q"),
    (cfg_with({"labeled_ratio": {"values": [1.5, -1]}}), True, "1.5 (one of its values) is refused by training",
     "W&B's schema knows nothing of training's flags; the local create refuses what training would refuse"),
    (cfg_with({"labeled_ratio": {"distribution": "normal", "mu": 0.5, "sigma": 0.5}}), True,
     "(its 0.1st percentile) is refused by training", "a normal reaches outside (0, 1] too often"),
    (cfg_with({"region": {"values": ["a", "b"]}}), True, "sweep parameter 'region' is not a training option",
     "W&B accepts any parameter name; every local trial would fail"),
    (cfg_with(metrc={"name": "x"}), False, None, "unknown top-level key (additionalProperties: false)"),
    (cfg_with(method="hyperopt"), False, None, "method is one of bayes, random, grid, custom"),
    (cfg_with(method="custom"), True, "method: custom", "custom needs W&B's scheduler: no local meaning"),
    (cfg_with(job="me/grocery/job-train:v0"), True, "'job' (a W&B Launch job) has no local meaning",
     "Launch jobs run on W&B's side"),
    (cfg_with(drop=("metric",)), True, "the local runner needs a 'metric'", "W&B does not require a metric"),
    (cfg_with({"n_neighbors": {"min": 20, "max": 5}}), False, None, "min must be less than max (cfg.py)"),
    (cfg_with({"n_neighbors": {"min": 5, "max": 5}}), False, None, "equal bounds are refused too (min >= max)"),
    (cfg_with({"n_neighbors": {"distribution": "int_uniform", "min": 1.5, "max": 30}}), False, None,
     "int_uniform bounds are integers"),
    (cfg_with({"labeled_ratio": {"min": 0.1, "max": 1}}), True, None,
     "no distribution and a float bound: a uniform (int bounds would make an int_uniform)"),
    (cfg_with({"fine_tune_lr": {"mu": 0.0, "sigma": 1.0}}), False, None, "a normal must name its distribution"),
    (cfg_with({"fine_tune_lr": {"distribution": "log_uniform_values", "min": "1e-5", "max": 1.0e-3}}), False, None,
     "YAML 1.1 reads 1e-5 as a string, and a string is no number"),
    (cfg_with({"fine_tune_lr": {"distribution": "log_uniform_values", "min": 0.0, "max": 1.0e-3}}), False, None,
     "log_uniform_values needs min > 0"),
    (cfg_with({"algorithm": {"values": ["label_spreading", "self_training"], "probabilities": [0.8, 0.2]}}), True,
     None, "values with probabilities and no distribution: categorical_w_probabilities"),
    (cfg_with({"algorithm": {"distribution": "categorical", "values": ["label_spreading"], "probabilities": [1.0]}}),
     False, None, "distribution: categorical takes no probabilities"),
    (cfg_with({"algorithm": {"values": ["label_spreading", "self_training"], "probabilities": [0.8, 0.3]}}), False,
     None, "probabilities must sum to 1 (cfg.py)"),
    (cfg_with({"1lr": {"values": [1]}}), False, None, "parameter names start with a letter or _"),
    (cfg_with(run_cap=0), False, None, "run_cap > 0"),
    (cfg_with(run_cap=10.0), True, None, "run_cap is a JSON integer, and 10.0 is one"),
    (cfg_with(name=2024), False, None, "name is a string (quote it in YAML)"),
    (cfg_with(metrics=[{"name": "a"}, {"name": "b"}]), False, None, "metric and metrics exclude each other"),
    (cfg_with(scheduler={"engine": "optuna"}), False, None, "scheduler engine optuna needs method: custom"),
    (cfg_with({"opt": {"parameters": {"fine_tune_lr": {"min": 5, "max": 1}}}}), True, "nested parameters",
     "W&B checks min < max on top-level parameters only"),
    (cfg_with({"labeled_ratio": {"distribution": "beta", "a": 0, "b": 1}}), True, "0 draws NaN",
     "W&B's schema allows a = 0 (minimum 0), which draws NaN"),
    (cfg_with(drop=("parameters",)), False, None, "parameters are required without a scheduler"),
]


def _write(tmp_path: Path, cfg: dict) -> Path:
    p = tmp_path / "sweep.yaml"
    p.write_text(yaml.safe_dump(cfg), encoding="utf-8")
    return p


@pytest.mark.parametrize("cfg, wandb_ok, local, why", TABLE, ids=[f"row{i}" for i in range(len(TABLE))])
def test_verdict_matches_wandb_and_local_refusals_are_one_line(tmp_path, capsys, cfg, wandb_ok, local, why):
    assert (sc.wandb_problems(cfg) == []) == wandb_ok, why
    rc = sr.main(["create", str(_write(tmp_path, cfg))])
    out, err = capsys.readouterr()
    errors = [line for line in err.splitlines() if line.startswith("error: ")]
    if wandb_ok and local is None:
        assert rc == 0 and len(out.split()) == 1 and not errors, (why, err)
    else:
        assert rc == 2 and len(errors) == 1 and len(err.strip().splitlines()) == 1, (why, err)
        if local is not None:
            assert local in errors[0], (why, errors)


def test_the_table_covers_what_the_issue_names():
    assert len(TABLE) >= 15
    dists = {spec.get("distribution") for cfg, *_ in TABLE for spec in (cfg.get("parameters") or {}).values()}
    assert {"log_uniform", "q_log_uniform_values", "log_normal", "q_normal"} <= dists


def test_deprecated_log_uniform_says_to_use_values(tmp_path, capsys):
    cfg = cfg_with({"fine_tune_lr": {"distribution": "log_uniform", "min": 1.0e-5, "max": 1.0e-3}})
    assert sr.main(["create", str(_write(tmp_path, cfg))]) == 2
    err = capsys.readouterr().err
    assert "base-e exponents" in err and "distribution: log_uniform_values" in err


def test_shipped_sweep_config_is_valid_for_wandb_and_locally(capsys):
    assert sc.main([str(ROOT / "sweep_config.yaml")]) == 0
    assert ": valid (bayes" in capsys.readouterr().out
    assert sc.wandb_problems(yaml.safe_load((ROOT / "sweep_config.yaml").read_text(encoding="utf-8"))) == []


def test_schema_file_names_its_source_and_ships_in_the_package():
    from src.hpo import wandb_schema

    comment = wandb_schema.schema()["$comment"]
    assert "wandb/sweeps" in comment and "MIT" in comment and "023865a2" in comment
    pyproject = (ROOT / "pyproject.toml").read_text(encoding="utf-8")
    assert '"src.hpo" = ["wandb_sweep_schema.json"]' in pyproject
    assert "jsonschema==" in (ROOT / "requirements.txt").read_text(encoding="utf-8")


# -- the distributions ------------------------------------------------------------------------------------------
def _draws(spec: dict, n: int = 200, seed: int = 0, sampler: str = "random") -> list:
    """n values as the agent draws them: Optuna samples the translated space, decode_params maps it back."""
    import optuna

    cfg = sc.validate_sweep_config(cfg_with(parameters={"p": spec}, drop=("parameters",)))
    space = sc.to_optuna_space(cfg)
    make = optuna.samplers.RandomSampler if sampler == "random" else optuna.samplers.TPESampler
    study = optuna.create_study(sampler=make(seed=seed))
    out = []
    for _ in range(n):
        trial = study.ask(space)
        out.append(sc.decode_params(cfg, trial.params)["p"])
        study.tell(trial, 0.0)
    return out


def _multiples(values, q) -> bool:
    return all(abs(v / q - round(v / q)) < 1e-9 for v in values)


def test_normal_has_wandb_mean_and_spread():
    x = _draws({"distribution": "normal", "mu": 5.0, "sigma": 2.0})
    assert all(isinstance(v, float) for v in x)
    assert abs(statistics.mean(x) - 5.0) < 0.5 and 1.6 < statistics.stdev(x) < 2.4
    assert min(x) < 3.0 and max(x) > 7.0  # both tails, unbounded


def test_q_normal_draws_multiples_of_q():
    ints = _draws({"distribution": "q_normal", "mu": 10, "sigma": 3, "q": 2})
    assert all(type(v) is int and v % 2 == 0 for v in ints)  # an int q gives ints, as W&B's astype(int)
    halves = _draws({"distribution": "q_normal", "mu": 0.0, "sigma": 1.0, "q": 0.5})
    assert all(type(v) is float for v in halves) and _multiples(halves, 0.5) and len(set(halves)) > 4
    default = _draws({"distribution": "q_normal", "mu": 3.0}, n=20)  # W&B's default q is 1.0: whole floats
    assert all(type(v) is float and v.is_integer() for v in default)


def test_log_normal_is_positive_with_median_e_to_the_mu():
    x = _draws({"distribution": "log_normal", "mu": -9.0, "sigma": 1.0})
    assert all(v > 0 for v in x)
    assert abs(math.log(statistics.median(x)) + 9.0) < 0.3


def test_q_log_normal_draws_non_negative_multiples():
    x = _draws({"distribution": "q_log_normal", "mu": 2.0, "sigma": 0.5, "q": 1})
    assert all(type(v) is int and v >= 0 for v in x) and len(set(x)) > 3


def test_beta_and_q_beta_stay_in_0_1():
    x = _draws({"distribution": "beta", "a": 2.0, "b": 5.0})
    assert all(0.0 <= v <= 1.0 for v in x) and abs(statistics.mean(x) - 2 / 7) < 0.05
    q = _draws({"distribution": "q_beta", "a": 2.0, "b": 2.0, "q": 0.1})
    assert all(0.0 <= v <= 1.0 for v in q) and _multiples(q, 0.1) and len(set(q)) > 4


def test_q_log_uniform_values_rounds_a_log_uniform_draw():
    x = _draws({"distribution": "q_log_uniform_values", "min": 1, "max": 100, "q": 5})
    assert all(type(v) is int and v % 5 == 0 and 0 <= v <= 100 for v in x)
    assert sum(v <= 10 for v in x) > len(x) / 3  # log-uniform: half the draws below 10


def test_inv_log_uniform_values_is_log_uniform_on_the_values():
    x = _draws({"distribution": "inv_log_uniform_values", "min": 1.0e-4, "max": 1.0e-1})
    assert all(1.0e-4 <= v <= 1.0e-1 for v in x)
    assert abs(math.log10(statistics.median(x)) + 2.5) < 0.3


def test_categorical_with_probabilities_follows_them():
    x = _draws({"values": ["a", "b", "c"], "probabilities": [0.7, 0.2, 0.1]}, n=400)
    counts = {v: x.count(v) / len(x) for v in "abc"}
    assert set(x) == {"a", "b", "c"} and abs(counts["a"] - 0.7) < 0.08 and abs(counts["c"] - 0.1) < 0.05


def test_tpe_samples_the_quantile_spaces_too():
    x = _draws({"distribution": "log_normal", "mu": -9.0, "sigma": 1.0}, n=15, sampler="tpe")
    assert all(v > 0 for v in x) and len(set(x)) == 15


def test_ppf_is_wandbs_inverse_cdf():
    assert sc.ppf({"distribution": "normal", "mu": 3.0, "sigma": 2.0}, 0.5) == pytest.approx(3.0)
    assert sc.ppf({"distribution": "normal", "mu": 0.0, "sigma": 1.0}, 0.975) == pytest.approx(1.95996, abs=1e-4)
    assert sc.ppf({"distribution": "log_normal", "mu": -9.0, "sigma": 1.0}, 0.5) == pytest.approx(math.exp(-9))
    assert sc.ppf({"distribution": "beta"}, 0.3) == pytest.approx(0.3)  # a = b = 1 by default: uniform
    cat = {"values": ["a", "b", "c"], "probabilities": [0.7, 0.2, 0.1]}
    assert [sc.ppf(cat, u) for u in (0.1, 0.69, 0.75, 0.95)] == ["a", "a", "b", "c"]
    assert sc.ppf({"distribution": "q_normal", "mu": 2.5, "sigma": 1, "q": 1}, 0.5) == 2  # half to even, as numpy


def test_agent_trains_with_values_and_status_shows_them():
    """The agent's objective receives W&B's values (not Optuna's quantiles), and status reports them."""
    cfg = cfg_with({"fine_tune_lr": {"distribution": "log_normal", "mu": -9.0, "sigma": 1.0},
                    "n_neighbors": {"distribution": "q_normal", "mu": 10, "sigma": 2, "q": 2}})
    sweep_id = sr.create_local_sweep(sc.validate_sweep_config(cfg))
    seen = []

    def objective(params, epoch_callback, ctx):
        seen.append(params)
        return params["fine_tune_lr"]

    status = sr.run_agent(sweep_id, 4, objective=objective, options=sr.AgentOptions(summary=False))
    assert all(p["fine_tune_lr"] > 0 and p["n_neighbors"] % 2 == 0 for p in seen)
    assert [t["params"] for t in status["trials"]] == seen
    assert status["best"]["params"] == max(seen, key=lambda p: p["fine_tune_lr"])


def test_agent_refuses_a_library_created_sweep_whose_values_training_refuses(capfd):
    sweep_id = sr.create_local_sweep(sc.validate_sweep_config(cfg_with({"labeled_ratio": {"values": [0.5, 1.5]}})))
    capfd.readouterr()
    rc = sr.main(["agent", sweep_id, "--count", "1", "--no-summary"])
    err = capfd.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and "1.5 (one of its values) is refused by training" in err[0], err
    assert sr.open_sweep(sweep_id).study.get_trials() == []


def test_check_local_runner_is_one_configerror():
    with pytest.raises(ConfigError, match="scheduler"):
        sc.check_local_runner({"method": "custom", "scheduler": {"engine": "optuna"}, "parameters": {}})


def test_a_grid_with_a_value_listed_twice_runs_it_once():
    """W&B accepts duplicate values; the grid still has one point per distinct value and finishes."""
    cfg = cfg_with({"labeled_ratio": {"values": [0.1, 0.2, 0.1]}}, method="grid")
    sweep_id = sr.create_local_sweep(sc.validate_sweep_config(cfg))
    status = sr.run_agent(sweep_id, None, objective=lambda p, cb, ctx: p["labeled_ratio"],
                          options=sr.AgentOptions(summary=False))
    assert sorted(t["params"]["labeled_ratio"] for t in status["trials"]) == [0.1, 0.2]
    assert status["state"] == "FINISHED"


def test_create_notes_what_the_local_runner_changes(tmp_path, capsys):
    cfg = cfg_with(early_terminate={**HB, "min_iter": 1, "eta": 2.5}, metric={"name": "test_accuracy", "target": 0.9},
                   program="train.py")
    assert sr.main(["create", str(_write(tmp_path, cfg))]) == 0
    err = capsys.readouterr().err
    assert "the local runner uses 2" in err and "metric.target is ignored locally" in err
    assert "program train.py is not run locally" in err
    assert sc.local_notes(BASE) == []
