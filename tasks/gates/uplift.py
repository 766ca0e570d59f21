"""Gates of a treatment-effect (uplift) candidate, judged on randomized rows held out from
fitting (``uplift.evaluation_share``).

They are not in the main registry (``tasks.gates.registry``): those gates run on every
promotion and a decision needs all of them, so runs without randomized outcomes would change.
The uplift gates have their own small registry below and run only when an uplift candidate is
judged (``run_uplift_gates``):

- ``uplift-qini``: the Qini coefficient of the uplift ranking minus that of the churn-risk
  ranking (retained customers per customer); the lower bound of its paired-bootstrap interval
  must exceed ``uplift.gates.min_qini_gain``.
- ``uplift-profit``: the incremental profit per customer (USD) of the uplift policy minus that
  of the current policy; the lower bound must exceed ``uplift.gates.min_profit_gain_usd``. So a
  churn-risk champion is replaced only when the uplift candidate wins beyond noise.
- ``uplift-calibration``: predicted vs observed effect per bin of predicted effect; fails when
  the chi-square test of "observed = predicted in every bin" has p < ``calibration_alpha``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from functools import partial

import numpy as np

from configs.settings import BootstrapConfig, UpliftGatesConfig
from tasks.gates.result import GateResult, disabled, guarded
from tasks.uplift import UpliftComparison, compare_uplift, effect_calibration, uplift_contact


@dataclass(frozen=True)
class UpliftGateInputs:
    """Held-out randomized rows: the candidate's predicted ``effect`` (churn probability a
    contact removes), the churn-risk model's probability ``risk``, the current policy's
    ``current_contact``, the outcomes and arms (``assigned``: randomized to contact;
    ``contacted``: delivered), customer values (USD) and the economics."""

    effect: np.ndarray
    risk: np.ndarray
    current_contact: np.ndarray
    churned: np.ndarray
    assigned: np.ndarray
    contacted: np.ndarray
    values_usd: np.ndarray
    contact_cost_usd: float
    cutoff_usd: float
    bootstrap: BootstrapConfig
    config: UpliftGatesConfig

    def uplift_contact(self) -> np.ndarray:
        return uplift_contact(
            self.effect,
            self.values_usd,
            contact_cost_usd=self.contact_cost_usd,
            cutoff_usd=self.cutoff_usd,
        )

    def comparison(self) -> UpliftComparison:
        """The uplift candidate against the churn-risk ranking and the current policy."""
        return compare_uplift(
            self.effect,
            self.risk,
            self.uplift_contact(),
            np.asarray(self.current_contact, bool),
            self.churned,
            self.assigned,
            self.values_usd,
            contact_cost_usd=self.contact_cost_usd,
            bootstrap=self.bootstrap,
            contacted=self.contacted,
        )


def gate_uplift_qini(
    inputs: UpliftGateInputs, comparison: UpliftComparison | None = None
) -> GateResult:
    """Ranking: the uplift ranking's Qini gain over the churn-risk ranking, beyond noise."""
    c = comparison or inputs.comparison()
    limit = inputs.config.min_qini_gain
    passed = c.qini_gain.low > limit
    return GateResult(
        gate="uplift-qini",
        passed=bool(passed),
        metric="Qini coefficient gain over the churn-risk ranking (retained per customer)",
        value=c.qini_gain.point,
        interval=c.qini_gain.as_list(),
        threshold=limit,
        evidence={
            "qini_uplift": c.qini_uplift,
            "qini_risk": c.qini_risk,
            "rows": c.rows,
            "resamples_used": c.resamples_used,
            "bootstrap": c.bootstrap,
        },
        reason=(
            f"Qini gain {c.qini_gain.point:.4f} [{c.qini_gain.low:.4f}, {c.qini_gain.high:.4f}] "
            + ("exceeds" if passed else "does not exceed")
            + f" {limit} at its lower bound"
        ),
    )


def gate_uplift_profit(
    inputs: UpliftGateInputs, comparison: UpliftComparison | None = None
) -> GateResult:
    """Money: the uplift policy's incremental profit over the current policy, beyond noise."""
    c = comparison or inputs.comparison()
    limit = inputs.config.min_profit_gain_usd
    passed = c.profit_gain_usd.low > limit
    g = c.profit_gain_usd
    return GateResult(
        gate="uplift-profit",
        passed=bool(passed),
        metric="incremental profit gain over the current policy (USD per customer)",
        value=g.point,
        interval=g.as_list(),
        threshold=limit,
        evidence={
            "profit_uplift_usd": c.profit_uplift_usd,
            "profit_current_usd": c.profit_current_usd,
            "contact_rate_uplift": c.contact_rate_uplift,
            "contact_rate_current": c.contact_rate_current,
            "rows": c.rows,
            "resamples_used": c.resamples_used,
        },
        reason=(
            f"profit gain {g.point:.2f} USD/customer [{g.low:.2f}, {g.high:.2f}] "
            + ("exceeds" if passed else "does not exceed")
            + f" {limit} USD at its lower bound"
        ),
    )


def gate_uplift_calibration(inputs: UpliftGateInputs) -> GateResult:
    """Predicted vs observed effect per bin of predicted effect."""
    cfg = inputs.config
    cal = effect_calibration(
        inputs.effect, inputs.churned, inputs.assigned, bins=cfg.calibration_deciles
    )
    passed = cal.p_value >= cfg.calibration_alpha
    return GateResult(
        gate="uplift-calibration",
        passed=bool(passed),
        metric="p-value of observed = predicted effect in every bin (chi-square)",
        value=cal.p_value,
        interval=None,
        threshold=cfg.calibration_alpha,
        evidence={
            "chi2": cal.chi2,
            "degrees_of_freedom": cal.degrees_of_freedom,
            "max_abs_gap": cal.max_abs_gap,
            "bins": cal.table.to_dict(orient="records"),
        },
        reason=(
            f"chi-square {cal.chi2:.1f} on {cal.degrees_of_freedom} bins, p = {cal.p_value:.4f} "
            + (">=" if passed else "<")
            + f" {cfg.calibration_alpha}; largest gap {cal.max_abs_gap:.3f}"
        ),
    )


UPLIFT_GATE_IDS: tuple[str, ...] = ("uplift-qini", "uplift-profit", "uplift-calibration")


def run_uplift_gates(inputs: UpliftGateInputs) -> tuple[GateResult, ...]:
    """Every uplift gate in order (the Qini and profit gates share one paired bootstrap); all
    say so when ``uplift.gates.enabled`` is false; an error is a failed gate with the reason."""
    if not inputs.config.enabled:
        return tuple(
            replace(disabled(g), reason="disabled by config (uplift.gates.enabled=false)")
            for g in UPLIFT_GATE_IDS
        )
    try:
        comparison: UpliftComparison | None = inputs.comparison()
    except Exception as exc:
        error = f"{type(exc).__name__}: {exc}"
        comparison = None
    fns: dict[str, Callable[[], GateResult]] = {
        "uplift-calibration": partial(gate_uplift_calibration, inputs),
    }
    for gate, fn in (("uplift-qini", gate_uplift_qini), ("uplift-profit", gate_uplift_profit)):
        fns[gate] = (
            partial(fn, inputs, comparison) if comparison is not None else partial(_raise, error)
        )
    return tuple(guarded(g, fns[g]) for g in UPLIFT_GATE_IDS)


def _raise(error: str) -> GateResult:
    raise ValueError(error)
