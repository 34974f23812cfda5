"""Sweep agents: run trials of a sweep, each one a training run whose per-epoch
validation accuracy feeds the sweep's pruner (SPEC §3.3).

An objective is ``objective(params, epoch_callback, ctx) -> metric``; the real one trains
(:func:`training_objective`), and tests inject their own through ``run_agent(objective=...)``.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import os
import warnings
from pathlib import Path
from typing import Any, Callable

from src.core.errors import ConfigError, GroceryError
from src.core.paths import DEFAULT_DATA_DIR
from src.core.store import Store
from src.hpo.claims import claim_waiting_trial, heartbeat, requeue_failed
from src.hpo.local_checks import check_training_parameters, check_training_values, training_options  # noqa: F401
from src.hpo.optuna_space import decode_params, fixed_params, to_optuna_space
from src.hpo.study import Sweep, open_sweep, sweep_dir

log = logging.getLogger(__name__)

MAX_CONSECUTIVE_FAILURES = 3


@dataclasses.dataclass(frozen=True)
class TrialContext:
    """What an objective knows about the trial it runs (besides its parameters)."""

    sweep_id: str
    sweep_name: str
    number: int
    metric: str

    @property
    def run_name(self) -> str:
        return f"{self.sweep_name}-trial-{self.number}"


# objective(params, epoch_callback, ctx) -> final metric; epoch_callback(epoch, value) may raise TrialPruned.
Objective = Callable[[dict[str, Any], Callable[[int, float], None], TrialContext], float]


@dataclasses.dataclass(frozen=True)
class AgentOptions:
    """How an agent runs its trials (passed through to training)."""

    data_dir: str = DEFAULT_DATA_DIR
    models_dir: str | None = None  # default: <store>/sweeps/<id>/trials; each trial gets trial-NNNN/
    wandb_mode: str | None = None
    seed: int = 42
    heartbeat_interval: int = 30
    grace_period: int = 120
    summary: bool = True
    progress: bool = True  # the dataset check's hashing bar (trials never draw bars)


def preflight(sweep: "Sweep", options: AgentOptions) -> None:
    """Check once, before any trial is recorded, what would make every training trial fail."""
    to_optuna_space(sweep.config)  # what the local runner cannot do
    check_training_values(sweep.config)  # parameter names and values training would refuse
    if options.data_dir != DEFAULT_DATA_DIR or Path(options.data_dir).exists():
        from src.data.dataset import image_dataset

        image_dataset(options.data_dir, store=sweep.store, progress=options.progress)  # DataError for a missing or unusable folder


def training_objective(options: AgentOptions, store: Store, sweep_id: str) -> Objective:
    """The real objective: one training run per trial, grouped under the sweep."""
    from src.training.config import TrainConfig
    from src.training.pipeline import run_training

    models_root = Path(options.models_dir) if options.models_dir else sweep_dir(store, sweep_id) / "trials"

    def objective(params: dict[str, Any], epoch_callback: Callable[[int, float], None], ctx: TrialContext) -> float:
        check_training_parameters(params)
        kwargs = dict(params)
        if "algorithm" in kwargs:
            kwargs["algorithms"] = [kwargs.pop("algorithm")]
        call = dict(run_name=ctx.run_name, group=ctx.sweep_name, tags=["sweep", ctx.sweep_id],
                    data_dir=options.data_dir, models_dir=str(models_root / f"trial-{ctx.number:04d}"),
                    seed=options.seed, wandb_mode=options.wandb_mode, store=str(store.root), progress=False)
        call.update(kwargs)  # a swept or fixed `seed` overrides --seed
        results = run_training(TrainConfig.from_options(**call), epoch_callback=epoch_callback)
        summary = results.get("summary", {})
        for key in (ctx.metric, f"best_{ctx.metric}"):
            if key in summary:
                return float(summary[key])
        raise ConfigError(f"training reported no metric {ctx.metric!r}",
                          hint=f"set metric.name to one of {', '.join(sorted(summary))}")

    return objective


def _suggest(trial, name: str, dist) -> Any:
    from optuna.distributions import (
        CategoricalDistribution,
        FloatDistribution,
        IntDistribution,
    )

    if isinstance(dist, CategoricalDistribution):
        return trial.suggest_categorical(name, dist.choices)
    if isinstance(dist, IntDistribution):
        return trial.suggest_int(name, dist.low, dist.high, step=dist.step, log=dist.log)
    assert isinstance(dist, FloatDistribution)
    return trial.suggest_float(name, dist.low, dist.high, step=dist.step, log=dist.log)


class _TrialFailed(Exception):
    """Raised out of a trial after its failure was logged; Optuna records the trial as FAIL."""


class _NoFailedTrialLogs(logging.Filter):
    """Optuna's own "Trial N failed ..." warnings (with traceback) repeat our one line; drop them."""

    def filter(self, record: logging.LogRecord) -> bool:
        msg = record.getMessage()
        return not (msg.startswith("Trial ") and " failed with " in msg)


def _error_message(e: BaseException) -> str:
    return str(e) if isinstance(e, GroceryError) else f"{type(e).__name__}: {e}"


def _trial_function(sweep: Sweep, objective: Objective, errors: list[Exception]):
    import optuna

    space, fixed = to_optuna_space(sweep.config), fixed_params(sweep.config)
    metric = sweep.config["metric"]["name"]

    def run_trial(trial: optuna.Trial) -> float:
        raw = {name: _suggest(trial, name, dist) for name, dist in space.items()}
        params = {**fixed, **decode_params(sweep.config, raw)}  # W&B's values from Optuna's quantiles
        ctx = TrialContext(sweep.id, sweep.name, trial.number, metric)
        trial.set_user_attr("run_name", ctx.run_name)

        def on_epoch(epoch: int, value: float) -> None:
            trial.report(float(value), int(epoch))
            if trial.should_prune():
                raise optuna.TrialPruned(f"pruned at epoch {epoch} ({value:.4f})")

        log.info("trial %d: %s", trial.number, params)
        try:
            value = float(objective(params, on_epoch, ctx))
            if not math.isfinite(value):
                raise ValueError(f"the objective returned {value}")
            return value
        except optuna.TrialPruned:
            raise
        except Exception as e:  # bad data, a bad parameter combination or a bug: fail this trial, not the agent
            message = _error_message(e)
            log.warning("trial %d failed: %s", trial.number, message)
            log.debug("trial %d traceback", trial.number, exc_info=True)
            trial.set_user_attr("error", message)
            errors.append(e)
            raise _TrialFailed(message) from e

    return run_trial


class _AgentProgress:
    """Logs each finished trial, remembers which trials this agent ran, stops on a failure streak."""

    def __init__(self, max_failures: int, stop_study: bool = True):
        self.max_failures = max_failures
        self.stop_study = stop_study  # Study.stop() works only inside optimize(); run_grid checks gave_up
        self.numbers: list[int] = []
        self.failed = 0
        self._streak = 0
        self.gave_up = False

    def __call__(self, study, trial) -> None:
        from optuna.trial import TrialState

        self.numbers.append(trial.number)
        value = "" if trial.value is None else f" {trial.value:.4f}"
        log.info("trial %d %s%s", trial.number, trial.state.name.lower(), value)
        self.failed += trial.state == TrialState.FAIL
        self._streak = self._streak + 1 if trial.state == TrialState.FAIL else 0
        if self._streak >= self.max_failures:
            log.error("%d trials failed in a row; stopping this agent", self._streak)
            self.gave_up = True
            if self.stop_study:
                study.stop()


def sweep_status(sweep: "Sweep") -> dict[str, Any]:
    """Trials, state, metric and best config of a sweep (see :mod:`src.hpo.status`)."""
    from src.hpo.status import sweep_status as status

    return status(sweep)


def run_agent(sweep_id: str, count: int | None = None, objective: Objective | None = None,
              storage: str | None = None, store: str | os.PathLike | Store | None = None,
              options: AgentOptions | None = None) -> dict[str, Any]:
    """Run up to ``count`` trials of a sweep (until the grid or ``run_cap`` is exhausted if None)."""
    import optuna

    opts = options or AgentOptions()
    if count is not None and count < 1:
        raise ConfigError(f"`count` must be at least 1, got {count}", params=("count",))
    sweep = open_sweep(sweep_id, storage, store, opts.heartbeat_interval, opts.grace_period)
    grid = sweep.config["method"] == "grid"
    if grid and "grid_points" not in sweep.study.user_attrs:  # see src.hpo.status.grid_incomplete
        raise ConfigError(f"grid sweep {sweep.id} is incomplete: its points were never all queued (it was created "
                          f"before grid points were queued at create, or by a create that was killed)",
                          hint="create it again: python src/sweep_runner.py create ...")
    if objective is None:
        preflight(sweep, opts)
        objective = training_objective(opts, sweep.store, sweep.id)
    progress, errors = _AgentProgress(MAX_CONSECUTIVE_FAILURES, stop_study=not grid), []
    callbacks = [progress]
    run_cap = sweep.config.get("run_cap")
    if run_cap:
        callbacks.append(optuna.study.MaxTrialsCallback(run_cap, states=(optuna.trial.TrialState.COMPLETE,
                                                                          optuna.trial.TrialState.PRUNED)))
        if _finished(sweep.study) >= run_cap:
            log.warning("sweep %s already reached run_cap=%d", sweep.id, run_cap)
            return {**sweep_status(sweep), "agent_trials": []}
    if count is None and not grid and not run_cap:
        raise ConfigError("`count` is required for bayes and random sweeps without run_cap", params=("count",))
    optuna_log, quiet = logging.getLogger("optuna.study._optimize"), _NoFailedTrialLogs()
    if logging.getLogger().getEffectiveLevel() > logging.DEBUG:
        optuna_log.addFilter(quiet)
    run_trial = _trial_function(sweep, objective, errors)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            if grid:
                run_grid(sweep, run_trial, count, progress, opts.heartbeat_interval, run_cap)
            else:
                sweep.study.optimize(run_trial, n_trials=count, callbacks=callbacks, gc_after_trial=False,
                                     catch=(_TrialFailed,))
            optuna.storages.fail_stale_trials(sweep.study)
    finally:
        optuna_log.removeFilter(quiet)
    if grid and not progress.numbers:
        log.info("grid sweep %s has no queued point left", sweep.id)
        return {**sweep_status(sweep), "agent_trials": []}
    if errors and progress.gave_up:
        raise _agent_error(errors[-1], f"{len(errors)} trials of sweep {sweep.id} failed, the last with: "
                                       f"{_plain_message(errors[-1])}")
    if progress.numbers and progress.failed == len(progress.numbers):
        n = len(progress.numbers)
        first = f", the first with: {_plain_message(errors[0])}" if errors else ""
        raise _agent_error(errors[0] if errors else None,
                           f"all {n} trial{'s' if n != 1 else ''} this agent ran in sweep {sweep.id} failed{first}")
    result = sweep_status(sweep)
    result["agent_trials"] = progress.numbers
    if opts.summary:
        from src.hpo.status import summarize_sweep

        result["summary"] = summarize_sweep(sweep, wandb_mode=opts.wandb_mode)
    return result


def run_grid(sweep: Sweep, run_trial: Callable, count: int | None, progress: "_AgentProgress",
             heartbeat_interval: int, run_cap: int | None = None) -> None:
    """Run queued grid points until ``count`` trials, the queue is empty or ``run_cap`` is reached.

    Only WAITING trials are taken (claimed atomically by the database), never sampled ones, so each
    point runs once however many agents share the sweep. A failed point is queued again (at most
    ``MAX_RETRIES`` times, see :mod:`src.hpo.claims`) before its trial is marked failed, so no
    agent or ``status`` ever sees the point as settled in between.
    """
    import optuna
    from optuna.trial import TrialState

    study, ran = sweep.study, 0
    while (count is None or ran < count) and not progress.gave_up:
        if run_cap and _finished(study) >= run_cap:
            break
        optuna.storages.fail_stale_trials(study)  # re-queue the points of dead agents first
        trial_id = claim_waiting_trial(sweep)
        if trial_id is None:
            break
        trial = optuna.Trial(study, trial_id)
        with heartbeat(sweep.storage, trial_id, heartbeat_interval):
            try:
                frozen = study.tell(trial, run_trial(trial))
            except optuna.TrialPruned:
                frozen = study.tell(trial, state=TrialState.PRUNED)
            except _TrialFailed:
                requeue_failed(sweep, trial_id)
                frozen = study.tell(trial, state=TrialState.FAIL)
            except BaseException:  # KeyboardInterrupt: the point runs again later, this trial failed
                requeue_failed(sweep, trial_id)
                study.tell(trial, state=TrialState.FAIL)
                raise
        ran += 1
        progress(study, frozen)


def _plain_message(e: BaseException) -> str:
    """The error's message without its hint (the hint goes on the agent's error)."""
    return str(e.args[0]) if isinstance(e, GroceryError) and e.args else _error_message(e)


def _agent_error(e: BaseException | None, message: str) -> GroceryError:
    """The agent's one error: the trials' own error class (its exit code and hint), else a plain GroceryError."""
    if isinstance(e, GroceryError):
        return type(e)(message, hint=e.hint)
    return GroceryError(message, hint="run with -v to see each trial's traceback")


def _finished(study) -> int:
    from optuna.trial import TrialState

    return len(study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED)))
