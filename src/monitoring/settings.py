"""How drift is judged: the one place the monitoring defaults are written.

Batch monitoring (:class:`~src.monitoring.batch.BatchOptions` and
:class:`~src.monitoring.monitor.InferenceMonitor`), the live monitor
(:class:`~src.monitoring.live.LiveMonitor`), the server (:class:`~src.serving.options.ServeOptions`) and the drift test
(:mod:`src.monitoring.drift`) take their defaults from :data:`DEFAULTS`; the batch and serve
parsers of ``inference_monitor.py`` derive ``--window`` / ``--alpha`` (default and :data:`HELP`) from it, as
``train_with_wandb``'s flags derive from ``TrainConfig``. Imports nothing from the project.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class MonitorSettings:
    """``window``: the most recent predictions tested for drift (at least ``drift.MIN_WINDOW``);
    ``alpha``: the overall false-alarm rate of the drift test, all signals together, in (0, 1)."""

    window: int = 200
    alpha: float = 0.05


DEFAULTS = MonitorSettings()
HELP = {"window": "recent predictions used for drift detection",  # each field's help, for the parsers
        "alpha": "overall false-alarm rate of the drift test"}
