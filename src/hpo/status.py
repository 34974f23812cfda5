"""Sweep status, summary plots and the sweep-summary W&B run."""

from __future__ import annotations

import json
import logging
import math
import warnings
from pathlib import Path
from typing import Any, Mapping

from src.hpo.study import MAX_RETRIES, Sweep, redact, sweep_dir

log = logging.getLogger(__name__)
TRIALS_TABLE = "sweep/trials_table"  # the trial count is the summary's `sweep/trial_count`


def sweep_status(sweep: Sweep) -> dict[str, Any]:
    """Trials, state, metric and best config of a sweep (W&B's sweep page, as a dict)."""
    from optuna.trial import TrialState

    from src.hpo.optuna_space import decode_params, fixed_params

    def values(t) -> dict[str, Any]:  # what training received (Optuna records W&B's quantile for some)
        return decode_params(sweep.config, _params(t))

    trials = sweep.study.get_trials(deepcopy=False)
    counts = {s.name: 0 for s in TrialState}
    for t in trials:
        counts[t.state.name] += 1
    complete = [t for t in trials if t.state == TrialState.COMPLETE]
    best = None
    if complete:
        bt = sweep.study.best_trial
        # the fixed `value:` parameters too, so the best config re-runs as it ran
        best = {"number": bt.number, "value": bt.value, "params": {**fixed_params(sweep.config), **values(bt)},
                "run_name": bt.user_attrs.get("run_name")}
    run_cap = sweep.config.get("run_cap")
    grid = grid_progress(sweep, trials) if sweep.config["method"] == "grid" else None
    if grid and "grid_points" not in sweep.study.user_attrs:
        state = "INCOMPLETE"  # never all queued: agents refuse it (src.hpo.agent.run_agent)
    elif counts["RUNNING"]:
        state = "RUNNING"
    elif (run_cap and counts["COMPLETE"] + counts["PRUNED"] >= run_cap) or (grid and grid["remaining"] == 0):
        state = "FINISHED"
    else:  # queued trials wait for an agent
        state = "IDLE" if any(t.state != TrialState.WAITING for t in trials) else "PENDING"
    return {
        "sweep_id": sweep.id, "name": sweep.name, "display_name": sweep.display_name, "state": state, "method": sweep.config["method"],
        "metric": {"name": sweep.config["metric"]["name"], "goal": sweep.config["metric"].get("goal", "minimize")},
        "storage": redact(sweep.storage_url), "counts": {k: v for k, v in counts.items() if v}, "best": best,
        "grid": grid,
        "trials": [{"number": t.number, "state": t.state.name, "value": t.value, **_pruned(t), "params": values(t),
                    "epochs_reported": len(t.intermediate_values), "error": t.user_attrs.get("error"),
                    "retry_of": t.system_attrs.get("failed_trial")} for t in trials],
    }


def _pruned(trial) -> dict[str, Any]:
    """A pruned trial's ``value`` is its last reported epoch score (Optuna's rule), not a final score:
    ``pruned_at`` names that epoch and ``value_is_intermediate`` says so."""
    from optuna.trial import TrialState

    steps = trial.intermediate_values
    pruned = trial.state == TrialState.PRUNED and trial.value is not None and bool(steps)
    return {"value_is_intermediate": pruned, "pruned_at": max(steps) if pruned else None}


def format_value(t: Mapping[str, Any]) -> str:
    """A trial's value as ``status`` prints it: ``0.7300 (pruned at epoch 2)`` for a pruned one."""
    if t.get("value") is None:
        return "-"
    text = f"{t['value']:.4f}"
    return f"{text} (pruned at epoch {t['pruned_at']})" if t.get("value_is_intermediate") else text


def _params(trial) -> dict[str, Any]:
    """A trial's parameters; a queued trial has none yet, only the values it was queued with."""
    return trial.params or dict(trial.system_attrs.get("fixed_params", {}))


def grid_progress(sweep: Sweep, trials: list | None = None) -> dict[str, Any]:
    """A grid sweep's points: done (COMPLETE/PRUNED), failed (every attempt, ``MAX_RETRIES`` + 1,
    failed), remaining (queued, running or awaiting a retry), and the failed points' parameters."""
    from optuna.trial import TrialState

    from src.hpo.space import grid_space

    grid = grid_space(sweep.config)
    names = sorted(grid)
    if trials is None:
        trials = sweep.study.get_trials(deepcopy=False)
    done, active, exhausted = set(), set(), set()
    for t in trials:
        params = _params(t)
        if not set(names) <= set(params):
            continue
        point = tuple(params[n] for n in names)
        if t.state in (TrialState.COMPLETE, TrialState.PRUNED):
            done.add(point)
        elif t.state in (TrialState.RUNNING, TrialState.WAITING):
            active.add(point)
        elif t.state == TrialState.FAIL and len(t.system_attrs.get("retry_history", [])) >= MAX_RETRIES:
            exhausted.add(point)
    failed = exhausted - done - active
    total = math.prod(len(grid[n]) for n in names)
    return {"points": total, "done": len(done), "failed": len(failed), "remaining": total - len(done) - len(failed),
            "failed_points": [dict(zip(names, p)) for p in sorted(failed, key=repr)]}


def summarize_sweep(sweep: Sweep, wandb_mode: str | None = None) -> dict[str, Any]:
    """Save optimisation-history and parameter-importance PNGs and log them to a sweep-summary run."""
    from src.tracking import Tracker

    status = sweep_status(sweep)
    out = sweep_dir(sweep.store, sweep.id)
    out.mkdir(parents=True, exist_ok=True)
    plots = _save_plots(sweep.study, out)
    (out / "status.json").write_text(json.dumps(status, indent=2, default=str), encoding="utf-8")
    with Tracker("sweep-summary", {"sweep_id": sweep.id, "sweep_config": sweep.config}, mode=wandb_mode,
                 name=f"{sweep.name}-summary", group=sweep.name, tags=["sweep", sweep.id]) as tracker:
        best = status["best"] or {}
        tracker.summary({"sweep/trial_count": len(status["trials"]),
                         **{f"sweep/{k.lower()}": v for k, v in status["counts"].items()},
                         "sweep/best_value": best.get("value"), "sweep/best_trial": best.get("number"),
                         **{f"best/{k}": v for k, v in best.get("params", {}).items()}})
        # the table has its own key: a summary value under the same key would be overwritten by it
        tracker.table(TRIALS_TABLE, ["number", "state", "value", "pruned_at", "params"],
                      [[t["number"], t["state"], t["value"], t["pruned_at"], json.dumps(t["params"])]
                       for t in status["trials"]])
        for key, path in plots.items():
            tracker.image(f"sweep/{key}", path)
    return {"folder": str(out), "plots": {k: str(v) for k, v in plots.items()}}


def _save_plots(study, out: Path) -> dict[str, Path]:
    """Optimisation history and (with two or more complete trials) parameter importances as PNGs.

    Drawn on :class:`~matplotlib.figure.Figure` objects with the Agg canvas, never through pyplot:
    the caller's matplotlib backend and figure list stay as they were.
    """
    from optuna.trial import TrialState

    complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    if not complete:
        return {}
    plots: dict[str, Path] = {}
    makers = {"optimization_history": _history_figure}
    if len(complete) >= 2:
        makers["param_importances"] = _importance_figure
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for key, make in makers.items():
            try:
                fig = make(study, complete)
                fig.tight_layout()
                fig.savefig(out / f"{key}.png", dpi=100)
                plots[key] = out / f"{key}.png"
            except Exception as e:  # noqa: BLE001 - importance fails on degenerate sweeps; the plot is optional
                log.warning("could not plot %s: %s", key.replace("_", " "), e)
    return plots


def _figure():
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(8, 5))
    FigureCanvasAgg(fig)
    return fig, fig.add_subplot()


def _history_figure(study, complete: list):
    from optuna.study import StudyDirection

    trials = sorted(complete, key=lambda t: t.number)
    numbers, values = [t.number for t in trials], [t.value for t in trials]
    pick = max if study.direction == StudyDirection.MAXIMIZE else min
    best, running = [], None
    for v in values:
        running = v if running is None else pick(running, v)
        best.append(running)
    fig, ax = _figure()
    ax.scatter(numbers, values, label="objective value", color="tab:blue")
    ax.step(numbers, best, where="post", label="best value", color="tab:red")
    ax.set(title="Optimization history", xlabel="trial", ylabel="objective value")
    ax.legend()
    ax.grid(alpha=0.3)
    return fig


def _importance_figure(study, complete: list):
    from optuna.importance import get_param_importances

    importances = get_param_importances(study)
    if not importances:
        raise ValueError("no parameter varies across the complete trials")
    names = list(importances)[::-1]  # the most important on top
    fig, ax = _figure()
    ax.barh(names, [importances[n] for n in names], color="tab:blue")
    ax.set(title="Hyperparameter importances", xlabel="importance for the objective value")
    ax.grid(axis="x", alpha=0.3)
    return fig


def format_status(status: Mapping[str, Any]) -> str:
    """The status as the text ``status`` and ``agent`` print."""
    lines = []
    m = status["metric"]
    counts = ", ".join(f"{v} {k.lower()}" for k, v in status["counts"].items()) or "no trials"
    name = status["name"]
    if status.get("display_name") and not name.startswith(f"{status['display_name']}-"):
        name = f"{name}, {status['display_name']!r}"
    lines.append(f"sweep {status['sweep_id']} ({name}): {status['state']}, {status['method']}, "
                 f"{m['goal']} {m['name']}; {counts}")
    for t in status["trials"]:
        params = json.dumps(t["params"], sort_keys=True)
        lines.append(f"  #{t['number']:<3} {t['state']:<8} {format_value(t):>8}  {params}")
    grid = status.get("grid")
    if status["state"] == "INCOMPLETE":
        lines.append("grid incomplete: its points were never all queued (created before points were queued at "
                     "create, or by a killed create); agents refuse it: create the sweep again")
    elif grid:
        failed = f", {grid['failed']} failed after {MAX_RETRIES + 1} attempts" if grid["failed"] else ""
        lines.append(f"grid: {grid['points']} points, {grid['done']} done{failed}, {grid['remaining']} to run")
        for point in grid["failed_points"]:
            lines.append(f"  failed point: {json.dumps(point, sort_keys=True)}")
    if status["best"]:
        b = status["best"]
        lines.append(f"best: trial #{b['number']} {m['name']}={b['value']:.4f} {json.dumps(b['params'], sort_keys=True)}")
    return "\n".join(lines)
