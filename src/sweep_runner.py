"""Local hyperparameter sweeps with W&B's verbs, backed by Optuna (SPEC §3.3).

    python src/sweep_runner.py create [sweep_config.yaml] [--storage URL]     # prints the sweep id
    python src/sweep_runner.py agent ID --count 10 [--data-dir D] [--wandb-mode offline]
    python src/sweep_runner.py status ID [--json]

The work lives in :mod:`src.hpo` (study storage, agents, status); this script parses and prints.
"""

from __future__ import annotations

import sys
from pathlib import Path

if not __package__:  # `python CHECKOUT/src/x.py` runs CHECKOUT's package, not the one the venv installed
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import argparse
import logging
from typing import Sequence

from src.core.cli import STORE_HELP, add_common_flags, print_json, run_cli, show_progress
from src.core.paths import DEFAULT_DATA_DIR
from src.hpo.agent import (AgentOptions, Objective, TrialContext, check_training_parameters, preflight, run_agent,
                           sweep_status, training_objective, training_options)
from src.hpo.local_checks import check_local_sweep
from src.hpo.optuna_space import local_notes
from src.hpo.space import load_sweep_config
from src.hpo.status import format_status
from src.hpo.study import (Sweep, create_local_sweep, create_sweep, default_storage_url,
                           open_storage, open_sweep, redact, slugify, sweep_dir)
from src.tracking import MODES

log = logging.getLogger(__name__)

__all__ = ["AgentOptions", "Objective", "Sweep", "TrialContext", "check_training_parameters", "create_local_sweep",
           "create_sweep", "default_storage_url", "open_storage", "open_sweep", "preflight", "redact", "run_agent",
           "slugify", "sweep_dir", "sweep_status", "training_objective", "training_options", "main"]


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="sweep_runner.py",
                                description="Local hyperparameter sweeps on Optuna with W&B's verbs.")
    sub = p.add_subparsers(dest="verb", required=True)
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--store", default=None, help=STORE_HELP)
    common.add_argument("--storage", default=None,
                        help="SQLAlchemy URL of a shared sweep database, e.g. postgresql+psycopg://user@host/db "
                             "with the password in PGPASSWORD (default: the store's optuna.db)")
    add_common_flags(common)
    c = sub.add_parser("create", parents=[common], help="create a sweep from a W&B sweep YAML; prints its id")
    c.add_argument("config", nargs="?", default="sweep_config.yaml",
                   help="a W&B sweep YAML (default sweep_config.yaml)")
    c.add_argument("--name", default=None, help="sweep name (W&B group of its runs; default from the YAML)")
    a = sub.add_parser("agent", parents=[common], help="run trials of a sweep")
    a.add_argument("sweep_id", help="the id `create` printed")
    a.add_argument("--count", type=int, default=None,
                   help="number of trials this agent runs; required for bayes and random sweeps without a "
                        "run_cap (a grid runs its remaining points without it)")
    a.add_argument("--data-dir", default=DEFAULT_DATA_DIR,
                   help=f"ImageFolder dataset every trial trains on (default {DEFAULT_DATA_DIR}); each dataset's "
                        "models go to W&B under names of their own, so a trial never moves the latest of a "
                        "model you registered")
    a.add_argument("--models-dir", default=None, help="base folder for trial outputs (default: the sweep folder)")
    a.add_argument("--seed", type=int, default=42, help="training seed of every trial (default 42)")
    a.add_argument("--wandb-mode", choices=MODES, default=None,
                   help="default: $WANDB_MODE, else online if an API key is configured, else offline")
    a.add_argument("--heartbeat-interval", type=int, default=30, help="seconds between agent heartbeats")
    a.add_argument("--grace-period", type=int, default=120,
                   help="seconds without a heartbeat before a trial counts as dead and is re-queued")
    a.add_argument("--no-summary", action="store_true", help="skip the plots and the sweep-summary run")
    s = sub.add_parser("status", parents=[common], help="show a sweep's trials, state and best config")
    s.add_argument("sweep_id", help="the id `create` printed")
    return p


def _command(args: argparse.Namespace, objective: Objective | None = None) -> int:

    if args.verb == "create":
        cfg = load_sweep_config(args.config)
        check_local_sweep(cfg)  # what the local runner or training would refuse, before the sweep exists
        for note in local_notes(cfg):
            log.warning("%s", note)
        sweep_id = create_local_sweep(cfg, store=args.store, storage=args.storage, name=args.name,
                                      progress=show_progress(args))
        if args.json:
            print_json({"sweep_id": sweep_id})
        else:
            print(sweep_id)
            log.info("run an agent with: python src/sweep_runner.py agent %s --count 10", sweep_id)
        return 0
    if args.verb == "agent":
        opts = AgentOptions(data_dir=args.data_dir, models_dir=args.models_dir, wandb_mode=args.wandb_mode,
                            seed=args.seed, heartbeat_interval=args.heartbeat_interval,
                            grace_period=args.grace_period, summary=not args.no_summary, progress=show_progress(args))
        status = run_agent(args.sweep_id, args.count, objective=objective, storage=args.storage, store=args.store,
                           options=opts)
    else:
        status = sweep_status(open_sweep(args.sweep_id, args.storage, args.store))
    if args.json:
        print_json(status)
    else:
        print(format_status(status))
        for key, path in status.get("summary", {}).get("plots", {}).items():
            print(f"{key.replace('_', ' ')}: {path}")
    return 0


def main(argv: Sequence[str] | None = None, objective: Objective | None = None) -> int:
    """The command line; ``objective`` replaces training in the agent (for tests and custom objectives)."""
    return run_cli(build_parser(), argv, lambda args: _command(args, objective))


if __name__ == "__main__":
    raise SystemExit(main())
