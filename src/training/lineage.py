"""What a training run records for lineage in W&B: the dataset version it used, each model it trained.

The graph W&B shows once every run is synced (or online)::

    dataset artifact  ──used by──▶  training run  ──logged──▶  model artifact per algorithm
    (its dataset-version run)                                   ◀── registry runs log the same name
                                                                    and files (same digest: the same
                                                                    W&B version); online also linked
                                                                    into the W&B model registry

The dataset version is created (if new) and mirrored by a ``dataset-version`` run of its own, so the
training run is never the dataset's producer. W&B refuses ``use_artifact`` offline: an offline training
run records its input in its config instead (``dataset_version``, ``dataset_digest``); online it calls
``use_artifact`` with the version's files, which W&B matches by content (local version numbers are not
W&B's). Each model artifact holds the bundle and its extractor under the names the registry uses
(:func:`~src.learning.bundles.artifact_files`), both as the store's read-only blobs: the run's files
move from the staging folder into ``--models-dir`` when training ends, and ``wandb sync`` reads them later.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from src.core.store import Store
from src.data.versioning import dataset_artifact, find_or_create_version
from src.learning.bundles import artifact_files, model_name_for
from src.tracking import Tracker
from src.training.outputs import EXTRACTOR_FILE
from src.training.state import TrainState

ARTIFACT_METRICS = ("val_accuracy", "test_accuracy", "f1_score", "precision", "recall", "unlabeled_accuracy")


def use_dataset(data_dir: str, dataset_name: str, store: Store, tracker: Tracker, scan: dict) -> str:
    """The local version (``name:vN``) whose content matches the dataset, created if none; online the run
    declares it as its input."""
    info = find_or_create_version(data_dir, artifact_name=dataset_name, store=store.root, scan=scan,
                                  wandb_mode=tracker.mode)
    ref = f"{info['name']}:{info['version']}"
    if tracker.mode == "online":
        art = dataset_artifact(info["name"], info["version"], store.root)
        tracker.use_artifact(ref, "dataset", immutable_files=art["files"], metadata=art["metadata"])
    return ref


def model_metadata(s: TrainState, algorithm: str, metrics: dict[str, Any], best: str) -> dict[str, Any]:
    return {"algorithm": algorithm, "best": algorithm == best,
            "metrics": {k: metrics.get(k) for k in ARTIFACT_METRICS},
            "model_digest": metrics["model_digest"], "extractor_digest": s.ext_digest,
            "extractor_precision": s.precision, "dataset": s.dataset_record() | {"name": s.cfg.dataset_name},
            "dataset_version": s.version, "run_id": s.tracker.run_id, "config": s.cfg.tracked()}


def log_models(s: TrainState, per_algo: dict[str, dict], best: str, store: Store) -> None:
    """One ``model`` artifact per trained algorithm, named as the registry names it."""
    if not s.tracker.enabled:
        return
    extractor = store.blob_path(store.put_file(s.models_dir / EXTRACTOR_FILE, s.ext_digest, link=False))
    for algorithm, m in per_algo.items():
        path: Path = s.models_dir / m["model_path"]
        blob = store.blob_path(store.put_file(path, m["model_digest"], link=False))
        s.tracker.log_artifact(model_name_for(algorithm), "model", immutable_files=artifact_files(blob, extractor),
                               metadata=model_metadata(s, algorithm, m, best),
                               description=f"{algorithm} trained on {s.version}")
