"""Promotion gates: pure functions from evidence to a typed ``GateResult``.

Every gate decides on the **test** split (the threshold gate also re-optimises on the selection
split), compares noisy numbers through a seeded paired bootstrap, and fails with a reason when it
cannot compute its metric. Thresholds live in ``configs.settings.GatesConfig``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import pandas as pd
from scipy.stats import norm

from configs.settings import (
    BaselineGateConfig,
    BootstrapConfig,
    BusinessGateConfig,
    CalibrationGateConfig,
    ChampionGateConfig,
    ErrorCostGateConfig,
    RobustnessGateConfig,
    SegmentsGateConfig,
    StabilityGateConfig,
    TechnicalGateConfig,
    ThresholdGateConfig,
)
from tasks.evaluate import (
    EPS,
    PairedBootstrap,
    ece,
    ece_null_quantile,
    interval,
    log_loss,
    weighted_average_precision,
    weighted_mean,
    weighted_roc_auc,
)
from tasks.select_policy import optimal_cutoffs

GATE_IDS = (
    "baseline",
    "business",
    "calibration",
    "threshold",
    "segments",
    "stability",
    "error-cost",
    "technical",
    "champion",
    "robustness",
)


@dataclass(frozen=True)
class GateResult:
    gate: str
    passed: bool
    metric: str
    value: float | None
    interval: list[float] | None
    threshold: float | str | None
    evidence: dict[str, Any] = field(default_factory=dict)
    reason: str = ""

    def as_dict(self) -> dict[str, Any]:
        return _jsonable(asdict(self))


def _jsonable(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, np.bool_ | bool):
        return bool(obj)
    if isinstance(obj, np.integer):
        return int(obj)
    if isinstance(obj, np.floating | float):
        f = float(obj)
        return None if math.isnan(f) else (round(f, 6) if math.isfinite(f) else str(f))
    return obj


def disabled(gate: str) -> GateResult:
    key = gate.replace("-", "_")
    return GateResult(
        gate,
        True,
        "disabled",
        None,
        None,
        None,
        {"disabled": True},
        f"disabled by config (gates.{key}.enabled=false)",
    )


def failed_to_compute(gate: str, error: BaseException | str) -> GateResult:
    return GateResult(
        gate,
        False,
        "not computed",
        None,
        None,
        None,
        {"error": str(error)},
        f"could not compute the gate's metric: {error}",
    )


def guarded(gate: str, fn: Callable[[], GateResult]) -> GateResult:
    """Run a gate; an exception becomes a failed result with the reason (never a skip)."""
    try:
        return fn()
    except Exception as exc:
        return failed_to_compute(gate, f"{type(exc).__name__}: {exc}")


# ------------------------------------------------------------------ 1. baseline
def gate_baseline(
    y: np.ndarray,
    p: np.ndarray,
    profit: np.ndarray,
    baselines: Mapping[str, tuple[np.ndarray, np.ndarray]],
    *,
    config: BaselineGateConfig,
    bootstrap: BootstrapConfig,
) -> GateResult:
    """Lower bound of (candidate - best baseline) in PR-AUC and in profit per customer > floor.

    ``profit``: realised profit per customer (USD) under the candidate's policy;
    ``baselines``: name -> (probabilities, profit per customer under the same policy rule).
    """
    if not config.enabled:
        return disabled("baseline")
    if not baselines:
        return failed_to_compute("baseline", "no baseline was trained")
    from sklearn.metrics import average_precision_score

    ap = {n: float(average_precision_score(y, b[0])) for n, b in baselines.items()}
    prof = {n: float(b[1].mean()) for n, b in baselines.items()}
    best_ap, best_prof = max(ap, key=lambda n: ap[n]), max(prof, key=lambda n: prof[n])
    boot = PairedBootstrap(len(y), config=bootstrap, seed_offset=1)
    r = boot.rows
    yy, pp, bp = y[r], p[r], baselines[best_ap][0][r]
    d_ap, d_profit = boot.run_many(
        lambda c: weighted_average_precision(c, yy, pp) - weighted_average_precision(c, yy, bp),
        lambda c: weighted_mean(c, profit[r] - baselines[best_prof][1][r]),
    )
    cand_ap = float(average_precision_score(y, p))
    i_ap = interval(d_ap, cand_ap - ap[best_ap], bootstrap.confidence)
    i_pr = interval(d_profit, float(profit.mean()) - prof[best_prof], bootstrap.confidence)
    ok_ap = i_ap.low > config.min_pr_auc_gain
    ok_pr = i_pr.low > config.min_profit_gain_usd_per_customer
    reasons = []
    if not ok_ap:
        reasons.append(f"PR-AUC gain over {best_ap} not shown (lower bound {i_ap.low:.4f})")
    if not ok_pr:
        reasons.append(f"profit gain over {best_prof} not shown (lower bound {i_pr.low:.3f} USD)")
    return GateResult(
        "baseline",
        ok_ap and ok_pr,
        "PR-AUC gain over best baseline",
        i_ap.point,
        i_ap.as_list(),
        config.min_pr_auc_gain,
        {
            "candidate_pr_auc": cand_ap,
            "baseline_pr_auc": ap,
            "baseline_profit_per_customer_usd": prof,
            "best_baseline_pr_auc": best_ap,
            "best_baseline_profit": best_prof,
            "profit_gain_per_customer_usd": i_pr.point,
            "profit_gain_interval": i_pr.as_list(),
            "bootstrap": boot.describe(),
        },
        "; ".join(reasons)
        or f"beats {best_ap} in PR-AUC and {best_prof} in profit "
        f"(lower bounds {i_ap.low:.4f}, {i_pr.low:.3f} USD/customer)",
    )


# ------------------------------------------------------------------ 2. business
def gate_business(
    profit: np.ndarray,
    profit_contact_all: np.ndarray,
    contact: np.ndarray,
    *,
    capacity_share: float | None,
    config: BusinessGateConfig,
    bootstrap: BootstrapConfig,
) -> GateResult:
    """Policy profit per customer (USD) > floor, better than contact-all and contact-none
    (lower bounds), and the contact rate within capacity (binomial allowance, 3 sd)."""
    if not config.enabled:
        return disabled("business")
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
    checks = {
        "profit lower bound above floor": i_p.low > config.min_profit_usd_per_customer,
        "better than contact-none (lower bound > 0)": i_p.low > 0,
        "better than contact-all (lower bound > 0)": i_all.low > 0,
        "capacity respected": cap_ok,
    }
    failed = [k for k, v in checks.items() if not v]
    return GateResult(
        "business",
        not failed,
        "expected profit per customer (USD)",
        i_p.point,
        i_p.as_list(),
        config.min_profit_usd_per_customer,
        {
            "checks": checks,
            "contact_all_profit_per_customer_usd": float(profit_contact_all.mean()),
            "gain_over_contact_all_interval": i_all.as_list(),
            "contact_rate": rate,
            "capacity_share": capacity_share,
            "capacity_limit_with_allowance": cap_limit,
            "bootstrap": boot.describe(),
        },
        ("not met: " + "; ".join(failed))
        if failed
        else f"profit {i_p.point:.2f} USD/customer (lower bound {i_p.low:.2f}), "
        f"{i_all.low:.2f} USD/customer better than contact-all at least",
    )


# ------------------------------------------------------------------ 3. calibration
@dataclass(frozen=True)
class CalibrationCheck:
    """``ece`` observed; ``noise_floor`` the median and ``ideal_quantile`` the (1 - alpha)
    quantile of the ECE a perfectly calibrated model shows at this sample size."""

    ece: float
    noise_floor: float
    ideal_quantile: float
    excess: float
    rows: int


def calibration_check(
    y: np.ndarray, p: np.ndarray, *, n_bins: int, simulations: int, alpha: float, seed: int
) -> CalibrationCheck:
    """ECE against the ECE a perfectly calibrated model would show at this sample size."""
    observed = ece(y, p, n_bins=n_bins)
    q, sims = ece_null_quantile(
        p, n_bins=n_bins, simulations=simulations, quantile=1 - alpha, seed=seed
    )
    return CalibrationCheck(observed, float(np.median(sims)), q, observed - q, len(y))


def gate_calibration(
    y: np.ndarray,
    p: np.ndarray,
    p_raw: np.ndarray,
    segments: Mapping[str, np.ndarray],
    *,
    n_bins: int,
    min_segment_rows: int,
    segment_ece_excess: float,
    config: CalibrationGateConfig,
    bootstrap: BootstrapConfig,
) -> GateResult:
    """Pass when (a) test ECE above the noise floor (the median ECE of a perfectly calibrated
    model at this size; it vanishes on large splits) is at most ``max_ece``, (b) ECE exceeds
    the (1 - alpha) quantile of that perfect model's ECE by at most ``max_ece_excess``, (c) the
    same per supported segment, (d) calibrated log loss is not worse than raw beyond the
    margin with bootstrap confidence (lower bound of the difference <= margin)."""
    if not config.enabled:
        return disabled("calibration")
    overall = calibration_check(
        y, p, n_bins=n_bins, simulations=config.simulations, alpha=config.alpha, seed=bootstrap.seed
    )
    seg_rows = {}
    for name, idx in segments.items():
        if len(idx) < min_segment_rows:
            continue
        c = calibration_check(
            y[idx],
            p[idx],
            n_bins=n_bins,
            simulations=config.simulations,
            alpha=config.alpha,
            seed=bootstrap.seed,
        )
        seg_rows[name] = asdict(c) | {"passed": c.excess <= segment_ece_excess}
    boot = PairedBootstrap(len(y), config=bootstrap, seed_offset=3)
    r = boot.rows
    pc, pr = np.clip(p[r], EPS, 1 - EPS), np.clip(p_raw[r], EPS, 1 - EPS)
    ll_c = -(y[r] * np.log(pc) + (1 - y[r]) * np.log(1 - pc))
    ll_r = -(y[r] * np.log(pr) + (1 - y[r]) * np.log(1 - pr))
    d_ll = boot.run(lambda c: weighted_mean(c, ll_c - ll_r))
    i_ll = interval(
        d_ll,
        float(
            log_loss(y, np.clip(p, EPS, 1 - EPS), labels=[0, 1])
            - log_loss(y, np.clip(p_raw, EPS, 1 - EPS), labels=[0, 1])
        ),
        bootstrap.confidence,
    )
    bad_segments = [k for k, v in seg_rows.items() if not v["passed"]]
    checks = {
        f"ECE above noise floor <= {config.max_ece}": overall.ece - overall.noise_floor
        <= config.max_ece,
        f"ECE within ideal quantile + {config.max_ece_excess}": overall.excess
        <= config.max_ece_excess,
        f"every supported segment within its ideal quantile + {segment_ece_excess}": (
            not bad_segments
        ),
        f"calibrated log loss not worse than raw beyond {config.log_loss_margin}": i_ll.low
        <= config.log_loss_margin,
    }
    failed = [k for k, v in checks.items() if not v]
    return GateResult(
        "calibration",
        not failed,
        "ECE (test)",
        overall.ece,
        None,
        config.max_ece,
        {
            "checks": checks,
            "overall": asdict(overall),
            "segments": seg_rows,
            "failing_segments": bad_segments,
            "log_loss_calibrated_minus_raw": i_ll.point,
            "log_loss_difference_interval": i_ll.as_list(),
            "n_bins": n_bins,
        },
        ("not met: " + "; ".join(failed))
        if failed
        else f"ECE {overall.ece:.4f} (noise floor {overall.noise_floor:.4f}, ideal "
        f"{1 - config.alpha:.0%} quantile {overall.ideal_quantile:.4f}); "
        f"{len(seg_rows)} segments checked",
    )


# ------------------------------------------------------------------ 4. threshold
def gate_threshold(
    ev_selection: np.ndarray,
    profit_if_contacted_selection: np.ndarray,
    selection_profit: np.ndarray,
    test_profit: np.ndarray,
    test_contact: np.ndarray,
    *,
    config: ThresholdGateConfig,
    bootstrap: BootstrapConfig,
) -> GateResult:
    """The operating point is not an artefact of one split.

    - re-optimised on bootstrap resamples of the selection split, the profit-maximising
      cut-off (USD) and contact rate vary within configured widths;
    - test profit per customer overlaps the selection estimate's interval;
    - the policy contacts neither (almost) nobody nor (almost) everybody on test.
    """
    if not config.enabled:
        return disabled("threshold")
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
    finite = np.isfinite(cut_s)
    a = (1 - bootstrap.confidence) / 2
    if finite.sum() < 0.5 * len(cut_s):
        cut_width = math.inf
        cut_iv = [math.inf, math.inf]
    else:
        lo, hi = np.quantile(cut_s[finite], [a, 1 - a])
        cut_width, cut_iv = float(hi - lo), [float(lo), float(hi)]
    rlo, rhi = np.quantile(rate_s, [a, 1 - a])
    s_sel = np.concatenate(sel)
    i_sel = interval(s_sel, float(selection_profit.mean()), bootstrap.confidence)
    tboot = PairedBootstrap(len(test_profit), config=bootstrap, seed_offset=5)
    s_test = tboot.run(lambda c: weighted_mean(c, test_profit[tboot.rows]))
    i_test = interval(s_test, float(test_profit.mean()), bootstrap.confidence)
    test_rate = float(test_contact.mean())
    checks = {
        f"cut-off 95% width <= {config.max_cutoff_spread_usd} USD": cut_width
        <= config.max_cutoff_spread_usd,
        f"contact-rate 95% width <= {config.max_contact_rate_spread}": float(rhi - rlo)
        <= config.max_contact_rate_spread,
        "test profit interval overlaps selection interval": i_test.high >= i_sel.low
        and i_test.low <= i_sel.high,
        f"contact rate within [{config.min_contact_rate}, {config.max_contact_rate}]": (
            config.min_contact_rate <= test_rate <= config.max_contact_rate
        ),
    }
    failed = [k for k, v in checks.items() if not v]
    return GateResult(
        "threshold",
        not failed,
        "re-optimised cut-off 95% width (USD)",
        cut_width,
        cut_iv,
        config.max_cutoff_spread_usd,
        {
            "checks": checks,
            "contact_rate_interval": [float(rlo), float(rhi)],
            "selection_profit_interval": i_sel.as_list(),
            "test_profit_interval": i_test.as_list(),
            "selection_profit_per_customer_usd": i_sel.point,
            "test_profit_per_customer_usd": i_test.point,
            "test_contact_rate": test_rate,
            "bootstrap": boot.describe(),
        },
        ("not met: " + "; ".join(failed))
        if failed
        else f"cut-off stable (width {cut_width:.2f} USD), contact rate {test_rate:.3f}, "
        f"test profit {i_test.point:.2f} within selection interval",
    )


# ------------------------------------------------------------------ 5. segments
def holm(pvalues: Mapping[str, float], alpha: float) -> dict[str, bool]:
    """Holm step-down: which hypotheses are rejected at family-wise level ``alpha``."""
    order = sorted(pvalues, key=lambda k: pvalues[k])
    rejected: dict[str, bool] = dict.fromkeys(pvalues, False)
    m = len(order)
    for i, key in enumerate(order):
        if pvalues[key] <= alpha / (m - i):
            rejected[key] = True
        else:
            break
    return rejected


def segment_index(frame: pd.DataFrame, columns: tuple[str, ...]) -> dict[str, np.ndarray]:
    """``"column=value"`` -> row positions, for every value of every segment column."""
    out: dict[str, np.ndarray] = {}
    for col in columns:
        for value, idx in frame.groupby(col, dropna=False, sort=True).indices.items():
            out[f"{col}={value}"] = np.asarray(idx)
    return out


def _segment_resamples(
    boot: PairedBootstrap, y: np.ndarray, p: np.ndarray, contact: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Bootstrap ROC-AUC, recall, and recall minus the recall ``p`` predicts, per resample."""
    yy, pp, cc = y[boot.rows], p[boot.rows], contact[boot.rows]
    aucs, recs, gaps = [], [], []
    for c in boot.chunks():
        rec = (c @ (cc * yy)) / np.maximum(c @ yy, EPS)
        aucs.append(weighted_roc_auc(c, yy, pp))
        recs.append(rec)
        gaps.append(rec - (c @ (cc * pp)) / np.maximum(c @ pp, EPS))
    return np.concatenate(aucs), np.concatenate(recs), np.concatenate(gaps)


def gate_segments(
    y: np.ndarray,
    p: np.ndarray,
    contact: np.ndarray,
    segments: Mapping[str, np.ndarray],
    *,
    n_bins: int,
    config: SegmentsGateConfig,
    calibration: CalibrationGateConfig,
    bootstrap: BootstrapConfig,
) -> GateResult:
    """Per supported segment: ROC-AUC not significantly below the floor; recall not
    significantly below overall recall minus a margin where the segment's own predicted risk
    does not explain it (one-sided bootstrap z-tests, Holm-corrected over all tests); ECE within
    the per-segment allowance beyond what sampling noise explains. Segments smaller than
    ``min_segment_rows`` are listed as insufficient support."""
    if not config.enabled:
        return disabled("segments")
    if not segments:
        return failed_to_compute("segments", "no segment columns configured (data.segment_columns)")
    pos = y == 1
    overall_recall = float(contact[pos].mean()) if pos.any() else float("nan")
    supported, insufficient, pvals, table = {}, {}, {}, {}
    for name, idx in segments.items():
        yy = y[idx]
        if len(idx) < config.min_segment_rows or len(np.unique(yy)) < 2:
            insufficient[name] = int(len(idx))
            continue
        supported[name] = idx
        pp, cc = p[idx], contact[idx].astype(float)
        boot = PairedBootstrap(
            len(idx), config=bootstrap, resamples=min(bootstrap.resamples, 500), seed_offset=6
        )
        aucs, recs, gaps = _segment_resamples(boot, yy, pp, cc)
        auc = float(weighted_roc_auc(np.ones((1, len(idx))), yy, pp)[0])
        rec = float(cc[yy == 1].mean())
        expected_rec = float((cc * pp).sum() / max(pp.sum(), EPS))
        floor_rec = overall_recall - config.recall_margin
        se_auc, se_rec = float(np.std(aucs)) + EPS, float(np.std(recs)) + EPS
        se_gap = float(np.std(gaps)) + EPS
        pvals[f"{name}|auc"] = float(norm.cdf((auc - config.min_roc_auc) / se_auc))
        # Intersection-union test: a segment's recall fails only when it is significantly below
        # the overall recall minus the margin AND significantly below the recall its own risk
        # mix predicts (a low-risk segment is rightly contacted less under an EV policy).
        p_overall = float(norm.cdf((rec - floor_rec) / se_rec))
        p_expected = float(norm.cdf((rec - expected_rec + config.recall_margin) / se_gap))
        pvals[f"{name}|recall"] = max(p_overall, p_expected)
        cal = calibration_check(
            yy,
            pp,
            n_bins=n_bins,
            simulations=calibration.simulations,
            alpha=calibration.alpha,
            seed=bootstrap.seed,
        )
        table[name] = {
            "rows": len(idx),
            "roc_auc": auc,
            "roc_auc_se": se_auc,
            "recall": rec,
            "recall_se": se_rec,
            "expected_recall": expected_rec,
            "ece": cal.ece,
            "ece_ideal_quantile": cal.ideal_quantile,
            "ece_ok": cal.ece - cal.ideal_quantile <= config.max_ece_excess,
        }
    if not supported:
        return GateResult(
            "segments",
            False,
            "worst segment ROC-AUC",
            None,
            None,
            config.min_roc_auc,
            {"insufficient_support": insufficient},
            f"no segment has >= {config.min_segment_rows} rows with both classes",
        )
    rejected = holm(pvals, config.alpha)
    failures = []
    for name, row in table.items():
        row["auc_below_floor"] = rejected[f"{name}|auc"]
        row["recall_below_overall"] = rejected[f"{name}|recall"]
        row["p_auc"], row["p_recall"] = pvals[f"{name}|auc"], pvals[f"{name}|recall"]
        if row["auc_below_floor"] or row["recall_below_overall"] or not row["ece_ok"]:
            failures.append(name)
    worst = min(table, key=lambda k: table[k]["roc_auc"])
    return GateResult(
        "segments",
        not failures,
        "worst segment ROC-AUC",
        table[worst]["roc_auc"],
        None,
        config.min_roc_auc,
        {
            "worst_segment": worst,
            "overall_recall": overall_recall,
            "segments": table,
            "insufficient_support": insufficient,
            "failing_segments": failures,
            "correction": f"Holm at family-wise alpha={config.alpha} over {len(pvals)} tests",
        },
        (
            f"failing segments: {', '.join(failures)}"
            if failures
            else f"{len(table)} segments pass; worst {worst} "
            f"(ROC-AUC {table[worst]['roc_auc']:.3f}); "
            f"{len(insufficient)} with insufficient support"
        ),
    )


# ------------------------------------------------------------------ 6. stability
@dataclass(frozen=True)
class StabilityEvidence:
    """Per-fold ROC-AUC and profit per customer (USD) of refits of the chosen pipeline."""

    fold_auc: list[float]
    fold_profit: list[float]
    rows: int
    subsampled: bool


def gate_stability(
    evidence: StabilityEvidence | None, *, config: StabilityGateConfig
) -> GateResult:
    """Std of fold ROC-AUC and of fold profit per customer within config limits."""
    if not config.enabled:
        return disabled("stability")
    if evidence is None or len(evidence.fold_auc) < 2:
        return failed_to_compute("stability", "no cross-validation folds were computed")
    auc_sd = float(np.std(evidence.fold_auc, ddof=1))
    prof_sd = float(np.std(evidence.fold_profit, ddof=1))
    ok_a, ok_p = auc_sd <= config.max_auc_std, prof_sd <= config.max_profit_std_usd_per_customer
    reasons = []
    if not ok_a:
        reasons.append(f"fold ROC-AUC std {auc_sd:.4f} > {config.max_auc_std}")
    if not ok_p:
        reasons.append(f"fold profit std {prof_sd:.3f} > {config.max_profit_std_usd_per_customer}")
    return GateResult(
        "stability",
        ok_a and ok_p,
        "std of fold ROC-AUC",
        auc_sd,
        [float(np.min(evidence.fold_auc)), float(np.max(evidence.fold_auc))],
        config.max_auc_std,
        {
            "fold_roc_auc": evidence.fold_auc,
            "fold_profit_per_customer_usd": evidence.fold_profit,
            "profit_std_usd_per_customer": prof_sd,
            "rows": evidence.rows,
            "subsampled": evidence.subsampled,
            "folds": len(evidence.fold_auc),
        },
        "; ".join(reasons) or f"fold ROC-AUC std {auc_sd:.4f}, profit std {prof_sd:.3f} USD",
    )


# ------------------------------------------------------------------ 7. error cost
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
    min_segment_rows: int,
    config: ErrorCostGateConfig,
    bootstrap: BootstrapConfig,
) -> GateResult:
    """Total error cost per customer below the best baseline's (paired bootstrap upper bound of
    the difference < 0), and no supported segment's FN cost per customer above a multiple of
    the overall one."""
    if not config.enabled:
        return disabled("error-cost")
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
    overall_fn = float(fn.mean())
    seg = {}
    for name, idx in segments.items():
        if len(idx) < min_segment_rows:
            continue
        seg_fn = float(fn[idx].mean())
        seg[name] = {
            "rows": len(idx),
            "fn_cost_per_customer_usd": seg_fn,
            "fp_cost_per_customer_usd": float(fp[idx].mean()),
            "multiple_of_overall": seg_fn / overall_fn if overall_fn > 0 else 0.0,
        }
    heavy = [
        k for k, v in seg.items() if v["multiple_of_overall"] > config.max_segment_fn_cost_multiple
    ]
    ok_total = i_d.high < 0
    reasons = []
    if not ok_total:
        reasons.append(
            f"error cost not shown below baseline {best} (upper bound of difference "
            f"{i_d.high:.3f} USD/customer)"
        )
    if heavy:
        reasons.append(
            f"segments bearing > {config.max_segment_fn_cost_multiple}x the overall "
            f"false-negative cost: {', '.join(heavy)}"
        )
    worst = max(seg, key=lambda k: seg[k]["multiple_of_overall"]) if seg else None
    return GateResult(
        "error-cost",
        ok_total and not heavy,
        "error cost per customer minus best baseline (USD)",
        i_d.point,
        i_d.as_list(),
        0.0,
        {
            "fn_cost_per_customer_usd": overall_fn,
            "fp_cost_per_customer_usd": float(fp.mean()),
            "baseline_error_cost_per_customer_usd": {
                k: float(v.mean()) for k, v in base_totals.items()
            },
            "best_baseline": best,
            "segments": seg,
            "worst_segment": worst,
            "max_segment_fn_cost_multiple": config.max_segment_fn_cost_multiple,
        },
        "; ".join(reasons)
        or f"error cost {total.mean():.2f} USD/customer vs {best} "
        f"{base_totals[best].mean():.2f}; worst segment {worst}",
    )


# ------------------------------------------------------------------ 8. technical
@dataclass(frozen=True)
class TechnicalEvidence:
    """Measured on the real serialized artifact, loaded in a fresh process."""

    artifact_bytes: int
    loaded_in_fresh_process: bool
    max_abs_diff_after_reload: float | None
    rows_compared: int
    single_row_latency_ms: dict[str, float]
    error: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)


def gate_technical(
    evidence: TechnicalEvidence | None, *, config: TechnicalGateConfig
) -> GateResult:
    if not config.enabled:
        return disabled("technical")
    if evidence is None:
        return failed_to_compute("technical", "the artifact was not measured")
    if evidence.error or not evidence.loaded_in_fresh_process:
        return GateResult(
            "technical",
            False,
            "fresh-process load",
            None,
            None,
            None,
            asdict(evidence),
            f"artifact did not load in a fresh process: {evidence.error}",
        )
    size_mb = evidence.artifact_bytes / 1e6
    p95 = evidence.single_row_latency_ms.get("p95", math.inf)
    checks = {
        "identical predictions after reload": evidence.max_abs_diff_after_reload == 0.0,
        f"single-row p95 <= {config.max_p95_latency_ms} ms": p95 <= config.max_p95_latency_ms,
        f"size <= {config.max_artifact_mb} MB": size_mb <= config.max_artifact_mb,
    }
    checks.update({k: bool(v) for k, v in evidence.extra.get("checks", {}).items()})
    failed = [k for k, v in checks.items() if not v]
    return GateResult(
        "technical",
        not failed,
        "single-row latency p95 (ms)",
        p95,
        None,
        config.max_p95_latency_ms,
        {"checks": checks, "size_mb": size_mb, **asdict(evidence)},
        ("not met: " + "; ".join(failed))
        if failed
        else f"reloads identically in a fresh process; p95 {p95:.2f} ms; {size_mb:.2f} MB",
    )


# ------------------------------------------------------------------ 9. champion
@dataclass(frozen=True)
class ChampionScores:
    """The current champion scored on the same test rows under its own policy."""

    model_version: str
    record_id: str
    profit: np.ndarray | None
    error: str | None = None


def gate_champion(
    profit: np.ndarray,
    champion: ChampionScores | None,
    *,
    config: ChampionGateConfig,
    bootstrap: BootstrapConfig,
) -> GateResult:
    """Non-inferiority on profit per customer: lower bound of (candidate - champion) > -margin."""
    if not config.enabled:
        return disabled("champion")
    if champion is None:
        return GateResult(
            "champion",
            True,
            "profit gain over champion (USD/customer)",
            None,
            None,
            -config.profit_margin_usd_per_customer,
            {"champion": None},
            "no champion yet: first model, judged by every other gate",
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
    ok = i_d.low > -config.profit_margin_usd_per_customer
    return GateResult(
        "champion",
        ok,
        "profit gain over champion (USD/customer)",
        i_d.point,
        i_d.as_list(),
        -config.profit_margin_usd_per_customer,
        {
            "champion_version": champion.model_version,
            "champion_record": champion.record_id,
            "champion_profit_per_customer_usd": float(champ.mean()),
            "candidate_profit_per_customer_usd": float(profit.mean()),
            "bootstrap": boot.describe(),
        },
        (
            f"non-inferior to champion v{champion.model_version} (lower bound {i_d.low:.3f} > "
            f"-{config.profit_margin_usd_per_customer})"
        )
        if ok
        else f"worse than champion v{champion.model_version}: lower bound {i_d.low:.3f} "
        "USD/customer "
        f"<= -{config.profit_margin_usd_per_customer}",
    )


# ------------------------------------------------------------------ 10. robustness
@dataclass(frozen=True)
class Perturbation:
    """One perturbation of the test split: share of contact decisions that flipped and the
    policy's profit per customer (USD) afterwards."""

    name: str
    flip_rate: float
    profit_per_customer_usd: float


@dataclass(frozen=True)
class RobustnessEvidence:
    base_profit_per_customer_usd: float
    perturbations: tuple[Perturbation, ...]


def gate_robustness(
    evidence: RobustnessEvidence | None, *, config: RobustnessGateConfig
) -> GateResult:
    """Under every perturbation, contact decisions flip for at most ``max_flip_rate`` of
    customers and profit drops by at most ``max_profit_drop_share`` of the unperturbed one."""
    if not config.enabled:
        return disabled("robustness")
    if evidence is None or not evidence.perturbations:
        return failed_to_compute("robustness", "no perturbation was evaluated")
    base = evidence.base_profit_per_customer_usd
    rows: list[dict[str, Any]] = []
    bad: list[str] = []
    for pert in evidence.perturbations:
        drop = (base - pert.profit_per_customer_usd) / abs(base) if base else math.inf
        ok = pert.flip_rate <= config.max_flip_rate and drop <= config.max_profit_drop_share
        rows.append(
            {
                "perturbation": pert.name,
                "flip_rate": pert.flip_rate,
                "profit_per_customer_usd": pert.profit_per_customer_usd,
                "profit_drop_share": drop,
                "passed": ok,
            }
        )
        if not ok:
            bad.append(pert.name)
    worst = max(rows, key=lambda r: float(r["flip_rate"]))
    return GateResult(
        "robustness",
        not bad,
        "worst decision flip rate",
        worst["flip_rate"],
        None,
        config.max_flip_rate,
        {
            "base_profit_per_customer_usd": base,
            "perturbations": rows,
            "worst": worst["perturbation"],
            "failing": bad,
            "max_profit_drop_share": config.max_profit_drop_share,
        },
        (
            f"brittle under: {', '.join(bad)}"
            if bad
            else f"{len(rows)} perturbations within bounds; worst {worst['perturbation']} flips "
            f"{worst['flip_rate']:.3f} of decisions"
        ),
    )
