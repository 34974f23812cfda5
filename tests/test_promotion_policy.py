"""The promotion policy on its own (src.registry.policy): no store, no model files."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from src.core.errors import ConfigError
from src.registry.policy import (DEFAULT_TOLERANCE, GATE_METRIC, MAX_TOLERANCE, PROTECTED_ALIASES, check_request,
                                 decide, gate_refusal)


def v(version: int, acc: float | None = None):
    return SimpleNamespace(version=version, metrics={} if acc is None else {GATE_METRIC: acc})


def test_only_production_is_protected_and_the_gate_is_test_accuracy():
    assert PROTECTED_ALIASES == {"production"} and GATE_METRIC == "test_accuracy"
    assert 0 <= DEFAULT_TOLERANCE <= MAX_TOLERANCE


@pytest.mark.parametrize("alias", ["staging", "latest", "candidate"])
def test_unprotected_aliases_move_freely(alias):
    assert decide(alias, v(0, 0.9), v(1, 0.1)) == ("moved", {})


def test_the_first_holder_of_a_protected_alias_is_not_gated():
    assert decide("production", None, v(0)) == ("moved", {})


def test_a_drop_within_the_tolerance_moves_with_the_comparison_recorded():
    action, details = decide("production", v(0, 0.80), v(1, 0.795))
    assert action == "moved" and "refusal" not in details
    assert details == {"metric": GATE_METRIC, "tolerance": DEFAULT_TOLERANCE, "from_value": 0.80, "to_value": 0.795}


def test_a_bigger_drop_is_refused_unless_forced():
    action, details = decide("production", v(0, 0.80), v(1, 0.70))
    assert action == "refused" and "below v0's 0.8000 by 0.1000" in details["refusal"]
    assert decide("production", v(0, 0.80), v(1, 0.70), force=True)[0] == "forced"
    assert decide("production", v(0, 0.80), v(1, 0.70), tolerance=0.05)[0] == "refused"


def test_missing_metrics():
    assert gate_refusal(v(0), v(1, 0.1), 0.0) is None  # a holder without the metric gates nothing
    assert "has no test_accuracy" in gate_refusal(v(0, 0.8), v(1), 0.05)


@pytest.mark.parametrize("tolerance", [-0.01, MAX_TOLERANCE + 0.01, float("nan"), "0.01"])
def test_a_tolerance_outside_the_cap_is_refused(tolerance):
    with pytest.raises(ConfigError, match="`tolerance` must be a number in"):
        check_request(force=False, reason=None, tolerance=tolerance)


@pytest.mark.parametrize("reason", [None, "", "   "])
def test_force_needs_a_reason(reason):
    with pytest.raises(ConfigError, match="needs a"):
        check_request(force=True, reason=reason, tolerance=DEFAULT_TOLERANCE)
    check_request(force=True, reason="hotfix", tolerance=DEFAULT_TOLERANCE)
