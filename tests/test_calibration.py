"""Pseudo-label calibration (learning/calibration.py): the map, the reliability, the recommended minimum."""

from __future__ import annotations

import numpy as np
import pytest

from src.learning.calibration import (
    MIN_ROWS,
    Calibration,
    acceptance_threshold,
    calibrate_pseudo_labels,
    fit_calibration,
    reliability,
    wilson_lower,
)


def test_wilson_lower_bound():
    assert wilson_lower(20, 20, z=1.0) == pytest.approx(20 / 21)  # z = 1: n / (n + 1) for a perfect score
    assert wilson_lower(60, 60) == pytest.approx(60 / (60 + 1.645 ** 2))  # the default: one-sided 95 %
    assert wilson_lower(0, 0) == 0.0
    assert wilson_lower(50, 50) < 0.95 < wilson_lower(60, 60)  # 50 of 50 right cannot show 95 %, 60 of 60 can


def test_overconfident_labels_are_brought_down_and_not_recommended():
    rng = np.random.default_rng(0)
    conf = rng.uniform(0.97, 1.0, 200)  # ~0.99 confident, 55 % right: what real photos did at 3 labels
    right = rng.random(200) < 0.55
    cal, rec = calibrate_pseudo_labels(conf, right)
    assert abs(float(cal(conf).mean()) - 0.55) < 0.05
    assert rec.ece_raw > 0.4 and rec.ece_calibrated < 0.05
    assert rec.recommended_min_confidence is None  # nothing can be shown 95 % right


def test_a_confidence_that_ranks_well_gets_a_minimum_whose_rows_are_95_percent_right():
    rng = np.random.default_rng(1)

    def draw(n):  # 70 % easy images (confident, 99 % right), 30 % hard ones (unsure, 40 % right)
        easy = rng.random(n) < 0.7
        conf = np.where(easy, rng.uniform(0.97, 1.0, n), rng.uniform(0.3, 0.9, n))
        return conf, rng.random(n) < np.where(easy, 0.99, 0.4)

    conf, right = draw(120)
    cal, rec = calibrate_pseudo_labels(conf, right)
    t = rec.recommended_min_confidence
    assert t is not None
    sel = cal(conf) >= t
    assert sel.sum() >= MIN_ROWS and right[sel].mean() >= 0.95
    fresh_conf, fresh_right = draw(20000)  # new images of the same kind: the rows accepted stay >= 95 % right
    accepted = cal(fresh_conf) >= t
    assert fresh_right[accepted].mean() >= 0.95 and accepted.mean() > 0.6  # and most easy ones are accepted
    assert (np.diff(cal(np.sort(conf))) >= 0).all()  # monotone: the order of the raw confidences is kept


def test_too_few_or_uniform_rows_leave_the_confidence_as_it_is():
    conf = np.array([0.9, 0.8, 0.95])
    assert fit_calibration(conf, np.array([True, False, True])) == Calibration(rows=3)
    assert fit_calibration(np.full(50, 0.9), np.ones(50, dtype=bool)) == Calibration(rows=50)
    assert np.allclose(Calibration()(conf), conf)
    assert acceptance_threshold(np.full(MIN_ROWS - 1, 0.99), np.ones(MIN_ROWS - 1, dtype=bool)) is None
    assert acceptance_threshold(np.full(30, 0.99), np.ones(30, dtype=bool)) is None  # 30 of 30 cannot show 95 %
    assert acceptance_threshold(np.full(60, 0.99), np.ones(60, dtype=bool)) == 0.5  # 60 of 60 at every threshold


def test_reliability_table_and_ece():
    conf = np.array([0.15, 0.15, 0.95, 0.95, 0.95, 0.95])
    right = np.array([False, False, True, True, True, False])
    r = reliability(conf, right)
    assert [b["images"] for b in r["bins"]] == [2, 4]
    assert r["bins"][1]["accuracy"] == 0.75
    assert r["ece"] == pytest.approx((2 * 0.15 + 4 * 0.2) / 6)
    assert reliability(np.zeros(0), np.zeros(0, dtype=bool)) == {"ece": None, "bins": []}


def test_support_is_the_committees_mean_confidence_in_the_shipped_label():
    from src.learning.calibration import support

    shipped = np.array([0, 1, 2])
    own = (shipped, np.array([1.0, 0.99, 0.9]))
    other = (np.array([0, 2, 2]), np.array([0.8, 0.7, 0.6]))  # disagrees on row 1: backs it with nothing
    np.testing.assert_allclose(support(shipped, [own, other]), [0.9, 0.495, 0.75])
    np.testing.assert_allclose(support(shipped, [own]), own[1])  # alone: its own confidence
    assert support(shipped, []).tolist() == [0, 0, 0]


def test_pool_rows_calibrate_the_committees_support_and_keep_the_models_own_confidence(tmp_path):
    from types import SimpleNamespace

    from src.learning.calibration import Calibration
    from src.training.pseudo_labels import pool_rows

    paths = [tmp_path / "unlabeled" / f"{i}.jpg" for i in range(3)]
    s = SimpleNamespace(ds=SimpleNamespace(root=tmp_path, classes=["a", "b", "c"], pool=SimpleNamespace(paths=paths)),
                        pool_predictions={"self_training": (np.array([0, 1, 2]), np.array([0.99, 0.98, 0.9])),
                                          "label_spreading": (np.array([0, 2, 2]), np.array([0.8, 0.7, 0.6]))})
    cal = Calibration(slope=1.0, intercept=0.0)  # the identity: the support itself
    rows = pool_rows(s, "self_training", cal, 0.85, ["self_training", "label_spreading"])
    assert [r[2] for r in rows] == [0.895, 0.49, 0.75] and [r[4] for r in rows] == [0.99, 0.98, 0.9]
    assert [r[5] for r in rows] == [1, 0, 0] and [r[0] for r in rows] == ["unlabeled/0.jpg", "unlabeled/1.jpg",
                                                                          "unlabeled/2.jpg"]
    assert [r[2] for r in pool_rows(s, "self_training", cal, None)] == [0.99, 0.98, 0.9]  # alone: its own


def test_the_committee_is_the_shipped_model_and_label_spreading_where_it_labeled_the_pool():
    from types import SimpleNamespace

    from src.training.pseudo_labels import committee

    both = SimpleNamespace(pool_predictions={"self_training": None, "label_spreading": None, "label_propagation": None})
    assert committee(both, "self_training") == ["self_training", "label_spreading"]
    assert committee(both, "baseline") == ["baseline", "label_spreading"]
    assert committee(both, "label_spreading") == ["label_spreading"]
    assert committee(SimpleNamespace(pool_predictions={"self_training": None}), "self_training") == ["self_training"]


def test_right_answers_on_photos_the_extractor_trained_on_count_at_the_unseen_ones_rate():
    from src.learning.calibration import acceptance_threshold, evidence_discount

    conf = np.full(200, 0.99)
    right = np.ones(200, dtype=bool)
    unbiased = np.zeros(200, dtype=bool)
    unbiased[:40] = True
    right[:4] = False  # the unseen photos: 90 % right; the trained-on ones: all right
    assert evidence_discount(right, unbiased) == 0.9
    assert acceptance_threshold(conf, right) == 0.5  # all rows at face value: 196 of 200, from the lowest minimum
    assert acceptance_threshold(conf, right, unbiased=unbiased) is None  # 36 + 0.9 * 160 = 180 of 200
    assert evidence_discount(right, None) == evidence_discount(right, np.ones(200, dtype=bool)) == 1.0
    assert evidence_discount(~right, unbiased) == 1.0  # the unseen ones better: never counted up
