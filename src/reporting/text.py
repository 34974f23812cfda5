"""Plain-text summaries printed by the CLIs."""

from __future__ import annotations

from typing import Any

from src.core.paths import EXTRACTOR_FILE


def _f(v) -> str:
    return "-" if v is None else f"{v:.4f}" if isinstance(v, float) else str(v)


def format_table(headers: list[str], rows: list[list[Any]]) -> str:
    cells = [headers] + [[_f(c) for c in r] for r in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths)) for r in cells]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def _round_line(r: dict[str, Any] | None) -> list[str]:
    """The pseudo-label fine-tuning round in one line (nothing when it did not run)."""
    if not r or not r.get("ran"):
        return []
    acc = r.get("pseudo_label_accuracy")
    return [f"pseudo-label round: {r['pseudo_labels']} pseudo-labels"
            + (f" ({acc:.1%} right where labels were hidden)" if acc is not None else "")
            + f", held-out accuracy {_f(r['heldout_accuracy_before'])} → {_f(r['heldout_accuracy_after'])}"
            + (f", log-loss {_f(r.get('heldout_log_loss_before'))} → {_f(r.get('heldout_log_loss_after'))}"
               if r.get("heldout_log_loss_after") is not None else "") + ": "
            + ("kept: the new extractor is used" if r["kept"] else "dropped: the first extractor is used")
            + (" (cached)" if r.get("cached") else f" ({r['seconds']:.1f} s)")]


def _preferred(summary: dict[str, Any]) -> str:
    """Why the pick is not the top validation accuracy, when it is not (the one-standard-error rule)."""
    top, se, val = summary.get("top_val_accuracy"), summary.get("val_standard_error"), summary.get("best_val_accuracy")
    if top is None or se is None or val is None or val >= top:
        return ""
    return f"; within one standard error ({se:.4f} on {summary['val_images']} images) of the top {top:.4f}: preferred"


def _validation(summary: dict[str, Any]) -> str:
    """The validation estimate with its uncertainty and size."""
    val, n = summary.get("best_val_accuracy"), summary.get("val_images")
    if val is None:
        return "no validation: too few labeled images per class to hold any out"
    from src.learning.validation import standard_error

    return f"val accuracy {val:.4f}" + (f" ± {standard_error(val, n):.4f} on {n} images" if n else "")


def _best_line(summary: dict[str, Any]) -> str:
    best, test = summary["best_algorithm"], summary["best_test_accuracy"]
    if best == "baseline":
        why = (f"{summary.get('best_semi_supervised')} was right on {summary.get('val_won_vs_baseline', 0)} and "
               f"wrong on {summary.get('val_lost_vs_baseline', 0)} of the validation images where the two differ"
               if summary.get("val_images") else "nothing to validate the unlabeled images' help on")
        return (f"shipped: the labeled-only baseline ({_validation(summary)}): validation could not show the "
                f"unlabeled images helping ({why}); test accuracy {test:.4f}")
    return (f"best by validation: {best} ({_validation(summary)}" + _preferred(summary) + "), "
            f"test accuracy {test:.4f} ({summary['gain_over_baseline']:+.4f} vs labeled-only baseline)")


def format_training_summary(results: dict[str, Any]) -> str:
    best = results["summary"]["best_algorithm"]
    shift = "shift_accuracy" in results["baseline"]  # with --shift-dir
    cols = ("val_accuracy", "test_accuracy", *(("shift_accuracy",) if shift else ()), "f1_score",
            "unlabeled_accuracy", "fit_seconds")
    rows = [[("* " if a == best else "  ") + a, *(m.get(c) for c in cols)] for a, m in results["algorithms"].items()]
    rows.append([("* " if best == "baseline" else "  ") + "baseline (labeled only)",
                 *(results["baseline"].get(c) for c in cols)])
    d, ft = results["dataset"], results["extractor"]["fine_tune"]
    out = [
        f"dataset {d['root']}: {d['train_samples']} train ({d['labeled_samples']} labeled"
        + (f", {d['catalogue_samples']} of them catalogue shots" if d.get("catalogue_samples") else "") + "), "
        + (f"{d['pool_samples']} unlabeled in the pool, " if d.get("pool_samples") else "")
        + f"{d['test_samples']} test, {len(d['classes'])} classes" + (f", version {d['version']}" if d["version"] else ""),
        f"fine-tuning: {ft['epochs']} epochs, " + (f"taken from the cache (first run took {ft['seconds']:.1f} s)"
                                                   if ft["cached"] else f"{ft['seconds']:.1f} s"),
        *_round_line(results["extractor"].get("pseudo_label_round")),
        "",
        format_table(["algorithm", "val_acc", "test_acc", *(["shift_acc"] if shift else []), "macro_f1",
                      "unlabeled_acc", "fit_s"], rows),
        "",
        _best_line(results["summary"]),
        *([f"style shift ({results['shift']['samples']} images in {results['shift']['root']}): accuracy "
           f"{results['summary']['best_shift_accuracy']:.4f} ({results['summary']['baseline_shift_accuracy']:.4f} "
           "labeled-only baseline), reported only"] if shift else []),
        f"models:  {results['models_dir']}/{{algorithm}}_model.skops, {EXTRACTOR_FILE}, training_results.json",
    ]
    pl = results.get("pseudo_labels")
    if pl:
        q = pl["confidence_quantiles"]
        out.append(f"pseudo-labels: {pl['count']} pool images ({pl['algorithm']}, median confidence "
                   f"{q.get('p50', 0):.3f}) in {results['models_dir']}/{pl['file']}")
        rec, held = pl.get("recommended_min_confidence"), (pl.get("calibration") or {}).get("held_out_images", 0)
        out.append(f"  recommended: {pl['accepted']} with confidence >= {rec} (>= 95 % right on {held} labeled "
                   "images, each scored without its label); labeling.py apply --labels takes those" if rec is not None
                   else f"  none recommended for bulk acceptance ({held} labeled images, each scored without its "
                   "label, cannot show any confidence 95 % right): label the pool with labeling.py suggest")
    if results["run"].get("dir"):
        out.append(f"W&B run ({results['run']['mode']}): {results['run']['dir']}")
    if results.get("store"):
        out.append(f"store:   {results['store']['root']}, {results['store']['bytes'] / 1e6:,.0f} MB (cached features, "
                   "extractors, versions; `python src/housekeeping.py du` shows what, `gc --dry-run` what can go)")
    return "\n".join(out)
