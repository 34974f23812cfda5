"""W&B's own rules for a sweep config: the verdict ``wandb sweep`` gives, as one readable line.

W&B validates a sweep config with its ``sweeps`` package: a JSON Schema (``sweeps/config/schema.json``)
and a few checks a schema cannot express (``sweeps/config/cfg.py``). That package cannot be installed
beside numpy 2 (sweeps 0.3.0 pins ``numpy<2``), so ``wandb_sweep_schema.json`` next to this module
restates its schema (source, commit and license in the file's ``$comment``) and :func:`problems`
restates its Python checks:

* ``parameters`` is required unless ``scheduler.search_space`` is set;
* ``metric`` and ``metrics`` exclude each other, and ``metrics`` needs ``method: custom``;
* ``scheduler`` excludes ``early_terminate`` and ``controller: {type: local}``; engine ``wandb`` takes
  grid/random/bayes, ``optuna`` and ``ax`` take ``custom``;
* for each top-level parameter: ``min`` < ``max`` (equal is refused), ``probabilities`` as many as
  ``values`` and summing to 1, and the deprecated ``log_uniform``, ``inv_log_uniform`` and
  ``q_log_uniform`` (min/max are base-e exponents) are refused in favour of their ``*_values`` forms.

A config is valid for W&B exactly when :func:`problems` returns nothing; each problem is phrased for
a person (where, what, and a hint) instead of jsonschema's "is not valid under any of the given schemas".
"""

from __future__ import annotations

import json
import math
import numbers
from functools import lru_cache
from pathlib import Path
from typing import Any, Mapping, NamedTuple

from src.core.errors import quote

SCHEMA_PATH = Path(__file__).with_name("wandb_sweep_schema.json")
DEPRECATED = {"log_uniform": "log_uniform_values", "inv_log_uniform": "inv_log_uniform_values",
              "q_log_uniform": "q_log_uniform_values"}
ENGINE_METHODS = {"wandb": ("grid", "bayes", "random"), "optuna": ("custom",), "ax": ("custom",)}


class Problem(NamedTuple):
    message: str
    hint: str | None = None


@lru_cache(maxsize=1)
def schema() -> dict[str, Any]:
    return json.loads(SCHEMA_PATH.read_text(encoding="utf-8"))


def _format_checker():
    import jsonschema

    checker = jsonschema.FormatChecker(formats=())
    # W&B's two format checks: "float" is a Python float, "integer" a Python int (so 5.0 is no int_uniform bound)
    checker.checks("float")(lambda v: isinstance(v, float))
    checker.checks("integer")(lambda v: isinstance(v, int))
    return checker


@lru_cache(maxsize=None)
def validator(definition: str | None = None):
    """A Draft 7 validator for the whole config, or for one of the schema's definitions."""
    import jsonschema

    s = schema()
    target = s if definition is None else {"$ref": f"#/definitions/{definition}", "definitions": s["definitions"]}
    return jsonschema.Draft7Validator(target, format_checker=_format_checker())


def distributions() -> list[str]:
    """Every distribution name W&B's schema knows, in its matching order."""
    return [ref["$ref"].rsplit("/", 1)[-1] for ref in schema()["definitions"]["parameter"]["anyOf"]
            if not ref["$ref"].endswith("/nested")]


def distribution_of(spec: Any) -> str | None:
    """W&B's rule: a parameter is the first definition (in the schema's order) it matches; None if none."""
    try:
        key = json.dumps(spec, sort_keys=True)
    except (TypeError, ValueError):  # not JSON (a YAML date, say): judge it uncached
        return _first_match(spec)
    return _distribution_of_json(key)


@lru_cache(maxsize=4096)
def _distribution_of_json(key: str) -> str | None:
    return _first_match(json.loads(key))


def _first_match(spec: Any) -> str | None:
    for ref in schema()["definitions"]["parameter"]["anyOf"]:
        name = ref["$ref"].rsplit("/", 1)[-1]
        if validator(name).is_valid(spec):
            return name
    return None


# -- problems ---------------------------------------------------------------------------------------------
def problems(cfg: Any) -> list[Problem]:
    """Everything W&B would refuse in ``cfg``; empty when W&B accepts it."""
    if not isinstance(cfg, Mapping):
        return [Problem("a sweep config must be a mapping with 'method', 'metric' and 'parameters'")]
    out: list[Problem] = []
    params = cfg.get("parameters")
    for error in sorted(validator().iter_errors(cfg), key=lambda e: [str(p) for p in e.absolute_path]):
        path = list(error.absolute_path)
        if len(path) >= 2 and path[0] == "parameters" and isinstance(params, Mapping):
            out.extend(_parameter_problems(str(path[1]), params[path[1]]))
        elif path == ["early_terminate"] and error.validator == "oneOf":
            out.extend(_describe(e, "early_terminate") for e in validator("hyperband").iter_errors(error.instance))
        else:
            out.append(_describe(error, ".".join(map(str, path))))
    out.extend(_cfg_checks(cfg))
    unique: dict[str, Problem] = {}
    for p in out:
        unique.setdefault(p.message, p)
    return list(unique.values())


def _cfg_checks(cfg: Mapping[str, Any]) -> list[Problem]:
    """The checks of W&B's ``cfg.py`` that follow the schema."""
    out: list[Problem] = []
    method, scheduler = cfg.get("method"), cfg.get("scheduler")
    if "parameters" not in cfg and not (isinstance(scheduler, Mapping) and scheduler.get("search_space")):
        out.append(Problem("'parameters' is required (unless scheduler.search_space is set)",
                           hint="map each training option to its search space, e.g. labeled_ratio: {values: [0.1, 0.2]}"))
    if "metric" in cfg and "metrics" in cfg:
        out.append(Problem("'metric' and 'metrics' cannot both be set", hint="use metric for one objective"))
    elif "metrics" in cfg and method is not None and method != "custom":
        out.append(Problem(f"'metrics' (multi-objective) needs method: custom, got method: {method}"))
    if scheduler is not None:
        controller = cfg.get("controller")
        if isinstance(controller, Mapping) and controller.get("type") == "local":
            out.append(Problem("'controller: {type: local}' cannot be used together with 'scheduler'"))
        if "early_terminate" in cfg:
            out.append(Problem("'early_terminate' cannot be used together with 'scheduler'"))
        if isinstance(scheduler, Mapping):
            engine = scheduler.get("engine")
            if engine in ENGINE_METHODS and method not in ENGINE_METHODS[engine]:
                out.append(Problem(f"scheduler.engine {engine} does not support method: {method}",
                                   hint=f"use method: {' or '.join(ENGINE_METHODS[engine])}"))
    params = cfg.get("parameters")
    if isinstance(params, Mapping):
        for name, spec in params.items():
            if isinstance(spec, Mapping):
                out.extend(_parameter_checks(str(name), spec))
    return out


def _real(v: Any) -> bool:
    return isinstance(v, numbers.Real) and not isinstance(v, bool)


def _parameter_checks(name: str, spec: Mapping[str, Any]) -> list[Problem]:
    where = f"parameter {quote(name)}"
    out: list[Problem] = []
    lo, hi = spec.get("min"), spec.get("max")
    if _real(lo) and _real(hi) and lo >= hi:
        out.append(Problem(f"{where}: min {quote(lo)} is not less than max {quote(hi)}",
                           hint="swap them" if lo > hi else "for a fixed value use value: x"))
    values, probs = spec.get("values"), spec.get("probabilities")
    if isinstance(values, list) and isinstance(probs, list):
        if len(values) != len(probs):
            out.append(Problem(f"{where}: {len(values)} values but {len(probs)} probabilities",
                               hint="give one probability per value"))
        elif all(_real(p) for p in probs) and not abs(sum(probs) - 1.0) <= 1e-8 + 1e-5:
            out.append(Problem(f"{where}: probabilities {quote(probs)} do not sum to 1"))
    dist = spec.get("distribution")
    if isinstance(dist, str) and dist in DEPRECATED and distribution_of(spec) == dist:
        out.append(_deprecated(where, dist, spec))
    return out


def _deprecated(where: str, dist: str, spec: Mapping[str, Any]) -> Problem:
    lo, hi, new = spec["min"], spec["max"], DEPRECATED[dist]
    message = (f"{where} uses {dist}, where min/max are base-e exponents "
               f"(W&B refuses it: use {new} to give the values themselves)")
    if 0 < lo < hi <= 1:  # these look like values (a learning rate), not exponents
        hint = f"write distribution: {new}; min: {lo} and max: {hi} are then the values"
    else:
        try:
            hint = f"write distribution: {new}, min: {math.exp(lo):.3g}, max: {math.exp(hi):.3g}"
        except OverflowError:
            hint = f"write distribution: {new} with the values themselves as min and max"
    return Problem(message, hint)


# -- readable messages ----------------------------------------------------------------------------------------
def _parameter_problems(name: str, spec: Any) -> list[Problem]:
    """Why a parameter matches none of W&B's distributions, judged against the one it names or implies."""
    where = f"parameter {quote(name)}"
    if not isinstance(spec, Mapping):
        return [Problem(f"{where} must be a mapping such as {{values: [...]}} or {{min: 1, max: 10}}")]
    dist = spec.get("distribution")
    known = distributions()
    if "distribution" in spec and dist not in known:
        return [Problem(f"{where}: unknown distribution {quote(dist)}", hint=f"use one of {', '.join(sorted(known))}")]
    if dist is None:
        dist = _implied(spec)
        if dist is None:
            keys = sorted(set(spec) & {"mu", "sigma", "a", "b", "q"})
            if keys:
                return [Problem(f"{where}: {quote(keys[0])} needs a distribution",
                                hint="for example distribution: normal (mu, sigma) or beta (a, b)")]
            return [Problem(f"{where}: no search space given",
                            hint="use values: [...], value: x, or min/max with a distribution")]
    if dist == "nested":
        inner = spec.get("parameters")
        if isinstance(inner, Mapping) and inner and set(spec) == {"parameters"}:
            found = [p for k, v in inner.items() for p in _parameter_problems(f"{name}.{k}", v)
                     if not validator("parameter").is_valid(v)]
            if found:
                return found
    order = {k: i for i, k in enumerate(spec)}  # report the keys in the order the YAML gives them
    errors = sorted(validator(dist).iter_errors(spec), key=lambda e: (
        e.validator != "additionalProperties", order.get(e.absolute_path[0], -1) if e.absolute_path else -1))
    if not errors:
        return [Problem(f"{where} matches no W&B distribution")]
    return [_describe(errors[0], where, dist)]


def _implied(spec: Mapping[str, Any]) -> str | None:
    """The distribution a spec without ``distribution`` is read as (W&B's first matching definition)."""
    if "parameters" in spec:
        return "nested"
    if "value" in spec:
        return "constant"
    if "values" in spec:
        return "categorical_w_probabilities" if "probabilities" in spec else "categorical"
    if "min" in spec or "max" in spec:
        ints = all(isinstance(spec.get(k), int) and not isinstance(spec.get(k), bool) for k in ("min", "max"))
        return "int_uniform" if ints else "uniform"
    return None


def _describe(e, where: str, dist: str | None = None) -> Problem:
    """One jsonschema error as a sentence."""
    path = ".".join(map(str, e.absolute_path))
    if dist:
        at = f"{where} {path}".strip()
    else:
        at = where if where == path else ".".join(x for x in (where, path) if x)
    at = at or "the config"
    v, inst = e.validator, e.instance
    if v == "additionalProperties":
        allowed = set(e.schema.get("properties", {}))
        extra = sorted(str(k) for k in inst if k not in allowed)
        if not where:
            return Problem(f"unknown top-level key {quote(extra[0])}", hint=f"W&B's keys: {', '.join(sorted(allowed))}")
        if dist:
            takes = ", ".join(sorted(allowed - {"distribution"}))
            return Problem(f"{where}: key {quote(extra[0])} does not apply to distribution {dist}",
                           hint=f"{dist} takes {takes}")
        return Problem(f"unknown key {quote(extra[0])} in {at}", hint=f"allowed: {', '.join(sorted(allowed))}")
    if v == "required":
        missing = e.message.split("'")[1] if "'" in e.message else e.message
        what = f"distribution {dist}" if dist else at
        return Problem(f"{where + ': ' if dist else ''}{what} needs {missing!r}")
    if v == "anyOf" and e.schema.get("anyOf", [{}])[0].get("required") == ["max_iter", "s"]:
        return Problem("hyperband needs min_iter, or max_iter together with s",
                       hint="for example early_terminate: {type: hyperband, min_iter: 2, eta: 3}")
    if v == "enum":
        return Problem(f"{at} must be one of {', '.join(map(str, e.validator_value))}, got {quote(inst)}")
    if v == "type":
        hint = None
        if isinstance(inst, str):
            try:
                float(inst)
                hint = "YAML 1.1 reads 1e-5 as a string: write 1.0e-5 (W&B refuses the string too)"
            except ValueError:
                pass
        want = {"number": "a number", "integer": "an integer", "string": "a string", "object": "a mapping",
                "array": "a list", "boolean": "true or false"}.get(e.validator_value, e.validator_value)
        return Problem(f"{at} must be {want}, got {quote(inst)}", hint=hint)
    if v == "format":
        want = "an integer (a float bound makes it a uniform)" if e.validator_value == "integer" else "a float"
        return Problem(f"{at} must be {want}, got {quote(inst)}")
    if v in ("minimum", "exclusiveMinimum"):
        op = ">=" if v == "minimum" else ">"
        return Problem(f"{at} must be {op} {e.validator_value}, got {quote(inst)}")
    if v in ("minItems", "minProperties"):
        return Problem(f"{at} must not be empty")
    if v == "pattern":
        return Problem(f"parameter name {quote(inst)} is refused by W&B",
                       hint="start with a letter or _, then letters, digits, _ . -")
    return Problem(f"{at}: {e.message}")
