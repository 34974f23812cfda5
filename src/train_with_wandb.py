"""Train the semi-supervised grocery classifiers, tracked in W&B (offline by default).

Pipeline: scan (or generate) the dataset → seeded stratified labeled/unlabeled split (plus the
images of ``DATA_DIR/unlabeled/`` as unlabeled rows, whose pseudo-labels go to
``models/pseudo_labels.csv``) →
fine-tune EfficientNet-Lite0 on the labeled images (cached) → extract features (cached)
→ fit each semi-supervised algorithm plus the labeled-only baseline → evaluate, save
``models/{algorithm}_model.skops``, ``best_model.skops``, ``feature_extractor.pth``,
``training_results.json`` and confusion-matrix PNGs (staged, then published as one set: a failed
or killed run leaves the previous set usable), and log everything to one W&B run (``job_type="train"``).
The stages live in :mod:`src.training`; every default lives in :class:`TrainConfig`.

    python src/train_with_wandb.py --labeled-ratio 0.1 --algorithms label_spreading --json
"""

from __future__ import annotations

import sys
from pathlib import Path

if not __package__:  # `python CHECKOUT/src/x.py` runs CHECKOUT's package, not the one the venv installed
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import argparse
import dataclasses
import difflib
import inspect
import logging
import typing
from typing import Any, Sequence

from src.core.cli import STORE_HELP, add_common_flags, print_json, run_cli, show_progress
from src.features.runtimes import RUNTIMES
from src.tracking import MODES
from src.training.config import ALGORITHM_NAMES, TrainConfig
from src.training.pipeline import run_training

log = logging.getLogger(__name__)
DEFAULTS = TrainConfig()

__all__ = ["train_with_wandb", "TrainConfig", "build_parser", "config_from_args", "main"]


def train_with_wandb(*, epoch_callback=None, **options: Any) -> dict[str, Any]:
    """Run the whole training pipeline; returns the results dict also saved as
    ``models/training_results.json`` (``results["summary"]["best_test_accuracy"]`` …).

    Keyword options are :class:`~src.training.config.TrainConfig`'s fields, with the same
    defaults (the signature ``help()`` shows): ``labeled_ratio``, ``algorithms`` (a name or a list),
    ``fine_tune_epochs``, ``fine_tune_lr``, ``fine_tune_frozen_blocks``, ``n_neighbors``, ``run_name``,
    ``data_dir``, ``models_dir``, ``seed``, ``wandb_mode``, ``store``, ``group``, ``tags``, ``batch_size``,
    ``image_size``, ``progress``, ``runtime``, ``dataset_name``, ``shift_dir``.
    ``epoch_callback(epoch, val_accuracy)`` follows fine-tuning.
    """
    _check_options(options)
    return run_training(TrainConfig.from_options(**options), epoch_callback=epoch_callback)


def _signature() -> inspect.Signature:
    """``train_with_wandb``'s signature, generated from :class:`TrainConfig`: every field a keyword-only
    parameter with its default and type, so ``help()``, ``inspect`` and notebook tab completion show them."""
    hints = typing.get_type_hints(TrainConfig)
    params = [inspect.Parameter(f.name, inspect.Parameter.KEYWORD_ONLY, default=f.default,
                                annotation=hints.get(f.name, inspect.Parameter.empty))
              for f in dataclasses.fields(TrainConfig) if f.init]
    params.append(inspect.Parameter("epoch_callback", inspect.Parameter.KEYWORD_ONLY, default=None))
    return inspect.Signature(params, return_annotation=dict[str, Any])


def _check_options(options: dict[str, Any]) -> None:
    """A misspelt option is a TypeError that names the closest valid one, as Python's own would."""
    known = [p for p in train_with_wandb.__signature__.parameters if p != "epoch_callback"]
    for name in options:
        if name not in known:
            close = difflib.get_close_matches(name, known, n=1)
            raise TypeError(f"train_with_wandb() got an unexpected keyword argument {name!r}"
                            + (f"; did you mean {close[0]!r}?" if close else f"; valid: {', '.join(known)}"))


train_with_wandb.__signature__ = _signature()  # type: ignore[attr-defined]


class _SweepArgumentParser(argparse.ArgumentParser):
    """Also reads ``name=value`` for a known ``--name``: what ``wandb agent`` passes for a sweep whose
    ``command`` uses ``${args_no_hyphens}`` (``labeled_ratio=0.2``)."""

    def parse_known_args(self, args=None, namespace=None):
        import sys

        tokens, out = list(sys.argv[1:] if args is None else args), []
        for i, tok in enumerate(tokens):
            if tok == "--":
                out += tokens[i:]
                break
            name, eq, _ = tok.partition("=")
            prev = self._option_string_actions.get(tokens[i - 1]) if i else None
            takes_value = prev is not None and prev.nargs != 0 and not isinstance(prev, argparse._HelpAction)
            if eq and not tok.startswith("-") and f"--{name}" in self._option_string_actions and not takes_value:
                tok = f"--{tok}"
            out.append(tok)
        return super().parse_known_args(out, namespace)


def build_parser() -> argparse.ArgumentParser:
    d = DEFAULTS
    p = _SweepArgumentParser(
        prog="train_with_wandb.py",
        description="Train label propagation, label spreading and self-training on EfficientNet-Lite0 "
                    "features, tracked in W&B. Both --flag-name and --flag_name spellings work, and "
                    "name=value (wandb agent's ${args_no_hyphens}).")
    g = p.add_argument_group("experiment")
    g.add_argument("--labeled-ratio", "--labeled_ratio", type=float, default=d.labeled_ratio,
                   help="fraction of training images whose labels are used, in (0, 1] (default: every label; "
                        "below 1 hides the rest to simulate scarce labels on a fully labeled folder)")
    g.add_argument("--algorithms", "--algorithm", nargs="+", choices=ALGORITHM_NAMES, default=list(d.algorithms),
                   metavar="ALGO", help=f"one or more of {', '.join(ALGORITHM_NAMES)} (default: all)")
    g.add_argument("--fine-tune-epochs", "--fine_tune_epochs", type=int, default=d.fine_tune_epochs,
                   help=f"epochs of backbone fine-tuning on the labeled images; 0 = frozen (default {d.fine_tune_epochs})")
    g.add_argument("--pseudo-finetune-epochs", "--pseudo_finetune_epochs", type=int,
                   default=d.pseudo_finetune_epochs,
                   help="epochs of a second fine-tuning round on labeled + confident pseudo-labeled images, kept "
                        "only where the classifiers do better on held-out labeled images; 0 = off "
                        f"(default {d.pseudo_finetune_epochs})")
    g.add_argument("--pseudo-labels-per-class", "--pseudo_labels_per_class", type=int,
                   default=d.pseudo_labels_per_class,
                   help="the round's most confident agreeing pseudo-labels kept per class "
                        f"(default {d.pseudo_labels_per_class})")
    g.add_argument("--pseudo-labels-per-epoch", "--pseudo_labels_per_epoch", type=int,
                   default=d.pseudo_labels_per_epoch,
                   help=f"pseudo-labeled images one round epoch draws (default {d.pseudo_labels_per_epoch})")
    g.add_argument("--pseudo-finetune-image-size", "--pseudo_finetune_image_size", type=int,
                   default=d.pseudo_finetune_image_size, metavar="PX",
                   help="pixels the round trains at; its held-out images and the extractor stay at --image-size "
                        "(default 0: 5/7 of --image-size, 160 at 224)")
    g.add_argument("--fine-tune-lr", "--fine_tune_lr", type=float, default=d.fine_tune_lr,
                   help=f"learning rate of the fine-tunes (AdamW) (default {d.fine_tune_lr:g})")
    g.add_argument("--fine-tune-frozen-blocks", "--fine_tune_frozen_blocks", type=int,
                   default=d.fine_tune_frozen_blocks,
                   help="the stem and this many first blocks keep their weights in both fine-tunes; 0 trains "
                        f"every layer (default {d.fine_tune_frozen_blocks})")
    g.add_argument("--n-neighbors", "--n_neighbors", type=int, default=d.n_neighbors,
                   help=f"k of the kNN graph (default {d.n_neighbors})")
    g.add_argument("--seed", type=int, default=d.seed,
                   help=f"seeds the label draw, the fine-tune and the classifiers (default {d.seed})")
    g.add_argument("--batch-size", "--batch_size", type=int, default=d.batch_size,
                   help=f"images per feature-extraction batch (default {d.batch_size}; fine-tuning batches "
                        f"are {d.finetune_batch_size})")
    g.add_argument("--image-size", "--image_size", type=int, default=d.image_size,
                   help=f"pixels of the square the images are resized to (default {d.image_size})")
    g.add_argument("--runtime", choices=RUNTIMES, default=d.runtime,
                   help="feature extraction: auto = ONNX Runtime, int8 where a guard proves it harmless on this "
                        "dataset (agreement >= 99 %%, validation drop <= 0.5 points), else float32, torch if ONNX "
                        "fails ($MLOPS_RUNTIME overrides); onnx = float32; onnx-int8 = int8 without the guard; "
                        "torch (default %(default)s)")
    io = p.add_argument_group("paths and tracking")
    io.add_argument("--data-dir", "--data_dir", default=d.data_dir,
                    help="ImageFolder root with train/ and test/ (the default is generated if missing)")
    io.add_argument("--models-dir", "--models_dir", default=d.models_dir)
    io.add_argument("--shift-dir", "--shift_dir", default=d.shift_dir, metavar="DIR",
                    help="an ImageFolder split DIR/<class>/<images> in another style (the training classes or a "
                         "subset): each algorithm and the baseline also report shift_accuracy on it; never "
                         "used for fitting or selection (synth.py --style alt --shift-only draws one)")
    io.add_argument("--store", default=None, help=STORE_HELP)
    io.add_argument("--dataset-name", "--dataset_name", default=None,
                    help=f"name the dataset is versioned under (default: grocery-dataset for {d.data_dir}, "
                         "else the folder name; the same default as data_versioning.py)")
    io.add_argument("--run-name", "--run_name", default=None)
    io.add_argument("--tags", nargs="+", default=[], metavar="TAG", help="W&B run tags")
    io.add_argument("--group", default=None, help="W&B run group (sweeps use the sweep name)")
    io.add_argument("--wandb-mode", "--wandb_mode", choices=MODES, default=None,
                    help="default: $WANDB_MODE, else online if an API key is configured, else offline")
    add_common_flags(p)
    return p


def config_from_args(args: argparse.Namespace) -> TrainConfig:
    """The :class:`TrainConfig` the parsed command line asks for (not yet validated)."""
    return TrainConfig.from_options(
        labeled_ratio=args.labeled_ratio, algorithms=args.algorithms, fine_tune_epochs=args.fine_tune_epochs,
        fine_tune_lr=args.fine_tune_lr, fine_tune_frozen_blocks=args.fine_tune_frozen_blocks,
        n_neighbors=args.n_neighbors, run_name=args.run_name,
        data_dir=args.data_dir, models_dir=args.models_dir, seed=args.seed, wandb_mode=args.wandb_mode,
        store=args.store, group=args.group, tags=args.tags, dataset_name=args.dataset_name,
        batch_size=args.batch_size, image_size=args.image_size,
        progress=show_progress(args), runtime=args.runtime, shift_dir=args.shift_dir,
        pseudo_finetune_epochs=args.pseudo_finetune_epochs, pseudo_labels_per_class=args.pseudo_labels_per_class,
        pseudo_labels_per_epoch=args.pseudo_labels_per_epoch,
        pseudo_finetune_image_size=args.pseudo_finetune_image_size,
    )


def _command(args: argparse.Namespace) -> int:
    from src.reporting.text import format_training_summary

    results = run_training(config_from_args(args))
    if args.json:
        print_json(results)
    else:
        print(format_training_summary(results))
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    return run_cli(build_parser(), argv, _command)


if __name__ == "__main__":
    raise SystemExit(main())
