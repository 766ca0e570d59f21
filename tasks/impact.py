"""Measured retention impact from randomized outcomes.

Among customers the policy would contact, a seeded or hashed randomization puts some in the
**holdout** (never contacted) and the rest in the **assigned** group (contact attempted). Their
churn rates give, without any model:

- the realised **save rate** ``(churn_holdout - churn_assigned) / churn_holdout``, the share of
  would-be churners a contact keeps. Intention-to-treat (ITT: by assignment, whether or not the
  contact was delivered) is the primary figure. Its interval is the delta method on the log of
  the churn-rate ratio (normal approximation), so it stays inside ``(-inf, 1)``.
- with non-compliance (an assigned contact not delivered), the complier effect (CACE, the Wald
  estimator ``ITT / compliance``, compliance = delivered share among assigned minus delivered
  share in the holdout) as a secondary figure, with a seeded parametric-bootstrap interval.
- the **incremental profit** of the programme: ``mean(value x churn)`` in the holdout minus the
  same among assigned, minus the contact cost per delivered contact, per assigned customer (USD)
  and in total over the assigned group (USD), delta-method interval (difference of two means).
- the same per segment where both arms have at least ``impact.min_segment_customers``.

``conservative_save_rate`` turns an estimate into the save rate a policy update may use, with
the evidence as a frozen, JSON-ready ``SaveRateEvidence``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import pandas as pd
from scipy.stats import beta, norm

from configs.settings import EconomicsConfig, ImpactConfig
from tasks.evaluate import customer_values
from tasks.gates.result import jsonable

METHOD_SAVE_RATE = "delta method on log(churn_assigned / churn_holdout), normal approximation"
METHOD_PROFIT = "delta method on a difference of two means, normal approximation"
METHOD_CACE = "Wald estimator ITT / compliance, seeded parametric bootstrap of the four cells"


@dataclass(frozen=True)
class Estimate:
    """A point estimate with a two-sided interval at ``confidence``; ``None`` bounds when the
    interval cannot be computed (e.g. no churner in the holdout)."""

    point: float
    low: float | None
    high: float | None

    def covers(self, value: float) -> bool:
        return self.low is not None and self.high is not None and self.low <= value <= self.high


@dataclass(frozen=True)
class ArmImpact:
    """Figures of one population (all would-contact customers, or one segment).

    Rates are shares (0-1); ``save_rate_*`` is a share of the holdout's churners;
    ``churn_reduction_itt`` is in probability points (0-1); money is USD."""

    name: str
    holdout_customers: int
    assigned_customers: int
    holdout_churn_rate: float
    assigned_churn_rate: float
    delivered_share_assigned: float
    delivered_share_holdout: float
    save_rate_itt: Estimate
    churn_reduction_itt: Estimate
    incremental_profit_per_customer_usd: Estimate
    incremental_profit_total_usd: Estimate

    @property
    def compliance(self) -> float:
        """Share (0-1) of customers whose contact status follows their assignment."""
        return self.delivered_share_assigned - self.delivered_share_holdout


@dataclass(frozen=True)
class ImpactEstimate:
    """Measured impact among customers the policy would contact. ``overall`` is the primary
    (ITT) result; ``cace_*`` the secondary complier figures (``None`` without any delivered
    contact); ``segments`` those with enough support in both arms, ``skipped_segments`` the
    others with their sizes."""

    overall: ArmImpact
    cace_churn_reduction: Estimate | None
    cace_save_rate: Estimate | None
    segments: tuple[ArmImpact, ...]
    skipped_segments: dict[str, dict[str, int]]
    confidence: float
    methods: dict[str, str]

    def as_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = jsonable(asdict(self))
        return out


@dataclass(frozen=True)
class SaveRateEvidence:
    """The save rate a policy update may use, and why. ``save_rate`` (0-1) is what goes into
    ``economics.save_rate``; ``method`` says how it came from ``measured`` (ITT); ``prior`` is
    the configured save rate the posterior shrinks towards."""

    save_rate: float
    method: str
    measured: Estimate
    prior: float
    posterior_mean: float | None
    floored: bool
    confidence: float
    holdout_customers: int
    assigned_customers: int
    holdout_churn_rate: float
    assigned_churn_rate: float
    compliance: float
    reason: str

    def as_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = jsonable(asdict(self))
        return out


def _as_bool(name: str, a: np.ndarray | pd.Series, n: int) -> np.ndarray:
    arr = np.asarray(a)
    if arr.shape != (n,):
        raise ValueError(f"{name} has shape {arr.shape}, expected ({n},)")
    if arr.dtype == bool:
        return arr
    if arr.dtype == object or not np.issubdtype(arr.dtype, np.number):
        raise ValueError(f"{name} must be boolean or 0/1, got dtype {arr.dtype}")
    if not np.isin(arr, (0, 1)).all():
        raise ValueError(f"{name} must be boolean or 0/1; found other values")
    return arr.astype(bool)


def _z(confidence: float) -> float:
    return float(norm.ppf(1 - (1 - confidence) / 2))


def _diff_of_means(a: np.ndarray, b: np.ndarray, z: float) -> tuple[float, float]:
    """``mean(a) - mean(b)`` and its standard error (independent samples)."""
    point = float(a.mean() - b.mean())
    va = float(a.var(ddof=1)) / len(a) if len(a) > 1 else math.inf
    vb = float(b.var(ddof=1)) / len(b) if len(b) > 1 else math.inf
    return point, math.sqrt(va + vb)


def _interval(point: float, se: float, z: float) -> Estimate:
    if not math.isfinite(se):
        return Estimate(point, None, None)
    return Estimate(point, point - z * se, point + z * se)


def _save_rate(ch: float, ct: float, nh: int, nt: int, z: float) -> Estimate:
    """``1 - ct/ch`` with the delta-method interval of ``log(ct/ch)`` (binomial rates)."""
    if ch <= 0:
        return Estimate(math.nan, None, None)
    point = 1 - ct / ch
    if ct <= 0 or ch >= 1 or ct >= 1:
        return Estimate(point, None, None)
    se = math.sqrt((1 - ct) / (nt * ct) + (1 - ch) / (nh * ch))
    log_ratio = math.log(ct / ch)
    return Estimate(point, 1 - math.exp(log_ratio + z * se), 1 - math.exp(log_ratio - z * se))


def arm_impact(
    name: str,
    churned: np.ndarray,
    holdout: np.ndarray,
    contacted: np.ndarray,
    values_usd: np.ndarray,
    *,
    contact_cost_usd: float,
    confidence: float,
) -> ArmImpact:
    """ITT figures of one population (boolean arrays of equal length; see module docstring).

    Raises ``ValueError`` naming the arm that is empty."""
    h, t = holdout, ~holdout
    nh, nt = int(h.sum()), int(t.sum())
    if nh == 0 or nt == 0:
        raise ValueError(f"{name}: needs customers in both arms, got holdout={nh}, assigned={nt}")
    z = _z(confidence)
    y = churned.astype(float)
    ch, ct = float(y[h].mean()), float(y[t].mean())
    red, red_se = _diff_of_means(y[h], y[t], z)
    # money lost to churn, plus contact costs where delivered: holdout minus assigned
    loss = values_usd * y + contact_cost_usd * contacted
    prof, prof_se = _diff_of_means(loss[h], loss[t], z)
    return ArmImpact(
        name=name,
        holdout_customers=nh,
        assigned_customers=nt,
        holdout_churn_rate=ch,
        assigned_churn_rate=ct,
        delivered_share_assigned=float(contacted[t].mean()),
        delivered_share_holdout=float(contacted[h].mean()),
        save_rate_itt=_save_rate(ch, ct, nh, nt, z),
        churn_reduction_itt=_interval(red, red_se, z),
        incremental_profit_per_customer_usd=_interval(prof, prof_se, z),
        incremental_profit_total_usd=_interval(prof * nt, prof_se * nt, z),
    )


def _cace(
    churned: np.ndarray,
    holdout: np.ndarray,
    contacted: np.ndarray,
    *,
    confidence: float,
    resamples: int,
    seed: int,
) -> tuple[Estimate | None, Estimate | None]:
    """Complier effect: churn reduction ``ITT / compliance`` and save rate
    ``ITT / (churn_holdout - (1 - compliance) x churn_of_assigned_never_contacted)``."""

    def stats(cells_h: np.ndarray, cells_t: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        # cells: counts of (contacted, churned) = (0,0), (0,1), (1,0), (1,1) per draw
        nh, nt = cells_h.sum(axis=-1), cells_t.sum(axis=-1)
        ch = (cells_h[..., 1] + cells_h[..., 3]) / nh
        ct = (cells_t[..., 1] + cells_t[..., 3]) / nt
        comp = (cells_t[..., 2] + cells_t[..., 3]) / nt - (cells_h[..., 2] + cells_h[..., 3]) / nh
        never = cells_t[..., 0] + cells_t[..., 1]
        p_never = np.divide(cells_t[..., 1], never, out=np.zeros_like(ch), where=never > 0)
        with np.errstate(divide="ignore", invalid="ignore"):
            red = (ch - ct) / comp
            rate = (ch - ct) / (ch - (1 - comp) * p_never)
        return red, rate

    def cells(mask: np.ndarray) -> np.ndarray:
        code = 2 * contacted[mask].astype(int) + churned[mask].astype(int)
        return np.bincount(code, minlength=4).astype(float)

    ch_cells, ct_cells = cells(holdout), cells(~holdout)
    red, rate = stats(ch_cells, ct_cells)
    if not np.isfinite(red) or (ct_cells[2] + ct_cells[3]) == 0:
        return None, None
    rng = np.random.default_rng(seed)
    bh = rng.multinomial(int(ch_cells.sum()), ch_cells / ch_cells.sum(), size=resamples)
    bt = rng.multinomial(int(ct_cells.sum()), ct_cells / ct_cells.sum(), size=resamples)
    b_red, b_rate = stats(bh.astype(float), bt.astype(float))
    a = (1 - confidence) / 2

    def est(point: float, draws: np.ndarray) -> Estimate:
        draws = draws[np.isfinite(draws)]
        if len(draws) < resamples / 2 or not math.isfinite(point):
            return Estimate(float(point), None, None)
        lo, hi = np.quantile(draws, [a, 1 - a])
        return Estimate(float(point), float(lo), float(hi))

    return est(float(red), b_red), est(float(rate), b_rate)


def estimate_impact(
    churned: np.ndarray,
    holdout: np.ndarray,
    values_usd: np.ndarray,
    *,
    contact_cost_usd: float,
    config: ImpactConfig,
    would_contact: np.ndarray | None = None,
    contacted: np.ndarray | None = None,
    segments: Mapping[str, np.ndarray] | None = None,
) -> ImpactEstimate:
    """Measured impact among customers the policy would contact.

    ``churned`` (bool/0-1): the outcome; ``holdout`` (bool): randomized to no contact;
    ``values_usd``: value of keeping each customer (USD); ``would_contact`` (bool, default all):
    the policy's decision before the holdout; ``contacted`` (bool, default ``~holdout``): the
    contact was delivered; ``segments``: column name -> label per row. Rows outside
    ``would_contact`` are ignored. Raises ``ValueError`` naming the bad input.
    """
    n = len(np.asarray(churned))
    y = _as_bool("churned", churned, n)
    h = _as_bool("holdout", holdout, n)
    v = np.asarray(values_usd, dtype=float)
    if v.shape != (n,):
        raise ValueError(f"values_usd has shape {v.shape}, expected ({n},)")
    if not np.isfinite(v).all():
        raise ValueError("values_usd has missing or infinite values")
    wc = np.ones(n, bool) if would_contact is None else _as_bool("would_contact", would_contact, n)
    d = ~h if contacted is None else _as_bool("contacted", contacted, n)
    y, h, v, d = y[wc], h[wc], v[wc], d[wc]
    overall = arm_impact(
        "all", y, h, d, v, contact_cost_usd=contact_cost_usd, confidence=config.confidence
    )
    cace_red, cace_rate = _cace(
        y, h, d, confidence=config.confidence, resamples=config.cace_resamples, seed=config.seed
    )
    seg_out: list[ArmImpact] = []
    skipped: dict[str, dict[str, int]] = {}
    for column, labels in (segments or {}).items():
        lab = np.asarray(labels)
        if lab.shape != (n,):
            raise ValueError(f"segment {column!r} has shape {lab.shape}, expected ({n},)")
        lab = lab[wc]
        for value in pd.unique(lab):
            m = lab == value
            key = f"{column}={value}"
            nh, nt = int((m & h).sum()), int((m & ~h).sum())
            if min(nh, nt) < config.min_segment_customers:
                skipped[key] = {"holdout_customers": nh, "assigned_customers": nt}
                continue
            seg_out.append(
                arm_impact(
                    key,
                    y[m],
                    h[m],
                    d[m],
                    v[m],
                    contact_cost_usd=contact_cost_usd,
                    confidence=config.confidence,
                )
            )
    return ImpactEstimate(
        overall=overall,
        cace_churn_reduction=cace_red,
        cace_save_rate=cace_rate,
        segments=tuple(sorted(seg_out, key=lambda a: a.name)),
        skipped_segments=skipped,
        confidence=config.confidence,
        methods={
            "save_rate": METHOD_SAVE_RATE,
            "profit": METHOD_PROFIT,
            "cace": METHOD_CACE,
            "primary": "intention to treat (by assignment)",
        },
    )


def estimate_impact_frame(
    frame: pd.DataFrame,
    *,
    churned_column: str,
    holdout_column: str,
    economics: EconomicsConfig,
    config: ImpactConfig,
    positive_label: object = True,
    would_contact_column: str | None = None,
    contacted_column: str | None = None,
    segment_columns: tuple[str, ...] = (),
) -> ImpactEstimate:
    """``estimate_impact`` on a frame of outcomes: ``churned_column == positive_label`` is a
    churn, customer values come from ``economics.customer_value``. Raises ``KeyError`` naming a
    missing column."""
    for col in (churned_column, holdout_column, would_contact_column, contacted_column):
        if col is not None and col not in frame.columns:
            raise KeyError(f"column {col!r} is not in the outcomes")
    for col in segment_columns:
        if col not in frame.columns:
            raise KeyError(f"segment column {col!r} is not in the outcomes")
    return estimate_impact(
        (frame[churned_column] == positive_label).to_numpy(),
        frame[holdout_column].to_numpy(),
        customer_values(frame, economics=economics),
        contact_cost_usd=economics.contact_cost_usd,
        config=config,
        would_contact=None
        if would_contact_column is None
        else frame[would_contact_column].to_numpy(),
        contacted=None if contacted_column is None else frame[contacted_column].to_numpy(),
        segments={c: frame[c].astype(str).to_numpy() for c in segment_columns},
    )


def conservative_save_rate(
    impact: ImpactEstimate, *, prior_save_rate: float, config: ImpactConfig
) -> SaveRateEvidence:
    """The save rate (0-1) a policy update may use, from the ITT estimate.

    ``lower_bound``: the interval's lower end. ``posterior``: the mean of a Beta posterior
    whose prior has mean ``prior_save_rate`` and weight ``prior_strength_customers``, updated
    with the estimate as pseudo-observations of matching variance (``point (1 - point) / se^2``
    pseudo-customers). ``point``: the estimate itself. The result is clipped to
    ``[min_save_rate, 1)``; ``floored`` says the floor applied (no positive effect shown).
    """
    o = impact.overall
    m = o.save_rate_itt
    if not math.isfinite(m.point):
        raise ValueError("the save rate is undefined: no churner in the holdout")
    z = _z(impact.confidence)
    posterior_mean: float | None = None
    if config.conservative == "lower_bound":
        if m.low is None:
            raise ValueError("the save rate has no interval (a churn rate of 0 or 1 in an arm)")
        raw = m.low
    elif config.conservative == "point":
        raw = m.point
    else:
        a0 = prior_save_rate * config.prior_strength_customers
        b0 = (1 - prior_save_rate) * config.prior_strength_customers
        p = min(max(m.point, 1e-6), 1 - 1e-6)
        se = (m.high - m.low) / (2 * z) if m.low is not None and m.high is not None else math.inf
        n_eff = p * (1 - p) / se**2 if se > 0 and math.isfinite(se) else 0.0
        posterior_mean = float(beta.mean(a0 + p * n_eff, b0 + (1 - p) * n_eff))
        raw = posterior_mean
    floored = raw < config.min_save_rate
    value = float(min(max(raw, config.min_save_rate), 1 - 1e-9))
    lo = "?" if m.low is None else f"{m.low:.3f}"
    hi = "?" if m.high is None else f"{m.high:.3f}"
    reason = (
        f"measured save rate {m.point:.3f} [{lo}, {hi}] at {impact.confidence:.0%} from "
        f"{o.holdout_customers} holdout and {o.assigned_customers} assigned customers "
        f"(churn {o.holdout_churn_rate:.3f} vs {o.assigned_churn_rate:.3f}); "
        f"using the {config.conservative.replace('_', ' ')}: {value:.3f}"
        + (f" (floored at {config.min_save_rate})" if floored else "")
    )
    return SaveRateEvidence(
        save_rate=value,
        method=config.conservative,
        measured=m,
        prior=prior_save_rate,
        posterior_mean=posterior_mean,
        floored=floored,
        confidence=impact.confidence,
        holdout_customers=o.holdout_customers,
        assigned_customers=o.assigned_customers,
        holdout_churn_rate=o.holdout_churn_rate,
        assigned_churn_rate=o.assigned_churn_rate,
        compliance=o.compliance,
        reason=reason,
    )
