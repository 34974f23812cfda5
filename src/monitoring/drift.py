"""Drift detectors on deep features, predictions and confidences (alibi-detect style).

Each detector owns its reference data and returns a small dict per test —
``is_drift``, ``p_val``, ``threshold``, ``distance`` — and :class:`DriftSuite` combines the
three signals with a Bonferroni correction so the *overall* false-alarm rate stays at
``alpha``.

Feature drift is a kernel two-sample test: L2-normalised features are projected on a PCA
fitted to the reference, an RBF kernel (median-heuristic bandwidth) gives MMD² between a
reference part and the window, and a permutation test gives its p-value. The threshold
is **calibrated on the reference itself**: same-size windows from a held-out reference
part are tested the same way, and their alarm rate is the measured false-alarm rate; if
it exceeds α′ the threshold is tightened until it does not. The false-alarm rate is
therefore measured, not assumed. The threshold is never above α′ and never below the
smallest p-value a permutation test can give, 1/(permutations + 1), and a window alarms when
its p-value is *at or below* it — so a maximally extreme window always alarms.

The suite's top-level ``p_val`` is the Bonferroni-adjusted p-value (the feature p-value first
rescaled to its calibrated threshold) and ``threshold`` is the overall ``alpha``: ``is_drift``
is exactly ``p_val <= threshold``. Per-signal p-values and thresholds are under ``signals``.
``drift_score`` is the *feature* signal's MMD² over its permutation null's (1 − α′) quantile:
about 1 where an uncalibrated test would alarm, clearly above it under feature drift. It does
not include the prediction and confidence signals: the verdict is ``is_drift``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np

from src.core.errors import ConfigError
from src.monitoring.settings import DEFAULTS

MIN_WINDOW = 20


def _rbf(a: np.ndarray, b: np.ndarray, gamma: float) -> np.ndarray:
    d = (a * a).sum(1)[:, None] + (b * b).sum(1)[None, :] - 2.0 * a @ b.T
    return np.exp(-gamma * np.maximum(d, 0.0))


class FeatureDrift:
    """Kernel two-sample (MMD) permutation test on PCA-reduced deep features.

    The reference is split in three: ``P`` fits the projection, ``A`` is what every window
    is compared with, ``B`` calibrates. The p-value comes from permutations of ``A ∪ window``. The decision
    threshold is calibrated on reference data: windows drawn from ``B`` (no drift by
    construction) are tested at the same size, their alarm rate at ``alpha`` is the
    *measured* false-alarm rate, and if it exceeds ``alpha`` the p-value threshold is
    lowered to the ``alpha`` quantile (``method="lower"``) of their p-values — never raised
    above ``alpha``, never below the smallest attainable p-value ``1 / (n_permutations + 1)``.
    A window drifts when its p-value is ``<=`` the threshold.
    """

    def __init__(self, reference: np.ndarray, alpha: float = DEFAULTS.alpha, n_components: int = 32,
                 n_permutations: int = 200, n_calibration: int = 40, seed: int = 0):
        ref = np.asarray(reference, dtype=np.float64)
        if ref.ndim != 2 or len(ref) < 3 * MIN_WINDOW:
            raise ConfigError(f"feature drift needs at least {3 * MIN_WINDOW} reference rows, "
                              f"got {len(ref) if ref.ndim else 0}")
        if not 0 < alpha < 1:
            raise ConfigError(f"alpha must be in (0, 1), got {alpha}")
        from sklearn.decomposition import PCA

        self.alpha, self.n_permutations, self.n_calibration = alpha, n_permutations, n_calibration
        self.rng = np.random.default_rng(seed)
        ref = ref[self.rng.permutation(len(ref))]
        third = len(ref) // 3
        # Three disjoint parts: P fits the PCA and the kernel bandwidth, A is the comparison
        # base, B calibrates. A, B and monitored windows are all out-of-sample for the PCA, so
        # under no drift they are exchangeable and the permutation test keeps its level.
        fit_part = ref[:third]
        self.pca = PCA(n_components=min(n_components, third - 1, ref.shape[1]), random_state=seed)
        sample = self._project(fit_part, fit=True)
        self.ref_a = self._project(ref[third:2 * third])
        self.ref_b = self._project(ref[2 * third:])
        sq = ((sample[:, None, :] - sample[None, :, :]) ** 2).sum(-1)
        self.gamma = 1.0 / max(float(np.median(sq[sq > 0])), 1e-12)
        self.k_aa = _rbf(self.ref_a, self.ref_a, self.gamma)
        self.calibration: dict[int, dict[str, float]] = {}

    def _project(self, x: np.ndarray, fit: bool = False) -> np.ndarray:
        x = x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)
        return self.pca.fit_transform(x) if fit else self.pca.transform(x)

    def _permutation_test(self, w: np.ndarray) -> tuple[float, float, float]:
        """(MMD², p-value, (1 − alpha) quantile of the permutation null) for window ``w``."""
        n, m = len(self.ref_a), len(w)
        k_aw = _rbf(self.ref_a, w, self.gamma)
        k = np.block([[self.k_aa, k_aw], [k_aw.T, _rbf(w, w, self.gamma)]])
        s = np.concatenate([np.full(n, 1.0 / n), np.full(m, -1.0 / m)])
        perms = np.stack([s[self.rng.permutation(n + m)] for _ in range(self.n_permutations)], axis=1)
        null = ((k @ perms) * perms).sum(0)
        stat = float(s @ k @ s)
        p_val = float((1 + (null >= stat).sum()) / (1 + len(null)))
        return stat, p_val, float(np.quantile(null, 1 - self.alpha))

    @property
    def min_p_value(self) -> float:
        """The smallest p-value the permutation test can return."""
        return 1.0 / (self.n_permutations + 1)

    @property
    def max_window(self) -> int:
        """Larger windows are subsampled: calibration windows must differ from each other."""
        return max(MIN_WINDOW, len(self.ref_b) // 2)

    def calibrate(self, m: int) -> dict[str, float]:
        """Measured false-alarm rate and p-value threshold for windows of size ``m`` (cached)."""
        m = min(m, self.max_window)
        if m not in self.calibration:
            pvals = np.array([self._permutation_test(self.ref_b[self.rng.choice(len(self.ref_b), m, replace=False)])[1]
                              for _ in range(self.n_calibration)])
            measured = float((pvals <= self.alpha).mean())
            threshold = self.alpha
            if measured > self.alpha:  # tighten, never loosen (interpolation could land above alpha)
                threshold = min(self.alpha, float(np.quantile(pvals, self.alpha, method="lower")))
            threshold = max(threshold, self.min_p_value)  # below it nothing could ever alarm
            self.calibration[m] = {"window": m, "measured_false_alarm_rate": measured, "p_threshold": threshold,
                                   "calibrated_false_alarm_rate": float((pvals <= threshold).mean()),
                                   "calibration_windows": self.n_calibration}
        return self.calibration[m]

    def test(self, window: np.ndarray) -> dict[str, Any]:
        w = self._project(np.asarray(window, dtype=np.float64))
        if len(w) > self.max_window:  # compare like with like: calibration used this size at most
            w = w[self.rng.choice(len(w), self.max_window, replace=False)]
        cal = self.calibrate(len(w))
        stat, p_val, q = self._permutation_test(w)
        return {"is_drift": bool(p_val <= cal["p_threshold"]), "p_val": p_val, "threshold": cal["p_threshold"],
                "distance": stat, "score": stat / q if q > 0 else float("inf"), "window": len(w),
                "measured_false_alarm_rate": cal["measured_false_alarm_rate"]}


def prediction_drift(preds: Sequence[int], ref_dist: Sequence[float], alpha: float) -> dict[str, Any]:
    """Chi-square test of predicted-class counts against the reference class distribution."""
    from scipy.stats import chisquare

    k = len(ref_dist)
    counts = np.bincount(np.asarray(preds, dtype=int), minlength=k).astype(float)
    expected = (np.asarray(ref_dist, dtype=float) + 1e-3) / (np.sum(ref_dist) + 1e-3 * k) * counts.sum()
    stat, p = chisquare(counts, expected)
    tv = 0.5 * float(np.abs(counts / counts.sum() - expected / expected.sum()).sum())
    return {"is_drift": bool(p <= alpha), "p_val": float(p), "threshold": alpha, "distance": tv, "chi2": float(stat)}


def confidence_drift(conf: Sequence[float], ref_conf: Sequence[float], alpha: float) -> dict[str, Any]:
    """Two-sample Kolmogorov–Smirnov test of confidences against the reference's."""
    from scipy.stats import ks_2samp

    res = ks_2samp(np.asarray(conf, dtype=float), np.asarray(ref_conf, dtype=float), method="asymp")
    return {"is_drift": bool(res.pvalue <= alpha), "p_val": float(res.pvalue), "threshold": alpha,
            "distance": float(res.statistic), "mean_confidence": float(np.mean(conf)),
            "reference_mean_confidence": float(np.mean(ref_conf))}


@dataclass
class DriftSuite:
    """The three signals against one model's reference statistics, Bonferroni-combined.

    A reference with too few features for the feature test (fewer than ``3 * MIN_WINDOW``
    rows: a model trained on very few images) leaves ``features`` ``None``: the feature signal
    is reported as unavailable (``skipped`` says why) and the verdict combines the prediction
    and confidence signals only (Bonferroni over two).
    """

    features: FeatureDrift | None
    class_distribution: Sequence[float]
    confidences: Sequence[float]
    alpha: float = DEFAULTS.alpha
    feature_skipped: str | None = None

    @classmethod
    def from_reference(cls, reference: dict, alpha: float = DEFAULTS.alpha, seed: int = 0) -> "DriftSuite":
        """From a model bundle's ``reference`` (saved at training time)."""
        if not 0 < alpha < 1:
            raise ConfigError(f"alpha must be in (0, 1), got {alpha}")
        try:
            features, skipped = FeatureDrift(reference["features"], alpha=alpha / 3, seed=seed), None
        except ConfigError as e:
            features, skipped = None, str(e)
        return cls(features, list(reference["class_distribution"]), list(reference["confidences"]), alpha, skipped)

    @property
    def n_signals(self) -> int:
        return 3 if self.features is not None else 2

    def test(self, features: np.ndarray, preds: Sequence[int], confidences: Sequence[float]) -> dict[str, Any]:
        if len(features) < MIN_WINDOW:
            raise ConfigError(f"drift detection needs at least {MIN_WINDOW} predictions, got {len(features)}",
                              hint="predict more images before calling detect_drift()")
        a = self.alpha / self.n_signals
        if self.features is not None:
            feature = self.features.test(features)
            # rescaled so that, like the other signals, it alarms exactly when <= a
            feature["adjusted_p_val"] = min(1.0, feature["p_val"] * self.features.alpha / feature["threshold"])
        else:
            feature = {"is_drift": False, "available": False, "skipped": self.feature_skipped,
                       "p_val": None, "threshold": None, "distance": None, "score": None}
        signals = {"feature": feature,
                   "prediction": prediction_drift(preds, self.class_distribution, a),
                   "confidence": confidence_drift(confidences, self.confidences, a)}
        adjusted = [s.get("adjusted_p_val", s["p_val"]) for s in signals.values() if s["p_val"] is not None]
        is_drift = any(s["is_drift"] for s in signals.values())
        p_val = min(1.0, self.n_signals * min(adjusted))
        # keep ``is_drift == (p_val <= alpha)`` exact despite floating-point rounding at the boundary
        p_val = min(p_val, self.alpha) if is_drift else max(p_val, float(np.nextafter(self.alpha, 1.0)))
        return {"is_drift": is_drift, "drift_score": feature["score"], "p_val": p_val,
                "threshold": self.alpha, "alpha": self.alpha, "n": len(features), "n_signals": self.n_signals,
                "signals": signals, "drifted": [k for k, s in signals.items() if s["is_drift"]]}
