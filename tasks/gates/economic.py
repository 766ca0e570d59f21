"""Money gates: baseline, business, error cost and champion.

Every money limit is a share of the profit at stake (``tasks.evaluate.profit_at_stake``: the
profit per customer of perfect information on the same rows), so multiplying every USD amount by
ten changes no decision; every comparison is a seeded paired bootstrap on the same test rows.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np
from sklearn.metrics import average_precision_score

from configs.settings import (
    BaselineGateConfig,
    BootstrapConfig,
    BusinessGateConfig,
    ChampionGateConfig,
    ErrorCostGateConfig,
)
from tasks.evaluate import PairedBootstrap, interval, weighted_average_precision, weighted_mean
from tasks.evidence import ChampionScores
from tasks.gates.registry import GateInputs, register
from tasks.gates.result import GateResult, failed_checks, failed_to_compute
from tasks.gates.stats import holm, one_sided_p_above, rows_to_show


def _share(value: float, stake: float) -> float | None:
    return value / stake if stake > 0 else None


# ------------------------------------------------------------------ baseline
def gate_baseline(
    y: np.ndarray,
    p: np.ndarray,
    profit: np.ndarray,
    baselines: Mapping[str, tuple[np.ndarray, np.ndarray]],
    *,
    stake: float,
    config: BaselineGateConfig,
    bootstrap: BootstrapConfig,
) -> GateResult:
    """Superior to the best baseline in ranking (lower bound of the PR-AUC gain >
    ``min_pr_auc_gain``) and non-inferior in money (lower bound of the profit gain per customer
    > -``profit_margin_share`` x stake).

    ``profit``: realised profit per customer (USD) under the candidate's policy; ``baselines``:
    name -> (probabilities, profit per customer under the same policy rule); ``stake``: profit
    at stake per customer (USD). When a baseline earns more, the evidence says so and how many
    rows a paired comparison would need to show a gain of one margin.
    """
    if not baselines:
        return failed_to_compute("baseline", "no baseline was trained")
    ap = {n: float(average_precision_score(y, b[0])) for n, b in baselines.items()}
    prof = {n: float(b[1].mean()) for n, b in baselines.items()}
    best_ap, best_prof = max(ap, key=lambda n: ap[n]), max(prof, key=lambda n: prof[n])
    boot = PairedBootstrap(len(y), config=bootstrap, seed_offset=1)
    r = boot.rows
    yy, pp, bp = y[r], p[r], baselines[best_ap][0][r]
    diff = profit - baselines[best_prof][1]
    d_ap, d_profit = boot.run_many(
        lambda c: weighted_average_precision(c, yy, pp) - weighted_average_precision(c, yy, bp),
        lambda c: weighted_mean(c, diff[r]),
    )
    cand_ap = float(average_precision_score(y, p))
    i_ap = interval(d_ap, cand_ap - ap[best_ap], bootstrap.confidence)
    i_pr = interval(d_profit, float(diff.mean()), bootstrap.confidence)
    margin = config.profit_margin_share * stake
    sd_row = float(np.std(diff, ddof=1)) if len(diff) > 1 else math.inf
    rows_for_margin = rows_to_show(
        margin, sd_row, confidence=bootstrap.confidence, power=config.power
    )
    checks = {
        f"PR-AUC gain over {best_ap} lower bound > {config.min_pr_auc_gain} (measured "
        f"{i_ap.low:.4f})": i_ap.low > config.min_pr_auc_gain,
        f"profit not worse than {best_prof} beyond {config.profit_margin_share:.0%} of the "
        f"profit at stake ({margin:.4g} USD/customer; gain lower bound measured "
        f"{i_pr.low:.4g})": i_pr.low > -margin,
    }
    failed = failed_checks(checks)
    baseline_wins = i_pr.high < 0
    notes = []
    if baseline_wins:
        notes.append(
            f"baseline {best_prof} earns more: {-i_pr.point:.4g} USD/customer "
            f"(interval {-i_pr.high:.4g}..{-i_pr.low:.4g})"
        )
    elif i_pr.low <= 0 and rows_for_margin is not None:
        notes.append(
            f"a profit gain of one margin ({margin:.4g} USD/customer) would take about "
            f"{rows_for_margin:,} test rows to show"
        )
    return GateResult(
        gate="baseline",
        passed=not failed,
        metric="PR-AUC gain over best baseline",
        value=i_ap.point,
        interval=i_ap.as_list(),
        threshold=config.min_pr_auc_gain,
        evidence={
            "checks": checks,
            "candidate_pr_auc": cand_ap,
            "baseline_pr_auc": ap,
            "baseline_profit_per_customer_usd": prof,
            "best_baseline_pr_auc": best_ap,
            "best_baseline_profit": best_prof,
            "profit_gain_per_customer_usd": i_pr.point,
            "profit_gain_interval": i_pr.as_list(),
            "profit_at_stake_per_customer_usd": stake,
            "profit_margin_usd_per_customer": margin,
            "baseline_earns_more": baseline_wins,
            "profit_difference_sd_per_row_usd": sd_row,
            "rows_to_show_one_margin": rows_for_margin,
            "bootstrap": boot.describe(),
        },
        reason="; ".join(
            [
                ("not met: " + "; ".join(failed))
                if failed
                else (
                    f"beats {best_ap} in PR-AUC (lower bound {i_ap.low:.4f}) and is within "
                    f"{margin:.4g} USD/customer of {best_prof} or better (profit gain "
                    f"{i_pr.point:.4g}, lower bound {i_pr.low:.4g})"
                )
            ]
            + notes
        ),
    )


@register("baseline", order=10)
def _baseline(inputs: GateInputs, config: BaselineGateConfig) -> GateResult:
    return gate_baseline(
        inputs.y,
        inputs.candidate.p,
        inputs.candidate.profit,
        {k: (v.p, v.profit) for k, v in inputs.baselines.items()},
        stake=inputs.stake,
        config=config,
        bootstrap=inputs.bootstrap,
    )


# ------------------------------------------------------------------ business
def gate_business(
    profit: np.ndarray,
    profit_contact_all: np.ndarray,
    contact: np.ndarray,
    *,
    stake: float,
    capacity_share: float | None,
    config: BusinessGateConfig,
    bootstrap: BootstrapConfig,
) -> GateResult:
    """The policy is shown to make money (lower bound of profit per customer above
    ``min_profit_share`` x stake, so above contacting nobody), is not worse than contacting
    everyone beyond ``contact_all_margin_share`` x stake, and keeps within capacity (binomial
    allowance, 3 sd). Money in USD per customer."""
    boot = PairedBootstrap(len(profit), config=bootstrap, seed_offset=2)
    r = boot.rows
    s_profit, s_vs_all = boot.run_many(
        lambda c: weighted_mean(c, profit[r]),
        lambda c: weighted_mean(c, profit[r] - profit_contact_all[r]),
    )
    i_p = interval(s_profit, float(profit.mean()), bootstrap.confidence)
    i_all = interval(s_vs_all, float((profit - profit_contact_all).mean()), bootstrap.confidence)
    rate = float(contact.mean())
    cap_ok, cap_limit = True, None
    if capacity_share is not None:
        n = len(contact)
        cap_limit = capacity_share + 3 * math.sqrt(capacity_share * (1 - capacity_share) / n)
        cap_ok = rate <= cap_limit
    floor = config.min_profit_share * stake
    margin = config.contact_all_margin_share * stake
    checks = {
        f"profit lower bound > {config.min_profit_share:.0%} of the profit at stake "
        f"({floor:.4g} USD/customer; measured {i_p.low:.4g})": i_p.low > floor,
        f"not worse than contact-all beyond {config.contact_all_margin_share:.0%} of the "
        f"profit at stake ({margin:.4g} USD/customer; gain lower bound measured "
        f"{i_all.low:.4g})": i_all.low > -margin,
        f"capacity respected (contact rate {rate:.3f}"
        + (f", limit {cap_limit:.3f} with allowance)" if cap_limit is not None else ")"): cap_ok,
    }
    failed = failed_checks(checks)
    return GateResult(
        gate="business",
        passed=not failed,
        metric="expected profit per customer (USD)",
        value=i_p.point,
        interval=i_p.as_list(),
        threshold=floor,
        evidence={
            "checks": checks,
            "profit_at_stake_per_customer_usd": stake,
            "profit_share_of_stake": _share(i_p.point, stake),
            "contact_all_profit_per_customer_usd": float(profit_contact_all.mean()),
            "gain_over_contact_all_interval": i_all.as_list(),
            "contact_rate": rate,
            "capacity_share": capacity_share,
            "capacity_limit_with_allowance": cap_limit,
            "bootstrap": boot.describe(),
        },
        reason=("not met: " + "; ".join(failed))
        if failed
        else f"profit {i_p.point:.4g} USD/customer (lower bound {i_p.low:.4g}; "
        f"{_share(i_p.point, stake) or 0:.0%} of the {stake:.4g} at stake), "
        f"gain over contact-all {i_all.point:.4g} (lower bound {i_all.low:.4g})",
    )


@register("business", order=20)
def _business(inputs: GateInputs, config: BusinessGateConfig) -> GateResult:
    return gate_business(
        inputs.candidate.profit,
        inputs.contact_all_profit,
        inputs.candidate.contact,
        stake=inputs.stake,
        capacity_share=inputs.capacity_share,
        config=config,
        bootstrap=inputs.bootstrap,
    )


# ------------------------------------------------------------------ error cost
def error_costs(
    y: np.ndarray,
    values: np.ndarray,
    contact: np.ndarray,
    *,
    save_rate: float,
    contact_cost_usd: float,
) -> tuple[np.ndarray, np.ndarray]:
    """Per-customer false-negative cost (savable value lost on churners not contacted) and
    false-positive cost (contacts spent on customers who would have stayed), USD."""
    fn = np.where((y == 1) & ~contact, save_rate * values, 0.0)
    fp = np.where((y == 0) & contact, contact_cost_usd, 0.0)
    return fn, fp


def gate_error_cost(
    y: np.ndarray,
    values: np.ndarray,
    contact: np.ndarray,
    baseline_contacts: Mapping[str, np.ndarray],
    segments: Mapping[str, np.ndarray],
    *,
    save_rate: float,
    contact_cost_usd: float,
    stake: float,
    min_segment_rows: int,
    config: ErrorCostGateConfig,
    bootstrap: BootstrapConfig,
) -> GateResult:
    """Total error cost per customer (USD) not above the best baseline's beyond
    ``margin_share`` x stake (paired bootstrap upper bound of the difference), and no supported
    segment's false-negative cost per customer significantly above ``max_segment_fn_cost_multiple``
    times the overall one (one-sided tests, Holm-corrected over the segments)."""
    if not baseline_contacts:
        return failed_to_compute("error-cost", "no baseline decisions to compare against")
    fn, fp = error_costs(y, values, contact, save_rate=save_rate, contact_cost_usd=contact_cost_usd)
    total = fn + fp
    base_totals = {}
    for name, bc in baseline_contacts.items():
        bfn, bfp = error_costs(
            y, values, bc, save_rate=save_rate, contact_cost_usd=contact_cost_usd
        )
        base_totals[name] = bfn + bfp
    best = min(base_totals, key=lambda k: base_totals[k].mean())
    boot = PairedBootstrap(len(y), config=bootstrap, seed_offset=7)
    r = boot.rows
    d = boot.run(lambda c: weighted_mean(c, total[r] - base_totals[best][r]))
    i_d = interval(d, float(total.mean() - base_totals[best].mean()), bootstrap.confidence)
    margin = config.margin_share * stake
    overall_fn = float(fn.mean())
    limit_multiple = config.max_segment_fn_cost_multiple
    seg: dict[str, dict[str, Any]] = {}
    pvals: dict[str, float] = {}
    for name, idx in segments.items():
        if len(idx) < min_segment_rows:
            continue
        seg_fn = float(fn[idx].mean())
        se = float(np.std(fn[idx], ddof=1) / math.sqrt(len(idx))) if len(idx) > 1 else math.inf
        pvals[name] = one_sided_p_above(seg_fn, limit_multiple * overall_fn, se)
        seg[name] = {
            "rows": len(idx),
            "fn_cost_per_customer_usd": seg_fn,
            "fn_cost_se_usd": se,
            "fp_cost_per_customer_usd": float(fp[idx].mean()),
            "multiple_of_overall": seg_fn / overall_fn if overall_fn > 0 else 0.0,
            "p_above_limit": pvals[name],
        }
    rejected = holm(pvals, config.alpha) if pvals else {}
    heavy = [k for k, v in rejected.items() if v]
    for name in seg:
        seg[name]["significantly_above_limit"] = rejected.get(name, False)
    checks = {
        f"error cost not above {best} beyond {config.margin_share:.0%} of the profit at stake "
        f"({margin:.4g} USD/customer; difference upper bound measured {i_d.high:.4g})": i_d.high
        < margin,
        f"no segment significantly above {limit_multiple}x the overall false-negative cost "
        f"(Holm, alpha {config.alpha})": not heavy,
    }
    failed = failed_checks(checks)
    worst = max(seg, key=lambda k: seg[k]["multiple_of_overall"]) if seg else None
    return GateResult(
        gate="error-cost",
        passed=not failed,
        metric="error cost per customer minus best baseline (USD)",
        value=i_d.point,
        interval=i_d.as_list(),
        threshold=margin,
        evidence={
            "checks": checks,
            "fn_cost_per_customer_usd": overall_fn,
            "fp_cost_per_customer_usd": float(fp.mean()),
            "baseline_error_cost_per_customer_usd": {
                k: float(v.mean()) for k, v in base_totals.items()
            },
            "best_baseline": best,
            "profit_at_stake_per_customer_usd": stake,
            "margin_usd_per_customer": margin,
            "segments": seg,
            "worst_segment": worst,
            "failing_segments": heavy,
            "max_segment_fn_cost_multiple": limit_multiple,
        },
        reason=("not met: " + "; ".join(failed) + (f" ({', '.join(heavy)})" if heavy else ""))
        if failed
        else f"error cost {total.mean():.4g} USD/customer vs {best} "
        f"{base_totals[best].mean():.4g} (upper bound of difference {i_d.high:.4g}); "
        f"worst segment {worst}",
    )


@register("error-cost", order=70)
def _error_cost(inputs: GateInputs, config: ErrorCostGateConfig) -> GateResult:
    return gate_error_cost(
        inputs.y,
        inputs.candidate.values,
        inputs.candidate.contact,
        {k: v.contact for k, v in inputs.baselines.items()},
        inputs.segments,
        save_rate=inputs.economics.save_rate,
        contact_cost_usd=inputs.economics.contact_cost_usd,
        stake=inputs.stake,
        min_segment_rows=inputs.gates.segments.min_segment_rows,
        config=config,
        bootstrap=inputs.bootstrap,
    )


# ------------------------------------------------------------------ champion
def gate_champion(
    profit: np.ndarray,
    champion: ChampionScores | None,
    *,
    stake: float,
    config: ChampionGateConfig,
    bootstrap: BootstrapConfig,
) -> GateResult:
    """Non-inferiority on profit per customer (USD): lower bound of (candidate - champion)
    > -``profit_margin_share`` x stake, on the same test rows, each under its own policy."""
    margin = config.profit_margin_share * stake
    metric = "profit gain over champion (USD/customer)"
    if champion is None:
        return GateResult(
            gate="champion",
            passed=True,
            metric=metric,
            value=None,
            interval=None,
            threshold=-margin,
            evidence={"champion": None},
            reason="no champion yet: first model, judged by every other gate",
        )
    if champion.profit is None:
        return failed_to_compute(
            "champion",
            f"champion {champion.model_version} could not be "
            f"scored on this test split: {champion.error}",
        )
    boot = PairedBootstrap(len(profit), config=bootstrap, seed_offset=9)
    r = boot.rows
    champ = champion.profit
    d = boot.run(lambda c: weighted_mean(c, profit[r] - champ[r]))
    i_d = interval(d, float(profit.mean() - champ.mean()), bootstrap.confidence)
    ok = i_d.low > -margin
    return GateResult(
        gate="champion",
        passed=ok,
        metric=metric,
        value=i_d.point,
        interval=i_d.as_list(),
        threshold=-margin,
        evidence={
            "champion_version": champion.model_version,
            "champion_record": champion.record_id,
            "champion_profit_per_customer_usd": float(champ.mean()),
            "candidate_profit_per_customer_usd": float(profit.mean()),
            "profit_at_stake_per_customer_usd": stake,
            "margin_usd_per_customer": margin,
            "bootstrap": boot.describe(),
        },
        reason=(
            f"non-inferior to champion v{champion.model_version} (lower bound {i_d.low:.4g} > "
            f"-{margin:.4g}, {config.profit_margin_share:.0%} of the profit at stake)"
        )
        if ok
        else f"worse than champion v{champion.model_version}: lower bound {i_d.low:.4g} "
        f"USD/customer <= -{margin:.4g} ({config.profit_margin_share:.0%} of the profit at stake)",
    )


@register("champion", order=90)
def _champion(inputs: GateInputs, config: ChampionGateConfig) -> GateResult:
    return gate_champion(
        inputs.candidate.profit,
        inputs.champion,
        stake=inputs.stake,
        config=config,
        bootstrap=inputs.bootstrap,
    )
