"""What the local runner checks on top of W&B's rules: every parameter is a training option, and
every value a trial can receive is one the training flags accept (SPEC §3.3).

W&B accepts ``labeled_ratio: {values: [1.5, -1]}``: its schema knows nothing of our training script,
so each such trial would fail. Here the sweep is refused at ``create`` (and again by the agent before
any trial) with one line naming the parameter, the value and training's own message.

Which values are tried: every value of a categorical (those with a probability above 0), the
constant, the two ends of a bounded distribution (min and max, after W&B's rounding), and for the
unbounded or open ones (normal, log-normal, beta families) the 0.1st and 99.9th percentiles, so a
sweep is refused when more than 0.1% of its draws on either side would be refused by training.
"""

from __future__ import annotations

from typing import Any, Iterable, Mapping

from src.core.errors import ConfigError, quote
from src.hpo.optuna_space import check_local_runner, ppf
from src.hpo.space import infer_distribution

# training options the runner sets itself; a sweep may not search them.
RUNNER_KEYS = {"run_name", "group", "tags", "data_dir", "models_dir", "wandb_mode", "store", "progress"}
TAIL = 0.001  # unbounded distributions are checked at these quantiles
BOUNDED = ("int_uniform", "uniform", "q_uniform", "log_uniform_values", "inv_log_uniform_values",
           "q_log_uniform_values")


def training_options() -> set[str]:
    """Parameter names a sweep may search: the training options (``algorithm`` too)."""
    from dataclasses import fields

    from src.training.config import TrainConfig

    return ({f.name for f in fields(TrainConfig)} - RUNNER_KEYS) | {"algorithm"}


def check_training_parameters(names: Iterable[str]) -> None:
    """Every swept or fixed parameter must be a training option (else every trial would fail)."""
    accepted = training_options()
    unknown = sorted(set(names) - accepted)
    if unknown:
        raise ConfigError(f"sweep parameter {quote(unknown[0])} is not a training option",
                          hint=f"parameter names must match train_with_wandb's options: {', '.join(sorted(accepted))}")


def reachable_values(spec: Mapping[str, Any]) -> list[tuple[Any, str]]:
    """(value, where it comes from) for the values of a parameter that stand for all it can draw."""
    dist = infer_distribution(spec)
    if dist == "constant":
        return [(spec["value"], "its value")]
    if dist == "categorical":
        return [(v, "one of its values") for v in spec["values"]]
    if dist == "categorical_w_probabilities":
        return [(v, "one of its values") for v, p in zip(spec["values"], spec["probabilities"]) if p > 0]
    if dist in ("uniform", "log_uniform_values", "inv_log_uniform_values"):
        return [(spec["min"], "its min"), (spec["max"], "its max")]
    if dist in BOUNDED:
        return [(ppf(spec, 0.0), "its lowest draw"), (ppf(spec, 1.0), "its highest draw")]
    return [(ppf(spec, TAIL), "its 0.1st percentile"), (ppf(spec, 1 - TAIL), "its 99.9th percentile")]


def check_training_values(cfg: Mapping[str, Any]) -> None:
    """Refuse a sweep whose parameters are not training options or can draw values training refuses."""
    from src.training.config import TrainConfig

    params = cfg["parameters"]
    check_training_parameters(params)
    for name, spec in params.items():
        for value, origin in reachable_values(spec):
            option = {"algorithms": [value]} if name == "algorithm" else {name: value}
            try:
                TrainConfig.from_options(**option).validated()
            except (ConfigError, TypeError, ValueError) as e:
                reason = e.args[0] if e.args else type(e).__name__
                raise ConfigError(f"parameter {quote(name)}: {quote(value)} ({origin}) is refused by training: {reason}",
                                  hint=getattr(e, "hint", None) or "change the search space to values training accepts"
                                  ) from None


def check_local_sweep(cfg: Mapping[str, Any]) -> None:
    """Everything the local runner refuses in a W&B-valid config, before any sweep is created."""
    check_local_runner(cfg)
    check_training_values(cfg)
