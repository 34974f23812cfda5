"""What a training run records for lineage in W&B: the dataset version it used, each model it trained.

The graph W&B shows once every run is synced (or online)::

    dataset NAME:local-vK ──used by──▶ training run ──logged──▶ ALGO-classifier-DATASET   (one per algorithm)
                                                     └─logged──▶ DATASET-feature-extractor:sha-…
    DATASET-feature-extractor ──used by──▶ registry run ──logged──▶ REGISTERED-NAME:local-vN ──linked──▶
    Model Registry REGISTERED-NAME [aliases]                 REGISTERED-NAME ──used by──▶ monitoring run

Each W&B collection holds one lineage, so ``latest`` means the same in W&B and in the local registry: a
training run's models go to ``ALGO-classifier-DATASET`` (``-GROUP`` added for a sweep's trials), never to
the registered name, which only the registry's runs log to. So a sweep trial, or a training on another
dataset, leaves the latest of the model a user registered where it was.

The dataset version is created (if new) and mirrored by a ``dataset-version`` run of its own, so the
training run is never the dataset's producer. W&B refuses ``use_artifact`` offline: an offline training
run records its input in its config (``dataset_version``, ``dataset_digest``) and as a pending edge in
the lineage journal (:mod:`src.tracking.journal`), declared once the runs are synced; online it calls
``use_artifact`` with the version's files, which W&B matches by content. Each model artifact holds the
bundle and its extractor under the names the registry uses (:func:`~src.learning.bundles.artifact_files`),
both as the store's read-only blobs: the run's files move from the staging folder into ``--models-dir``
when training ends, and ``wandb sync`` reads them later.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from src.core.paths import EXTRACTOR_FILE
from src.core.store import Store
from src.data.version_builder import dataset_artifact, find_or_create_version
from src.learning.bundles import artifact_files, model_name_for
from src.tracking import Tracker, in_sweep
from src.tracking.journal import content_alias, extractor_artifact_name, local_alias, record_use
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
    else:
        record_use(store, tracker, f"{info['name']}:{local_alias(info['version'])}", "dataset")
    return ref


def trained_model_name(algorithm: str, dataset: str, group: str | None = None) -> str:
    """The W&B collection of a training run's model: ``label-spreading-classifier-grocery-dataset`` (a sweep's
    trials add their group or sweep id), never a registered name, so training moves no registered ``latest``."""
    from src.core.names import slug

    tail = f"-{slug(group, 100, 'group')}" if group else ""
    return f"{model_name_for(algorithm)}-{dataset}{tail}"


def _group(s: TrainState) -> str | None:
    import os

    if s.cfg.group:
        return s.cfg.group
    return f"sweep-{os.environ['WANDB_SWEEP_ID']}" if in_sweep() else None


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
    dataset = s.cfg.dataset_name or s.version.partition(":")[0]
    s.tracker.log_artifact(extractor_artifact_name(dataset), "model", immutable_files={EXTRACTOR_FILE: extractor},
                           metadata={"extractor_digest": s.ext_digest, "dataset_version": s.version,
                                     "run_id": s.tracker.run_id},
                           aliases=["latest", content_alias(s.ext_digest)],
                           description=f"feature extractor trained on {s.version}")
    for algorithm, m in per_algo.items():
        path: Path = s.models_dir / m["model_path"]
        blob = store.blob_path(store.put_file(path, m["model_digest"], link=False))
        s.tracker.log_artifact(trained_model_name(algorithm, dataset, _group(s)), "model",
                               immutable_files=artifact_files(blob, extractor),
                               metadata=model_metadata(s, algorithm, m, best),
                               description=f"{algorithm} trained on {s.version}")
