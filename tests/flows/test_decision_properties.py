"""Decisions that must not depend on the unit of money or on halving a good data set: the whole
flow (plain calls, no Prefect) on the generator, compared gate by gate."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from configs.settings import PolicyConfig, build_config
from flows.promotion import RunResult, run_direct

from ..conftest import small_layers

pytestmark = pytest.mark.slow


def _run(workspace: Path, rows: int, usd: float = 1.0) -> RunResult:
    tiers = [
        {
            "name": t.name,
            "min_expected_value_usd": None
            if t.min_expected_value_usd is None
            else t.min_expected_value_usd * usd,
        }
        for t in PolicyConfig().tiers
    ]
    layers: dict[str, Any] = small_layers(
        workspace,
        rows=rows,
        economics={
            "customer_value": {"column": "monthly_charges_usd", "multiplier": 3.0 * usd},
            "contact_cost_usd": 15.0 * usd,
        },
        policy={"tiers": tiers, "bootstrap_resamples": 100},
    )
    return run_direct(build_config(layers))


def _passed(result: RunResult) -> dict[str, bool]:
    return {g.gate: g.passed for g in result.gates}


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory) -> RunResult:
    """The generator at 10,000 rows in USD: the run both properties compare against."""
    return _run(tmp_path_factory.mktemp("reference"), 10_000)


def test_decision_same_when_every_usd_amount_is_ten_times(
    reference: RunResult, tmp_path: Path
) -> None:
    one = reference
    ten = _run(tmp_path / "usd10", 10_000, usd=10.0)
    assert one.outcome.decision == "promoted", [g.reason for g in one.gates if not g.passed]
    assert _passed(one) == _passed(ten)
    assert one.chosen.name == ten.chosen.name and one.chosen.method == ten.chosen.method
    money = {g.gate: g for g in one.gates}
    money10 = {g.gate: g for g in ten.gates}
    b1, b10 = money["business"].value, money10["business"].value
    assert b1 is not None and b10 is not None and b10 == pytest.approx(10 * b1, rel=1e-6)


def test_decision_same_on_half_the_rows_of_a_good_model(
    reference: RunResult, tmp_path: Path
) -> None:
    full = _run(tmp_path / "full", 20_000)
    half = reference
    assert full.outcome.decision == half.outcome.decision == "promoted", (
        [g.reason for g in full.gates if not g.passed],
        [g.reason for g in half.gates if not g.passed],
    )
    assert _passed(full) == _passed(half)
    wide = {g.gate: g.interval for g in half.gates}
    narrow = {g.gate: g.interval for g in full.gates}
    w, n = wide["business"], narrow["business"]
    assert w is not None and n is not None and w[1] - w[0] > n[1] - n[0]
