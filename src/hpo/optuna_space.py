"""The sweep definition translated to Optuna: distributions, grid, sampler and pruner (SPEC §3.3)."""

from __future__ import annotations

import math
from typing import Any, Mapping

from src.core.errors import ConfigError
from src.hpo.space import LOCAL_DISTRIBUTIONS, grid_space, infer_distribution, q_range


def fixed_params(cfg: Mapping[str, Any]) -> dict[str, Any]:
    """Parameters with a single ``value`` (passed to every trial, not searched)."""
    return {n: s["value"] for n, s in cfg["parameters"].items() if infer_distribution(s) == "constant"}


def to_optuna_space(cfg: Mapping[str, Any]) -> dict[str, Any]:
    """The searched parameters as Optuna distributions (``{name: BaseDistribution}``)."""
    from optuna.distributions import (
        CategoricalDistribution,
        FloatDistribution,
        IntDistribution,
    )

    space: dict[str, Any] = {}
    for name, spec in cfg["parameters"].items():
        if "parameters" in spec:
            raise ConfigError(f"parameter {name!r}: nested parameters are not supported by the local runner",
                              hint="flatten them, or run the sweep on W&B")
        dist = infer_distribution(spec)
        if dist == "constant":
            continue
        if dist == "categorical":
            bad = [v for v in spec["values"] if v is not None and not isinstance(v, (bool, int, float, str))]
            if bad:
                raise ConfigError(f"parameter {name!r}: the local runner needs scalar values, got {bad[0]!r}")
            if spec.get("probabilities"):
                raise ConfigError(f"parameter {name!r}: 'probabilities' are not supported by the local runner")
            space[name] = CategoricalDistribution(spec["values"])
        elif dist == "int_uniform":
            space[name] = IntDistribution(spec["min"], spec["max"])
        elif dist == "uniform":
            space[name] = FloatDistribution(float(spec["min"]), float(spec["max"]))
        elif dist == "q_uniform":
            q, lo, hi, ints = q_range(name, spec)
            space[name] = IntDistribution(lo, hi, step=q) if ints else FloatDistribution(lo, hi, step=q)
        elif dist == "log_uniform_values":
            space[name] = FloatDistribution(float(spec["min"]), float(spec["max"]), log=True)
        elif dist == "log_uniform":
            space[name] = FloatDistribution(math.exp(spec["min"]), math.exp(spec["max"]), log=True)
        else:
            raise ConfigError(f"parameter {name!r}: distribution {dist} is not supported by the local Optuna runner",
                              hint=f"use one of {', '.join(LOCAL_DISTRIBUTIONS)}, or run the sweep on W&B")
    return space


def make_sampler(cfg: Mapping[str, Any], seed: int | None = None):
    """bayes → TPE (constant liar, so parallel agents spread out), random; grid → :func:`queued_points_sampler`."""
    import warnings

    import optuna

    method = cfg["method"]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        if method == "grid":
            grid_space(cfg)  # raises if a parameter has no finite set of values
            return queued_points_sampler()
        if method == "random":
            return optuna.samplers.RandomSampler(seed=seed)
        return optuna.samplers.TPESampler(seed=seed, n_startup_trials=5, multivariate=True, constant_liar=True)


def make_pruner(cfg: Mapping[str, Any]):
    """Hyperband from ``early_terminate``; no pruning without it."""
    import optuna

    et = cfg.get("early_terminate")
    if not et:
        return optuna.pruners.NopPruner()
    eta = et.get("eta", 3)
    if "min_iter" in et:
        min_resource = et["min_iter"]
    else:  # W&B's max_iter/s form: the first bracket stops at max_iter / eta**s
        min_resource = max(1, int(et["max_iter"] / eta ** et.get("s", 1)))
    return optuna.pruners.HyperbandPruner(min_resource=min_resource, max_resource=et.get("max_iter", "auto"),
                                          reduction_factor=int(eta))


def direction(cfg: Mapping[str, Any]) -> str:
    return cfg["metric"].get("goal", "minimize")


def queued_points_sampler():
    """The sampler of a grid sweep: every grid point is a queued trial with fixed parameters
    (see :func:`src.hpo.study.queue_grid`), so asking it for a value is a bug, never a new point.

    (Optuna's GridSampler picks points per agent and runs some twice when agents share a study.)
    """
    import optuna

    class QueuedPointsSampler(optuna.samplers.RandomSampler):
        def sample_independent(self, study, trial, param_name, param_distribution):
            raise RuntimeError(f"grid trial {trial.number} has no queued value for {param_name!r}")

    return QueuedPointsSampler()
