"""Outcomes with treatment: the contacted column, experiment summaries with the sample-ratio
check, the sufficiency rule, and economics measured from outcomes."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from tasks.economics import InForceEconomics, resolve_economics
from tasks.outcome_impact import (
    NoEvidence,
    clean_contacted,
    experiment_summaries,
    save_rate_from_outcomes,
    sufficiency,
)

ECON = {
    "save_rate": 0.25,
    "contact_cost_usd": 15.0,
    "customer_value": {"column": None, "multiplier": 1.0, "constant_usd": 500.0},
    "capacity": None,
}


def test_clean_contacted_accepts_booleans_numbers_and_words() -> None:
    frame = pd.DataFrame({"contacted": ["Yes", "no", "TRUE", "0", "1", "false"]})
    assert clean_contacted(frame, "contacted").tolist() == [True, False, True, False, True, False]
    assert clean_contacted(pd.DataFrame({"c": [True, False]}), "c").tolist() == [True, False]
    assert clean_contacted(pd.DataFrame({"c": [1, 0, 1]}), "c").tolist() == [True, False, True]


def test_clean_contacted_names_the_column_and_bad_values() -> None:
    with pytest.raises(ValueError, match=r"delivered: 2 value\(s\).*'maybe'"):
        clean_contacted(pd.DataFrame({"delivered": ["yes", "maybe", None]}), "delivered")
    with pytest.raises(ValueError, match="contacted: column missing"):
        clean_contacted(pd.DataFrame({"x": [1]}), "contacted")


def _decisions(n: int, share_held: float, seed: int = 3) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    return pd.DataFrame(
        {
            "time": [f"2026-12-01T00:{i % 60:02d}:00" for i in range(n)],
            "experiment_id": "e1",
            "holdout": rng.random(n) < share_held,
            "would_contact": rng.random(n) < 0.4,
        }
    )


def test_experiment_summaries_flag_a_sample_ratio_mismatch() -> None:
    fine = experiment_summaries(_decisions(20_000, 0.05), configured={"e1": 0.05})[0]
    assert fine["sample_ratio_ok"] is True and fine["decisions"] == 20_000
    assert abs(fine["observed_holdout_share"] - 0.05) < 0.01
    bad = experiment_summaries(_decisions(20_000, 0.07), configured={"e1": 0.05})[0]
    assert bad["sample_ratio_ok"] is False and bad["sample_ratio_p_value"] < 0.001
    unknown = experiment_summaries(_decisions(100, 0.05), configured={})[0]
    assert unknown["sample_ratio_ok"] is None and unknown["holdout_share"] is None


def test_experiment_summaries_ignore_decisions_without_experiment() -> None:
    frame = _decisions(50, 0.1).assign(experiment_id=None)
    assert experiment_summaries(frame) == []
    assert experiment_summaries(pd.DataFrame({"action": ["contact"]})) == []


def test_sufficiency_needs_events_in_every_cell() -> None:
    y = np.array([1] * 20 + [0] * 20 + [1] * 20 + [0] * 5)
    h = np.array([True] * 40 + [False] * 25)
    ok, why = sufficiency(y, h, np.ones(len(y), bool), min_events=10)
    assert not ok and "assigned stayers 5" in why and "each needs >= 10" in why
    ok, _ = sufficiency(y, h, np.ones(len(y), bool), min_events=5)
    assert ok


def test_save_rate_from_outcomes_refuses_without_evidence() -> None:
    from configs.settings import ImpactConfig

    with pytest.raises(NoEvidence, match="no randomized evidence"):
        save_rate_from_outcomes([], config=ImpactConfig(), prior_save_rate=0.25)


def test_resolve_economics_measured_save_rate_is_recorded_as_outcomes() -> None:
    in_force = InForceEconomics(
        values={"save_rate": 0.25, "contact_cost_usd": 15.0},
        source="config",
        set_by_record="a" * 64,
        replaced={},
    )
    res = resolve_economics(
        ECON,
        explicit=frozenset(),
        in_force=in_force,
        policy_update=True,
        measured={"save_rate": 0.18},
        measured_by_record="b" * 64,
    )
    assert res.values["save_rate"] == 0.18
    assert res.lineage.source == "outcomes"
    assert res.lineage.replaced == {"save_rate": 0.25}
    assert "measured outcomes, monitoring record bbbbbbbbbbbb" in res.message
    assert "save_rate 0.25 -> 0.18" in res.message


def test_customers_for_save_rate_matches_the_reported_interval() -> None:
    """At the customers the planning formula gives, tasks/impact.py's interval on outcomes
    with exactly the assumed rates is +-half_width wide (within 5 %)."""
    from configs.settings import ImpactConfig
    from tasks.impact import estimate_impact
    from tasks.outcome_impact import customers_for_save_rate

    ch, s, share, hw = 0.4, 0.25, 0.1, 0.05
    n = customers_for_save_rate(
        churn_rate_holdout=ch, save_rate=s, holdout_share=share, half_width=hw
    )
    nh = round(n * share)
    nt = n - nh
    churned = np.r_[np.arange(nh) < round(ch * nh), np.arange(nt) < round(ch * (1 - s) * nt)]
    holdout = np.r_[np.ones(nh, bool), np.zeros(nt, bool)]
    est = estimate_impact(
        churned, holdout, np.full(n, 100.0), contact_cost_usd=1.0, config=ImpactConfig()
    )
    m = est.overall.save_rate_itt
    assert m.low is not None and m.high is not None
    assert (m.high - m.low) / 2 == pytest.approx(hw, rel=0.05)
    assert m.point == pytest.approx(s, abs=0.005)
