"""The sweep definition translated to Optuna: distributions, grid, sampler and pruner (SPEC §3.3).

Every distribution W&B's rules accept runs locally with W&B's semantics (``sweeps/params.py``: a
value is the distribution's inverse CDF at a uniform draw, ``q_*`` forms return ``round(X / q) * q``,
an int when q is an int). Where Optuna has the distribution it samples it directly; otherwise the
trial suggests a uniform quantile ``u`` in (0, 1) and the value is W&B's inverse CDF at ``u`` — the
same construction W&B uses, so TPE still learns which region of the distribution works. Optuna
records ``u`` for those parameters; :func:`decode_params` turns a trial's recorded parameters back into
the values training received (``status`` and the summary show those).

============================  =================================================================
W&B distribution              local runner (Optuna)
============================  =================================================================
``constant`` (``value``)      fixed: passed to every trial, not searched
``categorical`` (``values``)  ``CategoricalDistribution(values)`` (scalar values only)
``categorical_w_probabilities``  u → the first value whose cumulative probability exceeds u
``int_uniform``               ``IntDistribution(min, max)``
``uniform``                   ``FloatDistribution(min, max)``
``q_uniform``                 the multiples of q in [min, max], equally likely:
                              ``Int/FloatDistribution(lo, hi, step=q)`` (W&B rounds a uniform draw,
                              so it gives the two end multiples half weight and may round just past)
``log_uniform_values``        ``FloatDistribution(min, max, log=True)``
``inv_log_uniform_values``    ``FloatDistribution(min, max, log=True)``: W&B's ``exp(-U(-ln max, -ln min))``
                              has log-uniform values on [min, max], the same law
``q_log_uniform_values``      ``FloatDistribution(min, max, log=True)``, then ``round(x / q) * q``
``normal``                    u → ``mu + sigma * Φ⁻¹(u)``                (defaults mu 0, sigma 1)
``q_normal``                  u → ``round(normal / q) * q``              (default q 1.0: floats)
``log_normal``                u → ``exp(mu + sigma * Φ⁻¹(u))``, positive
``q_log_normal``              u → ``round(log_normal / q) * q``
``beta``                      u → ``scipy.stats.beta.ppf(u, a, b)``, in [0, 1]  (defaults a 1, b 1)
``q_beta``                    u → ``round(beta / q) * q``
``log_uniform``, ``inv_log_uniform``, ``q_log_uniform``  refused, as W&B refuses them (min/max were
                              base-e exponents; the ``*_values`` forms replace them)
``method: bayes/random/grid`` ``TPESampler`` / ``RandomSampler`` / ``GridSampler``
``early_terminate: hyperband``  ``HyperbandPruner(min_resource=min_iter, reduction_factor=eta)``
                              (a non-integer eta is rounded: Optuna's factor is an int >= 2)
============================  =================================================================

No local meaning, refused with one line by :func:`check_local_runner`: ``method: custom``,
``scheduler``, ``metrics`` (multi-objective), ``job`` and ``image_uri`` (W&B Launch), nested
``parameters``. Also refused locally: a config without ``metric`` (W&B allows one), ``sigma: 0`` or a
beta shape of 0 (W&B's schema allows them; they draw NaN). Ignored with a note (:func:`local_notes`):
``metric.target``.
"""

from __future__ import annotations

import logging
import math
from statistics import NormalDist
from typing import Any, Mapping

from src.core.errors import ConfigError, quote
from src.hpo.space import check_grid_size, grid_space, infer_distribution, q_range

log = logging.getLogger(__name__)

# searched through a uniform quantile u in (0, 1) mapped by W&B's inverse CDF
QUANTILE = ("categorical_w_probabilities", "normal", "q_normal", "log_normal", "q_log_normal", "beta", "q_beta")
LOG_VALUES = ("log_uniform_values", "inv_log_uniform_values", "q_log_uniform_values")
NO_LOCAL_MEANING = {
    "scheduler": "a custom W&B scheduler (Optuna/Ax on W&B's side)",
    "metrics": "multi-objective optimisation (it needs method: custom)",
    "job": "a W&B Launch job",
    "image_uri": "a W&B Launch image",
}
TRAINING_PROGRAM = "src/train_with_wandb.py"  # what each local trial runs (in-process)
EPS = 1e-12  # u is kept in [EPS, 1 - EPS]: the inverse CDF of a normal is infinite at 0 and 1


def check_local_runner(cfg: Mapping[str, Any]) -> None:
    """Refuse, in one line, what W&B accepts but the local runner cannot do."""
    for key, what in NO_LOCAL_MEANING.items():
        if key in cfg:
            raise ConfigError(f"'{key}' ({what}) has no local meaning: the local runner trains in-process with Optuna",
                              hint=f"remove '{key}', or run the sweep on W&B (wandb sweep)")
    if cfg["method"] == "custom":
        raise ConfigError("method: custom needs W&B's custom scheduler; the local runner has none",
                          hint="use method: bayes, random or grid, or run the sweep on W&B")
    if not isinstance(cfg.get("metric"), Mapping):
        raise ConfigError("the local runner needs a 'metric' (W&B allows a sweep without one)",
                          hint="for example metric: {name: test_accuracy, goal: maximize}")
    et = cfg.get("early_terminate") or {}
    if et.get("max_iter", 1) < 1 or et.get("max_iter", math.inf) < et.get("min_iter", 1):
        raise ConfigError(f"early_terminate.max_iter ({et['max_iter']}) must be at least min_iter "
                          f"({et.get('min_iter', 1)}) for the local Hyperband")
    for name, spec in cfg["parameters"].items():
        where = f"parameter {quote(name)}"
        dist = infer_distribution(spec)
        if dist == "nested":
            raise ConfigError(f"{where}: nested parameters are not supported by the local runner",
                              hint="flatten them, or run the sweep on W&B")
        if dist == "categorical":
            bad = [v for v in spec["values"] if v is not None and not isinstance(v, (bool, int, float, str))]
            if bad:
                raise ConfigError(f"{where}: the local runner needs scalar values, got {quote(bad[0])}")
        if dist in ("normal", "q_normal", "log_normal", "q_log_normal") and spec.get("sigma", 1) == 0:
            raise ConfigError(f"{where}: sigma 0 draws NaN", hint="for a fixed value use value: x")
        if dist in ("beta", "q_beta") and 0 in (spec.get("a", 1), spec.get("b", 1)):
            raise ConfigError(f"{where}: a beta distribution needs a > 0 and b > 0 (0 draws NaN)")
        if dist == "q_uniform":
            q_range(name, spec)
    if cfg["method"] == "grid":
        check_grid_size(cfg)  # before any point is queued


def local_notes(cfg: Mapping[str, Any]) -> list[str]:
    """What the local runner does differently from W&B with this config (one line each)."""
    notes = []
    eta = (cfg.get("early_terminate") or {}).get("eta")
    if eta is not None and hyperband_eta(cfg) != eta:
        notes.append(f"early_terminate.eta={eta}: Optuna's Hyperband takes an integer factor >= 2; "
                     f"the local runner uses {hyperband_eta(cfg)}")
    if "target" in (cfg.get("metric") or {}):
        notes.append("metric.target is ignored locally (W&B stops the sweep once a run reaches it)")
    if cfg.get("program", TRAINING_PROGRAM) != TRAINING_PROGRAM:
        notes.append(f"program {cfg['program']} is not run locally: each trial trains in-process "
                     f"({TRAINING_PROGRAM}'s options)")
    return notes


def fixed_params(cfg: Mapping[str, Any]) -> dict[str, Any]:
    """Parameters with a single ``value`` (passed to every trial, not searched)."""
    return {n: s["value"] for n, s in cfg["parameters"].items() if infer_distribution(s) == "constant"}


def to_optuna_space(cfg: Mapping[str, Any]) -> dict[str, Any]:
    """The searched parameters as Optuna distributions (``{name: BaseDistribution}``).

    For the distributions in :data:`QUANTILE` the Optuna parameter is W&B's quantile u; pass a trial's
    parameters through :func:`decode_params` to get the values.
    """
    from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

    check_local_runner(cfg)
    space: dict[str, Any] = {}
    for name, spec in cfg["parameters"].items():
        dist = infer_distribution(spec)
        if dist == "constant":
            continue
        if dist == "categorical":
            space[name] = CategoricalDistribution(spec["values"])
        elif dist == "int_uniform":
            space[name] = IntDistribution(spec["min"], spec["max"])
        elif dist == "uniform":
            space[name] = FloatDistribution(float(spec["min"]), float(spec["max"]))
        elif dist == "q_uniform":
            q, lo, hi, ints = q_range(name, spec)
            space[name] = IntDistribution(lo, hi, step=q) if ints else FloatDistribution(lo, hi, step=q)
        elif dist in LOG_VALUES:
            space[name] = FloatDistribution(float(spec["min"]), float(spec["max"]), log=True)
        elif dist in QUANTILE:
            space[name] = FloatDistribution(0.0, 1.0)
        else:  # the deprecated exponent forms never pass validation
            raise ConfigError(f"parameter {quote(name)}: distribution {dist} is not supported by the local runner")
    return space


def decode_params(cfg: Mapping[str, Any], params: Mapping[str, Any]) -> dict[str, Any]:
    """A trial's recorded Optuna parameters as the values training gets (quantiles mapped, q applied)."""
    from src.hpo.wandb_schema import distribution_of

    specs = cfg["parameters"]
    out = {}
    for name, raw in params.items():
        dist = distribution_of(specs.get(name))  # None for a name the config does not have
        spec = specs.get(name)
        if dist in QUANTILE:
            out[name] = ppf(spec, raw)
        elif dist == "q_log_uniform_values":
            out[name] = quantize(raw, spec.get("q", 1.0))
        else:
            out[name] = raw
    return out


def quantize(x: float, q: float | int) -> float | int:
    """W&B's ``round(x / q) * q`` (half to even, as numpy), an int when q is an int."""
    k = round(x / q)
    if isinstance(q, int) and not isinstance(q, bool):
        return int(k) * q
    return float(f"{k * q:.12g}")  # 0.30000000000000004 → 0.3


def ppf(spec: Mapping[str, Any], u: float) -> Any:
    """W&B's value of a parameter at quantile ``u`` (its inverse CDF, then the ``q`` rounding)."""
    dist = infer_distribution(spec)
    u = min(max(float(u), EPS), 1.0 - EPS)
    q = spec.get("q", 1.0)
    if dist == "constant":
        return spec["value"]
    if dist == "categorical":
        return spec["values"][min(int(u * len(spec["values"])), len(spec["values"]) - 1)]
    if dist == "categorical_w_probabilities":
        total = 0.0
        for value, p in zip(spec["values"], spec["probabilities"]):
            total += p
            if total > u:
                return value
        return spec["values"][-1]
    if dist == "int_uniform":
        return min(spec["min"] + int(u * (spec["max"] - spec["min"] + 1)), spec["max"])
    if dist == "uniform":
        return spec["min"] + u * (spec["max"] - spec["min"])
    if dist == "q_uniform":
        step, lo, hi, ints = q_range("", spec)
        k = min(int(u * (round((hi - lo) / step) + 1)), round((hi - lo) / step))
        return lo + k * step if ints else float(f"{lo + k * step:.12g}")
    if dist in LOG_VALUES:
        x = math.exp(math.log(spec["min"]) + u * (math.log(spec["max"]) - math.log(spec["min"])))
        return quantize(x, q) if dist == "q_log_uniform_values" else x
    if dist in ("normal", "q_normal", "log_normal", "q_log_normal"):
        x = NormalDist(spec.get("mu", 0.0), spec.get("sigma", 1.0)).inv_cdf(u)
        if dist.endswith("log_normal"):
            x = math.exp(x)
        return quantize(x, q) if dist.startswith("q_") else x
    if dist in ("beta", "q_beta"):
        from scipy.stats import beta

        x = float(beta.ppf(u, spec.get("a", 1.0), spec.get("b", 1.0)))
        return quantize(x, q) if dist == "q_beta" else x
    raise ConfigError(f"distribution {dist} is not supported by the local runner")


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
        if method == "bayes":
            return optuna.samplers.TPESampler(seed=seed, n_startup_trials=5, multivariate=True, constant_liar=True)
    check_local_runner(cfg)  # method: custom
    raise ConfigError(f"unknown sweep method {quote(method)}")


def hyperband_eta(cfg: Mapping[str, Any]) -> int:
    """W&B's eta (any number > 1, default 3) as Optuna's reduction factor: an integer >= 2."""
    eta = (cfg.get("early_terminate") or {}).get("eta", 3)
    return max(2, round(eta))


def make_pruner(cfg: Mapping[str, Any]):
    """Hyperband from ``early_terminate``; no pruning without it."""
    import optuna

    et = cfg.get("early_terminate")
    if not et:
        return optuna.pruners.NopPruner()
    eta = hyperband_eta(cfg)
    if "min_iter" in et:
        min_resource = et["min_iter"]
    else:  # W&B's max_iter/s form: the first bracket stops at max_iter / eta**s
        min_resource = max(1, int(et["max_iter"] / et.get("eta", 3) ** et.get("s", 1)))
    return optuna.pruners.HyperbandPruner(min_resource=min_resource, max_resource=et.get("max_iter", "auto"),
                                          reduction_factor=eta)


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
