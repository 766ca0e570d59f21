"""The result every gate returns, and the three ways a gate ends without judging."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np


@dataclass(frozen=True, kw_only=True)
class GateResult:
    """One gate's decision. ``value``/``interval``/``threshold`` are in the unit ``metric``
    names; ``evidence`` holds every figure the decision used; ``reason`` says why, in words."""

    gate: str
    passed: bool
    metric: str
    value: float | None
    interval: list[float] | None
    threshold: float | str | None
    evidence: dict[str, Any] = field(default_factory=dict)
    reason: str = ""

    def as_dict(self) -> dict[str, Any]:
        return jsonable(asdict(self))


def jsonable(obj: Any) -> Any:
    """Plain JSON types: numpy scalars to Python, NaN to null, infinities to strings."""
    if isinstance(obj, dict):
        return {str(k): jsonable(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [jsonable(v) for v in obj]
    if isinstance(obj, np.bool_ | bool):
        return bool(obj)
    if isinstance(obj, np.integer):
        return int(obj)
    if isinstance(obj, np.floating | float):
        f = float(obj)
        return None if math.isnan(f) else (round(f, 6) if math.isfinite(f) else str(f))
    return obj


def disabled(gate: str) -> GateResult:
    """Switched off in the config: passes, and says so."""
    key = gate.replace("-", "_")
    return GateResult(
        gate=gate,
        passed=True,
        metric="disabled",
        value=None,
        interval=None,
        threshold=None,
        evidence={"disabled": True},
        reason=f"disabled by config (gates.{key}.enabled=false)",
    )


def failed_to_compute(gate: str, error: BaseException | str) -> GateResult:
    """A missing input or an error: a failure with the reason, never a silent skip."""
    return GateResult(
        gate=gate,
        passed=False,
        metric="not computed",
        value=None,
        interval=None,
        threshold=None,
        evidence={"error": str(error)},
        reason=f"could not compute the gate's metric: {error}",
    )


def guarded(gate: str, fn: Callable[[], GateResult]) -> GateResult:
    """Run a gate; an exception becomes a failed result with the reason (never a skip)."""
    try:
        return fn()
    except Exception as exc:
        return failed_to_compute(gate, f"{type(exc).__name__}: {exc}")


def failed_checks(checks: dict[str, bool]) -> list[str]:
    """Names of the checks that did not hold, in order."""
    return [k for k, v in checks.items() if not v]
