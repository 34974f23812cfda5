"""What W&B's system metrics and console capture cost a run (issue 27.6): the decision behind their defaults.

Runs the same CPU-bound workload (numpy matrix products, one printed line per step, as training prints
epochs) inside offline runs with system metrics and console capture on, and with both off, alternating,
and reports the wall time of each and the CPU time wandb-core (the process that samples and writes) used
during the run, as a share of the run's wall time. On shared cores the wall-time difference is noise; the
wandb-core CPU share is the figure to read (it is what the run's process competes with).

    .venv/bin/python benchmarks/wandb_overhead.py [--seconds 20] [--repeats 3] 2>/dev/null

Each run's figures and the summary go to stdout; the workload's step lines to stderr.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def _core_cpu() -> float:
    """CPU seconds used so far by this process's wandb-core descendants (Linux /proc; no psutil here)."""
    tick, parents, total = os.sysconf("SC_CLK_TCK"), {}, 0.0
    procs = {}
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                stat = (d / "stat").read_text()
                fields = stat[stat.rindex(")") + 2:].split()
                procs[int(d.name)] = (int(fields[1]), (int(fields[11]) + int(fields[12])) / tick,
                                      (d / "cmdline").read_bytes())
            except (OSError, ValueError):
                continue
    mine = {os.getpid()}
    changed = True
    while changed:
        changed = False
        for pid, (ppid, _, _) in procs.items():
            if ppid in mine and pid not in mine:
                mine.add(pid)
                changed = True
    for pid in mine:
        if pid in procs and b"wandb-core" in procs[pid][2]:
            total += procs[pid][1]
    return total


def one_run(stats: bool, seconds: float) -> dict[str, float]:
    import numpy as np

    from src.tracking import Tracker

    os.environ["WANDB_CONSOLE"] = "wrap" if stats else "off"
    os.environ["WANDB_X_DISABLE_STATS"] = "false" if stats else "true"
    t0 = time.perf_counter()
    t = Tracker("benchmark", {"stats": stats}, mode="offline")
    c0 = _core_cpu()
    a = np.random.default_rng(0).normal(size=(300, 300))
    step, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        for _ in range(20):
            a = np.tanh(a @ a.T / 300)
        step += 1
        print(f"step {step}: mean {float(a.mean()):.4f}", file=sys.stderr)  # what console capture records
        t.log({"step_mean": float(a.mean())})
    work = time.perf_counter() - start
    c1 = _core_cpu()
    t.finish()
    return {"wall_s": time.perf_counter() - t0, "work_s": work, "steps": step, "core_cpu_s": c1 - c0,
            "core_cpu_share": (c1 - c0) / work}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seconds", type=float, default=20)
    p.add_argument("--repeats", type=int, default=3)
    a = p.parse_args()
    os.environ.setdefault("WANDB_DIR", tempfile.mkdtemp())
    os.environ["WANDB_MODE"] = "offline"
    rows = []
    for i in range(a.repeats):
        for stats in (True, False):
            r = one_run(stats, a.seconds)
            rows.append({"stats_and_console": stats, **r})
            print(json.dumps(rows[-1]), flush=True)
    on = [r for r in rows if r["stats_and_console"]]
    off = [r for r in rows if not r["stats_and_console"]]
    steps = lambda rs: sum(r["steps"] for r in rs) / sum(r["work_s"] for r in rs)  # noqa: E731
    print(json.dumps({"steps_per_s_on": steps(on), "steps_per_s_off": steps(off),
                      "throughput_cost": 1 - steps(on) / steps(off),
                      "core_cpu_share_on": sum(r["core_cpu_s"] for r in on) / sum(r["work_s"] for r in on),
                      "core_cpu_share_off": sum(r["core_cpu_s"] for r in off) / sum(r["work_s"] for r in off)},
                     indent=2))


if __name__ == "__main__":
    main()
