"""Robustness gate: small input faults neither flip many decisions nor cost much money."""

from __future__ import annotations

import math
from typing import Any

from configs.settings import RobustnessGateConfig
from tasks.evidence import RobustnessEvidence
from tasks.gates.registry import GateInputs, register
from tasks.gates.result import GateResult, failed_to_compute


def gate_robustness(
    evidence: RobustnessEvidence | None, *, stake: float, config: RobustnessGateConfig
) -> GateResult:
    """Under every perturbation, contact decisions flip for at most ``max_flip_rate`` of
    customers and profit per customer drops by at most ``max_profit_drop_share`` of the profit
    at stake (``stake``, USD per customer)."""
    if evidence is None or not evidence.perturbations:
        return failed_to_compute("robustness", "no perturbation was evaluated")
    base = evidence.base_profit_per_customer_usd
    rows: list[dict[str, Any]] = []
    bad: list[str] = []
    for pert in evidence.perturbations:
        drop = (base - pert.profit_per_customer_usd) / stake if stake > 0 else math.inf
        ok = pert.flip_rate <= config.max_flip_rate and drop <= config.max_profit_drop_share
        rows.append(
            {
                "perturbation": pert.name,
                "flip_rate": pert.flip_rate,
                "profit_per_customer_usd": pert.profit_per_customer_usd,
                "profit_drop_share_of_stake": drop,
                "passed": ok,
            }
        )
        if not ok:
            bad.append(pert.name)
    worst = max(rows, key=lambda r: float(r["flip_rate"]))
    return GateResult(
        gate="robustness",
        passed=not bad,
        metric="worst decision flip rate",
        value=worst["flip_rate"],
        interval=None,
        threshold=config.max_flip_rate,
        evidence={
            "base_profit_per_customer_usd": base,
            "profit_at_stake_per_customer_usd": stake,
            "perturbations": rows,
            "worst": worst["perturbation"],
            "failing": bad,
            "max_profit_drop_share": config.max_profit_drop_share,
            **(
                {"sampled_rows": evidence.sampled_rows} if evidence.sampled_rows is not None else {}
            ),
        },
        reason=(
            f"brittle under: {', '.join(bad)}"
            if bad
            else f"{len(rows)} perturbations within bounds; worst {worst['perturbation']} flips "
            f"{worst['flip_rate']:.3f} of decisions"
        ),
    )


@register("robustness", order=100)
def _robustness(inputs: GateInputs, config: RobustnessGateConfig) -> GateResult:
    return gate_robustness(inputs.robustness, stake=inputs.stake, config=config)
