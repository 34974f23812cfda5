"""The inference monitor: predictions with latency, confidence, accuracy, calibrated drift and alerts.

Every prediction is recorded in the local store (time, image digest, prediction,
confidence, latency, true label, its 1280-d feature for drift); W&B gets the documented
``monitor/*`` metrics every ``log_every`` predictions, and ``finish()`` logs the
prediction distribution, the confidence histogram and a summary.
"""

from __future__ import annotations

import logging
import os
import time
from collections import Counter, deque
from pathlib import Path
from typing import Any

import numpy as np

from src.core.errors import ConfigError, GroceryError
from src.monitoring.settings import DEFAULTS

log = logging.getLogger(__name__)
DRIFT_EXIT_CODE = 6


class DriftDetected(GroceryError):
    exit_code = DRIFT_EXIT_CODE


def _check_window(window: Any) -> None:
    from src.monitoring.drift import MIN_WINDOW

    if isinstance(window, bool) or not isinstance(window, (int, np.integer)) or window < MIN_WINDOW:
        raise ConfigError(f"`window` must be an integer >= {MIN_WINDOW} (drift detection needs at least "
                          f"{MIN_WINDOW} predictions), got {window!r}", params=("window",))


def score_text(score: float | None) -> str:
    """A drift score for people: ``None`` (no feature signal for this model) reads n/a."""
    return "n/a" if score is None else f"{score:.2f}"


def drift_alert(store, session: int | None, tracker, model_ref: str, report: dict[str, Any]) -> None:
    """The one drift alert of batch monitoring and the server: stored in the alert log (a store error is
    logged, the alert still goes on), sent to W&B (``wandb.alert`` online) and logged as a warning."""
    from src.monitoring.records import add_alert

    text = (f"{model_ref}: drift in {', '.join(report['drifted'])} over the last {report['n']} "
            f"predictions (drift score {score_text(report['drift_score'])}, p={report['p_val']:.4f})")
    try:
        add_alert(store, session, "WARN", "Data drift detected", text, report)
    except GroceryError as e:
        log.error("could not store the drift alert: %s", e)
    tracker.alert("Data drift detected", text, level="WARN")
    log.warning(text)


def check_settings(window: Any, alpha: Any, log_every: Any) -> None:
    """Refuse unusable settings before anything is loaded or predicted."""
    _check_window(window)
    if isinstance(alpha, bool) or not isinstance(alpha, (int, float, np.floating)) or not 0 < alpha < 1:
        raise ConfigError(f"`alpha` must be a false-alarm rate in (0, 1), got {alpha!r}", params=("alpha",))
    if isinstance(log_every, bool) or not isinstance(log_every, (int, np.integer)) or log_every < 1:
        raise ConfigError(f"log_every must be an integer >= 1, got {log_every!r}")


class InferenceMonitor:
    """Predictions that are watched: each one is timed, recorded in the local store and
    summarised to W&B (``monitor/*`` every ``log_every`` predictions), and the last ``window``
    predictions are tested for drift against the training reference::

        mon = InferenceMonitor("models/best_model.skops")      # or a registry reference "name:production"
        label, confidence, probs = mon.predict("apple.jpg", true_label="apple")
        summary = mon.finish()                                  # always finish (or abort) a session

    ``model_path``: a model file or a registry reference ``name:alias`` / ``name:vK``;
    ``extractor_path`` defaults to the one beside the model. ``store``: the local store (default
    the project's), ``wandb_mode``: online/offline/disabled (default: as training). ``window``
    (>= 20) predictions are tested for drift with overall false-alarm rate ``alpha`` (in (0, 1));
    both are checked before the model is loaded. ``run_name`` names the W&B run, ``seed`` makes
    the drift test's resampling repeatable. After :meth:`finish` the monitor is closed:
    ``predict`` raises :class:`ConfigError` and another ``finish()`` returns the same summary.
    """

    def __init__(self, model_path: str | os.PathLike, extractor_path: str | os.PathLike | None = None, *,
                 store=None, wandb_mode: str | None = None, window: int = DEFAULTS.window, log_every: int = 50,
                 alpha: float = DEFAULTS.alpha, run_name: str | None = None, seed: int = 0, runtime: str = "auto"):
        from src.inference.predictor import require_reference
        from src.monitoring.records import open_monitor_store, start_session
        from src.registry.api import load_predictor
        from src.tracking import Tracker

        check_settings(window, alpha, log_every)
        self.predictor = load_predictor(model_path, extractor_path, store=store, runtime=runtime)
        require_reference(self.predictor, model_path)
        self.bundle = self.predictor.bundle
        self.model_ref, self.window, self.log_every, self.alpha, self.seed = str(model_path), window, log_every, alpha, seed
        self.store = open_monitor_store(store)
        self.session = start_session(self.store, self.model_ref, self.bundle["_digest"])
        self.tracker = Tracker("monitor", {"model": self.model_ref, "model_digest": self.bundle["_digest"],
                                           "algorithm": self.bundle["algorithm"], "window": window, "alpha": alpha},
                               mode=wandb_mode, name=run_name)
        from src.registry.mirror import use_registered_model

        use_registered_model(self.tracker, self.store, self.bundle["_digest"], self.model_ref)  # lineage in W&B
        self._suite = None
        self._pending: list[tuple] = []
        self.records: list[dict[str, Any]] = []
        self.features: deque[np.ndarray] = deque(maxlen=window)  # drift only ever looks at the last window
        self._t_first: float | None = None  # wall clock: start of the first predict(), end of the last
        self._t_last: float | None = None
        self.last_drift: dict[str, Any] | None = None
        self._drift_at: int | None = None  # len(self.records) when last_drift was computed
        self._finished: dict[str, Any] | None = None

    # -- prediction ----------------------------------------------------------------------
    def predict(self, image, true_label: str | None = None) -> tuple[str, float, np.ndarray]:
        """``(class name, confidence, probabilities)`` for one image, recorded with its latency.

        ``image`` is a file path, a PIL image or a numpy array (HxWx3 uint8 or HxW grayscale), decoded
        as :meth:`Predictor.predict <src.inference.predictor.Predictor.predict>` does; an in-memory image
        is recorded by the digest of its RGB pixels. ``true_label`` (a class name, optional) feeds
        ``monitor/accuracy``. Raises :class:`~src.core.errors.DataError` for an unreadable image.
        """
        from src.core.images import describe_source, is_path, load_image
        from src.core.store import sha256_bytes, sha256_file
        from src.features.extraction import load_batch

        if self._finished is not None:
            raise ConfigError(f"monitoring session {self.session} is finished; predict() after finish() would "
                              "not be recorded", hint="start a new InferenceMonitor")
        names = self.predictor.class_names
        if true_label is not None and (not isinstance(true_label, str) or true_label not in names):
            raise ConfigError(f"true_label {true_label!r} is not one of the model's classes: {', '.join(names)}",
                              hint="pass a class name or None")
        t0 = time.perf_counter()
        if self._t_first is None:
            self._t_first = t0
        pre = self.predictor.extractor.preprocessing
        if is_path(image):
            batch, name = load_batch([Path(image)], pre, _serial), str(image)
            digest = None
        else:
            rgb, name = load_image(image), describe_source(image)
            batch, digest = np.stack([pre(rgb)]), sha256_bytes(rgb.tobytes())
        t1 = time.perf_counter()
        feats = self.predictor.extractor(batch)
        probs = self.predictor.predict_features(feats)[0]
        t2 = time.perf_counter()
        label = self.predictor.class_names[int(probs.argmax())]
        conf = float(probs.max())
        rec = {"image": name, "prediction": label, "confidence": conf, "latency_ms": (t2 - t0) * 1e3,
               "inference_ms": (t2 - t1) * 1e3, "true_label": true_label}
        self.records.append(rec)
        self.features.append(feats[0])
        self._pending.append((self.session, time.time(), name, digest or sha256_file(image), label, conf,
                              rec["latency_ms"], rec["inference_ms"], true_label, feats[0]))
        if len(self.records) % self.log_every == 0:
            self._flush()
            self.tracker.log(self.metrics(with_drift=len(self.records) >= self.window))
        self._t_last = time.perf_counter()
        return label, conf, probs

    def _flush(self) -> None:
        from src.monitoring.records import add_predictions

        add_predictions(self.store, self._pending)
        self._pending = []

    # -- metrics -------------------------------------------------------------------------
    def metrics(self, with_drift: bool = False) -> dict[str, float]:
        """The documented ``monitor/*`` figures over everything predicted so far.

        ``monitor/samples``, ``avg_confidence``, ``avg_inference_time_ms`` (the whole prediction, decode
        included), ``avg_model_time_ms`` (the model call alone), ``throughput_samples_per_sec``; ``monitor/accuracy`` once a prediction had a true label;
        ``monitor/drift_score`` with ``with_drift`` (needs 20 predictions).
        """
        n = len(self.records)
        labeled = [r for r in self.records if r["true_label"] is not None]
        lat = np.array([r["latency_ms"] for r in self.records]) if n else np.zeros(1)
        out = {"monitor/samples": n,
               "monitor/avg_confidence": float(np.mean([r["confidence"] for r in self.records])) if n else 0.0,
               "monitor/avg_inference_time_ms": float(lat.mean()),
               "monitor/avg_model_time_ms": float(np.mean([r["inference_ms"] for r in self.records])) if n else 0.0,
               "monitor/throughput_samples_per_sec": self.throughput()}
        if labeled:
            out["monitor/accuracy"] = float(np.mean([r["prediction"] == r["true_label"] for r in labeled]))
        if with_drift:
            score = self.detect_drift()["drift_score"]
            if score is not None:  # None: the feature signal is unavailable for this model
                out["monitor/drift_score"] = score
        return out

    def throughput(self) -> float:
        """Images per second of wall time, from the start of the first ``predict()`` to the end of the last."""
        n = len(self.records)
        if not n or self._t_first is None or self._t_last is None or self._t_last <= self._t_first:
            return 0.0
        return n / (self._t_last - self._t_first)

    def latency(self) -> dict[str, float]:
        """Percentiles (p50/p95/p99) in ms of the whole prediction and of the model alone (``inference_*``)."""
        lat = np.array([r["latency_ms"] for r in self.records])
        inf = np.array([r["inference_ms"] for r in self.records])
        pct = lambda a, q: float(np.percentile(a, q)) if len(a) else 0.0  # noqa: E731
        return {"p50_ms": pct(lat, 50), "p95_ms": pct(lat, 95), "p99_ms": pct(lat, 99),
                "inference_p50_ms": pct(inf, 50), "inference_p95_ms": pct(inf, 95), "inference_p99_ms": pct(inf, 99)}

    # -- drift ---------------------------------------------------------------------------
    def detect_drift(self, window: int | None = None) -> dict[str, Any]:
        """Drift of the last ``window`` predictions (default and at most the monitor's) against the
        training reference: features, predicted classes and confidences, each tested at a
        Bonferroni share of ``alpha``.

        Returns ``{"is_drift", "drift_score", "p_val", "drifted", "n", ...}``; a drift raises an alert
        (local alert log and W&B). Needs at least 20 predictions, else :class:`ConfigError`.
        """
        from src.monitoring.drift import MIN_WINDOW, DriftSuite

        w = self.window if window is None else window
        _check_window(w)
        w = min(w, self.window)  # only the last `window` features are kept
        if len(self.records) < MIN_WINDOW:
            raise ConfigError(f"drift detection needs at least {MIN_WINDOW} predictions, got {len(self.records)}",
                              hint="predict more images before calling detect_drift()")
        if self._suite is None:
            self._suite = DriftSuite.from_reference(self.bundle["reference"], alpha=self.alpha, seed=self.seed)
        recent = self.records[-w:]
        index = {c: i for i, c in enumerate(self.predictor.class_names)}
        report = self._suite.test(np.stack(list(self.features)[-w:]), [index[r["prediction"]] for r in recent],
                                  [r["confidence"] for r in recent])
        self.last_drift, self._drift_at = report, len(self.records)
        if report["is_drift"]:
            self._alert(report)
        return report

    def _alert(self, report: dict[str, Any]) -> None:
        drift_alert(self.store, self.session, self.tracker, self.model_ref, report)

    # -- end -----------------------------------------------------------------------------
    def _base_summary(self) -> dict[str, Any]:
        return {**self.metrics(), "latency": self.latency(),
                "prediction_distribution": dict(Counter(r["prediction"] for r in self.records)),
                "session": self.session, "model": self.model_ref}

    def finish(self) -> dict[str, Any]:
        """Log the distribution, histogram and summary; close the session. Returns the summary.

        Drift is (re)computed unless the last report covers every prediction made. A second
        call returns the first call's summary and changes nothing.
        """
        from src.monitoring.drift import MIN_WINDOW
        from src.monitoring.records import finish_session

        if self._finished is not None:
            return self._finished
        self._flush()
        names = self.predictor.class_names
        summary = self._base_summary()
        counts = summary["prediction_distribution"]
        if len(self.records) >= MIN_WINDOW:
            fresh = self.last_drift is not None and self._drift_at == len(self.records)
            summary["drift"] = self.last_drift if fresh else self.detect_drift()
            if summary["drift"]["drift_score"] is not None:
                summary["monitor/drift_score"] = summary["drift"]["drift_score"]
        self.tracker.bar("prediction_distribution", names, [counts.get(c, 0) for c in names], "Predicted classes")
        self.tracker.histogram("confidence_histogram", [r["confidence"] for r in self.records])
        self.tracker.log({k: v for k, v in summary.items() if k.startswith("monitor/")})
        self.tracker.summary({k: v for k, v in summary.items() if k.startswith("monitor/")})
        summary["wandb_run"] = self.tracker.run_dir
        finish_session(self.store, self.session, summary, self.tracker.run_id)
        self.tracker.finish()
        self._finished = summary
        return summary

    def abort(self, reason: str, exit_code: int = 1) -> dict[str, Any] | None:
        """Close the session after a failure: no drift test, no alerts, never raises.

        For ``finally``-style cleanup where :meth:`finish` could replace the original error. The W&B run ends
        with ``exit_code`` (failed; 130 after Ctrl-C), never as a finished run with part of the samples.
        """
        if self._finished is not None:
            return self._finished
        summary = None
        try:
            from src.monitoring.records import finish_session

            self._flush()
            summary = {**self._base_summary(), "aborted": reason}
            finish_session(self.store, self.session, summary, self.tracker.run_id)
        except Exception:  # the original error matters, not this one
            log.debug("could not record the aborted session", exc_info=True)
        try:
            self.tracker.finish(exit_code=exit_code)
        except Exception:
            log.debug("could not close the W&B run", exc_info=True)
        self._finished = summary or {"aborted": reason, "session": self.session, "model": self.model_ref}
        return summary


class _Serial:
    """A stand-in thread pool: single images decode fastest on the calling thread."""

    @staticmethod
    def map(fn, items):
        return map(fn, items)


_serial = _Serial()
