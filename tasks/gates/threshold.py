"""Threshold gate: the operating point is not an artefact of one split, judged in money."""

from __future__ import annotations

import math

import numpy as np

from configs.settings import BootstrapConfig, ThresholdGateConfig
from tasks.evaluate import PairedBootstrap, interval, weighted_mean
from tasks.gates.registry import GateInputs, register
from tasks.gates.result import GateResult, failed_checks
from tasks.select_policy import optimal_cutoffs


def expected_profit_at(ev: np.ndarray, cutoff: float) -> float:
    """Expected profit per customer (USD) when contacting every row whose expected value of a
    contact (USD) is at least ``cutoff`` (an infinite cut-off contacts nobody)."""
    if not math.isfinite(cutoff):
        return 0.0 if cutoff > 0 else float(ev.mean())
    return float(np.where(ev >= cutoff, ev, 0.0).mean())


def gate_threshold(
    ev_selection: np.ndarray,
    profit_if_contacted_selection: np.ndarray,
    selection_profit: np.ndarray,
    ev_test: np.ndarray,
    test_profit: np.ndarray,
    test_contact: np.ndarray,
    *,
    stake: float,
    config: ThresholdGateConfig,
    bootstrap: BootstrapConfig,
) -> GateResult:
    """The operating point is stable where it matters, in money.

    - the profit-maximising cut-off is re-optimised on bootstrap resamples of the selection
      split; moving the policy's cut-off anywhere within that interval may lose at most
      ``max_profit_loss_share`` x stake of expected profit per customer on test (the model's
      calibrated expected values; a cut-off in the dense part of the scores moves the contact
      rate a lot and the profit little, and passes), or, when more, no more than the half-width
      of the test profit's own confidence interval: a loss the profit estimate cannot resolve
      at this n is not evidence of an unstable operating point;
    - test profit per customer overlaps the selection estimate's interval;
    - the policy contacts neither (almost) nobody nor (almost) everybody on test.

    ``ev_*``: expected value of a contact per customer (USD); ``*_profit``: realised profit per
    customer under the policy (USD); ``stake``: profit at stake per customer on test (USD).
    """
    boot = PairedBootstrap(
        len(ev_selection), config=bootstrap, resamples=config.resamples, seed_offset=4
    )
    r = boot.rows
    cuts, rates, sel = [], [], []
    for c in boot.chunks():  # one draw of counts for the cut-offs and the profit spread
        cut, rate = optimal_cutoffs(ev_selection[r], profit_if_contacted_selection[r], c)
        cuts.append(cut)
        rates.append(rate)
        sel.append(weighted_mean(c, selection_profit[r]))
    cut_s, rate_s = np.concatenate(cuts), np.concatenate(rates)
    a = (1 - bootstrap.confidence) / 2
    lo, hi = (float(v) for v in np.quantile(cut_s, [a, 1 - a], method="inverted_cdf"))
    rlo, rhi = (float(v) for v in np.quantile(rate_s, [a, 1 - a]))
    policy_profit = float(np.where(test_contact, ev_test, 0.0).mean())
    ends = {"low": lo, "high": hi}
    losses = {k: policy_profit - expected_profit_at(ev_test, v) for k, v in ends.items()}
    worst_end = max(losses, key=lambda k: losses[k])
    loss = max(0.0, losses[worst_end])
    loss_share = loss / stake if stake > 0 else math.inf
    s_sel = np.concatenate(sel)
    i_sel = interval(s_sel, float(selection_profit.mean()), bootstrap.confidence)
    tboot = PairedBootstrap(len(test_profit), config=bootstrap, seed_offset=5)
    s_test = tboot.run(lambda c: weighted_mean(c, test_profit[tboot.rows]))
    i_test = interval(s_test, float(test_profit.mean()), bootstrap.confidence)
    noise = (i_test.high - i_test.low) / 2
    allowed = max(config.max_profit_loss_share * stake, noise)
    allowed_share = allowed / stake if stake > 0 else math.inf
    test_rate = float(test_contact.mean())
    checks = {
        f"expected profit lost across the cut-off interval <= {config.max_profit_loss_share:.0%} "
        f"of the profit at stake or within the test profit's noise (lost {loss:.4g} USD/customer, "
        f"allowed {allowed:.4g})": loss <= allowed,
        f"test profit interval {i_test.low:.4g}..{i_test.high:.4g} overlaps selection interval "
        f"{i_sel.low:.4g}..{i_sel.high:.4g}": i_test.high >= i_sel.low and i_test.low <= i_sel.high,
        f"contact rate {test_rate:.3f} within [{config.min_contact_rate}, "
        f"{config.max_contact_rate}]": (
            config.min_contact_rate <= test_rate <= config.max_contact_rate
        ),
    }
    failed = failed_checks(checks)
    return GateResult(
        gate="threshold",
        passed=not failed,
        metric="profit lost across the cut-off interval (share of profit at stake)",
        value=loss_share,
        interval=[lo, hi],
        threshold=allowed_share,
        evidence={
            "checks": checks,
            "cutoff_interval_usd": [lo, hi],
            "contact_rate_interval": [rlo, rhi],
            "expected_profit_per_customer_usd": policy_profit,
            "expected_profit_at_interval_ends_usd": {
                k: expected_profit_at(ev_test, v) for k, v in ends.items()
            },
            "profit_lost_usd_per_customer": loss,
            "allowed_loss_usd_per_customer": allowed,
            "test_profit_noise_half_width_usd": noise,
            "profit_at_stake_per_customer_usd": stake,
            "selection_profit_interval": i_sel.as_list(),
            "test_profit_interval": i_test.as_list(),
            "selection_profit_per_customer_usd": i_sel.point,
            "test_profit_per_customer_usd": i_test.point,
            "test_contact_rate": test_rate,
            "bootstrap": boot.describe(),
        },
        reason=("not met: " + "; ".join(failed))
        if failed
        else f"cut-off interval {lo:.4g}..{hi:.4g} USD costs at most {loss:.4g} USD/customer "
        f"({loss_share:.1%} of the profit at stake); contact rate {test_rate:.3f}, "
        f"test profit {i_test.point:.4g} within selection interval",
    )


@register("threshold", order=40)
def _threshold(inputs: GateInputs, config: ThresholdGateConfig) -> GateResult:
    sel, cand = inputs.selection, inputs.candidate
    return gate_threshold(
        sel.ev,
        inputs.selection_profit_if_contacted,
        sel.profit,
        cand.ev,
        cand.profit,
        cand.contact,
        stake=inputs.stake,
        config=config,
        bootstrap=inputs.bootstrap,
    )
