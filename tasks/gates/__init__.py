"""Promotion gates: pure functions from evidence to a typed ``GateResult``, one module per
family, one registry (``tasks.gates.registry``) that the flow runs.

Every gate decides on the **test** split (the threshold gate also re-optimises on the selection
split), compares noisy numbers through a seeded paired bootstrap or against the spread sampling
noise produces at that size, states money limits as shares of the profit at stake, and fails
with a reason when it cannot compute its metric. Limits live in ``configs.settings.GatesConfig``.
"""

from __future__ import annotations

import importlib
import pkgutil

from tasks.gates.registry import GateInputs, GateSpec, register, registered, run_gates
from tasks.gates.result import GateResult, disabled, failed_to_compute, guarded, jsonable

# Every module of this package that registers a gate is imported here, once.
for _mod in pkgutil.iter_modules(__path__):
    if _mod.name not in {"registry", "result", "stats"}:
        importlib.import_module(f"{__name__}.{_mod.name}")

from tasks.gates.calibration import gate_calibration  # noqa: E402
from tasks.gates.economic import (  # noqa: E402
    error_costs,
    gate_baseline,
    gate_business,
    gate_champion,
    gate_error_cost,
)
from tasks.gates.robustness import gate_robustness  # noqa: E402
from tasks.gates.segments import gate_segments  # noqa: E402
from tasks.gates.stability import gate_stability  # noqa: E402
from tasks.gates.stats import calibration_check, holm, segment_index  # noqa: E402
from tasks.gates.technical import gate_technical  # noqa: E402
from tasks.gates.threshold import gate_threshold  # noqa: E402

GATE_IDS: tuple[str, ...] = tuple(s.gate for s in registered())

__all__ = [
    "GATE_IDS",
    "GateInputs",
    "GateResult",
    "GateSpec",
    "calibration_check",
    "disabled",
    "error_costs",
    "failed_to_compute",
    "gate_baseline",
    "gate_business",
    "gate_calibration",
    "gate_champion",
    "gate_error_cost",
    "gate_robustness",
    "gate_segments",
    "gate_stability",
    "gate_technical",
    "gate_threshold",
    "guarded",
    "holm",
    "jsonable",
    "register",
    "registered",
    "run_gates",
    "segment_index",
]
