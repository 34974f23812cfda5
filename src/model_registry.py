"""Model registry: versions, aliases, gated promotion, lineage and digest-checked loading.

    python src/model_registry.py register models/label_spreading_model.skops \\
        --name label-spreading-classifier --alias staging   # metrics from training (or --accuracy/--f1)
    python src/model_registry.py register-all --models-dir models
    python src/model_registry.py list | compare A B:staging C:v2 | history NAME | lineage NAME:production
    python src/model_registry.py promote NAME --to-alias production [--version v3] [--force --reason "..."]
    python src/model_registry.py convert --i-trust-these-files [--models-dir models]   # old .pkl bundles, once
    python src/model_registry.py mirror-pending [--name NAME] --wandb-mode offline  # versions W&B never got
    python src/model_registry.py sync-lineage   # online, after `wandb sync`: inputs and Model Registry links

The work lives in :mod:`src.registry` (:mod:`src.registry.api`); this script parses flags and prints.
``from src.model_registry import register_model, load_model_from_registry`` keeps working.
"""

from __future__ import annotations

import sys
from pathlib import Path

if not __package__:  # `python CHECKOUT/src/x.py` runs CHECKOUT's package, not the one the venv installed
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import argparse
from typing import Any, Sequence

from src.core.cli import STORE_HELP, add_common_flags, print_json, run_cli
from src.registry import api as mr
from src.registry.api import (EXTRACTOR_FILE, RESULTS_FILE, PromotionRefused, compare_models, get_model_version,
                              list_models, load_model_from_registry, load_registered_bundle, mirror_pending,
                              model_history, model_lineage, model_name_for, normalize_metrics, promote_model,
                              register_all, register_model)
from src.registry.convert import convert_legacy
from src.tracking import MODES

__all__ = ["EXTRACTOR_FILE", "RESULTS_FILE", "PromotionRefused", "compare_models", "convert_legacy",
           "get_model_version", "list_models", "load_model_from_registry", "load_registered_bundle", "mirror_pending",
           "model_history",
           "model_lineage", "model_name_for", "normalize_metrics", "promote_model", "register_all", "register_model",
           "main"]


def _common() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(add_help=False)
    add_common_flags(p)
    g = p.add_argument_group("storage")
    g.add_argument("--store", metavar="DIR", help=STORE_HELP)
    g.add_argument("--wandb-mode", choices=MODES,
                   help="W&B mirror mode (default: $WANDB_MODE, online with an API key, else offline)")
    return p


def build_parser() -> argparse.ArgumentParser:
    common = _common()
    parser = argparse.ArgumentParser(prog="model_registry.py",
                                     description="Model versions, aliases, gated promotion, lineage.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("register", parents=[common], help="register a model file as a new version")
    p.add_argument("path", metavar="PATH", help="a models/*_model.skops bundle")
    p.add_argument("--name", required=True, help="registered model name, e.g. label-spreading-classifier")
    p.add_argument("--accuracy", type=float,
                   help="test accuracy in [0, 1] (optional when the bundle records its metrics, as trained ones do)")
    p.add_argument("--f1", type=float, help="F1 score in [0, 1] (optional like --accuracy)")
    p.add_argument("--alias", action="append", default=[],
                   help="alias to set (repeatable): staging, production ('latest' moves by itself)")
    p.add_argument("--extractor", metavar="PATH", help=f"feature extractor (default: {EXTRACTOR_FILE} beside PATH)")

    p = sub.add_parser("register-all", parents=[common], help="register every model in a models folder")
    p.add_argument("--models-dir", default="models", help="folder with training_results.json (default: models)")
    p.add_argument("--alias", action="append", default=[], help="alias to set on every model (repeatable)")

    p = sub.add_parser("list", parents=[common], help="names, versions, aliases and key metrics")
    p.add_argument("name", nargs="?", help="only this model")

    p = sub.add_parser("compare", parents=[common], help="metrics side by side, best marked")
    p.add_argument("refs", nargs="+", metavar="NAME[:alias|:vK]",
                   help="models to compare (a lone bare NAME compares all its versions)")

    p = sub.add_parser("promote", parents=[common], help="move an alias (production is metric-gated)")
    p.add_argument("name")
    p.add_argument("--to-alias", required=True, help="alias to move, e.g. staging or production")
    p.add_argument("--version", help="version to point at, e.g. v3 or an alias (default: latest)")
    p.add_argument("--force", action="store_true", help="override the metric gate (needs --reason)")
    p.add_argument("--reason", help="why; kept in the audit log")
    p.add_argument("--tolerance", type=float, help="allowed test-accuracy drop for protected aliases (default 0.01, at most 0.05)")

    p = sub.add_parser("convert", parents=[common],
                       help="turn old pickle bundles (models/*_model.pkl, registered versions) into .skops, once")
    p.add_argument("--models-dir", default="models", help="folder with *_model.pkl files (default: models)")
    p.add_argument("--i-trust-these-files", dest="consent", action="store_true",
                   help="you trust these pickles: reading them could run code (without it: say what would change)")

    p = sub.add_parser("mirror-pending", parents=[common],
                       help="mirror to W&B every version whose mirror failed or never ran (W&B was off or down)")
    p.add_argument("--name", help="only this model")

    p = sub.add_parser("sync-lineage", parents=[common],
                       help="after `wandb sync` of offline runs: declare their inputs (dataset -> training, model -> "
                            "monitoring, extractor -> model) and link registered versions into the W&B Model "
                            "Registry with their aliases (online; what W&B confirmed is never sent again)")
    p.add_argument("--list", action="store_true", dest="list_edges",
                   help="only list the recorded edges and whether each is done (no W&B needed)")

    p = sub.add_parser("history", parents=[common], help="audit log of every alias move")
    p.add_argument("name")

    p = sub.add_parser("lineage", parents=[common], help="model -> run -> dataset version -> extractor")
    p.add_argument("ref", metavar="NAME[:alias|:vK]")
    return parser


def _fmt(value: Any) -> str:
    return f"{value:.4f}" if isinstance(value, float) else "-" if value is None else str(value)


def _print_version(r: dict[str, Any]) -> None:
    state = "registered" if r["created"] else "already registered as"
    aliases = ", ".join(r["aliases"]) or "-"
    print(f"{state} {r['ref']}  digest {r['digest'][:12]}  aliases: {aliases}"
          + ("; its pending W&B mirror is done now" if r.get("was_pending") and r.get("mirrored") else ""))


def _print_list(models: list[dict[str, Any]]) -> None:
    if not models:
        print("registry is empty (register a model first)")
    for m in models:
        aliases = ", ".join(f"{a}={v}" for a, v in sorted(m["aliases"].items()))
        print(f"{m['name']}  ({len(m['versions'])} versions; {aliases})")
        for v in m["versions"]:
            mets = "  ".join(f"{k}={_fmt(x)}" for k, x in v["metrics"].items())
            print(f"  {v['version']:>5}  {v['created_at']}  {v['digest'][:12]}  {mets}  {' '.join(v['aliases'])}")


def _print_compare(res: dict[str, Any]) -> None:
    cols = res["metrics"]
    width = max(len(m["ref"]) for m in res["models"]) + 2
    print("model".ljust(width) + "".join(c.rjust(16) for c in cols))
    for m in res["models"]:
        cells = [(_fmt(m["metrics"].get(c)) + ("*" if c in m["best"] else " ")).rjust(16) for c in cols]
        print(m["ref"].ljust(width) + "".join(cells))
    print("* best per metric")


def _print_history(events: list[dict[str, Any]]) -> None:
    for e in events:
        if e["action"] == "converted":
            d = e["details"]
            print(f"{e['at']}  converted {e['to']}: pickle {d['from_digest'][:12]} -> skops {d['to_digest'][:12]}")
            continue
        why = f"  reason: {e['reason']}" if e["reason"] else ""
        gate = e["details"].get("refusal")
        print(f"{e['at']}  {e['action']:<8} {e['alias']}: {e['from'] or '-'} -> {e['to']}{why}"
              + (f"  [{gate}]" if gate else ""))


def _print_lineage(lin: dict[str, Any]) -> None:
    m, r, d, x = lin["model"], lin["run"], lin["dataset"], lin["extractor"]
    print(f"model     {m['ref']}  aliases: {', '.join(m['aliases']) or '-'}  digest {m['digest'][:12]}")
    print(f"run       {r['id'] or '-'}  code {r['code_version'] or '-'}  seed {_fmt(r['seed'])}")
    print(f"dataset   {d['version'] or '-'}  digest {(d['digest'] or '-')[:12]}")
    print(f"extractor {x['digest'][:12]}")


def _sync_lineage(args: argparse.Namespace) -> None:
    from src.tracking.journal import edges, sync_lineage

    if args.list_edges:
        rows = [e.to_dict() for e in edges(store=args.store)]
        if args.json:
            print_json(rows)
        for r in [] if args.json else rows:
            where = f"Model Registry {r['target']} [{', '.join(r['aliases']) or '-'}]" if r["kind"] == "link" \
                else f"run {r['run']}"
            print(f"{'done   ' if r['done'] else 'pending'}  {r['artifact']} -> {where}")
        return
    res = sync_lineage(store=args.store, wandb_mode=args.wandb_mode)
    if args.json:
        print_json(res)
        return
    print(f"declared {len(res['done'])} lineage edge(s) in W&B; {len(res['waiting'])} still waiting")
    for w in res["waiting"]:
        print(f"  waiting: {w['artifact']} ({w['reason']})")


def command(args: argparse.Namespace) -> int:

    store = args.store
    if args.command == "register":
        res = mr.register_model(args.path, args.name, {"test_accuracy": args.accuracy, "f1_score": args.f1},
                                args.alias, extractor_path=args.extractor, store=store, wandb_mode=args.wandb_mode,
                                required_metrics=("test_accuracy", "f1_score"))
        print_json(res) if args.json else _print_version(res)
    elif args.command == "register-all":
        res = mr.register_all(args.models_dir, args.alias, store=store, wandb_mode=args.wandb_mode)
        if args.json:
            print_json(res)
        else:
            for r in res:
                _print_version(r)
    elif args.command == "list":
        res = mr.list_models(args.name, store=store)
        print_json(res) if args.json else _print_list(res)
    elif args.command == "compare":
        res = mr.compare_models(args.refs, store=store)
        print_json(res) if args.json else _print_compare(res)
    elif args.command == "promote":
        res = mr.promote_model(args.name, args.to_alias, args.version, force=args.force, reason=args.reason,
                               tolerance=args.tolerance, store=store, wandb_mode=args.wandb_mode)
        if args.json:
            print_json(res)
        else:
            print(f"{res['action']}: {args.name}:{res['alias']} {res['from'] or '-'} -> {res['to']}")
    elif args.command == "convert":
        res = convert_legacy(args.models_dir, consent=args.consent, store=store, wandb_mode=args.wandb_mode)
        if args.json:
            print_json(res)
        elif not res["files"] and not res["versions"]:
            print(f"nothing to convert: no pickle bundles in {args.models_dir} or the registry")
        else:
            for f in res["files"]:
                print(f"converted {f['from']} -> {f['to']}  digest {f['digest'][:12]}")
            for v in res["versions"]:
                print(f"converted {v['ref']}  digest {v['from_digest'][:12]} -> {v['to_digest'][:12]}")
    elif args.command == "mirror-pending":
        done = mr.mirror_pending(args.name, store=store, wandb_mode=args.wandb_mode)
        if args.json:
            print_json({"mirrored": done})
        else:
            print(f"mirrored {len(done)} pending version(s) to W&B" + (": " + ", ".join(done) if done else ""))
    elif args.command == "sync-lineage":
        _sync_lineage(args)
    elif args.command == "history":
        res = mr.model_history(args.name, store=store)
        print_json(res) if args.json else _print_history(res)
    elif args.command == "lineage":
        res = mr.model_lineage(args.ref, store=store)
        print_json(res) if args.json else _print_lineage(res)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    return run_cli(build_parser(), argv, command, flags={"extractor_path": "--extractor"})


if __name__ == "__main__":
    raise SystemExit(main())
