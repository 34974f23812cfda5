"""The sweep definition: load ``sweep_config.yaml`` (W&B format) and judge it by W&B's own rules.

One file drives both engines: ``wandb sweep sweep_config.yaml`` online, and the local runner
(:mod:`src.hpo.optuna_space` maps it onto Optuna; its docstring has the distribution table).

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
``method: bayes/random/grid``  ``TPESampler`` / ``RandomSampler`` / every point queued
``early_terminate: hyperband``  ``HyperbandPruner(min_resource=min_iter, reduction_factor=eta)``
=========================  ==========================================================

Validation accepts everything W&B accepts (so online sweeps are not restricted) and rejects
unknown keys, bad ranges and unknown distribution names with one actionable message;
:func:`to_optuna_space` additionally rejects the few W&B distributions Optuna cannot express.
=======
:func:`validate_sweep_config` gives W&B's verdict (:mod:`src.hpo.wandb_schema`: W&B's JSON Schema and
the checks of its ``cfg.py``): a config W&B refuses is refused here with one line, a config W&B accepts
passes. What the *local runner* cannot do on top of that (``method: custom``, a Launch ``job``, nested
parameters, ...) is refused by :func:`src.hpo.optuna_space.check_local_runner`, and parameter names or
values the training flags would refuse by :mod:`src.hpo.local_checks`.
"""

from __future__ import annotations

import copy
import math
from pathlib import Path
from typing import Any, Mapping

from src.core.errors import ConfigError
from src.hpo import wandb_schema

# integer fields W&B's schema types as JSON integers, which lets 9.0 through; the runner wants 9
INTEGER_FIELDS = (("run_cap",), ("early_terminate", "min_iter"), ("early_terminate", "max_iter"))


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
    """W&B's verdict on a sweep config: a normalised deep copy if W&B accepts it, else one ConfigError."""
    found = wandb_schema.problems(cfg)
    if found:
        first = found[0]
        more = f" (and {len(found) - 1} more)" if len(found) > 1 else ""
        raise ConfigError(f"{first.message}{more}", hint=first.hint)
    cfg = copy.deepcopy(dict(cfg))
    for path in INTEGER_FIELDS:
        parent = cfg.get(path[0]) if len(path) == 2 else cfg
        if isinstance(parent, dict) and isinstance(parent.get(path[-1]), float):
            parent[path[-1]] = int(parent[path[-1]])
    return cfg


def infer_distribution(spec: Mapping[str, Any]) -> str:
    """W&B's rule: the first distribution (in its schema's order) the spec matches; ``nested`` for a dict."""
    dist = wandb_schema.distribution_of(spec)
    if dist is None:
        raise ConfigError(f"not a W&B parameter: {dict(spec)!r}", hint="validate the config first")
    return dist


def grid_space(cfg: Mapping[str, Any]) -> dict[str, list[Any]]:
    """Every parameter's finite list of values, for ``method: grid``."""
    out: dict[str, list[Any]] = {}
    for name, spec in cfg["parameters"].items():
        dist = "nested" if "parameters" in spec else infer_distribution(spec)
        if dist == "categorical":
            # W&B accepts a value listed twice; a grid point is still run once (W&B dedupes by value too)
            unique: dict[str, Any] = {}
            for v in spec["values"]:
                unique.setdefault(repr(v), v)
            out[name] = list(unique.values())
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
