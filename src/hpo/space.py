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
``method: bayes/random/grid``  ``TPESampler`` / ``RandomSampler`` / every point queued
``early_terminate: hyperband``  ``HyperbandPruner(min_resource=min_iter, reduction_factor=eta)``
=========================  ==========================================================

:func:`validate_sweep_config` gives W&B's verdict (:mod:`src.hpo.wandb_schema`: W&B's JSON Schema and
the checks of its ``cfg.py``): a config W&B refuses is refused here with one line, a config W&B accepts
passes. What the *local runner* cannot do on top of that (``method: custom``, a Launch ``job``, nested
parameters, ...) is refused by :func:`src.hpo.optuna_space.check_local_runner`, and parameter names or
values the training flags would refuse by :mod:`src.hpo.local_checks`.

Before W&B's verdict, :func:`load_sweep_config` refuses what YAML itself would hide: a key given twice
in one mapping (YAML keeps the last value silently) and an integer too long for Python, each with its
line. A grid is counted without being listed (:func:`grid_size`) and refused above
:data:`MAX_GRID_POINTS` before any work.
"""

from __future__ import annotations

import copy
import math
from functools import lru_cache
from pathlib import Path
from typing import Any, Mapping

from src.core.errors import ConfigError, quote
from src.hpo import wandb_schema

# integer fields W&B's schema types as JSON integers, which lets 9.0 through; the runner wants 9
INTEGER_FIELDS = (("run_cap",), ("early_terminate", "min_iter"), ("early_terminate", "max_iter"))
# A grid's points are queued at create in one transaction that holds the database's write lock (SQLite:
# other agents wait, up to their 60 s busy timeout); measured 2026-12-07 on 2 cores shared with ~6 busy
# processes: 5,000 points in 29 s (13 s of CPU). Each point is also a training run of minutes.
MAX_GRID_POINTS = 5_000


def load_sweep_config(path: str | Path) -> dict[str, Any]:
    """Read and validate a sweep YAML; returns the normalised config dict.

    A key given twice in one mapping is refused with both lines (plain YAML keeps the last one
    silently, so a sweep would search what its author did not mean).
    """
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
        cfg = yaml.load(text, Loader=_sweep_loader())  # noqa: S506 - a SafeLoader subclass
    except yaml.YAMLError as e:
        if isinstance(e, _sweep_loader().Problem):
            raise ConfigError(f"{p}: {e.problem}", hint=e.hint) from None
        where = getattr(e, "problem_mark", None)
        at = f" at line {where.line + 1}" if where is not None else ""
        raise ConfigError(f"{p} is not valid YAML{at}", hint="fix the syntax (indentation, colons)") from e
    try:
        return validate_sweep_config(cfg)
    except ConfigError as e:
        raise ConfigError(f"{p}: {e.args[0]}", hint=e.hint) from None


@lru_cache(maxsize=1)
def _sweep_loader():
    """A ``yaml.SafeLoader`` that refuses a duplicate key or an over-long integer with its line (``.Problem``)."""
    import yaml

    class Problem(yaml.constructor.ConstructorError):
        """A YAML document that parses but would not say what its author meant."""

        def __init__(self, problem: str, hint: str):
            super().__init__(problem=problem)
            self.hint = hint

    class SweepLoader(yaml.SafeLoader):
        def construct_mapping(self, node, deep=False):
            if isinstance(node, yaml.MappingNode):
                first: dict[Any, Any] = {}  # key -> where it was first given
                for key_node, _ in node.value:
                    if key_node.tag == "tag:yaml.org,2002:merge":  # `<<: *base` then an override is YAML's own rule
                        continue
                    key, mark = self.construct_object(key_node, deep=True), key_node.start_mark
                    try:
                        if key in first:
                            raise Problem(f"duplicate key {quote(key)} at {_place(mark, first[key])} "
                                          f"(first at {_place(first[key], mark)})",
                                          "give each key once: YAML would silently keep only the last value")
                        first[key] = mark
                    except TypeError:  # an unhashable key: SafeLoader's own error follows
                        continue
            return super().construct_mapping(node, deep=deep)

        def construct_yaml_int(self, node):
            try:
                return super().construct_yaml_int(node)
            except ValueError:  # Python refuses int() of more than 4,300 digits
                raise Problem(f"an integer of {len(str(node.value)):,} digits at line {node.start_mark.line + 1}",
                              "write a number of ordinary size") from None

    def _place(mark, other) -> str:  # "line 3", or "line 3, column 12" when both keys share a line
        return f"line {mark.line + 1}" + (f", column {mark.column + 1}" if mark.line == other.line else "")

    SweepLoader.add_constructor("tag:yaml.org,2002:int", SweepLoader.construct_yaml_int)
    SweepLoader.Problem = Problem
    return SweepLoader


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
        raise ConfigError(f"not a W&B parameter: {quote(dict(spec))}", hint="validate the config first")
    return dist


def grid_space(cfg: Mapping[str, Any]) -> dict[str, list[Any]]:
    """Every parameter's finite list of values, for ``method: grid`` (check :func:`grid_size` first)."""
    out: dict[str, list[Any]] = {}
    for name, spec in cfg["parameters"].items():
        dist = _grid_distribution(name, spec)
        if dist == "categorical":
            out[name] = _unique(spec["values"])
        elif dist == "int_uniform":
            out[name] = list(range(spec["min"], spec["max"] + 1))
        elif dist == "q_uniform":
            q, lo, hi, ints = q_range(name, spec)
            n = round((hi - lo) / q)
            out[name] = [lo + i * q for i in range(n + 1)] if ints else [round(lo + i * q, 12) for i in range(n + 1)]
    return out


def grid_counts(cfg: Mapping[str, Any]) -> dict[str, int]:
    """How many values each searched parameter of a grid has, counted without listing them."""
    out: dict[str, int] = {}
    for name, spec in cfg["parameters"].items():
        dist = _grid_distribution(name, spec)
        if dist == "categorical":
            out[name] = len(_unique(spec["values"]))
        elif dist == "int_uniform":
            out[name] = spec["max"] - spec["min"] + 1
        elif dist == "q_uniform":
            q, lo, hi, _ = q_range(name, spec)
            out[name] = round((hi - lo) / q) + 1
    return out


def grid_size(cfg: Mapping[str, Any]) -> int:
    """The number of points of a grid sweep (each one a queued trial, i.e. a training run)."""
    return math.prod(grid_counts(cfg).values())


def check_grid_size(cfg: Mapping[str, Any]) -> int:
    """Refuse a grid of more than :data:`MAX_GRID_POINTS` points before any work; returns its size."""
    counts = grid_counts(cfg)
    total = math.prod(counts.values())
    if total > MAX_GRID_POINTS:
        factors = " × ".join(f"{c:,} {quote(n)}" for n, c in sorted(counts.items(), key=lambda kv: -kv[1]))
        raise ConfigError(f"grid of {total:,} points ({factors}) is over the local runner's limit of "
                          f"{MAX_GRID_POINTS:,}",
                          hint="each point is a training run: give fewer values, or use method: random or bayes "
                               "with run_cap")
    return total


def _grid_distribution(name: str, spec: Mapping[str, Any]) -> str:
    dist = "nested" if "parameters" in spec else infer_distribution(spec)
    if dist not in ("categorical", "int_uniform", "q_uniform", "constant"):
        raise ConfigError(f"parameter {quote(name)}: grid search needs a finite set of values, not {dist}",
                          hint="use values: [...], int_uniform or q_uniform, or method: random/bayes")
    return dist


def _unique(values: list[Any]) -> list[Any]:
    """W&B accepts a value listed twice; a grid point is still run once (W&B dedupes by value too)."""
    unique: dict[str, Any] = {}
    for v in values:
        unique.setdefault(repr(v), v)
    return list(unique.values())


def q_range(name: str, spec: Mapping[str, Any]) -> tuple[Any, Any, Any, bool]:
    """W&B draws ``round(X / q) * q``: the multiples of q in [min, max]. Returns (q, lo, hi, all_ints)."""
    q, lo, hi = spec.get("q", 1), spec["min"], spec["max"]
    ints = all(isinstance(v, int) and not isinstance(v, bool) for v in (q, lo, hi))
    k_lo, k_hi = math.ceil(lo / q - 1e-9), math.floor(hi / q + 1e-9)
    if k_lo > k_hi:
        raise ConfigError(f"parameter {quote(name)}: no multiple of q={q} lies between min={lo} and max={hi}",
                          hint="q_uniform draws multiples of q; widen the range or change q")
    if ints:
        return q, k_lo * q, k_hi * q, True
    return float(q), round(k_lo * q, 12), round(k_hi * q, 12), False
