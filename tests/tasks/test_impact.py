from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from configs.settings import EconomicsConfig, ImpactConfig, TreatmentResponseConfig
from tasks.generate_data import generate_data
from tasks.impact import (
    conservative_save_rate,
    estimate_impact,
    estimate_impact_frame,
)
from tasks.simulate_campaign import simulate_campaign, true_itt_save_rate


def _trial(
    rng: np.random.Generator, n: int, p0: float, save: float, share: float
) -> tuple[np.ndarray, np.ndarray]:
    holdout = rng.random(n) < share
    p = np.where(holdout, p0, p0 * (1 - save))
    return rng.random(n) < p, holdout


def test_impact_save_rate_interval_covers_truth_over_seeds() -> None:
    covered = 0
    reps = 60
    for seed in range(reps):
        rng = np.random.default_rng(seed)
        y, h = _trial(rng, 20_000, 0.4, 0.3, 0.05)
        est = estimate_impact(
            y, h, np.full(len(y), 300.0), contact_cost_usd=10.0, config=ImpactConfig()
        )
        covered += est.overall.save_rate_itt.covers(0.3)
    assert covered / reps >= 0.88


def test_impact_profit_and_reduction_match_known_effect() -> None:
    rng = np.random.default_rng(1)
    y, h = _trial(rng, 200_000, 0.4, 0.25, 0.5)
    est = estimate_impact(
        y, h, np.full(len(y), 200.0), contact_cost_usd=10.0, config=ImpactConfig()
    )
    o = est.overall
    # true: 0.1 churn points removed, 0.1 * 200 - 10 = 10 USD per assigned customer
    assert o.churn_reduction_itt.covers(0.1)
    assert o.incremental_profit_per_customer_usd.covers(10.0)
    assert o.incremental_profit_total_usd.point == pytest.approx(
        o.incremental_profit_per_customer_usd.point * o.assigned_customers
    )
    assert est.cace_churn_reduction is not None
    assert est.cace_churn_reduction.point == pytest.approx(o.churn_reduction_itt.point)


def test_impact_cace_corrects_for_undelivered_contacts() -> None:
    rng = np.random.default_rng(2)
    n = 200_000
    holdout = rng.random(n) < 0.5
    delivered = ~holdout & (rng.random(n) < 0.6)
    p = np.where(delivered, 0.4 * (1 - 0.3), 0.4)
    y = rng.random(n) < p
    est = estimate_impact(
        y,
        holdout,
        np.full(n, 100.0),
        contact_cost_usd=5.0,
        contacted=delivered,
        config=ImpactConfig(),
    )
    assert est.overall.compliance == pytest.approx(0.6, abs=0.01)
    assert est.overall.save_rate_itt.covers(0.3 * 0.6)
    assert est.cace_save_rate is not None and est.cace_save_rate.covers(0.3)
    assert est.cace_churn_reduction is not None and est.cace_churn_reduction.covers(0.12)


def test_impact_ignores_customers_the_policy_would_not_contact() -> None:
    rng = np.random.default_rng(3)
    n = 50_000
    y, h = _trial(rng, n, 0.3, 0.4, 0.2)
    wc = rng.random(n) < 0.5
    y_out = np.where(wc, y, True)  # outside the policy everyone churns: must not matter
    a = estimate_impact(
        y_out, h, np.full(n, 1.0), contact_cost_usd=0.0, would_contact=wc, config=ImpactConfig()
    )
    b = estimate_impact(
        y[wc], h[wc], np.full(int(wc.sum()), 1.0), contact_cost_usd=0.0, config=ImpactConfig()
    )
    assert a.overall == b.overall


def test_impact_segments_need_support_in_both_arms() -> None:
    rng = np.random.default_rng(4)
    n = 20_000
    y, h = _trial(rng, n, 0.3, 0.3, 0.1)
    seg = np.where(rng.random(n) < 0.02, "small", "large")
    est = estimate_impact(
        y,
        h,
        np.full(n, 100.0),
        contact_cost_usd=5.0,
        segments={"tier": seg},
        config=ImpactConfig(min_segment_customers=100),
    )
    assert [s.name for s in est.segments] == ["tier=large"]
    assert set(est.skipped_segments) == {"tier=small"}
    assert est.skipped_segments["tier=small"]["holdout_customers"] < 100


def test_impact_bad_input_names_the_field() -> None:
    cfg = ImpactConfig()
    with pytest.raises(ValueError, match="holdout"):
        estimate_impact(
            np.array([1, 0]), np.array([2, 0]), np.ones(2), contact_cost_usd=1, config=cfg
        )
    with pytest.raises(ValueError, match="both arms"):
        estimate_impact(
            np.array([1, 0]), np.array([True, True]), np.ones(2), contact_cost_usd=1, config=cfg
        )
    with pytest.raises(ValueError, match="values_usd"):
        estimate_impact(
            np.array([1, 0]),
            np.array([True, False]),
            np.array([1.0, np.nan]),
            contact_cost_usd=1,
            config=cfg,
        )
    with pytest.raises(KeyError, match="contacted_flag"):
        estimate_impact_frame(
            pd.DataFrame({"churned": ["yes"], "holdout": [True]}),
            churned_column="churned",
            holdout_column="holdout",
            contacted_column="contacted_flag",
            economics=EconomicsConfig(),
            config=cfg,
        )


def test_impact_conservative_save_rate_methods() -> None:
    rng = np.random.default_rng(5)
    y, h = _trial(rng, 20_000, 0.4, 0.3, 0.05)
    est = estimate_impact(y, h, np.full(len(y), 1.0), contact_cost_usd=0, config=ImpactConfig())
    m = est.overall.save_rate_itt
    low = conservative_save_rate(est, prior_save_rate=0.1, config=ImpactConfig())
    assert low.save_rate == pytest.approx(m.low) and low.method == "lower_bound"
    post = conservative_save_rate(
        est, prior_save_rate=0.1, config=ImpactConfig(conservative="posterior")
    )
    assert post.posterior_mean is not None and 0.1 < post.save_rate < m.point  # shrunk
    strong = conservative_save_rate(
        est,
        prior_save_rate=0.1,
        config=ImpactConfig(conservative="posterior", prior_strength_customers=1e7),
    )
    assert strong.save_rate == pytest.approx(0.1, abs=0.005)
    assert "lower bound" in low.reason and low.as_dict()["measured"]["point"] == pytest.approx(
        m.point, abs=1e-6
    )


def test_impact_conservative_save_rate_floors_no_effect() -> None:
    rng = np.random.default_rng(6)
    y, h = _trial(rng, 5_000, 0.3, 0.0, 0.1)
    est = estimate_impact(y, h, np.ones(len(y)), contact_cost_usd=0, config=ImpactConfig())
    ev = conservative_save_rate(est, prior_save_rate=0.25, config=ImpactConfig())
    assert ev.floored and ev.save_rate == ImpactConfig().min_save_rate
    assert "floored" in ev.reason


def test_impact_on_simulated_campaign_covers_true_save_rate() -> None:
    frame = generate_data(rows=40_000, seed=3)
    v = frame["monthly_charges_usd"].to_numpy() * 3
    wc = frame["true_churn_probability"].to_numpy() * 0.25 * v - 15 > 0
    campaign = simulate_campaign(
        frame,
        config=TreatmentResponseConfig(sleeping_dog_share=0.1),
        holdout_share=0.1,
        seed=4,
        would_contact=wc,
    )
    est = estimate_impact_frame(
        campaign.frame,
        churned_column="churned",
        holdout_column="holdout",
        positive_label="yes",
        would_contact_column="would_contact",
        contacted_column="contacted",
        segment_columns=("contract",),
        economics=EconomicsConfig(),
        config=ImpactConfig(),
    )
    assert est.overall.save_rate_itt.covers(true_itt_save_rate(campaign))
    assert est.overall.compliance == pytest.approx(0.9, abs=0.02)
    assert est.as_dict()["overall"]["name"] == "all"
