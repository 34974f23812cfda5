"""The sweep definition: load and validate ``sweep_config.yaml`` (W&B format).

One file drives both engines: ``wandb sweep sweep_config.yaml`` online, and the local runner
(:mod:`src.hpo.optuna_space` maps it onto Optuna, SPEC §3.3):

=========================  ==========================================================
W&B                        Optuna
=========================  ==========================================================
``value``                  fixed parameter (not searched)
``values``                 ``CategoricalDistribution``
``int_uniform``            ``IntDistribution(min, max)``
``uniform``                ``FloatDistribution(min, max)``
``q_uniform``              multiples of q in [min, max], as W&B's ``round(X/q)*q``:
                           ``IntDistribution``/``FloatDistribution(lo, hi, step=q)``
``log_uniform_values``     ``FloatDistribution(min, max, log=True)``
``log_uniform``            ``FloatDistribution(e**min, e**max, log=True)``
``method: bayes/random/grid``  ``TPESampler`` / ``RandomSampler`` / ``GridSampler``
``early_terminate: hyperband``  ``HyperbandPruner(min_resource=min_iter, reduction_factor=eta)``
=========================  ==========================================================

Validation accepts everything W&B accepts (so online sweeps are not restricted) and rejects
unknown keys, bad ranges and unknown distribution names with one actionable message;
:func:`to_optuna_space` additionally rejects the few W&B distributions Optuna cannot express.
"""

from __future__ import annotations

import copy
import math
import numbers
from pathlib import Path
from typing import Any, Mapping

from src.core.errors import ConfigError

TOP_LEVEL_KEYS = {"program", "method", "metric", "parameters", "early_terminate", "command", "name",
                  "description", "project", "entity", "run_cap"}
METHODS = ("bayes", "grid", "random")
GOALS = ("maximize", "minimize")
METRIC_KEYS = {"name", "goal", "target", "impute", "impute_while_running"}
EARLY_TERMINATE_KEYS = {"type", "min_iter", "max_iter", "s", "eta", "strict"}
PARAM_KEYS = {"value", "values", "distribution", "min", "max", "mu", "sigma", "q", "a", "b",
              "probabilities", "parameters"}

# Every distribution W&B knows, with the keys each one takes.
DISTRIBUTIONS: dict[str, set[str]] = {
    "constant": {"value"},
    "categorical": {"values", "probabilities"},
    "int_uniform": {"min", "max"},
    "uniform": {"min", "max"},
    "q_uniform": {"min", "max", "q"},
    "log_uniform": {"min", "max"},
    "log_uniform_values": {"min", "max"},
    "q_log_uniform": {"min", "max", "q"},
    "q_log_uniform_values": {"min", "max", "q"},
    "inv_log_uniform": {"min", "max"},
    "inv_log_uniform_values": {"min", "max"},
    "normal": {"mu", "sigma"},
    "q_normal": {"mu", "sigma", "q"},
    "log_normal": {"mu", "sigma"},
    "q_log_normal": {"mu", "sigma", "q"},
    "beta": {"a", "b"},
    "q_beta": {"a", "b", "q"},
}
RANGED = {d for d, keys in DISTRIBUTIONS.items() if "min" in keys}
POSITIVE_RANGE = {"log_uniform_values", "q_log_uniform_values", "inv_log_uniform_values"}
EXPONENT_RANGE = {"log_uniform", "q_log_uniform", "inv_log_uniform"}
LOCAL_DISTRIBUTIONS = ("constant", "categorical", "int_uniform", "uniform", "q_uniform", "log_uniform",
                       "log_uniform_values")


def load_sweep_config(path: str | Path) -> dict[str, Any]:
    """Read and validate a sweep YAML; returns the normalised config dict."""
    import yaml

    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"sweep config {p} not found", hint="pass the path of a sweep YAML such as sweep_config.yaml") from None
    except OSError as e:
        raise ConfigError(f"cannot read sweep config {p}: {e.strerror}") from e
    except UnicodeDecodeError as e:
        line = e.object[:e.start].count(b"\n") + 1
        raise ConfigError(f"{p} is not UTF-8 text (byte 0x{e.object[e.start]:02x} at line {line})",
                          hint="save the sweep YAML as UTF-8") from None
    try:
        cfg = yaml.safe_load(text)
    except yaml.YAMLError as e:
        where = getattr(e, "problem_mark", None)
        at = f" at line {where.line + 1}" if where is not None else ""
        raise ConfigError(f"{p} is not valid YAML{at}", hint="fix the syntax (indentation, colons)") from e
    try:
        return validate_sweep_config(cfg)
    except ConfigError as e:
        raise ConfigError(f"{p}: {e.args[0]}", hint=e.hint) from None


def validate_sweep_config(cfg: Any) -> dict[str, Any]:
    """Check a W&B sweep config; returns a normalised deep copy (numeric strings become numbers)."""
    if not isinstance(cfg, Mapping):
        raise ConfigError("a sweep config must be a mapping with 'method', 'metric' and 'parameters'")
    cfg = copy.deepcopy(dict(cfg))
    _no_unknown(cfg, TOP_LEVEL_KEYS, "top-level key")
    method = cfg.get("method")
    if method not in METHODS:
        raise ConfigError(f"unknown sweep method {method!r}", hint=f"use one of {', '.join(METHODS)}")
    _validate_metric(cfg)
    if "early_terminate" in cfg:
        _validate_early_terminate(cfg["early_terminate"])
    if "run_cap" in cfg:
        cfg["run_cap"] = _int(cfg["run_cap"], "run_cap", minimum=1)
    for key in ("name", "description", "project", "entity"):
        if key in cfg and cfg[key] is not None and not isinstance(cfg[key], str):
            if isinstance(cfg[key], (int, float)) and not isinstance(cfg[key], bool):
                cfg[key] = str(cfg[key])  # `name: 2024` is a number in YAML
            else:
                raise ConfigError(f"'{key}' must be a string, got {cfg[key]!r}")
    if "program" in cfg and not isinstance(cfg["program"], str):
        raise ConfigError("'program' must be a path such as src/train_with_wandb.py")
    if "command" in cfg and not (isinstance(cfg["command"], list) and all(isinstance(c, str) for c in cfg["command"])):
        raise ConfigError("'command' must be a list of strings such as ['${env}', 'python', '${program}', '${args}']")
    params = cfg.get("parameters")
    if not isinstance(params, Mapping) or not params:
        raise ConfigError("'parameters' must map at least one parameter name to its search space")
    cfg["parameters"] = {str(name): _validate_param(str(name), spec) for name, spec in params.items()}
    if method == "grid":
        grid_space(cfg)  # raises if a parameter has no finite set of values
    return cfg


def _no_unknown(d: Mapping, allowed: set[str], what: str) -> None:
    unknown = sorted(set(map(str, d)) - allowed)
    if unknown:
        raise ConfigError(f"unknown {what} {unknown[0]!r}", hint=f"allowed: {', '.join(sorted(allowed))}")


def _validate_metric(cfg: dict) -> None:
    metric = cfg.get("metric")
    if not isinstance(metric, Mapping) or not isinstance(metric.get("name"), str) or not metric["name"]:
        raise ConfigError("'metric' must have a 'name' (for example test_accuracy) and a 'goal'")
    _no_unknown(metric, METRIC_KEYS, "metric key")
    goal = metric.get("goal", "minimize")  # W&B's default
    if goal not in GOALS:
        raise ConfigError(f"bad metric goal {goal!r}", hint="use maximize or minimize")


def _validate_early_terminate(et: Any) -> None:
    if not isinstance(et, Mapping):
        raise ConfigError("'early_terminate' must be a mapping such as {type: hyperband, min_iter: 2, eta: 3}")
    _no_unknown(et, EARLY_TERMINATE_KEYS, "early_terminate key")
    if et.get("type") != "hyperband":
        raise ConfigError(f"unknown early_terminate type {et.get('type')!r}", hint="the only type is hyperband")
    for key in ("min_iter", "max_iter", "s"):
        if key in et:
            et[key] = _int(et[key], f"early_terminate.{key}", minimum=1)
    if "min_iter" not in et and "max_iter" not in et:
        raise ConfigError("hyperband needs min_iter or max_iter", hint="for example min_iter: 2")
    if "eta" in et:
        et["eta"] = _int(et["eta"], "early_terminate.eta", minimum=2)  # Optuna's reduction_factor is an int
    if "min_iter" in et and "max_iter" in et and et["min_iter"] > et["max_iter"]:
        raise ConfigError(f"early_terminate.min_iter ({et['min_iter']}) is greater than max_iter ({et['max_iter']})")


def infer_distribution(spec: Mapping[str, Any]) -> str:
    """W&B's rule: ``value`` → constant, ``values`` → categorical, int bounds → int_uniform."""
    if "distribution" in spec:
        if not isinstance(spec["distribution"], str):
            raise ConfigError(f"'distribution' must be a name such as int_uniform, got {spec['distribution']!r}")
        return spec["distribution"]
    if "value" in spec:
        return "constant"
    if "values" in spec:
        return "categorical"
    if "min" in spec and "max" in spec:
        ints = all(isinstance(spec[k], int) and not isinstance(spec[k], bool) for k in ("min", "max"))
        return "int_uniform" if ints else "uniform"
    if "mu" in spec or "sigma" in spec:
        return "normal"
    raise ConfigError("no search space given", hint="use 'values: [...]', 'value: x', or 'min'/'max' with a distribution")


def _validate_param(name: str, spec: Any) -> dict[str, Any]:
    where = f"parameter {name!r}"
    if not isinstance(spec, Mapping):
        raise ConfigError(f"{where} must be a mapping such as {{values: [...]}} or {{min: 1, max: 10}}")
    spec = dict(spec)
    _no_unknown(spec, PARAM_KEYS, f"key in {where}:")
    if "parameters" in spec:  # nested parameters: W&B accepts them; validate the children
        if not isinstance(spec["parameters"], Mapping) or not spec["parameters"]:
            raise ConfigError(f"{where}: nested 'parameters' must map at least one name to its search space")
        spec["parameters"] = {str(k): _validate_param(f"{name}.{k}", v) for k, v in spec["parameters"].items()}
        return spec
    try:
        dist = infer_distribution(spec)
    except ConfigError as e:
        raise ConfigError(f"{where}: {e.args[0]}", hint=e.hint) from None
    if dist not in DISTRIBUTIONS:
        raise ConfigError(f"{where}: unknown distribution {dist!r}",
                          hint=f"use one of {', '.join(sorted(DISTRIBUTIONS))}")
    extra = sorted(set(spec) - DISTRIBUTIONS[dist] - {"distribution"})
    if extra:
        raise ConfigError(f"{where}: key {extra[0]!r} does not apply to distribution {dist}",
                          hint=f"{dist} takes {', '.join(sorted(DISTRIBUTIONS[dist]))}")
    missing = sorted(DISTRIBUTIONS[dist] & {"value", "values", "min", "max", "a", "b"} - set(spec))
    if missing:
        raise ConfigError(f"{where}: distribution {dist} needs {missing[0]!r}")
    if dist == "categorical":
        _validate_values(where, spec)
    for key in ("min", "max", "mu", "sigma", "q", "a", "b"):
        if key in spec:
            spec[key] = _number(spec[key], f"{where} {key}")
    if dist == "int_uniform":
        for key in ("min", "max"):
            if spec[key] != int(spec[key]):
                raise ConfigError(f"{where}: int_uniform {key} must be an integer, got {spec[key]}")
            spec[key] = int(spec[key])
    if dist in RANGED and spec["min"] > spec["max"]:
        raise ConfigError(f"{where}: min ({spec['min']}) is greater than max ({spec['max']})",
                          hint="swap them")
    if dist in EXPONENT_RANGE:
        for key in ("min", "max"):
            try:
                ok = 0 < math.exp(spec[key]) < math.inf
            except OverflowError:
                ok = False
            if not ok:
                raise ConfigError(f"{where}: {dist} {key}={spec[key]} is out of range: {dist} takes natural-log "
                                  f"exponents (values e**min .. e**max)",
                                  hint="to give the values themselves use log_uniform_values, "
                                       "e.g. {distribution: log_uniform_values, min: 1e-5, max: 1e-3}")
    if dist in POSITIVE_RANGE and spec["min"] <= 0:
        raise ConfigError(f"{where}: {dist} needs min > 0, got {spec['min']}",
                          hint="these are the values themselves; log_uniform takes exponents")
    for key in ("q", "sigma", "a", "b"):
        if key in spec and spec[key] <= 0:
            raise ConfigError(f"{where}: {key} must be positive, got {spec[key]}")
    return spec


def _validate_values(where: str, spec: dict) -> None:
    values = spec["values"]
    if not isinstance(values, list) or not values:
        raise ConfigError(f"{where}: 'values' must be a non-empty list")
    if len({repr(v) for v in values}) != len(values):
        raise ConfigError(f"{where}: 'values' lists a value twice")
    probs = spec.get("probabilities")
    if probs is not None:
        if not isinstance(probs, list) or len(probs) != len(values):
            raise ConfigError(f"{where}: 'probabilities' needs one number per value")
        probs = [_number(p, f"{where} probability") for p in probs]
        if any(p < 0 for p in probs) or not math.isclose(sum(probs), 1.0, abs_tol=1e-6):
            raise ConfigError(f"{where}: probabilities must be non-negative and sum to 1")


def _number(v: Any, what: str) -> float | int:
    if isinstance(v, bool):
        raise ConfigError(f"{what} must be a number, got {v!r}")
    if isinstance(v, numbers.Real):
        out = v
    else:
        try:
            out = float(v)  # YAML 1.1 reads 1e-5 (no dot) as a string
        except (TypeError, ValueError):
            raise ConfigError(f"{what} must be a number, got {v!r}") from None
    if not math.isfinite(out):
        raise ConfigError(f"{what} must be finite, got {v!r}")
    return out


def _int(v: Any, what: str, minimum: int | None = None) -> int:
    n = _number(v, what)
    if n != int(n):
        raise ConfigError(f"{what} must be an integer, got {v!r}")
    if minimum is not None and n < minimum:
        raise ConfigError(f"{what} must be at least {minimum}, got {v!r}")
    return int(n)


def grid_space(cfg: Mapping[str, Any]) -> dict[str, list[Any]]:
    """Every parameter's finite list of values, for ``method: grid``."""
    out: dict[str, list[Any]] = {}
    for name, spec in cfg["parameters"].items():
        dist = "nested" if "parameters" in spec else infer_distribution(spec)
        if dist == "categorical":
            out[name] = list(spec["values"])
        elif dist == "int_uniform":
            out[name] = list(range(spec["min"], spec["max"] + 1))
        elif dist == "q_uniform":
            q, lo, hi, ints = q_range(name, spec)
            n = round((hi - lo) / q)
            out[name] = [lo + i * q for i in range(n + 1)] if ints else [round(lo + i * q, 12) for i in range(n + 1)]
        elif dist != "constant":
            raise ConfigError(f"parameter {name!r}: grid search needs a finite set of values, not {dist}",
                              hint="use values: [...], int_uniform or q_uniform, or method: random/bayes")
    return out


def q_range(name: str, spec: Mapping[str, Any]) -> tuple[Any, Any, Any, bool]:
    """W&B draws ``round(X / q) * q``: the multiples of q in [min, max]. Returns (q, lo, hi, all_ints)."""
    q, lo, hi = spec.get("q", 1), spec["min"], spec["max"]
    ints = all(isinstance(v, int) and not isinstance(v, bool) for v in (q, lo, hi))
    k_lo, k_hi = math.ceil(lo / q - 1e-9), math.floor(hi / q + 1e-9)
    if k_lo > k_hi:
        raise ConfigError(f"parameter {name!r}: no multiple of q={q} lies between min={lo} and max={hi}",
                          hint="q_uniform draws multiples of q; widen the range or change q")
    if ints:
        return q, k_lo * q, k_hi * q, True
    return float(q), round(k_lo * q, 12), round(k_hi * q, 12), False
