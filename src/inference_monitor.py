"""Monitored inference: accuracy, confidence, latency, throughput, calibrated drift, alerts.

    python src/inference_monitor.py --model-path models/label_spreading_model.pkl --test-dir DS2GROCERIES/test --n-samples 200
    python src/inference_monitor.py --model-path label-spreading-classifier:production --test-dir new_photos/ --fail-on-drift
    python src/inference_monitor.py --alerts
    python src/inference_monitor.py --dashboard-help

Every prediction is recorded in the local store (time, image digest, prediction,
confidence, latency, true label, its 1280-d feature for drift); W&B gets the documented
``monitor/*`` metrics every ``log_every`` predictions, and ``finish()`` logs the
prediction distribution, the confidence histogram and a summary. Exit code 6 means
``--fail-on-drift`` found drift.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import random
import time
from collections import Counter, deque
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from src.core.cli import add_common_flags, print_json, run_cli
from src.core.errors import ConfigError, DataError, GroceryError, ModelError

log = logging.getLogger(__name__)
DRIFT_EXIT_CODE = 6


class DriftDetected(GroceryError):
    exit_code = DRIFT_EXIT_CODE


def load_predictor(model: str | os.PathLike, extractor_path: str | os.PathLike | None = None, store=None):
    """A model file, or a registry reference ``name:alias`` / ``name:vK``."""
    from src.predictor import Predictor

    text = str(model)
    if not Path(text).exists() and ":" in text and "/" not in text:
        from src.model_registry import load_model_from_registry

        name, alias = text.split(":", 1)
        return load_model_from_registry(name, alias, store=store)
    return Predictor.load(model, extractor_path, store=store)


def _check_window(window: Any, what: str = "window") -> None:
    from src.monitoring.drift import MIN_WINDOW

    if isinstance(window, bool) or not isinstance(window, (int, np.integer)) or window < MIN_WINDOW:
        raise ConfigError(f"{what} must be an integer >= {MIN_WINDOW} (drift detection needs at least "
                          f"{MIN_WINDOW} predictions), got {window!r}")


def _score_text(score: float | None) -> str:
    """A drift score for people: ``None`` (no feature signal for this model) reads n/a."""
    return "n/a" if score is None else f"{score:.2f}"


def _check_settings(window: Any, alpha: Any, log_every: Any) -> None:
    """Refuse unusable settings before anything is loaded or predicted."""
    _check_window(window, "--window")
    if isinstance(alpha, bool) or not isinstance(alpha, (int, float, np.floating)) or not 0 < alpha < 1:
        raise ConfigError(f"--alpha must be a false-alarm rate in (0, 1), got {alpha!r}")
    if isinstance(log_every, bool) or not isinstance(log_every, (int, np.integer)) or log_every < 1:
        raise ConfigError(f"log_every must be an integer >= 1, got {log_every!r}")


class InferenceMonitor:
    """Wraps a predictor; ``predict`` returns ``(class name, confidence, probabilities)``.

    ``window`` (>= 20) and ``alpha`` (in (0, 1)) are checked before the model is loaded. After
    :meth:`finish` the monitor is closed: ``predict`` raises :class:`ConfigError` and another
    ``finish()`` returns the same summary.
    """

    def __init__(self, model_path: str | os.PathLike, extractor_path: str | os.PathLike | None = None, *,
                 store=None, wandb_mode: str | None = None, window: int = 200, log_every: int = 50,
                 alpha: float = 0.05, run_name: str | None = None, seed: int = 0):
        from src.monitoring.records import open_monitor_store, start_session
        from src.wandb_config import Tracker

        _check_settings(window, alpha, log_every)
        self.predictor = load_predictor(model_path, extractor_path, store=store)
        self.bundle = self.predictor.bundle
        if "reference" not in self.bundle:
            raise ModelError(f"{model_path} has no reference statistics for drift detection",
                             hint="retrain it with this version of train_with_wandb")
        self.model_ref, self.window, self.log_every, self.alpha, self.seed = str(model_path), window, log_every, alpha, seed
        self.store = open_monitor_store(store)
        self.session = start_session(self.store, self.model_ref, self.bundle["_digest"])
        self.tracker = Tracker("monitor", {"model": self.model_ref, "model_digest": self.bundle["_digest"],
                                           "algorithm": self.bundle["algorithm"], "window": window, "alpha": alpha},
                               mode=wandb_mode, name=run_name)
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
    def predict(self, image_path: str | os.PathLike, true_label: str | None = None) -> tuple[str, float, np.ndarray]:
        from src.features.extraction import load_batch
        from src.core.store import sha256_file

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
        batch = load_batch([Path(image_path)], self.predictor.extractor.preprocessing, _serial)
        t1 = time.perf_counter()
        feats = self.predictor.extractor(batch)
        probs = self.predictor.predict_features(feats)[0]
        t2 = time.perf_counter()
        label = self.predictor.class_names[int(probs.argmax())]
        conf = float(probs.max())
        rec = {"image": str(image_path), "prediction": label, "confidence": conf, "latency_ms": (t2 - t0) * 1e3,
               "inference_ms": (t2 - t1) * 1e3, "true_label": true_label}
        self.records.append(rec)
        self.features.append(feats[0])
        self._pending.append((self.session, time.time(), str(image_path), sha256_file(image_path), label, conf,
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
        """The documented ``monitor/*`` figures over everything predicted so far."""
        n = len(self.records)
        labeled = [r for r in self.records if r["true_label"] is not None]
        lat = np.array([r["latency_ms"] for r in self.records]) if n else np.zeros(1)
        out = {"monitor/samples": n,
               "monitor/avg_confidence": float(np.mean([r["confidence"] for r in self.records])) if n else 0.0,
               "monitor/avg_inference_time_ms": float(lat.mean()),
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
        lat = np.array([r["latency_ms"] for r in self.records])
        inf = np.array([r["inference_ms"] for r in self.records])
        pct = lambda a, q: float(np.percentile(a, q)) if len(a) else 0.0  # noqa: E731
        return {"p50_ms": pct(lat, 50), "p95_ms": pct(lat, 95), "p99_ms": pct(lat, 99),
                "inference_p50_ms": pct(inf, 50), "inference_p95_ms": pct(inf, 95), "inference_p99_ms": pct(inf, 99)}

    # -- drift ---------------------------------------------------------------------------
    def detect_drift(self, window: int | None = None) -> dict[str, Any]:
        """Drift of the last ``window`` predictions against the training reference."""
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
        from src.monitoring.records import add_alert

        text = (f"{self.model_ref}: drift in {', '.join(report['drifted'])} over the last {report['n']} "
                f"predictions (drift score {_score_text(report['drift_score'])}, p={report['p_val']:.4f})")
        add_alert(self.store, self.session, "WARN", "Data drift detected", text, report)
        self.tracker.alert("Data drift detected", text, level="WARN")
        log.warning(text)

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

    def abort(self, reason: str) -> dict[str, Any] | None:
        """Close the session after a failure: no drift test, no alerts, never raises.

        For ``finally``-style cleanup where :meth:`finish` could replace the original error.
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
            self.tracker.finish()
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


def sample_images(test_dir: str | os.PathLike, n: int, seed: int) -> list[tuple[Path, str | None]]:
    """(path, true label) pairs: an ImageFolder split gives labels, a flat folder gives none."""
    from src.core.images import is_image_name

    root = Path(test_dir)
    if not root.is_dir():
        raise DataError(f"test folder {root} does not exist", hint="pass --test-dir DIR")
    items = [(p, p.parent.name if p.parent != root else None) for p in sorted(root.rglob("*"))
             if p.is_file() and is_image_name(p) and not p.name.startswith(".")]
    if not items:
        raise DataError(f"no images in {root}", hint="pass a folder of images or class folders of images")
    random.Random(seed).shuffle(items)
    return items[:n] if n else items


DASHBOARD_HELP = """Building W&B panels for the monitoring keys (project grocery-classification-mlops):

1. Upload offline runs first: `wandb sync wandb/offline-run-*` (or run with --wandb-mode online).
2. Open the project, Workspace -> filter runs by Job Type = "monitor".
3. Add panel -> Line plot, y = monitor/accuracy, x = Step; add monitor/avg_confidence to the same
   panel (both are fractions). Set y range 0..1.
4. Add panel -> Line plot, y = monitor/avg_inference_time_ms (latency) and a second line plot
   with y = monitor/throughput_samples_per_sec.
5. Add panel -> Line plot, y = monitor/drift_score; add a horizontal reference line at 1.0
   (drift_score is the *feature* signal only: MMD² over its permutation null's quantile, about 1
   where an uncalibrated feature test would alarm. The verdict is the drift report's is_drift,
   which also uses the prediction and confidence signals; the alert below fires on it).
6. Media panels: `prediction_distribution` (bar chart) and `confidence_histogram` are logged at
   the end of each session; add them with Add panel -> choose the key.
7. Compare with training: add `summary/best_test_accuracy` from job type "train" runs to the
   accuracy panel to see the production gap.
8. Alerts: in Settings -> Alerts enable Email/Slack for "Data drift detected"
   (sent by wandb.alert when online; offline they are in `python src/inference_monitor.py --alerts`).
9. Save the workspace as a report (Create report) to share it.
"""


def run_batch(args: argparse.Namespace) -> dict[str, Any]:
    from tqdm import tqdm

    _check_settings(args.window, args.alpha, 1)
    items = sample_images(args.test_dir, args.n_samples, args.seed)
    mon = InferenceMonitor(args.model_path, args.extractor_path, store=args.store, wandb_mode=args.wandb_mode,
                           window=args.window, alpha=args.alpha, run_name=args.run_name, seed=args.seed)
    known = set(mon.predictor.class_names)
    unmatched = sorted({label for _, label in items if label is not None and label not in known})
    if unmatched:
        log.warning("test folders %s are not classes of the model (%s): their images are monitored without "
                    "labels", ", ".join(unmatched), ", ".join(mon.predictor.class_names))
    skipped: list[dict[str, str]] = []
    try:
        for path, label in tqdm(items, desc="monitoring", unit="img", disable=args.quiet or len(items) < 50):
            try:
                mon.predict(path, label if label in known else None)
            except DataError as e:  # one unreadable image must not end the batch
                log.info("skipped %s: %s", path, e)
                skipped.append({"image": str(path), "error": str(e)})
    except BaseException as e:
        mon.abort(f"{type(e).__name__}: {e}")  # never masks the error being raised
        raise
    summary = mon.finish()
    summary["skipped"] = skipped
    return summary


def format_summary(s: dict[str, Any]) -> str:
    lat, d = s["latency"], s.get("drift")
    lines = [f"model {s['model']}  ({s['monitor/samples']} images, session {s['session']})",
             f"accuracy            {s['monitor/accuracy']:.4f}" if "monitor/accuracy" in s else "accuracy            - (no labels)",
             f"avg confidence      {s['monitor/avg_confidence']:.4f}",
             f"latency p50/p95/p99 {lat['p50_ms']:.1f} / {lat['p95_ms']:.1f} / {lat['p99_ms']:.1f} ms "
             f"(without decode {lat['inference_p50_ms']:.1f} / {lat['inference_p95_ms']:.1f} / {lat['inference_p99_ms']:.1f} ms)",
             f"throughput          {s['monitor/throughput_samples_per_sec']:.1f} images/s"]
    if d:
        verdict = "DRIFT in " + ", ".join(d["drifted"]) if d["is_drift"] else "no drift"
        sig = "; ".join(f"{k} p={v['p_val']:.4f}" if v["p_val"] is not None else f"{k} unavailable"
                        for k, v in d["signals"].items())
        lines.append(f"drift               {verdict} (score {_score_text(d['drift_score'])}, window {d['n']}, {sig})")
    if s.get("skipped"):
        lines.append(f"skipped             {len(s['skipped'])} unreadable: "
                     + ", ".join(Path(x["image"]).name for x in s["skipped"]))
    if s.get("wandb_run"):
        lines.append(f"W&B run             {s['wandb_run']}")
    return "\n".join(lines)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="inference_monitor.py", description="Monitored batch inference with drift detection.")
    p.add_argument("--model-path", default=None, help="model file or registry reference NAME:ALIAS "
                                                      "(default: the best model in models/training_results.json)")
    p.add_argument("--extractor-path", default=None, help="default: feature_extractor.pth next to the model")
    p.add_argument("--test-dir", default="DS2GROCERIES/test", help="ImageFolder split (labels from folders) or a flat folder")
    p.add_argument("--n-samples", type=int, default=200, help="images to monitor, sampled with --seed (0 = all)")
    p.add_argument("--window", type=int, default=200, help="recent predictions used for drift detection")
    p.add_argument("--alpha", type=float, default=0.05, help="overall false-alarm rate of the drift test")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--fail-on-drift", action="store_true", help=f"exit {DRIFT_EXIT_CODE} when drift is detected")
    p.add_argument("--alerts", action="store_true", help="print the local alert log and exit")
    p.add_argument("--dashboard-help", action="store_true", help="how to build W&B panels for the monitoring keys")
    p.add_argument("--run-name", default=None)
    p.add_argument("--store", default=None, help="local store directory (default $MLOPS_STORE or ./.mlops)")
    p.add_argument("--wandb-mode", choices=["online", "offline", "disabled"], default=None)
    add_common_flags(p)
    return p


def _default_model() -> str:
    results = Path("models/training_results.json")
    if not results.is_file():
        raise ModelError("no --model-path given and models/training_results.json does not exist",
                         hint="train first (python src/train_with_wandb.py) or pass --model-path")
    best = json.loads(results.read_text())["summary"]["best_algorithm"]
    return str(results.parent / f"{best}_model.pkl")


def _command(args: argparse.Namespace) -> int:
    if args.dashboard_help:
        print(DASHBOARD_HELP)
        return 0
    if args.alerts:
        from src.monitoring.records import alerts, open_monitor_store

        rows = alerts(open_monitor_store(args.store))
        if args.json:
            print_json(rows)
        else:
            for a in rows:
                print(f"{time.strftime('%Y-%m-%d %H:%M:%S', time.gmtime(a['at']))}Z  {a['level']}  {a['text']}")
            if not rows:
                print("no alerts")
        return 0
    if args.n_samples < 0:
        raise DataError(f"--n-samples must be >= 0, got {args.n_samples}")
    args.model_path = args.model_path or _default_model()
    summary = run_batch(args)
    print_json(summary) if args.json else print(format_summary(summary))
    drift = args.fail_on_drift and summary.get("drift", {}).get("is_drift")
    if summary["skipped"]:
        names = [Path(x["image"]).name for x in summary["skipped"]]
        more = f" and {len(names) - 5} more" if len(names) > 5 else ""
        also = f"; also drift detected in {', '.join(summary['drift']['drifted'])}" if drift else ""
        raise DataError(f"{len(names)} of {len(names) + summary['monitor/samples']} images could not be read and "
                        f"were skipped: {', '.join(names[:5])}{more} (first: {summary['skipped'][0]['error']}){also}")
    if drift:
        raise DriftDetected(f"drift detected in {', '.join(summary['drift']['drifted'])} "
                            f"(score {_score_text(summary['drift']['drift_score'])}, "
                            f"p={summary['drift']['p_val']:.4f})",
                            hint="see --alerts")
    return 0


def monitoring_overview(store, html_table) -> str:
    """The monitoring section of the offline dashboard (src/report.py)."""
    from src.monitoring.records import alerts, open_monitor_store, sessions

    st = open_monitor_store(store)
    rows = [[s["id"], s["model"], s["summary"].get("monitor/samples"), s["summary"].get("monitor/accuracy"),
             s["summary"].get("monitor/avg_confidence"), s["summary"].get("latency", {}).get("p50_ms"),
             s["summary"].get("monitor/throughput_samples_per_sec"), s["summary"].get("monitor/drift_score"),
             (s["summary"].get("drift") or {}).get("is_drift")] for s in sessions(st)]
    if not rows:
        return "<p class=muted>No monitoring sessions yet (python src/inference_monitor.py).</p>"
    out = html_table(["session", "model", "images", "accuracy", "avg conf", "p50 ms", "img/s", "drift score", "drift"], rows)
    al = alerts(st, 20)
    if al:
        out += html_table(["when", "level", "alert"], [[time.strftime("%Y-%m-%d %H:%M", time.gmtime(a["at"])),
                                                        a["level"], a["text"]] for a in al])
    return out


def main(argv: Sequence[str] | None = None) -> int:
    return run_cli(build_parser(), argv, _command)


if __name__ == "__main__":
    raise SystemExit(main())
