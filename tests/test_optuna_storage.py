"""``src.hpo.study.study_storage``: the one place that reaches into Optuna for a study's own storage."""

from __future__ import annotations

import optuna
from optuna.trial import TrialState

from src.hpo.study import open_storage, study_storage


def test_the_storage_is_the_one_the_study_reads_through(tmp_path):
    rdb = open_storage(f"sqlite:///{tmp_path}/optuna.db")
    study = optuna.create_study(study_name="s1", storage=rdb)
    study.enqueue_trial({"x": 1.0})
    storage = study_storage(study)
    assert isinstance(storage, optuna.storages.BaseStorage)

    # a claim and an attribute written through it are what the study sees at once (no stale cache)
    study_id = storage.get_study_id_from_name("s1")
    (waiting,) = storage.get_all_trials(study_id, states=(TrialState.WAITING,))
    trial_id = storage.get_trial_id_from_study_id_trial_number(study_id, waiting.number)
    assert storage.set_trial_state_values(trial_id, state=TrialState.RUNNING)
    storage.set_trial_user_attr(trial_id, "agent", "a1")
    (seen,) = study.get_trials(deepcopy=False)
    assert seen.state == TrialState.RUNNING and seen.user_attrs == {"agent": "a1"}
    # and it reaches the database other agents read
    other = optuna.load_study(study_name="s1", storage=f"sqlite:///{tmp_path}/optuna.db")
    assert other.trials[0].state == TrialState.RUNNING
