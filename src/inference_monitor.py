"""Monitored inference: accuracy, confidence, latency, throughput, calibrated drift, alerts.

    python src/inference_monitor.py --model-path models/label_spreading_model.skops --test-dir DS2GROCERIES/test --n-samples 200
    python src/inference_monitor.py --model-path label-spreading-classifier:production --test-dir new_photos/ --fail-on-drift
    python src/inference_monitor.py --alerts
    python src/inference_monitor.py --dashboard-help
    python src/inference_monitor.py serve --model label-spreading-classifier:production --port 8000

The monitor lives in :mod:`src.monitoring` (``from src.inference_monitor import InferenceMonitor``
keeps working); this script parses flags, runs a batch and prints. Exit code 6 means
``--fail-on-drift`` found drift. ``serve`` (first argument) starts the monitored prediction
endpoint of :mod:`src.serving.server` instead.
"""

from __future__ import annotations

import sys
from pathlib import Path

if not __package__:  # `python CHECKOUT/src/x.py` runs CHECKOUT's package, not the one the venv installed
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import argparse
import dataclasses
import logging
import time
import typing
from typing import Sequence

from src.core.cli import STORE_HELP, add_common_flags, print_json, run_cli, show_progress
from src.core.paths import EXTRACTOR_FILE
from src.features.runtimes import RUNTIMES
from src.monitoring.batch import BatchOptions, default_model, format_summary, outcome_error, run_batch, sample_images
from src.monitoring.monitor import DRIFT_EXIT_CODE, DriftDetected, InferenceMonitor
from src.monitoring.settings import DEFAULTS, MonitorSettings
from src.monitoring.settings import HELP as DRIFT_HELP
from src.serving.options import ServeOptions
from src.registry.api import load_predictor
from src.tracking import MODES

log = logging.getLogger(__name__)
BATCH = BatchOptions(model="")  # the batch flags' defaults are BatchOptions'

__all__ = ["InferenceMonitor", "DriftDetected", "DRIFT_EXIT_CODE", "BatchOptions", "MonitorSettings", "load_predictor",
           "run_batch",
           "sample_images", "format_summary", "main", "build_serve_parser"]


DASHBOARD_HELP = """Building W&B panels for the monitoring keys (project grocery-classification-mlops):

1. Upload offline runs first: `wandb sync wandb/offline-run-*` (or run with --wandb-mode online).
2. Open the project, Workspace -> filter runs by Job Type = "monitor".
3. Add panel -> Line plot, y = monitor/accuracy, x = Step; add monitor/avg_confidence to the same
   panel (both are fractions). Set y range 0..1.
4. Add panel -> Line plot, y = monitor/avg_inference_time_ms (the whole prediction) with
   monitor/avg_model_time_ms (the model call inside it), and a second line plot with
   y = monitor/throughput_samples_per_sec.
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


def _add_drift_flags(p: argparse.ArgumentParser) -> None:
    """How drift is judged: the flags, help and defaults of :class:`MonitorSettings` (serving's are the same,
    through :class:`~src.serving.options.ServeOptions`)."""
    for f in dataclasses.fields(MonitorSettings):
        p.add_argument(f"--{f.name}", type=type(f.default), default=getattr(DEFAULTS, f.name), help=DRIFT_HELP[f.name])


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="inference_monitor.py", description="Monitored batch inference with drift "
                                "detection. `inference_monitor.py serve --help`: the prediction endpoint.")
    p.add_argument("--model-path", default=None, help="model file or registry reference NAME:ALIAS "
                                                      "(default: the best model in models/training_results.json)")
    p.add_argument("--extractor-path", default=None, help=f"default: {EXTRACTOR_FILE} next to the model")
    p.add_argument("--test-dir", default=BATCH.test_dir,
                   help="ImageFolder split (labels from folders) or a flat folder")
    p.add_argument("--n-samples", type=int, default=BATCH.n_samples,
                   help="images to monitor, sampled with --seed (0 = all)")
    _add_drift_flags(p)
    p.add_argument("--seed", type=int, default=BATCH.seed)
    p.add_argument("--fail-on-drift", action="store_true", help=f"exit {DRIFT_EXIT_CODE} when drift is detected")
    p.add_argument("--alerts", action="store_true", help="print the local alert log and exit")
    p.add_argument("--dashboard-help", action="store_true", help="how to build W&B panels for the monitoring keys")
    p.add_argument("--runtime", choices=RUNTIMES, default=BATCH.runtime,
                   help="feature extraction: auto = the precision the model was trained with (int8 or float32; "
                        "$MLOPS_RUNTIME overrides), onnx = float32, onnx-int8, torch")
    p.add_argument("--run-name", default=None)
    p.add_argument("--store", default=None, help=STORE_HELP)
    p.add_argument("--wandb-mode", choices=MODES, default=None)
    add_common_flags(p)
    return p


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
    summary = run_batch(BatchOptions(
        model=args.model_path or default_model(), test_dir=args.test_dir, extractor_path=args.extractor_path,
        n_samples=args.n_samples, window=args.window, alpha=args.alpha, seed=args.seed, run_name=args.run_name,
        store=args.store, wandb_mode=args.wandb_mode, progress=show_progress(args), runtime=args.runtime))
    print_json(summary) if args.json else print(format_summary(summary))
    error = outcome_error(summary, args.fail_on_drift)
    if error:
        raise error
    return 0


def build_serve_parser() -> argparse.ArgumentParser:
    """``serve``'s flags, one per :class:`~src.serving.options.ServeOptions` field, with its default and help."""
    p = argparse.ArgumentParser(prog="inference_monitor.py serve",
                                description="Monitored prediction endpoint: POST /predict, POST /feedback, "
                                            "GET /health, GET /metrics. Ctrl-C or SIGTERM stops it after storing "
                                            "every record.")
    hints = typing.get_type_hints(ServeOptions)
    for f in dataclasses.fields(ServeOptions):
        flag, kind = "--" + f.name.replace("_", "-"), _flag_type(hints[f.name])
        kw: dict = {"help": f.metadata.get("help")}
        if f.name == "model":  # required in Python; on the command line it defaults to the last training's best
            p.add_argument("--model", "--model-path", dest="model", default=None, **kw)
        elif kind is bool:
            p.add_argument(flag, action="store_true", **kw)
        elif f.name == "wandb_mode":
            p.add_argument(flag, choices=MODES, default=f.default, **kw)
        else:
            p.add_argument(flag, type=kind, default=f.default, **kw)
    add_common_flags(p)
    return p


def _flag_type(hint) -> type:
    """``int`` for ``int`` and ``int | None``: what argparse converts a flag's text with."""
    args = [a for a in typing.get_args(hint) if a is not type(None)]
    return args[0] if args else hint


def _serve(args: argparse.Namespace) -> int:
    from src.serving.server import serve

    options = {f.name: getattr(args, f.name) for f in dataclasses.fields(ServeOptions)}
    summary = serve(ServeOptions(**{**options, "model": args.model or default_model()}))
    if summary is not None:
        if args.json:
            print_json(summary)
        else:
            print(f"served {summary['monitor/samples']} predictions with {summary['model']} "
                  f"(session {summary['session']})")
        if summary.get("unstored_records"):
            from src.core.errors import StoreError

            raise StoreError(f"{summary['unstored_records']} monitoring records could not be stored "
                             f"({summary.get('store_error') or 'the store failed'})",
                             hint="free space in the store (or make it writable); these predictions are "
                                  "missing from the monitoring records")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["serve"]:
        return run_cli(build_serve_parser(), argv[1:], _serve)
    return run_cli(build_parser(), argv, _command, flags={"model": "--model-path"})


if __name__ == "__main__":
    raise SystemExit(main())
