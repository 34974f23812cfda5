"""A deterministic stand-in for training, and an agent entry point that uses it.

Tests inject :func:`fake_objective` into ``run_agent`` directly; tests that need agents in
separate processes (parallel and killed agents) start them as
``python tests/sweep_fakes.py [--sleep S] agent ID ...``, which runs ``sweep_runner``'s
command line with this objective. Nothing in ``src/`` knows about it.
"""

from __future__ import annotations

import functools
import sys
import time
from pathlib import Path
from typing import Any, Callable

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a script from the repository


def fake_objective(params: dict[str, Any], epoch_callback: Callable[[int, float], None], ctx,
                   sleep: float = 0.0) -> float:
    """A score from the parameters: ``algorithm: self_training`` or ``region: bad`` is the bad
    region (low values every epoch); elsewhere the score grows with ``labeled_ratio`` and the epoch."""
    bad = params.get("algorithm") == "self_training" or params.get("region") == "bad"
    base = 0.2 if bad else 0.6 + 0.5 * float(params.get("labeled_ratio", 0.2))
    base -= 0.001 * abs(float(params.get("n_neighbors", 10)) - 10)
    epochs = int(params.get("fine_tune_epochs", 3))
    for epoch in range(1, epochs + 1):
        if sleep:
            time.sleep(sleep)
        epoch_callback(epoch, base + 0.01 * epoch)
    return base + 0.01 * epochs


def main(argv: list[str]) -> int:
    from src import sweep_runner

    sleep = 0.0
    if argv[:1] == ["--sleep"]:
        sleep, argv = float(argv[1]), argv[2:]
    return sweep_runner.main(argv, objective=functools.partial(fake_objective, sleep=sleep))


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
