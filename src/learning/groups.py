"""Near-identical photos: which labeled images must sit on the same side of every validation split.

Photos of one product are often taken in bursts: two shots a step apart score each other almost
perfectly, so a split that puts one in the fit part and the other in the held-out part measures
recall, not generalisation. :func:`near_duplicate_groups` joins images whose pretrained features
have a cosine similarity of at least :data:`NEAR_DUPLICATE_COSINE` (and, transitively, their
neighbours'); :func:`~src.data.splits.holdout_split` and
:func:`~src.learning.validation.labeled_folds` keep each group whole.

Measured on the Grocery Store Dataset's ``train/`` (2,640 photos; benchmarks/README.md, G4): at 0.92
the groups hold 651 photos in 201 groups (largest 22), none mixing classes, and the pairs above
0.90 are the same shelf shot a step apart; perceptual hashes (DCT, 64 bits) join almost none of
them (41 pairs within 8 bits) and file numbers do not follow shot order; the photos carry no EXIF.
"""

from __future__ import annotations

import numpy as np

NEAR_DUPLICATE_COSINE = 0.92
_BLOCK = 1024  # rows compared at a time: the similarity matrix is never held whole


def near_duplicate_groups(X: np.ndarray, threshold: float = NEAR_DUPLICATE_COSINE) -> np.ndarray:
    """Group id per row of ``X`` (features): rows joined, directly or through others, by a cosine
    similarity ``>= threshold`` share an id; ids are ``0..n_groups-1`` in order of first row."""
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    n = len(X)
    if n == 0:
        return np.zeros(0, dtype=np.int64)
    Xn = np.asarray(X, dtype=np.float32)
    Xn = Xn / np.maximum(np.linalg.norm(Xn, axis=1, keepdims=True), 1e-12)
    comp = np.arange(n)  # component per row, merged block by block: a block's pairs are never all held at once
    for s in range(0, n, _BLOCK):
        i, j = np.nonzero(Xn[s:s + _BLOCK] @ Xn[s:].T >= threshold)
        keep = j > i  # the upper triangle of this block row (j counts from s)
        a, b = comp[i[keep] + s], comp[j[keep] + s]
        if len(a):
            _, merged = connected_components(coo_matrix((np.ones(len(a)), (a, b)), shape=(n, n)), directed=False)
            comp = merged[comp]
    _, first = np.unique(comp, return_index=True)
    order = np.empty(len(first), dtype=np.int64)
    order[np.argsort(first)] = np.arange(len(first))  # renumber by first row: stable ids
    return order[comp]


def labeled_groups(X: np.ndarray, labeled: np.ndarray) -> np.ndarray:
    """Group id per row of ``X`` for folds over the ``labeled`` rows (indices): those grouped by
    :func:`near_duplicate_groups` on their features, every other row alone (it is never held out)."""
    labeled = np.asarray(labeled, dtype=np.int64)
    groups = np.arange(len(X))
    groups[labeled] = len(X) + near_duplicate_groups(X[labeled])
    return groups
