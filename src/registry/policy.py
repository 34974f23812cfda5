"""The promotion policy: which alias moves are metric-gated, when one is refused, what may override it.

Pure decisions, no storage: :func:`src.registry.tables.move_alias` asks :func:`check_request` before it
reads anything and :func:`decide` once it knows the alias's current holder, then writes what was decided
(the audit log keeps refused and forced moves too).

- A protected alias (``production``) moves to a version only if that version's ``test_accuracy`` is at
  most ``tolerance`` below the current holder's (default 0.01, at most 0.05). A holder without the metric
  gates nothing; a candidate without it is refused. The first holder of an alias is never gated.
- ``force`` applies a refused move anyway and needs a ``reason``; it is logged as ``forced``.
- Other aliases (``staging``, ``latest``, any word) move freely.
"""

from __future__ import annotations

import math
from typing import Any, Mapping, Protocol

from src.core.errors import ConfigError

PROTECTED_ALIASES = frozenset({"production"})
GATE_METRIC = "test_accuracy"
DEFAULT_TOLERANCE = 0.01
MAX_TOLERANCE = 0.05  # a bigger accepted drop is an override: force with a reason


class Versioned(Protocol):
    """What the policy reads of a model version (:class:`src.registry.tables.ModelVersion` is one)."""

    version: int
    metrics: Mapping[str, float]


def check_request(*, force: bool, reason: str | None, tolerance: float) -> None:
    """Refuse a promotion request that no alias state could make valid (ConfigError)."""
    if not (isinstance(tolerance, (int, float)) and math.isfinite(tolerance) and 0 <= tolerance <= MAX_TOLERANCE):
        raise ConfigError(f"`tolerance` must be a number in [0, {MAX_TOLERANCE}], got {tolerance!r}",
                          hint="to accept a bigger drop, pass `force=True` with a `reason` (the audit log keeps it)",
                          params=("tolerance", "force", "reason"))
    if force and not (reason and reason.strip()):
        raise ConfigError("`force` needs a `reason`", hint="say why the gate is overridden; the audit log keeps it",
                          params=("force", "reason"))


def gate_refusal(current: Versioned, candidate: Versioned, tolerance: float) -> str | None:
    """Why moving a protected alias from ``current`` to ``candidate`` is refused, or None."""
    cur, new = current.metrics.get(GATE_METRIC), candidate.metrics.get(GATE_METRIC)
    if cur is None:
        return None
    if new is None:
        return (f"v{candidate.version} has no {GATE_METRIC} to compare with "
                f"v{current.version}'s {cur:.4f}")
    if cur - new > tolerance + 1e-12:
        return (f"v{candidate.version} has {GATE_METRIC} {new:.4f}, below v{current.version}'s "
                f"{cur:.4f} by {cur - new:.4f} (tolerance {tolerance:.4f})")
    return None


def decide(alias: str, current: Versioned | None, candidate: Versioned, *, force: bool = False,
           tolerance: float = DEFAULT_TOLERANCE) -> tuple[str, dict[str, Any]]:
    """(action, details) for moving ``alias`` from ``current`` (None: unset) to ``candidate``.

    ``action`` is ``moved``, ``forced`` (refused by the gate, applied because of ``force``) or ``refused``;
    ``details`` is what the audit log records of a gated move (metric, tolerance, both values, the refusal).
    """
    if alias not in PROTECTED_ALIASES or current is None:
        return "moved", {}
    details: dict[str, Any] = {"metric": GATE_METRIC, "tolerance": tolerance,
                               "from_value": current.metrics.get(GATE_METRIC),
                               "to_value": candidate.metrics.get(GATE_METRIC)}
    refusal = gate_refusal(current, candidate, tolerance)
    if not refusal:
        return "moved", details
    return ("forced" if force else "refused"), {**details, "refusal": refusal}
