"""Validate a W&B sweep YAML and show its local Optuna translation.

    python src/sweep_config.py sweep_config.yaml      # validate and show the Optuna translation

The rules live in :mod:`src.hpo.space` (validation) and :mod:`src.hpo.optuna_space` (translation);
their public names are re-exported here.
"""

from __future__ import annotations

import argparse
from typing import Any, Mapping, Sequence

from src.core.cli import add_common_flags, print_json, run_cli
from src.hpo.optuna_space import direction, fixed_params, make_pruner, make_sampler, to_optuna_space
from src.hpo.space import grid_space, infer_distribution, load_sweep_config, validate_sweep_config

__all__ = ["load_sweep_config", "validate_sweep_config", "infer_distribution", "to_optuna_space", "grid_space",
           "fixed_params", "make_sampler", "make_pruner", "direction", "describe", "main"]


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="sweep_config.py",
                                description="Validate a W&B sweep YAML and show its local Optuna translation.")
    p.add_argument("path", nargs="?", default="sweep_config.yaml", help="sweep YAML (default sweep_config.yaml)")
    add_common_flags(p)
    return p


def describe(cfg: Mapping[str, Any]) -> dict[str, Any]:
    """A JSON-friendly summary of what the local runner will do with ``cfg``."""
    space = to_optuna_space(cfg)
    return {"method": cfg["method"], "sampler": type(make_sampler(cfg)).__name__,
            "pruner": type(make_pruner(cfg)).__name__, "metric": cfg["metric"]["name"], "direction": direction(cfg),
            "fixed": fixed_params(cfg), "space": {n: repr(d) for n, d in space.items()}}


def _command(args: argparse.Namespace) -> int:
    info = describe(load_sweep_config(args.path))
    if args.json:
        print_json(info)
    else:
        print(f"{args.path}: valid ({info['method']} → {info['sampler']}, {info['pruner']}; "
              f"{info['direction']} {info['metric']})")
        for name, d in info["space"].items():
            print(f"  {name}: {d}")
        for name, v in info["fixed"].items():
            print(f"  {name} = {v!r} (fixed)")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    return run_cli(build_parser(), argv, _command)


if __name__ == "__main__":
    raise SystemExit(main())
