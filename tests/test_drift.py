import numpy as np
import pytest

from src.monitoring.drift import DriftSuite, FeatureDrift, confidence_drift, prediction_drift
from src.core.errors import ConfigError

MIX = np.random.default_rng(99).normal(size=(32, 256))


def features(n, seed, shift=0.0):
    """Non-negative 'deep features' of a fixed 32-d latent structure, like pooled CNN outputs."""
    z = np.random.default_rng(seed).normal(size=(n, 32))
    return np.maximum(z @ MIX + shift, 0)


@pytest.fixture(scope="module")
def detector():
    return FeatureDrift(features(900, seed=1), alpha=0.05, seed=0)


def test_identical_distribution_no_drift(detector):
    r = detector.test(features(150, seed=2))
    assert not r["is_drift"] and r["score"] < 1.0
    assert set(r) >= {"is_drift", "p_val", "threshold", "distance", "score"}


def test_shifted_distribution_drifts_with_higher_score(detector):
    same = detector.test(features(150, seed=3))
    shifted = detector.test(features(150, seed=4, shift=6.0))
    assert shifted["is_drift"] and shifted["p_val"] < 0.05
    assert shifted["score"] > 2 * same["score"]


def test_measured_false_alarm_rate_on_same_distribution_windows(detector):
    alarms = [detector.test(features(60, seed=100 + i))["is_drift"] for i in range(50)]
    assert np.mean(alarms) <= 0.15
    cal = detector.calibration[60]
    assert 0 <= cal["measured_false_alarm_rate"] <= 1 and cal["p_threshold"] <= 0.05


def test_reference_window_reuses_its_calibration(detector):
    detector.test(features(60, seed=7))
    n = len(detector.calibration)
    detector.test(features(60, seed=8))
    assert len(detector.calibration) == n


def test_large_windows_are_subsampled(detector):
    assert detector.test(features(5000, seed=9))["window"] == detector.max_window


def test_too_little_reference():
    with pytest.raises(ConfigError, match="at least 60 reference rows"):
        FeatureDrift(features(30, seed=1))


def test_prediction_drift():
    ref = [0.25, 0.25, 0.25, 0.25]
    assert not prediction_drift(np.repeat(np.arange(4), 25), ref, 0.05)["is_drift"]
    skewed = prediction_drift([0] * 70 + [1] * 10 + [2] * 10 + [3] * 10, ref, 0.05)
    assert skewed["is_drift"] and skewed["distance"] > 0.4


def test_confidence_drift():
    rng = np.random.default_rng(0)
    ref = rng.beta(8, 1, 400)
    assert not confidence_drift(rng.beta(8, 1, 200), ref, 0.05)["is_drift"]
    low = confidence_drift(rng.beta(2, 2, 200), ref, 0.05)
    assert low["is_drift"] and low["mean_confidence"] < low["reference_mean_confidence"]


def test_suite_combines_signals():
    rng = np.random.default_rng(0)
    ref = {"features": features(600, seed=1), "class_distribution": [0.5, 0.5], "confidences": rng.beta(8, 1, 300)}
    suite = DriftSuite.from_reference(ref, alpha=0.05)
    ok = suite.test(features(100, seed=2), rng.integers(0, 2, 100), rng.beta(8, 1, 100))
    assert not ok["is_drift"] and ok["drifted"] == [] and set(ok["signals"]) == {"feature", "prediction", "confidence"}
    bad = suite.test(features(100, seed=3, shift=6.0), np.zeros(100, int), rng.beta(2, 2, 100))
    assert bad["is_drift"] and set(bad["drifted"]) == {"feature", "prediction", "confidence"}
    assert bad["drift_score"] > ok["drift_score"]
    with pytest.raises(ConfigError, match="at least 20 predictions"):
        suite.test(features(5, seed=4), [0] * 5, [0.9] * 5)


def _stub_pvalues(detector, pvals):
    """Make the permutation test return ``pvals`` in turn (calibration windows first)."""
    it = iter(pvals)
    detector._permutation_test = lambda w: (1.0, next(it), 1.0)


def test_calibration_never_loosens_the_threshold_above_alpha():
    fd = FeatureDrift(features(90, seed=1), alpha=0.05 / 3, seed=0)
    # one calibration window in 40 alarms (2.5% > alpha'): linear interpolation between the
    # smallest p-value and the next would put the "tightened" threshold far above alpha'
    _stub_pvalues(fd, [0.006] + [0.5] * 39 + [0.5])
    r = fd.test(features(20, seed=2))
    cal = fd.calibration[20]
    assert cal["measured_false_alarm_rate"] > fd.alpha
    assert cal["p_threshold"] <= fd.alpha and r["threshold"] == pytest.approx(0.006)
    assert not r["is_drift"]


def test_threshold_is_floored_so_an_extreme_window_always_alarms():
    fd = FeatureDrift(features(90, seed=1), alpha=0.05 / 3, n_permutations=200, seed=0)
    floor = 1 / 201
    _stub_pvalues(fd, [floor] * 41)  # every calibration window as extreme as possible
    r = fd.test(features(20, seed=2, shift=6.0))
    assert fd.calibration[20]["p_threshold"] == pytest.approx(floor) == fd.min_p_value
    assert r["p_val"] == pytest.approx(floor) and r["is_drift"]


def test_real_extreme_window_alarms_at_any_calibration(detector):
    r = detector.test(features(60, seed=11, shift=6.0))
    assert r["p_val"] == pytest.approx(1 / 201) and r["is_drift"]  # 200 permutations: 1/201 is the minimum
    assert 1 / 201 - 1e-12 <= r["threshold"] <= detector.alpha


def _suite():
    rng = np.random.default_rng(0)
    conf = rng.beta(8, 1, 300)
    ref = {"features": features(600, seed=1), "class_distribution": [0.5, 0.5], "confidences": conf}
    return DriftSuite.from_reference(ref, alpha=0.05), conf


def test_top_level_report_uses_overall_alpha_and_adjusted_p():
    suite, conf = _suite()
    a = 0.05 / 3
    calm = {"preds": np.tile([0, 1], 50), "confidences": conf[:100]}
    for p_feat, thr, drift in ((1 / 201, 1 / 201, True), (0.008, 0.005, False), (0.3, a, False)):
        suite.features.test = lambda w, p=p_feat, t=thr: {"is_drift": p <= t, "p_val": p, "threshold": t, "score": 1.0}
        r = suite.test(features(100, seed=2), calm["preds"], calm["confidences"])
        assert r["threshold"] == r["alpha"] == 0.05
        assert r["is_drift"] is drift and (r["p_val"] <= r["threshold"]) is drift, (p_feat, thr, r)
        assert r["signals"]["feature"]["threshold"] == thr  # per-signal details stay under signals
        assert r["signals"]["feature"]["adjusted_p_val"] == pytest.approx(min(1.0, p_feat * a / thr))
    # only the prediction signal fires: p_val is still on the same scale as threshold
    del suite.features.test
    r = suite.test(features(60, seed=5), [0] * 40 + [1] * 20, conf[:60])
    assert r["drifted"] == ["prediction"] and r["p_val"] <= r["threshold"] == 0.05


def test_small_reference_skips_feature_signal():
    rng = np.random.default_rng(0)
    ref = {"features": features(30, seed=1), "class_distribution": [0.5, 0.5], "confidences": rng.beta(8, 1, 300)}
    suite = DriftSuite.from_reference(ref, alpha=0.05)
    assert suite.features is None and suite.n_signals == 2
    ok = suite.test(features(40, seed=2), np.tile([0, 1], 20), rng.beta(8, 1, 40))
    feat = ok["signals"]["feature"]
    assert feat["available"] is False and "at least 60 reference rows" in feat["skipped"]
    assert not ok["is_drift"] and ok["drift_score"] is None
    bad = suite.test(features(40, seed=3), np.zeros(40, int), rng.beta(2, 2, 40))
    assert bad["is_drift"] and set(bad["drifted"]) == {"prediction", "confidence"}
    assert bad["signals"]["prediction"]["threshold"] == pytest.approx(0.025) and bad["p_val"] <= 0.05


def test_suite_refuses_bad_alpha():
    with pytest.raises(ConfigError, match="alpha"):
        DriftSuite.from_reference({"features": features(90, seed=1), "class_distribution": [1.0],
                                   "confidences": [0.9]}, alpha=1.5)
