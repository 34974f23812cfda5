"""Claiming queued trials, re-queueing failed grid points, heartbeats: how agents share a sweep.

A grid sweep's points are queued at ``create`` (:func:`src.hpo.study.queue_grid`); each agent
claims the oldest WAITING trial atomically in the database, so no point runs twice, and a failed
point goes back into the queue until it failed ``MAX_RETRIES + 1`` times.
"""

from __future__ import annotations

import contextlib
import logging
import threading

from src.hpo.study import MAX_RETRIES, Sweep

log = logging.getLogger(__name__)


def claim_waiting_trial(sweep: Sweep) -> int | None:
    """Move the oldest WAITING trial to RUNNING; None when none is left.

    The storage reads the trial ``FOR UPDATE`` (PostgreSQL) or inside ``BEGIN IMMEDIATE`` (SQLite,
    see :func:`src.hpo.study.open_storage`), so of two agents claiming one trial only one gets it.
    """
    from optuna.exceptions import UpdateFinishedTrialError
    from optuna.trial import TrialState

    storage = sweep.storage
    study_id = storage.get_study_id_from_name(sweep.id)
    for t in storage.get_all_trials(study_id, deepcopy=False, states=(TrialState.WAITING,)):
        trial_id = storage.get_trial_id_from_study_id_trial_number(study_id, t.number)
        try:
            if storage.set_trial_state_values(trial_id, state=TrialState.RUNNING):
                return trial_id
        except UpdateFinishedTrialError:  # another agent claimed and finished it meanwhile
            continue
    return None


def requeue_failed(sweep: Sweep, trial_id: int) -> bool:
    """Queue a failed grid point again unless it already had ``MAX_RETRIES`` retries.

    The retry carries Optuna's ``failed_trial``/``retry_history`` system attributes, as a re-queued
    dead agent's trial does, so both kinds of failure share one retry budget per point.
    """
    import optuna

    t = sweep.storage.get_trial(trial_id)
    history = [*t.system_attrs.get("retry_history", []), t.number]
    if len(history) > MAX_RETRIES:
        log.warning("trial %d failed %d times; its grid point is given up", t.number, len(history))
        return False
    attrs = {**t.system_attrs, "failed_trial": history[0], "retry_history": history}
    sweep.study.add_trial(optuna.create_trial(state=optuna.trial.TrialState.WAITING, params=t.params,
                                              distributions=t.distributions, system_attrs=attrs))
    log.info("trial %d will run again (retry %d of %d)", t.number, len(history), MAX_RETRIES)
    return True


@contextlib.contextmanager
def heartbeat(storage, trial_id: int, interval: int):
    """Record the trial's heartbeat every ``interval`` seconds while it runs (what Optuna's optimize does)."""
    if not interval:
        yield
        return
    stop = threading.Event()

    def beat() -> None:
        while not stop.wait(interval):
            storage.record_heartbeat(trial_id)

    storage.record_heartbeat(trial_id)
    thread = threading.Thread(target=beat, name=f"heartbeat-{trial_id}", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()
