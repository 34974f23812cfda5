import numpy as np
import pytest

from src.drift import DriftSuite, FeatureDrift, confidence_drift, prediction_drift
from src.errors import ConfigError

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
