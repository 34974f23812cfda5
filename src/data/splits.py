"""Seeded, stratified splits of labeled images: which labels training may use, and fine-tuning's hold-out."""

from __future__ import annotations

import numpy as np

from src.core.errors import ConfigError


def validate_labeled_ratio(ratio: float) -> float:
    if isinstance(ratio, bool) or not isinstance(ratio, (int, float)) or not (0 < float(ratio) <= 1):
        raise ConfigError(f"labeled_ratio must be in (0, 1], got {ratio!r}", hint="for example `labeled_ratio=0.1`",
                          params=("labeled_ratio",))
    return float(ratio)


def labeled_split(labels: np.ndarray, ratio: float, n_classes: int, seed: int) -> np.ndarray:
    """Boolean mask of labeled samples: stratified, seeded, at least one per class.

    Raises ConfigError when ``ratio`` is outside (0, 1] or gives fewer labeled
    samples than there are classes.
    """
    ratio = validate_labeled_ratio(ratio)
    wanted = int(round(ratio * len(labels)))
    if wanted < n_classes:
        raise ConfigError(
            f"labeled_ratio {ratio} gives {wanted} labeled images for {n_classes} classes",
            hint=f"use at least {n_classes / max(1, len(labels)):.3f} so every class has a labeled image")
    rng = np.random.default_rng(seed)
    mask = np.zeros(len(labels), dtype=bool)
    for c in range(n_classes):
        idx = np.flatnonzero(labels == c)
        if len(idx) == 0:
            continue
        k = min(len(idx), max(1, int(round(ratio * len(idx)))))
        mask[rng.choice(idx, size=k, replace=False)] = True
    return mask


def holdout_split(labels: np.ndarray, fraction: float, seed: int, groups: np.ndarray | None = None
                  ) -> tuple[np.ndarray, np.ndarray]:
    """Split labeled indices into (fit, validation) for fine-tuning; classes with one or two
    labeled images stay in the fit part, the others give about ``fraction`` to validation.

    ``groups`` (one id per index, e.g. :func:`~src.learning.groups.near_duplicate_groups`) keeps
    near-identical photos on one side: a group goes to validation whole or not at all, and never
    empties its class's fit part. Without groups every image is its own group (the same split)."""
    rng = np.random.default_rng(seed + 1)
    groups = np.arange(len(labels)) if groups is None else np.asarray(groups)
    fit, val = [], []
    for c in np.unique(labels):
        idx = rng.permutation(np.flatnonzero(labels == c))
        k = int(round(fraction * len(idx))) if len(idx) >= 3 else 0
        held: list[int] = []
        decided: set = set()
        for i in idx:
            g = groups[i]
            if g in decided:
                continue
            decided.add(g)
            members = idx[groups[idx] == g]
            if len(held) + len(members) <= k:
                held += members.tolist()
        val += held
        fit += sorted(set(idx.tolist()) - set(held))
    return np.asarray(sorted(fit), dtype=np.int64), np.asarray(sorted(val), dtype=np.int64)
