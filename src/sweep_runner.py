"""Local hyperparameter sweeps with W&B's verbs, backed by Optuna (SPEC §3.3).

The same ``sweep_config.yaml`` that ``wandb sweep`` takes is translated to an Optuna study
(:mod:`src.sweep_config`). The study lives in the local store (``<store>/optuna.db``) or in
any SQLAlchemy database given with ``--storage`` (e.g. ``postgresql://...``), so several
agents — on one machine or many — share one sweep without running the same trial twice.
Every trial is a training run (a W&B run grouped under the sweep's name) whose per-epoch
validation accuracy feeds the Hyperband pruner. Agents send a heartbeat; a trial whose agent
died (SIGKILL, lost machine) is marked failed and re-queued by the next agent.

    python src/sweep_runner.py create [sweep_config.yaml] [--storage URL]     # prints the sweep id
    python src/sweep_runner.py agent ID --count 10 [--data-dir D] [--wandb-mode offline]
    python src/sweep_runner.py status ID [--json]

Test-only: ``MLOPS_SWEEP_FAKE_OBJECTIVE=1`` makes ``agent`` run :func:`fake_objective`
(a deterministic stand-in for training; ``MLOPS_SWEEP_FAKE_SLEEP`` seconds per epoch)
so subprocess agents can be tested without training models.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import math
import os
import re
import secrets
import string
import time
import warnings
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, Sequence

from src.core.cli import add_common_flags, print_json, run_cli
from src.core.errors import ConfigError, GroceryError, StoreError
from src.core.store import Store, validate_name

log = logging.getLogger(__name__)

SCHEMA = """
CREATE TABLE IF NOT EXISTS sweep_sweeps (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    storage TEXT NOT NULL,
    config TEXT NOT NULL,
    created_at REAL NOT NULL
);
"""
FAKE_ENV = "MLOPS_SWEEP_FAKE_OBJECTIVE"
MAX_CONSECUTIVE_FAILURES = 3
DEFAULT_DATA_DIR = "DS2GROCERIES"  # generated on first use when missing (see src.training.pipeline.ensure_dataset)
# train_with_wandb arguments the runner sets itself; a sweep may not search them.
RUNNER_KEYS = {"run_name", "group", "tags", "data_dir", "models_dir", "wandb_mode", "store", "epoch_callback",
               "progress"}


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


# -- storage --------------------------------------------------------------------------------
def default_storage_url(store: Store) -> str:
    return f"sqlite:///{store.root.resolve()}/optuna.db"


def redact(url: str) -> str:
    """The URL with any password hidden, safe to store and print."""
    try:
        from sqlalchemy.engine import make_url

        return make_url(url).render_as_string(hide_password=True)
    except Exception:  # noqa: BLE001 - an unparsable URL is reported when it is opened
        return url


def open_storage(url: str, heartbeat_interval: int | None = None, grace_period: int | None = None):
    """An Optuna RDBStorage; heartbeats let the next agent fail and re-queue a dead agent's trial."""
    import optuna

    kwargs: dict[str, Any] = {}
    if url.startswith("sqlite"):
        kwargs["engine_kwargs"] = {"connect_args": {"timeout": 60}}
    _quiet_optuna()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        if heartbeat_interval:
            kwargs.update(heartbeat_interval=heartbeat_interval, grace_period=grace_period or 4 * heartbeat_interval,
                          heartbeat_stale_trial_callback=optuna.storages.RetryHeartbeatStaleTrialCallback(max_retry=2))
        try:
            return optuna.storages.RDBStorage(url, **kwargs)
        except (ImportError, ModuleNotFoundError) as e:
            raise ConfigError(f"no database driver for {redact(url)}: {e}",
                              hint="pip install the driver (e.g. psycopg2-binary for postgresql://)") from e
        except Exception as e:  # sqlalchemy raises ArgumentError/OperationalError for bad or unreachable URLs
            raise ConfigError(f"cannot open sweep storage {redact(url)}: {str(e).splitlines()[0]}",
                              hint="pass a SQLAlchemy URL such as sqlite:///path/optuna.db or postgresql://...") from e


def _quiet_optuna() -> None:
    """Optuna's own INFO lines repeat ours; show them only with -v."""
    import optuna

    debug = logging.getLogger().getEffectiveLevel() <= logging.DEBUG
    optuna.logging.set_verbosity(logging.INFO if debug else logging.WARNING)


def _record(store: Store, sweep_id: str, name: str, url: str, cfg: Mapping[str, Any]) -> None:
    store.ensure_schema("sweep", SCHEMA)
    with store.transaction() as con:
        con.execute("INSERT INTO sweep_sweeps (id, name, storage, config, created_at) VALUES (?, ?, ?, ?, ?)",
                    (sweep_id, name, redact(url), json.dumps(cfg), time.time()))


def _lookup_storage(store: Store, sweep_id: str) -> str:
    store.ensure_schema("sweep", SCHEMA)
    with store.read() as con:
        row = con.execute("SELECT storage FROM sweep_sweeps WHERE id = ?", (sweep_id,)).fetchone()
    if row is None:
        return default_storage_url(store)
    if "***" in row["storage"]:
        raise ConfigError(f"sweep {sweep_id} lives in {row['storage']}", hint="pass --storage with the full URL")
    return row["storage"]


def sweep_dir(store: Store, sweep_id: str) -> Path:
    return store.root / "sweeps" / sweep_id


# -- create ---------------------------------------------------------------------------------
def create_local_sweep(cfg: Mapping[str, Any], store: str | os.PathLike | Store | None = None,
                       storage: str | None = None, name: str | None = None) -> str:
    """Create an Optuna-backed sweep from a validated W&B sweep config; returns its id."""
    import optuna

    from src.sweep_config import (
        direction,
        make_pruner,
        make_sampler,
        to_optuna_space,
        validate_sweep_config,
    )

    cfg = validate_sweep_config(cfg)
    to_optuna_space(cfg), make_sampler(cfg), make_pruner(cfg)  # fail now, not in the agent
    st = Store.of(store)
    url = storage or default_storage_url(st)
    sweep_id = "".join(secrets.choice(string.ascii_lowercase + string.digits) for _ in range(8))
    display_name = str(name or cfg.get("name") or "sweep")
    sweep_name = validate_name(f"{slugify(display_name)}-{sweep_id}", "sweep name")
    study = optuna.create_study(storage=open_storage(url), study_name=sweep_id, direction=(
        "maximize" if direction(cfg) == "maximize" else "minimize"))
    study.set_user_attr("sweep_config", cfg)
    study.set_user_attr("sweep_name", sweep_name)
    study.set_user_attr("display_name", display_name)
    _record(st, sweep_id, sweep_name, url, cfg)
    sweep_dir(st, sweep_id).mkdir(parents=True, exist_ok=True)
    log.info("created sweep %s (%s) in %s", sweep_id, sweep_name, redact(url))
    return sweep_id


def slugify(name: str) -> str:
    """A sweep name W&B accepts ("My HB sweep (v2)") as a store-safe name ("My-HB-sweep-v2")."""
    slug = re.sub(r"[^A-Za-z0-9._-]+", "-", name)
    slug = re.sub(r"\.{2,}", ".", slug).strip("-._")[:100].rstrip("-._")
    return slug or "sweep"


@dataclasses.dataclass
class Sweep:
    """An opened sweep: its id, config and Optuna study."""

    id: str
    name: str
    config: dict[str, Any]
    study: Any
    store: Store
    storage_url: str
    display_name: str | None = None


def open_sweep(sweep_id: str, storage: str | None = None, store: str | os.PathLike | Store | None = None,
               heartbeat_interval: int | None = None, grace_period: int | None = None) -> Sweep:
    import optuna

    from src.sweep_config import make_pruner, make_sampler

    sweep_id = validate_name(sweep_id.rsplit("/", 1)[-1], "sweep id")
    st = Store.of(store)
    url = storage or _lookup_storage(st, sweep_id)
    rdb = open_storage(url, heartbeat_interval, grace_period)
    try:
        study_id = rdb.get_study_id_from_name(sweep_id)
    except KeyError:
        raise StoreError(f"no sweep {sweep_id!r} in {redact(url)}",
                         hint="create one with: python src/sweep_runner.py create sweep_config.yaml") from None
    attrs = rdb.get_study_user_attrs(study_id)
    cfg = attrs.get("sweep_config")
    if not cfg:
        raise StoreError(f"study {sweep_id!r} in {redact(url)} was not created by the sweep runner")
    study = optuna.load_study(study_name=sweep_id, storage=rdb, sampler=make_sampler(cfg), pruner=make_pruner(cfg))
    return Sweep(sweep_id, attrs.get("sweep_name", sweep_id), cfg, study, st, url, attrs.get("display_name"))


# -- agent ----------------------------------------------------------------------------------
def training_options() -> set[str]:
    """Parameter names a sweep may search: ``train_with_wandb``'s options (``algorithm`` too)."""
    import inspect

    from src.train_with_wandb import train_with_wandb

    return (set(inspect.signature(train_with_wandb).parameters) - RUNNER_KEYS) | {"algorithm"}


def check_training_parameters(names: Iterable[str]) -> None:
    """Every swept or fixed parameter must be a training option (else every trial would fail)."""
    accepted = training_options()
    unknown = sorted(set(names) - accepted)
    if unknown:
        raise ConfigError(f"sweep parameter {unknown[0]!r} is not a training option",
                          hint=f"parameter names must match train_with_wandb's options: {', '.join(sorted(accepted))}")


def preflight(sweep: "Sweep", options: AgentOptions) -> None:
    """Check once, before any trial is recorded, what would make every training trial fail."""
    from src.sweep_config import fixed_params, to_optuna_space

    check_training_parameters(set(fixed_params(sweep.config)) | set(to_optuna_space(sweep.config)))
    if options.data_dir != DEFAULT_DATA_DIR or Path(options.data_dir).exists():
        from src.data.dataset import scan_dataset

        scan_dataset(options.data_dir)  # DataError for a missing or unusable folder


def training_objective(options: AgentOptions, store: Store, sweep_id: str) -> Objective:
    """The real objective: one ``train_with_wandb`` run per trial, grouped under the sweep."""
    from src.train_with_wandb import train_with_wandb

    models_root = Path(options.models_dir) if options.models_dir else sweep_dir(store, sweep_id) / "trials"

    def objective(params: dict[str, Any], epoch_callback: Callable[[int, float], None], ctx: TrialContext) -> float:
        check_training_parameters(params)
        kwargs = dict(params)
        if "algorithm" in kwargs:
            kwargs["algorithms"] = [kwargs.pop("algorithm")]
        call = dict(run_name=ctx.run_name, group=ctx.sweep_name, tags=["sweep", ctx.sweep_id],
                    data_dir=options.data_dir, models_dir=str(models_root / f"trial-{ctx.number:04d}"),
                    seed=options.seed, wandb_mode=options.wandb_mode, store=str(store.root),
                    epoch_callback=epoch_callback, progress=False)
        call.update(kwargs)  # a swept or fixed `seed` overrides --seed
        results = train_with_wandb(**call)
        summary = results.get("summary", {})
        for key in (ctx.metric, f"best_{ctx.metric}"):
            if key in summary:
                return float(summary[key])
        raise ConfigError(f"training reported no metric {ctx.metric!r}",
                          hint=f"set metric.name to one of {', '.join(sorted(summary))}")

    return objective


def fake_objective(params: dict[str, Any], epoch_callback: Callable[[int, float], None], ctx: TrialContext) -> float:
    """Test-only stand-in for training: a deterministic score from the parameters.

    ``algorithm: self_training`` or ``region: bad`` is the bad region (low values every epoch);
    elsewhere the score grows with ``labeled_ratio`` and the epoch.
    """
    delay = float(os.environ.get("MLOPS_SWEEP_FAKE_SLEEP", "0"))
    bad = params.get("algorithm") == "self_training" or params.get("region") == "bad"
    base = 0.2 if bad else 0.6 + 0.5 * float(params.get("labeled_ratio", 0.2))
    base -= 0.001 * abs(float(params.get("n_neighbors", 10)) - 10)
    epochs = int(params.get("fine_tune_epochs", 3))
    for epoch in range(1, epochs + 1):
        if delay:
            time.sleep(delay)
        epoch_callback(epoch, base + 0.01 * epoch)
    return base + 0.01 * epochs


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

    from src.sweep_config import fixed_params, to_optuna_space

    space, fixed = to_optuna_space(sweep.config), fixed_params(sweep.config)
    metric = sweep.config["metric"]["name"]

    def run_trial(trial: optuna.Trial) -> float:
        params = {**fixed, **{name: _suggest(trial, name, dist) for name, dist in space.items()}}
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

    def __init__(self, max_failures: int):
        self.max_failures = max_failures
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
        raise ConfigError(f"--count must be at least 1, got {count}")
    sweep = open_sweep(sweep_id, storage, store, opts.heartbeat_interval, opts.grace_period)
    if objective is None:
        if os.environ.get(FAKE_ENV) == "1":
            objective = fake_objective
        else:
            preflight(sweep, opts)
            objective = training_objective(opts, sweep.store, sweep.id)
    progress, errors = _AgentProgress(MAX_CONSECUTIVE_FAILURES), []
    callbacks = [progress]
    run_cap = sweep.config.get("run_cap")
    if run_cap:
        callbacks.append(optuna.study.MaxTrialsCallback(run_cap, states=(optuna.trial.TrialState.COMPLETE,
                                                                          optuna.trial.TrialState.PRUNED)))
        if _finished(sweep.study) >= run_cap:
            log.warning("sweep %s already reached run_cap=%d", sweep.id, run_cap)
            return {**sweep_status(sweep), "agent_trials": []}
    if sweep.config["method"] == "grid":
        from src.hpo.status import grid_remaining

        if grid_remaining(sweep) == 0:
            log.info("grid sweep %s is exhausted: every grid point already has a trial", sweep.id)
            return {**sweep_status(sweep), "agent_trials": []}
    if count is None and sweep.config["method"] != "grid" and not run_cap:
        raise ConfigError("--count is required for bayes and random sweeps without run_cap")
    optuna_log, quiet = logging.getLogger("optuna.study._optimize"), _NoFailedTrialLogs()
    if logging.getLogger().getEffectiveLevel() > logging.DEBUG:
        optuna_log.addFilter(quiet)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            sweep.study.optimize(_trial_function(sweep, objective, errors), n_trials=count, callbacks=callbacks,
                                 gc_after_trial=False, catch=(_TrialFailed,))
            optuna.storages.fail_stale_trials(sweep.study)
    finally:
        optuna_log.removeFilter(quiet)
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


# -- CLI ------------------------------------------------------------------------------------
def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="sweep_runner.py",
                                description="Local hyperparameter sweeps on Optuna with W&B's verbs.")
    sub = p.add_subparsers(dest="verb", required=True)
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--store", default=None, help="local store directory (default $MLOPS_STORE or ./.mlops)")
    common.add_argument("--storage", default=None,
                        help="SQLAlchemy URL of a shared sweep database (default: the store's optuna.db)")
    add_common_flags(common)
    c = sub.add_parser("create", parents=[common], help="create a sweep from a W&B sweep YAML; prints its id")
    c.add_argument("config", nargs="?", default="sweep_config.yaml")
    c.add_argument("--name", default=None, help="sweep name (W&B group of its runs; default from the YAML)")
    a = sub.add_parser("agent", parents=[common], help="run trials of a sweep")
    a.add_argument("sweep_id")
    a.add_argument("--count", type=int, default=None, help="number of trials this agent runs")
    a.add_argument("--data-dir", default="DS2GROCERIES")
    a.add_argument("--models-dir", default=None, help="base folder for trial outputs (default: the sweep folder)")
    a.add_argument("--seed", type=int, default=42)
    a.add_argument("--wandb-mode", choices=["online", "offline", "disabled"], default=None)
    a.add_argument("--heartbeat-interval", type=int, default=30, help="seconds between agent heartbeats")
    a.add_argument("--grace-period", type=int, default=120,
                   help="seconds without a heartbeat before a trial counts as dead and is re-queued")
    a.add_argument("--no-summary", action="store_true", help="skip the plots and the sweep-summary run")
    s = sub.add_parser("status", parents=[common], help="show a sweep's trials, state and best config")
    s.add_argument("sweep_id")
    return p


def _command(args: argparse.Namespace) -> int:
    from src.sweep_config import load_sweep_config
    from src.hpo.status import format_status

    if args.verb == "create":
        cfg = load_sweep_config(args.config)
        sweep_id = create_local_sweep(cfg, store=args.store, storage=args.storage, name=args.name)
        if args.json:
            print_json({"sweep_id": sweep_id})
        else:
            print(sweep_id)
            log.info("run an agent with: python src/sweep_runner.py agent %s --count 10", sweep_id)
        return 0
    if args.verb == "agent":
        opts = AgentOptions(data_dir=args.data_dir, models_dir=args.models_dir, wandb_mode=args.wandb_mode,
                            seed=args.seed, heartbeat_interval=args.heartbeat_interval,
                            grace_period=args.grace_period, summary=not args.no_summary)
        status = run_agent(args.sweep_id, args.count, storage=args.storage, store=args.store, options=opts)
    else:
        status = sweep_status(open_sweep(args.sweep_id, args.storage, args.store))
    if args.json:
        print_json(status)
    else:
        print(format_status(status))
        for key, path in status.get("summary", {}).get("plots", {}).items():
            print(f"{key.replace('_', ' ')}: {path}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    return run_cli(build_parser(), argv, _command)


if __name__ == "__main__":
    raise SystemExit(main())
