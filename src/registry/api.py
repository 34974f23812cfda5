"""The model registry's work: versions, aliases, gated promotion, lineage and digest-checked loading.

The local store is the system of record (SQLite tables in :mod:`src.registry.tables`, model
and extractor files as content-addressed blobs); every registration is mirrored to W&B as
a ``model`` artifact (offline files to sync later; online it is also linked to the W&B
model registry with its aliases) after its stored bytes pass their digest checks; a version W&B
did not get stays pending (:mod:`src.registry.mirror`).
The command line is ``python src/model_registry.py`` (parse and print only).
"""

from __future__ import annotations

import json
import logging
import math
import os
from pathlib import Path
from typing import Any, Iterable, Mapping

from src.core.errors import ConfigError, ModelError, StoreError
from src.core.paths import EXTRACTOR_FILE
from src.core.store import sha256_file, validate_name
from src.learning.bundles import load_model_bundle, model_file_name, model_name_for, resolve_model_path
from src.registry.mirror import (artifact_metadata, mirror_pending, mirror_run, publish_recorded,  # noqa: F401
                                 verified_blob, verified_blobs)
from src.registry.policy import DEFAULT_TOLERANCE
from src.registry.tables import (LATEST, all_versions, get_version, history, insert_version,
                                 is_mirrored, move_alias, open_registry, parse_ref, resolve, validate_alias)

log = logging.getLogger(__name__)

RESULTS_FILE = "training_results.json"
METRIC_ALIASES = {"accuracy": "test_accuracy", "acc": "test_accuracy", "f1": "f1_score"}
UNIT_METRICS = ("test_accuracy", "f1_score", "precision", "recall", "unlabeled_accuracy")
KEY_METRICS = ("test_accuracy", "f1_score", "precision", "recall")


class PromotionRefused(StoreError):
    """A protected alias would move to a worse model; the attempt is in the audit log."""


# -- helpers --------------------------------------------------------------------------------
def normalize_metrics(metrics: Mapping[str, Any] | None) -> dict[str, float]:
    """Canonical metric names (accuracy → test_accuracy, f1 → f1_score), finite floats."""
    if metrics is not None and not isinstance(metrics, Mapping):
        raise ConfigError(f"metrics must be a mapping such as {{'accuracy': 0.9, 'f1': 0.88}}, got {metrics!r}")
    out: dict[str, float] = {}
    for key, value in dict(metrics or {}).items():
        key = METRIC_ALIASES.get(key, key)
        if value is None:
            continue
        try:
            number = float(value)
        except (TypeError, ValueError):
            raise ConfigError(f"metric {key} must be a number, got {value!r}") from None
        if not math.isfinite(number):
            raise ConfigError(f"metric {key} must be finite, got {value!r}")
        if key in UNIT_METRICS and not 0.0 <= number <= 1.0:
            raise ConfigError(f"metric {key} must be in [0, 1], got {number}",
                              hint="pass accuracy as a fraction, e.g. 0.91 not 91")
        out[key] = number
    return out


def _lineage_metadata(bundle: Mapping[str, Any], context: Mapping[str, Any] | None) -> dict[str, Any]:
    meta = {k: bundle.get(k) for k in ("algorithm", "class_names", "config", "seed", "dataset", "run_id",
                                       "code_version", "preprocessing")}
    meta.update({k: v for k, v in dict(context or {}).items() if v is not None})
    return json.loads(json.dumps(meta, default=str))  # JSON-safe (numpy scalars, paths)


# -- Python API -----------------------------------------------------------------------------
def requested_aliases(aliases: Iterable[str] | None) -> list[str]:
    """The aliases to move, validated; ``latest`` is accepted and dropped: it moves by itself (as in W&B)."""
    out = []
    for a in dict.fromkeys(aliases or []):
        if a == LATEST:
            log.debug("alias 'latest' ignored: it moves to every new version by itself")
            continue
        out.append(validate_alias(a))
    return out


def register_model(model_path: str | os.PathLike, model_name: str, metrics: Mapping[str, Any] | None = None,
                   aliases: Iterable[str] | None = None, *, extractor_path: str | os.PathLike | None = None,
                   context: Mapping[str, Any] | None = None, store: Any = None, wandb_mode: str | None = None,
                   tracker: Any = None, raise_on_refusal: bool = True,
                   required_metrics: Iterable[str] = ()) -> dict[str, Any]:
    """Register a model bundle as the next version of ``model_name`` (idempotent by digest).

    ``latest`` moves to a new version automatically (passing it in ``aliases`` is allowed and changes
    nothing); ``aliases`` (e.g. staging, production) move too, production only past the metric gate.
    ``metrics`` may be left out when the bundle records them (training's); where both give a metric and
    they differ, the recorded one is used and a warning says so. ``required_metrics`` (e.g.
    ``("test_accuracy", "f1_score")``) must be known from one or the other. ``context`` adds lineage
    (run_id, dataset, config, seed, code_version) over what the bundle records.
    """

    validate_name(model_name, "model name")
    aliases = requested_aliases(aliases)
    metrics = normalize_metrics(metrics)
    path = resolve_model_path(model_path)  # the guide's models/*.pkl: its .skops sibling, with one notice
    bundle = load_model_bundle(path)
    recorded = normalize_metrics({k: v for k, v in (bundle.get("metrics") or {}).items()  # numbers, as trained
                                  if isinstance(v, (int, float)) and not isinstance(v, bool)})
    # What training measured wins over what the caller claims: the promotion gate compares real numbers.
    claimed = {k: v for k, v in metrics.items() if k in recorded and abs(v - recorded[k]) > 1e-6}
    if claimed:
        log.warning("%s records %s from training; using those, not the given %s", path.name,
                    ", ".join(f"{k} {recorded[k]:.4f}" for k in claimed),
                    ", ".join(f"{k} {v:.4f}" for k, v in claimed.items()))
    metrics = {**metrics, **recorded}
    missing = [k for k in required_metrics if k not in metrics]
    if missing:
        short = [{v: k for k, v in METRIC_ALIASES.items() if k != "acc"}.get(k, k) for k in missing]  # f1, accuracy
        raise ConfigError(f"{path.name} records no {' or '.join(missing)} from training",
                          hint="pass " + " and ".join(f"`{k}`" for k in short), params=short)
    ext = Path(extractor_path) if extractor_path else path.parent / EXTRACTOR_FILE
    if not ext.is_file():
        raise ModelError(f"feature extractor {ext} not found", hint="pass `extractor_path=PATH`, the extractor "
                                                                    "the model was trained with",
                         params=("extractor_path",))
    ext_digest = sha256_file(ext)
    if bundle.get("extractor_digest") and bundle["extractor_digest"] != ext_digest:
        raise ModelError(f"extractor {ext} (sha256 {ext_digest[:12]}) is not the one model {path} was trained "
                         f"with ({str(bundle['extractor_digest'])[:12]})", hint="pass the matching `extractor_path`",
                         params=("extractor_path",))
    st = open_registry(store)
    with mirror_run(tracker, wandb_mode, "register") as t:
        st.put_file(path, bundle["_digest"], link=False, verify_existing=True)
        st.put_file(ext, ext_digest, link=False, verify_existing=True)
        verified_blob(st, bundle["_digest"], "model")  # what the aliases below will point at
        verified_blob(st, ext_digest, "extractor")
        with st.read() as con:  # a version registered again: its metadata stays, so no run is opened for it
            known = con.execute("SELECT 1 FROM registry_versions WHERE name = ? AND digest = ?",
                                (model_name, bundle["_digest"])).fetchone() is not None
        meta = {**_lineage_metadata(bundle, context), "source_path": str(path.resolve()),
                "size_bytes": path.stat().st_size, "wandb_run_id": None if known else t.run_id}
        if claimed:
            meta["claimed_metrics"] = claimed
        with st.transaction() as con:
            version, created = insert_version(con, model_name, bundle["_digest"], ext_digest, metrics, meta)
            events = [move_alias(con, model_name, LATEST, version, reason=f"registered v{version}")] if created else []
            events += [move_alias(con, model_name, a, version, reason=f"registered with --alias {a}")
                       for a in aliases]
            mv = get_version(con, model_name, version)
            pending = not is_mirrored(con, model_name, version)
        log.info("%s %s (digest %s)", "registered" if created else "already registered", mv.ref, mv.digest[:12])
        mirrored = False  # a version committed before a crash or a failed mirror is mirrored now
        if created or pending or any(e["action"] in ("moved", "forced") for e in events):
            mirrored = publish_recorded(t, mv, st)
    result = {**mv.to_dict(), "created": created, "events": events, "mirrored": mirrored,
              "was_pending": pending and not created}
    refused = [e for e in events if e["action"] == "refused"]
    if refused and raise_on_refusal:
        raise PromotionRefused(f"registered {mv.ref} but did not move {refused[0]['alias']}: "
                               f"{refused[0]['details']['refusal']}",
                               hint=f"use `promote {model_name} --to-alias {refused[0]['alias']} "
                                    f"--version v{version} --force --reason ...` to override")
    return result


def register_all(models_dir: str | os.PathLike = "models", aliases: Iterable[str] | None = None, *,
                 store: Any = None, wandb_mode: str | None = None) -> list[dict[str, Any]]:
    """Register every trained model in ``models_dir`` with its metrics from training_results.json."""
    aliases = requested_aliases(aliases)  # before any model is registered
    d = Path(models_dir)
    results_path = d / RESULTS_FILE
    if not results_path.is_file():
        raise ModelError(f"no {RESULTS_FILE} in {d}", hint="train first: python src/train_with_wandb.py")
    try:
        results = json.loads(results_path.read_text())
        algorithms = results["algorithms"]
    except (json.JSONDecodeError, KeyError, TypeError) as e:
        raise ModelError(f"{results_path} is not a training results file ({e})") from e
    if not isinstance(algorithms, dict) or not all(isinstance(v, dict) for v in algorithms.values()) \
            or not all(isinstance(results.get(k) or {}, dict) for k in ("run", "extractor")):
        raise ModelError(f"{results_path} is not a training results file (unexpected structure)",
                         hint="pass the models folder written by train_with_wandb")
    if not algorithms:
        raise ModelError(f"{results_path} lists no trained models", hint="train first")
    context = {"run_id": (results.get("run") or {}).get("id"), "dataset": results.get("dataset"),
               "config": results.get("config"), "seed": results.get("seed"),
               "code_version": results.get("code_version")}
    ext = d / ((results.get("extractor") or {}).get("path") or EXTRACTOR_FILE)
    out = []
    with mirror_run(None, wandb_mode, "register-all") as t:
        for algo, info in algorithms.items():
            model_path = d / (info.get("model_path") or model_file_name(algo))
            if info.get("model_digest"):
                from src.core.store import sha256_file

                if model_path.is_file() and sha256_file(model_path) != info["model_digest"]:
                    raise ModelError(f"{model_path} does not match the digest in {results_path}",
                                     hint="the file was modified or swapped; retrain")
            metrics = {k: v for k, v in info.items()  # numbers only: paths and digests are not metrics
                       if isinstance(v, (int, float)) and not isinstance(v, bool)}
            out.append(register_model(model_path, model_name_for(algo), metrics, aliases, extractor_path=ext,
                                      context=context, store=store, tracker=t, raise_on_refusal=False))
    refused = [(r, e) for r in out for e in r["events"] if e["action"] == "refused"]
    if refused:  # every model is registered; the refused alias moves are reported together
        raise PromotionRefused(f"registered all {len(out)} models but did not move "
                               + "; ".join(f"{r['name']}:{e['alias']} to {e['to']} ({e['details']['refusal']})"
                                           for r, e in refused),
                               hint="use `promote NAME --to-alias ALIAS --version vK --force --reason ...` "
                                    "to override")
    return out


def list_models(name: str | None = None, *, store: Any = None) -> list[dict[str, Any]]:
    """Every registered name with its versions, aliases and key metrics."""

    st = open_registry(store)
    with st.read() as con:
        versions = all_versions(con, name)
    if name and not versions:
        raise StoreError(f"no model named {name!r} in the registry", hint="see `list` without a name")
    out: dict[str, dict[str, Any]] = {}
    for mv in versions:
        entry = out.setdefault(mv.name, {"name": mv.name, "aliases": {}, "versions": []})
        for a in mv.aliases:
            entry["aliases"][a] = f"v{mv.version}"
        entry["versions"].append({"version": f"v{mv.version}", "digest": mv.digest, "aliases": sorted(mv.aliases),
                                  "created_at": mv.to_dict(False)["created_at"],
                                  "metrics": {k: mv.metrics[k] for k in KEY_METRICS if k in mv.metrics}})
    return list(out.values())


def get_model_version(ref: str, *, store: Any = None):
    """The :class:`~src.registry.tables.ModelVersion` for ``NAME[:alias|:vK]`` (default latest)."""

    name, tag = parse_ref(ref)
    st = open_registry(store)
    with st.read() as con:
        return resolve(con, name, tag)


def compare_models(refs: Iterable[str], *, store: Any = None) -> dict[str, Any]:
    """Metrics side by side; ``best`` names the winner per metric. A lone bare NAME compares all its versions."""

    refs = list(refs)
    if not refs:
        raise ConfigError("compare needs at least one NAME[:alias|:vK]")
    st = open_registry(store)
    with st.read() as con:
        if len(refs) == 1 and parse_ref(refs[0])[1] is None:
            rows = [mv for mv in all_versions(con, parse_ref(refs[0])[0])] or [resolve(con, refs[0])]
        else:
            rows = [resolve(con, *parse_ref(r)) for r in refs]
    metrics = [k for k in KEY_METRICS if any(k in mv.metrics for mv in rows)]
    best: dict[str, list[str]] = {}  # every ref that reaches the top value (ties share the mark)
    for k in metrics:
        top = max(mv.metrics[k] for mv in rows if k in mv.metrics)
        best[k] = [mv.ref for mv in rows if mv.metrics.get(k) == top]
    return {"metrics": metrics, "best": best,
            "models": [{"ref": mv.ref, "aliases": sorted(mv.aliases), "metrics": mv.metrics,
                        "best": [k for k in metrics if mv.ref in best[k]]} for mv in rows]}


def promote_model(name: str, to_alias: str, version: str | int | None = None, *, force: bool = False,
                  reason: str | None = None, tolerance: float | None = None, store: Any = None,
                  wandb_mode: str | None = None) -> dict[str, Any]:
    """Move ``name:to_alias`` to ``version`` (default: latest); protected aliases are metric-gated."""

    validate_alias(to_alias)
    if isinstance(version, str) and not version.strip():
        raise ConfigError("`version` is empty", hint="pass v3 or an alias, or leave `version` out for latest",
                          params=("version",))
    st = open_registry(store)
    tag = f"v{version}" if isinstance(version, int) else version
    with st.transaction() as con:
        target = resolve(con, name, tag)
        verified_blobs(st, target)  # before any move, --force or not: never onto tampered bytes
        event = move_alias(con, name, to_alias, target.version, reason=reason, force=force,
                           tolerance=DEFAULT_TOLERANCE if tolerance is None else tolerance)
    if event["action"] == "refused":
        raise PromotionRefused(f"refused to move {name}:{to_alias} to {event['to']}: {event['details']['refusal']}",
                               hint="pass `force=True` with `reason='...'` to override; the audit log keeps it",
                               params=("force", "reason"))
    if event["action"] in ("moved", "forced"):
        target.aliases = sorted(set(target.aliases) | {to_alias})
        with mirror_run(None, wandb_mode, "promote") as t:
            publish_recorded(t, target, st)
    return event


def model_history(name: str, *, store: Any = None) -> list[dict[str, Any]]:
    """The audit log of every alias move for ``name`` (moved, forced and refused), oldest first."""

    st = open_registry(store)
    with st.read() as con:
        resolve(con, name)  # unknown names are an error, not an empty log
        return history(con, name)


def model_lineage(ref: str, *, store: Any = None) -> dict[str, Any]:
    """The chain model → training run → dataset version → extractor for ``NAME:alias``."""
    st_mv = get_model_version(ref, store=store)
    m = st_mv.metadata
    dataset = m.get("dataset") or {}
    return {"model": {k: v for k, v in st_mv.to_dict(False).items()},
            "run": {"id": m.get("run_id"), "code_version": m.get("code_version"), "seed": m.get("seed"),
                    "config": m.get("config"), "registered_by": m.get("wandb_run_id")},
            "dataset": {"version": dataset.get("version"), "digest": dataset.get("digest")},
            "extractor": {"digest": st_mv.extractor_digest}}


def load_registered_bundle(name: str, alias: str = "production", *, store: Any = None) -> dict[str, Any]:
    """The model bundle of ``name:alias``, digest- and type-checked before it is built."""

    mv = get_model_version(f"{name}:{alias}", store=store)
    model, _ = verified_blobs(open_registry(store), mv)
    return load_model_bundle(model, mv.digest)


def load_model_from_registry(name: str, alias: str = "production", *, store: Any = None, runtime: str = "auto"):
    """A ready :class:`~src.predictor.Predictor` for ``name:alias`` (model + its extractor).

    Both stored files are checked against their recorded digests before anything is built.
    """

    mv = get_model_version(f"{name}:{alias}", store=store)
    st = open_registry(store)
    model, extractor = verified_blobs(st, mv)
    from src.inference.predictor import Predictor

    return Predictor.load(model, extractor, model_digest=mv.digest, extractor_digest=mv.extractor_digest,
                          store=st, runtime=runtime)


def is_registry_ref(model: str | os.PathLike) -> bool:
    """``NAME:ALIAS`` / ``NAME:vK`` rather than a file: no such path, a colon and no slash."""
    text = str(model)
    return not Path(text).exists() and ":" in text and "/" not in text


def load_predictor(model: str | os.PathLike, extractor_path: str | os.PathLike | None = None, store=None,
                   runtime: str = "auto"):
    """A :class:`~src.predictor.Predictor` for a model file or a registry reference ``name:alias`` / ``name:vK``
    (:func:`is_registry_ref`); ``runtime`` ``auto`` follows the model's extractor precision (see
    :meth:`Predictor.load <src.inference.predictor.Predictor.load>`)."""
    if is_registry_ref(model):
        name, alias = str(model).split(":", 1)
        return load_model_from_registry(name, alias, store=store, runtime=runtime)
    from src.inference.predictor import Predictor

    return Predictor.load(model, extractor_path, store=store, runtime=runtime)
