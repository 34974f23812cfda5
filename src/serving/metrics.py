"""The server's Prometheus figures, in a registry of its own (several servers can share a process)."""

from __future__ import annotations

from typing import Any

from prometheus_client import (CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram,
                               disable_created_metrics, generate_latest)

disable_created_metrics()  # no *_created series: they double the text and nobody graphs them

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 10.0)


class ServerMetrics:
    def __init__(self):
        r = self.registry = CollectorRegistry()
        self.requests = Counter("grocery_requests", "HTTP requests by endpoint and status code",
                                ["endpoint", "status"], registry=r)
        self.errors = Counter("grocery_errors", "Rejected or failed requests by endpoint and reason",
                              ["endpoint", "reason"], registry=r)
        self.latency = Histogram("grocery_request_latency_seconds", "Request latency (seconds) by endpoint",
                                 ["endpoint"], buckets=LATENCY_BUCKETS, registry=r)
        self.predictions = Counter("grocery_predictions", "Predictions by predicted class", ["label"], registry=r)
        self.batch_size = Histogram("grocery_inference_batch_size", "Size of the model call each prediction was "
                                    "part of (concurrent requests share one call)",
                                    buckets=(1, 2, 4, 8, 16, 32, 64), registry=r)
        self.avg_confidence = Gauge("grocery_avg_confidence", "Mean confidence over the drift window", registry=r)
        self.drift_score = Gauge("grocery_drift_score", "Feature drift score of the last test (about 1 = the "
                                 "uncalibrated alarm level; NaN before the first test)", registry=r)
        self.drift_detected = Gauge("grocery_drift_detected", "1 when the last drift test found drift", registry=r)
        self.accuracy = Gauge("grocery_feedback_accuracy", "Accuracy over predictions whose true label came "
                              "through /feedback (NaN before any)", registry=r)
        self.feedback = Gauge("grocery_feedback_labels", "Predictions with a true label from /feedback", registry=r)
        self.model_info = Gauge("grocery_model_info", "The model version being served (value 1)",
                                ["model", "version", "digest"], registry=r)
        self.model_switches = Counter("grocery_model_switches", "Times the served alias moved and the server "
                                      "switched versions", registry=r)
        self.reload_failures = Counter("grocery_model_reload_failures", "New alias targets that failed to load "
                                       "(the previous version kept serving)", registry=r)
        self.records_written = Gauge("grocery_monitor_records_written", "Prediction records stored", registry=r)
        self.records_pending = Gauge("grocery_monitor_records_pending", "Records queued for the store", registry=r)
        self.record_write_errors = Gauge("grocery_monitor_write_errors", "Failed store writes (retried)", registry=r)
        self.alerts = Gauge("grocery_drift_alerts", "Drift alerts raised", registry=r)
        self._model_labels: tuple[str, str, str] | None = None

    def set_model(self, model: str, version: str, digest: str) -> None:
        if self._model_labels is not None:
            self.model_info.remove(*self._model_labels)
        self._model_labels = (model, version, digest[:12])
        self.model_info.labels(*self._model_labels).set(1)

    def render(self, snapshot: dict[str, Any]) -> tuple[bytes, str]:
        nan = float("nan")
        drift = snapshot.get("drift") or {}
        self.avg_confidence.set(nan if snapshot["window_confidence"] is None else snapshot["window_confidence"])
        score = drift.get("drift_score")
        self.drift_score.set(nan if score is None else score)
        self.drift_detected.set(1 if drift.get("is_drift") else 0)
        self.accuracy.set(nan if snapshot["accuracy"] is None else snapshot["accuracy"])
        self.feedback.set(snapshot["feedback"])
        self.records_written.set(snapshot["written"])
        self.records_pending.set(snapshot["pending"])
        self.record_write_errors.set(snapshot["write_errors"])
        self.alerts.set(snapshot["alerts"])
        return generate_latest(self.registry), CONTENT_TYPE_LATEST
