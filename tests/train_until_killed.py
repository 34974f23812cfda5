"""Test-owned entry point: ``train_with_wandb`` that stops mid-run so a test can SIGKILL it.

``python tests/train_until_killed.py MARKER STAGE TRAIN_ARGS...``: at ``STAGE`` (``extract``:
after the extractor was written, before features; ``publish``: after the first file was moved
into the models folder) it writes ``MARKER`` and sleeps. Not collected by pytest (no ``test_``).
"""

import sys
import time
from pathlib import Path


def _stop(marker: Path) -> None:
    marker.write_text("stopped")
    time.sleep(600)


def main() -> int:
    marker, stage, args = Path(sys.argv[1]), sys.argv[2], sys.argv[3:]
    if stage == "extract":
        from src.training import pipeline

        pipeline._features = lambda *a, **k: _stop(marker)
    elif stage == "publish":
        from src.training import outputs

        real_move = outputs._move

        def move_then_stop(src, dst):
            real_move(src, dst)
            _stop(marker)

        outputs._move = move_then_stop
    else:
        raise SystemExit(f"unknown stage {stage}")
    from src.train_with_wandb import main as train_main

    return train_main(args)


if __name__ == "__main__":
    raise SystemExit(main())
