"""Validate a W&B sweep YAML and show its local Optuna translation.

    python src/sweep_config.py sweep_config.yaml      # validate and show the Optuna translation

"valid" means: W&B accepts it (its own schema and checks), the local runner can run it, and every
parameter is a training option whose reachable values training accepts.

The rules live in :mod:`src.hpo.wandb_schema` (W&B's), :mod:`src.hpo.space` (loading),
:mod:`src.hpo.optuna_space` (translation, the local runner's limits) and :mod:`src.hpo.local_checks`
(training's); their public names are re-exported here.
"""

from __future__ import annotations

import sys
from pathlib import Path

if not __package__:  # `python CHECKOUT/src/x.py` runs CHECKOUT's package, not the one the venv installed
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import argparse
from typing import Any, Mapping, Sequence

from src.core.cli import add_common_flags, print_json, run_cli
from src.hpo.local_checks import check_local_sweep, check_training_values
from src.hpo.optuna_space import (QUANTILE, check_local_runner, decode_params, direction, fixed_params, local_notes,
                                  make_pruner, make_sampler, ppf, to_optuna_space)
from src.hpo.space import grid_space, infer_distribution, load_sweep_config, validate_sweep_config
from src.hpo.wandb_schema import problems as wandb_problems

__all__ = ["load_sweep_config", "validate_sweep_config", "wandb_problems", "infer_distribution", "to_optuna_space",
           "decode_params", "ppf", "grid_space", "fixed_params", "make_sampler", "make_pruner", "direction",
           "check_local_runner", "check_local_sweep", "check_training_values", "local_notes", "describe", "main"]


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="sweep_config.py",
                                description="Validate a W&B sweep YAML and show its local Optuna translation.")
    p.add_argument("path", nargs="?", default="sweep_config.yaml", help="sweep YAML (default sweep_config.yaml)")
    add_common_flags(p)
    return p


def describe(cfg: Mapping[str, Any]) -> dict[str, Any]:
    """A JSON-friendly summary of what the local runner will do with ``cfg``."""
    space = to_optuna_space(cfg)
    shown = {}
    for name, dist in space.items():
        kind = infer_distribution(cfg["parameters"][name])
        shown[name] = (f"{kind} through its quantile u ~ {dist!r}" if kind in QUANTILE else
                       f"{dist!r}, then round(x/q)*q" if kind == "q_log_uniform_values" else repr(dist))
    return {"method": cfg["method"], "sampler": type(make_sampler(cfg)).__name__,
            "pruner": type(make_pruner(cfg)).__name__, "metric": cfg["metric"]["name"], "direction": direction(cfg),
            "fixed": fixed_params(cfg), "space": shown, "notes": local_notes(cfg)}


def _command(args: argparse.Namespace) -> int:
    cfg = load_sweep_config(args.path)  # W&B's verdict
    check_local_sweep(cfg)  # the local runner's and training's, on top
    info = describe(cfg)
    if args.json:
        print_json(info)
    else:
        print(f"{args.path}: valid ({info['method']} → {info['sampler']}, {info['pruner']}; "
              f"{info['direction']} {info['metric']})")
        for name, d in info["space"].items():
            print(f"  {name}: {d}")
        for name, v in info["fixed"].items():
            print(f"  {name} = {v!r} (fixed)")
        for note in info["notes"]:
            print(f"  note: {note}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    return run_cli(build_parser(), argv, _command)


if __name__ == "__main__":
    raise SystemExit(main())
