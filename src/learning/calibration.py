"""Pseudo-label confidences that mean what they say, and the confidence above which to accept them.

The confidence a model gives a pool image (label spreading's label confidence, or a classifier's
probability) is not a probability of being right: on real photos at 3 labels per class self-training's
median confidence was ~0.99 while it was ~53 % right. Validation scores labeled images treated as
unlabeled (:class:`~src.learning.validation.Validation`: the confidence the fit gave each held-out image
and whether its label was right; training passes every labeled photo, each from the fold that hid it,
:func:`~src.training.pseudo_labels.calibration_of`) — the same kind of images as the pool, so:

- :func:`fit_calibration`: a monotone map from raw confidence to the probability of being right
  (logistic on the confidence's logit, two parameters: stable on the few dozen held-out images a small
  labeled set gives), fitted on those images;
- :func:`reliability`: per confidence bin, mean confidence against accuracy, and the expected calibration
  error (ECE), before and after the map;
- :func:`acceptance_threshold`: the lowest confidence at which the held-out images above it are right at
  least :data:`TARGET` of the time with one-sided 95 % confidence (Wilson lower bound, z = 1.645), over at
  least :data:`MIN_ROWS` images; ``None`` where none qualifies: then no bulk acceptance is recommended.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

TARGET = 0.95       # accepted pseudo-labels must be at least this often right
MIN_ROWS = 10       # held-out images needed above a threshold before it can be recommended
Z = 1.645           # Wilson lower bound's z: one-sided 95 % (z = 1, ~84 %, recommended minimums whose pool rows
                    # were 91.5–91.8 % right on real photos at 3 labels per class: P4, P7)
THRESHOLDS = (0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 0.98, 0.99, 0.995, 0.999)  # calibrated confidences considered
_EPS = 1e-6


def _logit(p: np.ndarray) -> np.ndarray:
    p = np.clip(np.asarray(p, dtype=np.float64), _EPS, 1 - _EPS)
    return np.log(p / (1 - p))


@dataclass(frozen=True)
class Calibration:
    """``p(right) = sigmoid(slope * logit(confidence) + intercept)``; identity-like until fitted."""

    slope: float = 1.0
    intercept: float = 0.0
    rows: int = 0  # held-out images it was fitted on

    def __call__(self, confidence) -> np.ndarray:
        z = self.slope * _logit(confidence) + self.intercept
        return 1.0 / (1.0 + np.exp(-z))


def fit_calibration(confidence: np.ndarray, right: np.ndarray) -> Calibration:
    """The map fitted on held-out (confidence, right) pairs; with fewer than :data:`MIN_ROWS` pairs, or all
    right or all wrong, the identity (nothing to learn from)."""
    confidence, right = np.asarray(confidence, dtype=np.float64), np.asarray(right, dtype=bool)
    if len(right) < MIN_ROWS or right.all() or not right.any():
        return Calibration(rows=len(right))
    from sklearn.linear_model import LogisticRegression

    lr = LogisticRegression(C=1.0).fit(_logit(confidence)[:, None], right.astype(int))
    slope = float(lr.coef_[0, 0])
    if slope <= 0:  # confidence carries no usable order here: a flat map, the held-out accuracy everywhere
        p = float(np.clip(right.mean(), _EPS, 1 - _EPS))
        return Calibration(0.0, float(np.log(p / (1 - p))), len(right))
    return Calibration(slope, float(lr.intercept_[0]), len(right))


def support(shipped: np.ndarray, committee: list[tuple[np.ndarray, np.ndarray]]) -> np.ndarray:
    """How much a committee of models backs the ``shipped`` labels: per row, the mean over its models
    ``(labels, confidences)`` of the confidence where the model gives the shipped label, 0 where it gives
    another. The shipped model's own confidence ranks badly where it saturates (self-training at 3 labels per
    class on real photos: no depth of its ranking of the pool was 95 % right; with label spreading's
    confidence in the same labels two thirds of the pool was, P16); one model alone is its own confidence."""
    shipped = np.asarray(shipped)
    if not committee:
        return np.zeros(len(shipped))
    return np.mean([np.where(np.asarray(lab) == shipped, np.asarray(conf, dtype=np.float64), 0.0)
                    for lab, conf in committee], axis=0)


def reliability(confidence: np.ndarray, right: np.ndarray, bins: int = 10) -> dict[str, Any]:
    """ECE and the per-bin table (equal-width bins over [0, 1]; empty bins left out)."""
    confidence, right = np.asarray(confidence, dtype=np.float64), np.asarray(right, dtype=bool)
    if not len(right):
        return {"ece": None, "bins": []}
    edges = np.linspace(0, 1, bins + 1)
    which = np.clip(np.digitize(confidence, edges[1:-1]), 0, bins - 1)
    table, ece = [], 0.0
    for b in range(bins):
        sel = which == b
        if sel.any():
            conf, acc = float(confidence[sel].mean()), float(right[sel].mean())
            table.append({"from": float(edges[b]), "to": float(edges[b + 1]), "images": int(sel.sum()),
                          "confidence": conf, "accuracy": acc})
            ece += sel.mean() * abs(conf - acc)
    return {"ece": float(ece), "bins": table}


def wilson_lower(right: int, n: int, z: float = Z) -> float:
    """Lower end of the Wilson score interval of ``right`` successes in ``n``."""
    if n == 0:
        return 0.0
    p = right / n
    centre = p + z * z / (2 * n)
    spread = z * np.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    return float((centre - spread) / (1 + z * z / n))


def evidence_discount(right: np.ndarray, unbiased: np.ndarray | None) -> float:
    """What a right answer on a photo the extractor trained on counts for: the accuracy on the photos it never
    saw (``unbiased``: the fine-tune's held-out ones) over the accuracy on the rest, at most 1; 1 where either
    group is empty. The photos it trained on are easier for it: on real photos at 5-10 labels per class they
    were right more often than its held-out ones in 9 runs of 9 and than the pool in 6 (by up to 3.7 points),
    and the minimum they recommended at face value let through pool labels 92.7 % right in one draw (P16)."""
    right = np.asarray(right, dtype=bool)
    if unbiased is None:
        return 1.0
    unbiased = np.asarray(unbiased, dtype=bool)
    if not unbiased.any() or unbiased.all() or not right[~unbiased].any():
        return 1.0
    return float(min(1.0, right[unbiased].mean() / right[~unbiased].mean()))


def acceptance_threshold(confidence: np.ndarray, right: np.ndarray, target: float = TARGET,
                         min_rows: int = MIN_ROWS, unbiased: np.ndarray | None = None) -> float | None:
    """The lowest of :data:`THRESHOLDS` whose held-out images at or above it are right at least ``target`` of
    the time (Wilson lower bound), counting at least ``min_rows``; None where none is. Rows outside
    ``unbiased`` count their right answers at :func:`evidence_discount`."""
    confidence, right = np.asarray(confidence, dtype=np.float64), np.asarray(right, dtype=bool)
    unbiased = np.ones(len(right), dtype=bool) if unbiased is None else np.asarray(unbiased, dtype=bool)
    discount = evidence_discount(right, unbiased)
    for t in THRESHOLDS:
        sel = confidence >= t
        counted = right[sel & unbiased].sum() + discount * right[sel & ~unbiased].sum()
        if sel.sum() >= min_rows and wilson_lower(float(counted), int(sel.sum())) >= target:
            return t
    return None


@dataclass
class PseudoLabelCalibration:
    """What calibration found on the held-out images; recorded with the pseudo-labels."""

    held_out_images: int = 0
    slope: float = 1.0
    intercept: float = 0.0
    ece_raw: float | None = None          # the raw confidences' expected calibration error on held-out images
    ece_calibrated: float | None = None   # in-sample after the map: how close the map fits, not a test
    recommended_min_confidence: float | None = None  # calibrated; None: no bulk acceptance recommended
    target: float = TARGET
    reliability: list[dict] = field(default_factory=list)  # calibrated, per bin
    committee: list[str] = field(default_factory=list)  # the models whose support was calibrated (shipped first)
    evidence_discount: float = 1.0  # what a right answer on a photo the extractor trained on counted for

    def record(self) -> dict[str, Any]:
        return asdict(self)


def calibrate_pseudo_labels(confidence: np.ndarray, right: np.ndarray, unbiased: np.ndarray | None = None
                            ) -> tuple[Calibration, PseudoLabelCalibration]:
    """Fit the map on held-out (confidence, right) and choose the recommended minimum confidence on the
    calibrated scale (``unbiased``: :func:`acceptance_threshold`)."""
    confidence, right = np.asarray(confidence, dtype=np.float64), np.asarray(right, dtype=bool)
    cal = fit_calibration(confidence, right)
    calibrated = cal(confidence)
    after = reliability(calibrated, right)
    rec = PseudoLabelCalibration(held_out_images=len(right), slope=cal.slope, intercept=cal.intercept,
                                 ece_raw=reliability(confidence, right)["ece"], ece_calibrated=after["ece"],
                                 recommended_min_confidence=acceptance_threshold(calibrated, right, unbiased=unbiased),
                                 reliability=after["bins"], evidence_discount=evidence_discount(right, unbiased))
    return cal, rec
