"""Monitoring for a long-running server: the batch monitor's records, off the request path.

A request thread only appends to memory and a queue (:meth:`LiveMonitor.record`). A writer
thread stores the rows exactly as batch monitoring does (one ``monitor_predictions`` row per
prediction, same columns) in batches of ``flush_every`` rows or every ``flush_ms``; a
worker thread tests drift over the sliding window (the batch monitor's :class:`DriftSuite`),
raises alerts (local log; ``wandb.alert`` online) and logs the ``monitor/*`` figures to W&B
every ``log_every_s`` seconds. Each served model version gets its own monitoring session.

The records waiting for the store are bounded (:class:`src.monitoring.writer.RecordWriter`): past
``max_pending`` of them, :meth:`LiveMonitor.admit` raises :class:`Overloaded` and the server answers
503 rather than hold more in memory or answer predictions it cannot record; :meth:`LiveMonitor.close`
gives a failing store ``close_timeout_s`` and reports how many records could not be stored.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter, OrderedDict, deque
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from src.core.errors import ConfigError, GroceryError
from src.core.limits import LIMITS
from src.monitoring.settings import DEFAULTS
from src.monitoring.writer import Overloaded, RecordWriter

__all__ = ["LiveMonitor", "Overloaded", "UnknownPrediction", "REQUEST_PREFIX"]
from src.monitoring.monitor import check_settings, drift_alert

log = logging.getLogger(__name__)
REQUEST_PREFIX = "request:"  # the ``image`` column of a served prediction: request:<prediction_id>
ALERT_REPEAT_S = 600.0  # while drift persists, repeat the alert at most this often


class UnknownPrediction(GroceryError):
    exit_code = 2




@dataclass
class _Session:
    """One served model version's monitoring session and its sliding window."""

    id: int
    model: str
    digest: str
    class_names: list[str]
    reference: dict
    window: int
    features: deque = field(init=False)
    preds: deque = field(init=False)
    confs: deque = field(init=False)
    latencies: deque = field(init=False)
    counts: Counter = field(default_factory=Counter)
    n: int = 0
    conf_sum: float = 0.0
    inference_sum: float = 0.0  # the model call alone (monitor/avg_model_time_ms)
    latency_sum: float = 0.0  # the whole prediction, decode included (monitor/avg_inference_time_ms)
    labeled: int = 0
    correct: int = 0
    suite: Any = None
    last_drift: dict | None = None
    drift_at: int = 0
    tested_at: float = 0.0
    alerted_at: float = 0.0

    def __post_init__(self):
        self.features, self.preds = deque(maxlen=self.window), deque(maxlen=self.window)
        self.confs, self.latencies = deque(maxlen=self.window), deque(maxlen=10_000)


class LiveMonitor:
    """Thread-safe monitoring of served predictions; :meth:`close` flushes everything."""

    def __init__(self, store=None, wandb_mode: str | None = None, *, window: int = DEFAULTS.window,
                 alpha: float = DEFAULTS.alpha,
                 flush_every: int = 64, flush_ms: float = 200.0, drift_every: int = 50, drift_min_s: float = 5.0,
                 log_every_s: float = 30.0, run_name: str | None = None, seed: int = 0, config: dict | None = None,
                 max_pending: int = LIMITS.max_pending_records, close_timeout_s: float = LIMITS.shutdown_timeout_s):
        from src.monitoring.records import open_monitor_store
        from src.tracking import Tracker

        check_settings(window, alpha, 1)
        if flush_every < 1 or flush_ms <= 0 or drift_every < 1 or log_every_s <= 0 or max_pending < 1 \
                or close_timeout_s <= 0:
            raise ConfigError("flush_every, flush_ms, drift_every, log_every_s, max_pending and close_timeout_s "
                              "must be positive")
        self.store = open_monitor_store(store)
        self.window, self.alpha, self.seed = window, alpha, seed
        self.drift_every, self.drift_min_s = drift_every, drift_min_s
        self.log_every_s = log_every_s
        self.tracker = Tracker("monitor", {"window": window, "alpha": alpha, "served": True, **(config or {})},
                               mode=wandb_mode, name=run_name)
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._session: _Session | None = None
        self._recent: OrderedDict[str, list] = OrderedDict()  # prediction id -> [session, prediction, truth]
        self._max_recent = 100_000
        self.feedback_n = 0
        self.feedback_correct = 0
        self.alerts = 0
        self._t_first: float | None = None
        self._t_last: float | None = None
        self.records = RecordWriter(self.store, flush_every=flush_every, flush_s=flush_ms / 1e3,
                                    max_pending=max_pending, close_timeout_s=close_timeout_s,
                                    run_id=lambda: self.tracker.run_id)
        self._worker = threading.Thread(target=self._work_loop, name="monitor-drift", daemon=True)
        self._worker.start()

    @property
    def written(self) -> int:
        return self.records.written

    @property
    def write_errors(self) -> int:
        return self.records.write_errors

    def admit(self) -> None:
        """Raise :class:`Overloaded` while too many records wait for the store (the caller sheds load)."""
        self.records.admit()

    # -- sessions ------------------------------------------------------------------------
    def start_model(self, model: str, bundle: dict) -> int:
        """Open a session for a newly served model version (closing the previous one)."""
        from src.monitoring.records import start_session

        session = _Session(start_session(self.store, model, bundle["_digest"]), model, bundle["_digest"],
                           list(bundle["class_names"]), bundle.get("reference") or {}, self.window)
        with self._lock:
            old, self._session = self._session, session
        if old is not None:
            self.records.finish(old.id, self._summary(old))
        return session.id

    # -- the request path: memory and a queue only ---------------------------------------
    def record(self, prediction_id: str, session: int, sha256: str, label: str, confidence: float,
               latency_ms: float, inference_ms: float, feature: np.ndarray) -> None:
        now = time.time()
        with self._lock:
            s = self._session
            if s is not None and s.id == session:  # a request finishing on the previous version: stored only
                s.n += 1
                s.conf_sum += confidence
                s.inference_sum += inference_ms
                s.latency_sum += latency_ms
                s.counts[label] += 1
                s.features.append(feature)
                s.preds.append(s.class_names.index(label))
                s.confs.append(confidence)
                s.latencies.append(latency_ms)
            self._recent[prediction_id] = [session, label, None]
            if len(self._recent) > self._max_recent:
                self._recent.popitem(last=False)
            t = time.perf_counter()
            self._t_first = self._t_first or t
            self._t_last = t
        self.records.row((session, now, REQUEST_PREFIX + prediction_id, sha256, label, confidence, latency_ms,
                          inference_ms, None, feature))

    def feedback(self, prediction_id: str, label: str) -> dict[str, Any]:
        """The true label of an earlier prediction; raises :class:`UnknownPrediction` for an unknown id."""
        from src.monitoring.records import find_prediction

        with self._lock:
            entry = self._recent.get(prediction_id)
            names = self._session.class_names if self._session else []
        if entry is None:  # older than memory, or from a previous server run
            row = find_prediction(self.store, REQUEST_PREFIX + prediction_id)
            if row is None:
                raise UnknownPrediction(f"unknown prediction_id {prediction_id!r}")
            entry = [row["session"], row["prediction"], row["true_label"]]
        if label not in names:
            raise ConfigError(f"label {label!r} is not one of the model's classes: {', '.join(names)}")
        with self._lock:
            before = entry[2]
            if before is not None:  # a correction replaces the earlier truth
                self.feedback_n -= 1
                self.feedback_correct -= before == entry[1]
            entry[2] = label
            self.feedback_n += 1
            self.feedback_correct += label == entry[1]
            s = self._session
            if s is not None and s.id == entry[0]:
                s.labeled += before is None
                s.correct += (label == entry[1]) - (before is not None and before == entry[1])
        self.records.feedback((REQUEST_PREFIX + prediction_id, time.time(), label))
        return {"prediction_id": prediction_id, "prediction": entry[1], "label": label, "correct": label == entry[1]}

    # -- figures -------------------------------------------------------------------------
    def accuracy(self) -> float | None:
        with self._lock:
            return self.feedback_correct / self.feedback_n if self.feedback_n else None

    def snapshot(self) -> dict[str, Any]:
        """Live figures for /metrics and /health (cheap: no drift test here)."""
        with self._lock:
            s = self._session
            return {"session": s.id if s else None, "samples": s.n if s else 0,
                    "window_confidence": float(np.mean(s.confs)) if s and s.confs else None,
                    "drift": s.last_drift if s else None, "pending": self.records.pending,
                    "written": self.records.written, "write_errors": self.records.write_errors,
                    "store_error": self.records.store_error, "alerts": self.alerts,
                    "accuracy": self.feedback_correct / self.feedback_n if self.feedback_n else None,
                    "feedback": self.feedback_n}

    def _metrics(self, s: _Session) -> dict[str, float]:
        out = {"monitor/samples": s.n, "monitor/avg_confidence": s.conf_sum / s.n if s.n else 0.0,
               "monitor/avg_inference_time_ms": s.latency_sum / s.n if s.n else 0.0,
               "monitor/avg_model_time_ms": s.inference_sum / s.n if s.n else 0.0}
        if self._t_first is not None and self._t_last and self._t_last > self._t_first:
            out["monitor/throughput_samples_per_sec"] = s.n / (self._t_last - self._t_first)
        if s.labeled:
            out["monitor/accuracy"] = s.correct / s.labeled
        if s.last_drift and s.last_drift["drift_score"] is not None:
            out["monitor/drift_score"] = s.last_drift["drift_score"]
        return out

    def _summary(self, s: _Session) -> dict[str, Any]:
        with self._lock:
            lat = np.array(s.latencies) if s.latencies else np.zeros(1)
            summary = {**self._metrics(s), "prediction_distribution": dict(s.counts), "session": s.id,
                       "model": s.model, "served": True,
                       "latency": {f"p{q}_ms": float(np.percentile(lat, q)) for q in (50, 95, 99)}}
        if s.last_drift:
            summary["drift"] = s.last_drift
        return summary

    # -- background threads --------------------------------------------------------------
    def _work_loop(self) -> None:
        import os

        try:  # Linux: a thread id lowers this thread alone, so requests get the CPU before drift tests
            os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), 10)
        except (AttributeError, OSError):
            pass
        last_log = time.monotonic()
        while not self._stop.wait(0.25):
            try:
                self.check_drift()
                if time.monotonic() - last_log >= self.log_every_s:
                    last_log = time.monotonic()
                    self._log_wandb()
            except Exception as e:  # noqa: BLE001 — monitoring must never take the server down
                if isinstance(e, GroceryError):
                    log.error("background monitoring failed: %s", e)
                else:
                    log.exception("background monitoring failed")

    def _log_wandb(self) -> None:
        s = self._session
        if s is not None and s.n:
            with self._lock:
                m = self._metrics(s)
            self.tracker.log(m)

    def check_drift(self, force: bool = False) -> dict | None:
        """Test the window when ``drift_every`` predictions arrived since the last test (worker thread)."""
        from src.monitoring.drift import MIN_WINDOW, DriftSuite

        s = self._session
        if s is None or not s.reference or s.n < MIN_WINDOW:
            return None
        if not force and (s.n - s.drift_at < self.drift_every or
                          time.monotonic() - s.tested_at < self.drift_min_s):
            return None
        with self._lock:
            n, feats, preds, confs = s.n, np.stack(s.features), list(s.preds), list(s.confs)
        if s.suite is None:
            s.suite = DriftSuite.from_reference(s.reference, alpha=self.alpha, seed=self.seed)
        report = s.suite.test(feats, preds, confs)
        previous = s.last_drift
        s.last_drift, s.drift_at, s.tested_at = report, n, time.monotonic()
        if report["is_drift"] and (not previous or not previous["is_drift"]
                                   or time.monotonic() - s.alerted_at >= ALERT_REPEAT_S):
            s.alerted_at = time.monotonic()
            self._alert(s, report)
        return report

    def _alert(self, s: _Session, report: dict[str, Any]) -> None:
        self.alerts += 1
        drift_alert(self.store, s.id, self.tracker, s.model, report)

    def close(self) -> dict[str, Any] | None:
        """Stop the threads after storing every queued record; close the session and the W&B run."""
        if self._stop.is_set():
            return None
        self._stop.set()
        self._worker.join()
        s = self._session
        summary = None
        if s is not None:
            try:
                if s.n - s.drift_at > 0:
                    self.check_drift(force=True)
            except Exception:  # noqa: BLE001
                log.exception("final drift test failed")
            summary = self._summary(s)
            self.records.finish(s.id, summary)
        self.records.close()
        try:
            self._log_wandb()
            if summary:
                self.tracker.summary({k: v for k, v in summary.items() if k.startswith("monitor/")})
        finally:
            self.tracker.finish()
        if summary is not None:
            summary.update(unstored_records=self.records.unstored, store_error=self.records.store_error)
        return summary

