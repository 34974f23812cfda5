"""The run's summary: the best algorithm, its headline metric, and the results record."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from src.core.paths import EXTRACTOR_FILE
from src.features.finetune import FineTuneResult
import numpy as np

from src.learning.validation import Validation, image_losses, standard_error
from src.training.fitting import SHIFT_KEY
from src.training.state import TrainState

COMPARISON_COLUMNS = ["algorithm", "val_accuracy", "val_log_loss", "test_accuracy", "f1_score", "precision", "recall",
                      "unlabeled_accuracy", "fit_seconds"]
# The order in which algorithms are preferred when validation cannot tell them apart: self-training was
# the most accurate on the hidden training labels at 4-8 labels per class in every measured set (at 15
# all three within 0.1 point; MLOPS.md, "Few labels": choosing the algorithm), label spreading next
# where labels are fewest.
PREFERENCE = ("self_training", "label_spreading", "label_propagation")
SELECTION = ("val_accuracy: labeled images no fit has seen (the fine-tune's held-out part, or 3-fold cross-validation "
             "without fine-tuning); among the algorithms within one standard error of the best, the first of "
             f"{', '.join(PREFERENCE)} (ties outside these by val_log_loss on the same images); shipped only if it "
             "is right on more of those images than the labeled-only baseline (equal: a log-loss lower by more than "
             "one standard error of the difference), else the "
             "baseline ships")


def beats_baseline(algo: Validation | None, baseline: Validation | None) -> tuple[bool, int, int]:
    """(ships, won, lost): the pool's model ships only where validation shows it better than the labeled-only
    one on the same images: right on more of them (``won``: it right, baseline wrong; ``lost``: the reverse),
    or on as many with a log-loss lower by more than one standard error of the per-image difference (a tie
    broken by 2e-5 of log-loss shipped self-training 2.4 points below the baseline on real photos, P16). No
    validation at all (1-2 labels per class): the baseline ships."""
    if algo is None or baseline is None or not algo.n or not np.array_equal(algo.rows, baseline.rows):
        return False, 0, 0
    won, lost = int((algo.right & ~baseline.right).sum()), int((~algo.right & baseline.right).sum())
    return won > lost or (won == lost and _clearly_lower_loss(algo, baseline)), won, lost


def _clearly_lower_loss(algo: Validation, baseline: Validation) -> bool:
    d = image_losses(algo.p_true) - image_losses(baseline.p_true)
    se = d.std(ddof=1) / np.sqrt(len(d)) if len(d) > 1 else np.inf
    return bool(d.mean() < -se)


def select_best(per_algo: dict[str, dict], n_val: int | None = None) -> str:
    """The algorithm validation picks; test accuracy never decides.

    The highest validation accuracy, ties to the lower validation log-loss (the same folds' probability
    of the true label), then (and with no validation at all, when no class has two labels) to the earlier
    algorithm in the configured order. With ``n_val``, the number of images the validation scored, the
    one-standard-error rule applies first: every algorithm within one standard error of that best
    accuracy is as good as validation can tell, and among them the first in :data:`PREFERENCE` wins
    (algorithms outside it rank after, in the order above). At 4-8 labels per class one image decides
    between algorithms; the rule stops that noise from picking against what was measured.
    """
    order = list(per_algo)

    def key(a):
        m = per_algo[a]
        acc, loss = m["val_accuracy"], m.get("val_log_loss")
        return (acc if acc is not None else -1.0, -loss if loss is not None else float("-inf"), -order.index(a))

    best = max(order, key=key)
    acc = per_algo[best]["val_accuracy"]
    if acc is None or not n_val:
        return best
    floor = acc - standard_error(acc, n_val) - 1e-12
    close = [a for a in order if per_algo[a]["val_accuracy"] is not None and per_algo[a]["val_accuracy"] >= floor]
    rank = {a: i for i, a in enumerate(PREFERENCE)}
    return min(close, key=lambda a: (rank.get(a, len(PREFERENCE)), tuple(-v for v in key(a))))


def summarize(per_algo: dict[str, dict], baseline: dict, n_val: int | None = None,
              validations: dict[str, Validation] | None = None) -> dict[str, Any]:
    """The summary; ``n_val``: the number of labeled images validation scored (:func:`select_best`);
    ``validations``: per algorithm and :data:`~src.training.fitting.BASELINE`, what validation measured —
    with them the pick must beat the labeled-only baseline (:func:`beats_baseline`) or the baseline ships."""
    from src.training.fitting import BASELINE

    best = pick = select_best(per_algo, n_val)
    verdict: dict[str, Any] = {}
    if validations is not None:
        ships, won, lost = beats_baseline(validations.get(pick), validations.get(BASELINE))
        verdict = {"pool_model_beats_baseline": ships, "val_won_vs_baseline": won, "val_lost_vs_baseline": lost}
        if not ships:
            best = BASELINE
    chosen = baseline if best == BASELINE else per_algo[best]
    best_acc = chosen["test_accuracy"]
    top = max((m["val_accuracy"] for m in per_algo.values() if m["val_accuracy"] is not None), default=None)
    out = {"best_algorithm": best, "best_val_accuracy": chosen["val_accuracy"], "best_semi_supervised": pick, **verdict,
           "top_val_accuracy": top, "val_images": n_val,
           "val_standard_error": standard_error(top, n_val) if top is not None and n_val else None,
           "best_test_accuracy": best_acc, "baseline_val_accuracy": baseline["val_accuracy"],
           "baseline_test_accuracy": baseline["test_accuracy"],
           "gain_over_baseline": best_acc - baseline["test_accuracy"], "selection": SELECTION}
    if SHIFT_KEY in baseline:  # with a --shift-dir: the style-shifted accuracy of what validation picked
        out.update(best_shift_accuracy=chosen[SHIFT_KEY], baseline_shift_accuracy=baseline[SHIFT_KEY])
    return out


def run_summary(s: TrainState, per_algo: dict[str, dict], baseline: dict) -> dict[str, Any]:
    """The run's summary (:func:`summarize`, over the images this run's validation scored): computed once,
    then logged (:func:`log_summary`) and recorded (:func:`build_results`)."""
    n_val = s.validations[next(iter(per_algo))].n if per_algo else None
    return summarize(per_algo, baseline, n_val, s.validations)


def log_summary(s: TrainState, summary: dict[str, Any], per_algo: dict[str, dict], baseline: dict) -> None:
    best, best_acc, best_val = summary["best_algorithm"], summary["best_test_accuracy"], summary["best_val_accuracy"]
    tr = s.tracker
    shift = {f"summary/{k}": summary[k] for k in ("best_shift_accuracy", "baseline_shift_accuracy") if k in summary}
    tr.log({"val_accuracy": best_val, "test_accuracy": best_acc, "summary/best_algorithm": best,
            "summary/best_val_accuracy": best_val, "summary/best_test_accuracy": best_acc,
            "summary/baseline_test_accuracy": baseline["test_accuracy"], **shift})
    tr.summary({"val_accuracy": best_val, "test_accuracy": best_acc, "best_algorithm": best,
                **{f"summary/{k}": v for k, v in summary.items()}})
    cols = COMPARISON_COLUMNS + ([SHIFT_KEY] if SHIFT_KEY in baseline else [])
    tr.table("algorithm_comparison", cols,
             [[a] + [m[k] for k in cols[1:]] for a, m in {**per_algo, "baseline (labeled only)": baseline}.items()])


def build_results(s: TrainState, per_algo: dict[str, dict], baseline: dict, summary: dict[str, Any],
                  ft: FineTuneResult) -> dict[str, Any]:
    cfg, ds, mask = s.cfg, s.ds, s.mask
    shift = {"shift": s.shift.record(ds.classes)} if s.shift is not None else {}
    return {
        "config": cfg.tracked(), "seed": cfg.seed, **shift,
        "dataset": {"root": str(ds.root), "digest": ds.digest, "version": s.version, "classes": ds.classes,
                    "train_samples": len(ds.train), "test_samples": len(ds.test),
                    "labeled_samples": int(mask.sum()), "unlabeled_samples": int((~mask).sum())},
        "extractor": {"path": EXTRACTOR_FILE, "digest": s.ext_digest, "precision": s.precision,
                      "int8_guard": s.int8_guard,
                      "fine_tune": {"epochs": cfg.fine_tune_epochs, "lr": cfg.fine_tune_lr, "seconds": ft.seconds,
                                    "cached": ft.cached, "history": ft.history,
                                    "best_val_accuracy": ft.best_val_accuracy}},
        "run": {"id": s.tracker.run_id, "mode": s.tracker.mode, "dir": None},
        "code_version": s.code_version,
        "algorithms": per_algo, "baseline": baseline, "summary": summary,
        "models_dir": str(Path(cfg.models_dir).resolve()),  # where the outputs are published
    }
