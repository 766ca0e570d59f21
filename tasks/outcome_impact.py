"""Outcomes with treatment (issue 17): what the randomized holdout in served decisions shows.

* ``clean_contacted``: the outcomes' column saying whether each customer was actually
  contacted (a delivered contact), validated to booleans.
* ``experiment_summaries``: per experiment id in a window of decisions, how many decisions,
  how many held out, the observed holdout share and a sample-ratio check (exact binomial test
  of the held-out count against the configured share: a small p-value means the assignment is
  not what the configuration says, and the comparison is not trustworthy).
* ``measured_impact``: decisions joined with outcomes -> the realised save rate (ITT primary,
  CACE secondary), incremental profit per customer and in total with intervals, per segment
  where support suffices (``tasks/impact.py`` computes the figures), and whether the evidence
  suffices for a policy update (``min_events`` churners and stayers in each arm).

Framework-free (pandas, numpy, scipy); flows/monitoring.py wires it.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
from scipy.stats import binomtest

from tasks.record_models import (
    ExperimentSummary,
    MeasuredImpact,
    MonitoringRecord,
    Record,
    SaveRateEvidence,
)

if TYPE_CHECKING:
    from configs.settings import ImpactConfig
    from tasks.impact import ImpactEstimate

TRUE_TEXT = frozenset({"true", "1", "yes", "y", "t", "1.0"})
FALSE_TEXT = frozenset({"false", "0", "no", "n", "f", "0.0"})
SRM_ALPHA = 0.001  # sample-ratio mismatch: the usual stricter level, the test runs every day


def clean_contacted(frame: pd.DataFrame, column: str) -> pd.Series:
    """``frame[column]`` as booleans: was the customer actually contacted (delivered)?
    Booleans, 0/1 and true/false/yes/no text (any case) are accepted. Raises ValueError
    naming the column, with the count and examples of other or missing values."""
    if column not in frame.columns:
        raise ValueError(
            f"{column}: column missing (expected whether each customer was actually "
            f"contacted: true/false, 1/0 or yes/no); columns: {list(frame.columns)[:20]}"
        )
    raw = frame[column]
    if pd.api.types.is_bool_dtype(raw) and not raw.isna().any():
        return raw.astype(bool)
    text = raw.astype("string").str.strip().str.lower()
    yes, no = text.isin(TRUE_TEXT).fillna(False), text.isin(FALSE_TEXT).fillna(False)
    bad = ~(yes | no)
    if bad.any():
        examples = sorted({str(v) for v in raw[bad].head(50).tolist()})[:5]
        raise ValueError(
            f"{column}: {int(bad.sum())} value(s) are not true/false, 1/0 or yes/no "
            f"(missing counts too), e.g. {examples}"
        )
    return pd.Series(yes.to_numpy(bool), index=frame.index, name=column)


def experiment_counts(decisions: pd.DataFrame) -> dict[str, dict[str, Any]]:
    """Per experiment id among ``decisions`` (columns ``experiment_id``, ``holdout``,
    ``would_contact``, optional ``time``): decisions, holdout_decisions,
    would_contact_decisions, held_back_contacts, first/last decision time (what
    ``experiment_summaries`` needs; add chunks' counts with ``add_experiment_counts``)."""
    if decisions.empty or "experiment_id" not in decisions.columns:
        return {}
    exp = decisions[decisions["experiment_id"].notna()]
    out: dict[str, dict[str, Any]] = {}
    for exp_id, grp in exp.groupby("experiment_id", sort=False):
        held = grp["holdout"].fillna(False).astype(bool).to_numpy()
        would = grp["would_contact"].fillna(False).astype(bool).to_numpy()
        times = grp["time"] if "time" in grp.columns else pd.Series(dtype=object)
        out[str(exp_id)] = {
            "decisions": len(grp),
            "holdout_decisions": int(held.sum()),
            "would_contact_decisions": int(would.sum()),
            "held_back_contacts": int((held & would).sum()),
            "first": times.min() if len(times) else None,
            "last": times.max() if len(times) else None,
        }
    return out


def add_experiment_counts(
    total: dict[str, dict[str, Any]], more: Mapping[str, Mapping[str, Any]]
) -> dict[str, dict[str, Any]]:
    """``total`` with the counts of ``more`` added (a later chunk of the same window)."""
    for exp_id, c in more.items():
        t = total.get(exp_id)
        if t is None:
            total[exp_id] = dict(c)
            continue
        for k in ("decisions", "holdout_decisions", "would_contact_decisions"):
            t[k] += c[k]
        t["held_back_contacts"] += c["held_back_contacts"]
        firsts = [x for x in (t["first"], c["first"]) if x is not None]
        lasts = [x for x in (t["last"], c["last"]) if x is not None]
        t["first"] = min(firsts) if firsts else None
        t["last"] = max(lasts) if lasts else None
    return total


def experiment_summaries(
    decisions: pd.DataFrame | Mapping[str, Mapping[str, Any]],
    *,
    configured: Mapping[str, float] | None = None,
) -> list[dict[str, Any]]:
    """One summary per experiment id among ``decisions`` (a frame, see ``experiment_counts``,
    or those counts already added up over a window read in chunks), latest experiment first.
    ``configured``: experiment id -> configured holdout share (0-1), for the sample-ratio
    check; an experiment not in it is reported without the check."""
    counts = experiment_counts(decisions) if isinstance(decisions, pd.DataFrame) else decisions
    out = []
    for exp_id, c in counts.items():
        n, held = int(c["decisions"]), int(c["holdout_decisions"])
        share = (configured or {}).get(str(exp_id))
        p_value = None if share is None else float(binomtest(held, n, share).pvalue)
        first, last = c.get("first"), c.get("last")
        out.append(
            {
                "experiment_id": str(exp_id),
                "holdout_share": share,
                "decisions": n,
                "holdout_decisions": held,
                "would_contact_decisions": int(c["would_contact_decisions"]),
                "held_back_contacts": int(c["held_back_contacts"]),
                "observed_holdout_share": round(held / n, 6) if n else float("nan"),
                "sample_ratio_p_value": None if p_value is None else round(p_value, 6),
                "sample_ratio_ok": None if p_value is None else p_value >= SRM_ALPHA,
                "first_decision": None if first is None else _time_text(first),
                "last_decision": None if last is None else _time_text(last),
            }
        )
    return sorted(out, key=lambda e: e["last_decision"] or "", reverse=True)


def _time_text(value: Any) -> str:
    """A decision time as ISO-8601 text (stored times are timestamps; older ones text)."""
    return value.isoformat() if hasattr(value, "isoformat") else str(value)


def sufficiency(
    churned: np.ndarray, holdout: np.ndarray, would_contact: np.ndarray, *, min_events: int
) -> tuple[bool, str]:
    """Whether the would-contact customers carry enough randomized evidence: at least
    ``min_events`` churners and ``min_events`` stayers in each arm (holdout, assigned), what
    the normal approximation of the intervals needs. Returns (ok, why)."""
    y = np.asarray(churned, bool)[would_contact]
    h = np.asarray(holdout, bool)[would_contact]
    cells = {
        "holdout churners": int((y & h).sum()),
        "holdout stayers": int((~y & h).sum()),
        "assigned churners": int((y & ~h).sum()),
        "assigned stayers": int((~y & ~h).sum()),
    }
    short = {k: v for k, v in cells.items() if v < min_events}
    counts = ", ".join(f"{k} {v}" for k, v in cells.items())
    if short:
        return False, (
            f"too little randomized evidence: {counts}; each needs >= {min_events} "
            "(monitoring.impact_min_events)"
        )
    return True, f"randomized evidence: {counts} (each >= {min_events})"


def segment_labels(frame: pd.DataFrame, columns: Sequence[str]) -> dict[str, np.ndarray]:
    """Segment columns present in ``frame`` as text labels (absent ones are skipped)."""
    return {c: frame[c].astype(str).to_numpy() for c in columns if c in frame.columns}


class NoEvidence(RuntimeError):
    """No randomized evidence, or too little, for a save rate learned from outcomes."""


def impact_from_dict(data: Mapping[str, Any]) -> ImpactEstimate:
    """An ``ImpactEstimate`` back from its stored dict (``ImpactEstimate.as_dict``)."""
    from tasks.impact import ArmImpact, Estimate, ImpactEstimate

    def est(d: Mapping[str, Any] | None) -> Estimate | None:
        return None if d is None else Estimate(float(d["point"]), d.get("low"), d.get("high"))

    def arm(d: Mapping[str, Any]) -> ArmImpact:
        fields = dict(d)
        for key, value in d.items():
            if isinstance(value, Mapping) and "point" in value:
                fields[key] = est(value)
        return ArmImpact(**fields)

    return ImpactEstimate(
        overall=arm(data["overall"]),
        cace_churn_reduction=est(data.get("cace_churn_reduction")),
        cace_save_rate=est(data.get("cace_save_rate")),
        segments=tuple(arm(s) for s in data.get("segments") or ()),
        skipped_segments=dict(data.get("skipped_segments") or {}),
        confidence=float(data["confidence"]),
        methods=dict(data.get("methods") or {}),
    )


def save_rate_from_outcomes(
    records: Sequence[Record],
    *,
    config: ImpactConfig,
    prior_save_rate: float,
    record_id: str | None = None,
) -> SaveRateEvidence:
    """The save rate a policy update uses, from the latest monitoring record that measured the
    holdout (or the one whose id starts with ``record_id``), made conservative by
    ``config.conservative`` (``tasks.impact.conservative_save_rate``). Raises ``NoEvidence``
    when no record measured a holdout, or the chosen one has too little evidence."""
    from tasks.impact import conservative_save_rate

    measured = [
        r
        for r in records
        if isinstance(r, MonitoringRecord)
        and r.impact is not None
        and (record_id is None or r.record_id.startswith(record_id))
    ]
    if not measured:
        where = f"no monitoring record {record_id}" if record_id else "no monitoring record"
        raise NoEvidence(
            f"no randomized evidence: {where} measured a holdout. Serve with "
            "serving.experiment_id (and holdout_share > 0), ingest outcomes "
            "(`bayespilot outcomes`, with the contacted column), then `bayespilot monitor`"
        )
    rec = measured[-1]
    impact = rec.impact
    assert impact is not None
    exp_id = impact.experiment.experiment_id
    if not impact.sufficient or impact.estimate is None:
        raise NoEvidence(
            f"too little randomized evidence in monitoring record {rec.record_id[:12]} "
            f"(experiment {exp_id}): {impact.reason}"
        )
    try:
        chosen = conservative_save_rate(
            impact_from_dict(impact.estimate), prior_save_rate=prior_save_rate, config=config
        )
    except ValueError as exc:
        raise NoEvidence(
            f"monitoring record {rec.record_id[:12]} (experiment {exp_id}): {exc}"
        ) from None
    m = chosen.measured
    return SaveRateEvidence(
        monitoring_record=rec.record_id,
        experiment_id=exp_id,
        rule=chosen.method,
        save_rate=chosen.save_rate,
        estimate=m.point,
        interval=[m.low, m.high],
        confidence=chosen.confidence,
        prior_save_rate=prior_save_rate,
        reason=f"{chosen.reason} (monitoring record {rec.record_id[:12]}, experiment {exp_id})",
        details=chosen.as_dict(),
    )


def measure_impact(
    decisions: pd.DataFrame | Mapping[str, Mapping[str, Any]],
    joined: pd.DataFrame,
    *,
    values_usd: Callable[[pd.DataFrame], np.ndarray],
    contact_cost_usd: float,
    configured: Mapping[str, float],
    hash_rule: str,
    impact: ImpactConfig,
    prior_save_rate: float,
    min_events: int,
    segment_columns: Sequence[str] = (),
) -> MeasuredImpact | None:
    """The holdout experiment's measured effect in a monitoring window (None when no decision
    in it ran under an experiment). ``decisions``: the window's decisions (or their
    ``experiment_counts``, added up over the window); ``joined``: the last
    decision per customer joined with outcomes (``churned`` 0/1, optional ``contacted``);
    ``values_usd``: the policy's customer value (USD) of joined rows; ``configured``:
    experiment id -> configured holdout share. The latest experiment in the window is
    measured; the others are listed."""
    from tasks.impact import conservative_save_rate, estimate_impact

    found = experiment_summaries(decisions, configured=configured)
    if not found:
        return None
    summaries = [
        ExperimentSummary(**e, hash_rule=hash_rule if e["holdout_share"] is not None else None)
        for e in found
    ]
    primary = summaries[0]
    notes: list[str] = []
    rows = (
        joined[joined["experiment_id"] == primary.experiment_id]
        if not joined.empty and "experiment_id" in joined.columns
        else joined.iloc[0:0]
    )
    would = rows["would_contact"].astype(bool).to_numpy() if len(rows) else np.zeros(0, bool)
    base = {
        "experiment": primary,
        "experiments": summaries,
        "joined_customers": int(would.sum()),
    }
    if not would.any():
        return MeasuredImpact(
            **base, reason="no outcome joined yet for a customer the policy would contact"
        )
    churned = rows["churned"].astype(int).to_numpy() == 1
    holdout = rows["holdout"].astype(bool).to_numpy()
    reported = "contacted" in rows.columns and bool(rows["contacted"].notna().all())
    contacted = rows["contacted"].astype(bool).to_numpy() if reported else None
    if not reported:
        notes.append(
            "the outcomes do not say who was actually contacted: every assigned customer is "
            "taken as contacted (full compliance); CACE equals ITT"
        )
    ok, reason = sufficiency(churned, holdout, would, min_events=min_events)
    if primary.sample_ratio_ok is False:
        ok = False
        reason = (
            f"sample ratio mismatch: {primary.holdout_decisions} of {primary.decisions} "
            f"decisions held out, configured share {primary.holdout_share} (p = "
            f"{primary.sample_ratio_p_value}); the assignment is not as configured. {reason}"
        )
    try:
        est = estimate_impact(
            churned,
            holdout,
            values_usd(rows),
            contact_cost_usd=contact_cost_usd,
            config=impact,
            would_contact=would,
            contacted=contacted,
            segments=segment_labels(rows, segment_columns),
        )
    except ValueError as exc:
        return MeasuredImpact(
            **base, contacted_reported=reported, reason=f"not measurable: {exc}", notes=notes
        )
    conservative = None
    if ok:
        try:
            conservative = conservative_save_rate(
                est, prior_save_rate=prior_save_rate, config=impact
            ).as_dict()
        except ValueError as exc:
            ok, reason = False, f"{reason}; no conservative save rate: {exc}"
    return MeasuredImpact(
        **base,
        contacted_reported=reported,
        sufficient=ok,
        reason=reason,
        estimate=est.as_dict(),
        conservative_save_rate=conservative,
        notes=notes,
    )


def customers_for_save_rate(
    *,
    churn_rate_holdout: float,
    save_rate: float,
    holdout_share: float,
    half_width: float,
    confidence: float = 0.95,
) -> int:
    """Customers the policy would contact (both arms together) whose outcomes put the measured
    ITT save rate within +-``half_width`` (share, 0-1) at ``confidence``, by the interval
    ``tasks/impact.py`` reports (delta method on log(churn_assigned / churn_holdout)):
    ``se^2 = (1 - ct)/(ct n_t) + (1 - ch)/(ch n_h)`` with ``ct = ch (1 - s)``,
    ``n_h = share n``, ``n_t = (1 - share) n``; the half-width in the save rate is about
    ``(1 - s) z se``. ``churn_rate_holdout``: churn (0-1) of would-contact customers left
    alone; ``save_rate``: the save rate to expect (0-1)."""
    from scipy.stats import norm

    ch, s = churn_rate_holdout, save_rate
    if not (0 < ch < 1 and 0 <= s < 1 and 0 < holdout_share < 1 and half_width > 0):
        raise ValueError("expected churn and shares in (0, 1) and a positive half-width")
    ct = ch * (1 - s)
    per_customer = (1 - ct) / (ct * (1 - holdout_share)) + (1 - ch) / (ch * holdout_share)
    z = float(norm.ppf(1 - (1 - confidence) / 2))
    return int(np.ceil(per_customer * ((1 - s) * z / half_width) ** 2))
