from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from configs.settings import (
    BayesPilotConfig,
    BootstrapConfig,
    CandidatesConfig,
    DataConfig,
    EconomicsConfig,
    TreatmentResponseConfig,
    UpliftGatesConfig,
)
from tasks.gates import GATE_IDS
from tasks.gates.uplift import UPLIFT_GATE_IDS, UpliftGateInputs, run_uplift_gates
from tasks.generate_data import LABEL_COLUMN, TRUTH_COLUMN, generate_data
from tasks.load_data import ColumnRoles, resolve_roles
from tasks.select_policy import Policy
from tasks.simulate_campaign import EFFECT, P_NOT_CONTACTED, Campaign, simulate_campaign
from tasks.uplift import (
    UpliftChallenge,
    challenge_from_outcomes,
    challenge_uplift,
    effect_calibration,
    fit_uplift,
    policy_profit,
    qini_coefficient,
    uplift_contact,
    uplift_curve,
)

COST = 15.0
BOOT = BootstrapConfig(resamples=200)


def _roles(frame: pd.DataFrame) -> ColumnRoles:
    return resolve_roles(frame.drop(columns=[TRUTH_COLUMN]), data=DataConfig())


@pytest.fixture(scope="module")
def campaign() -> Campaign:
    frame = generate_data(rows=60_000, seed=21)
    cfg = TreatmentResponseConfig(sleeping_dog_share=0.2, seed=5)
    return simulate_campaign(frame, config=cfg, holdout_share=0.5, seed=6)


def _arrays(c: Campaign) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    f = c.frame
    y = (f[LABEL_COLUMN] == "yes").to_numpy(int)
    values = f["monthly_charges_usd"].to_numpy() * 3.0
    return y, f["assigned_contact"].to_numpy(), f["contacted"].to_numpy(), values


def _inputs(c: Campaign, effect: np.ndarray, **cfg: float) -> UpliftGateInputs:
    y, a, d, values = _arrays(c)
    p0 = c.truth[P_NOT_CONTACTED].to_numpy()
    return UpliftGateInputs(
        effect=effect,
        risk=p0,
        current_contact=p0 * 0.25 * values - COST > 0,
        churned=y,
        assigned=a,
        contacted=d,
        values_usd=values,
        contact_cost_usd=COST,
        cutoff_usd=0.0,
        bootstrap=BOOT,
        config=UpliftGatesConfig(**cfg),  # type: ignore[arg-type]
    )


def test_uplift_gates_pass_a_good_effect_model(campaign: Campaign) -> None:
    truth = campaign.truth[EFFECT].to_numpy() * campaign.delivery_rate
    noisy = truth + np.random.default_rng(0).normal(0, 0.02, len(truth))
    results = {g.gate: g for g in run_uplift_gates(_inputs(campaign, noisy))}
    assert tuple(results) == UPLIFT_GATE_IDS
    assert all(g.passed for g in results.values()), [g.reason for g in results.values()]
    assert results["uplift-qini"].interval is not None
    assert results["uplift-qini"].interval[0] > 0
    assert results["uplift-profit"].evidence["profit_uplift_usd"] > 0


def test_uplift_gates_fail_a_no_effect_model(campaign: Campaign) -> None:
    noise = np.random.default_rng(1).normal(0.05, 0.05, len(campaign.frame))
    results = {g.gate: g for g in run_uplift_gates(_inputs(campaign, noise))}
    assert not results["uplift-qini"].passed
    assert not results["uplift-profit"].passed
    assert not results["uplift-calibration"].passed
    assert "does not exceed" in results["uplift-qini"].reason


def test_uplift_gates_fail_the_risk_ranking_relabelled_as_effect(campaign: Campaign) -> None:
    # the churn-risk ranking as an "effect": no gain over itself beyond noise
    y, a, d, values = _arrays(campaign)
    p0 = campaign.truth[P_NOT_CONTACTED].to_numpy()
    results = {g.gate: g for g in run_uplift_gates(_inputs(campaign, p0 * 0.25))}
    assert not results["uplift-qini"].passed
    assert results["uplift-qini"].value == pytest.approx(0.0, abs=1e-9)
    assert not results["uplift-profit"].passed


def test_uplift_gates_disabled_say_so(campaign: Campaign) -> None:
    results = run_uplift_gates(_inputs(campaign, np.zeros(len(campaign.frame)), enabled=False))
    assert all(g.passed and "uplift.gates.enabled=false" in g.reason for g in results)


def test_uplift_gates_not_in_the_main_registry() -> None:
    assert not set(UPLIFT_GATE_IDS) & set(GATE_IDS)
    assert len(GATE_IDS) == 10


def test_uplift_gate_failure_to_compute_is_a_failed_gate(campaign: Campaign) -> None:
    inputs = _inputs(campaign, np.zeros(len(campaign.frame)))
    broken = UpliftGateInputs(**{**inputs.__dict__, "assigned": np.ones(len(campaign.frame), bool)})
    results = run_uplift_gates(broken)
    assert not any(g.passed for g in results)
    assert all(g.metric == "not computed" for g in results)


def test_uplift_learners_recover_heterogeneous_effect(campaign: Campaign) -> None:
    f = campaign.frame
    roles = _roles(generate_data(rows=10, seed=1))
    y, a, _, values = _arrays(campaign)
    fit = np.arange(len(f)) < 25_000
    cfg = CandidatesConfig()
    truth = campaign.truth[EFFECT].to_numpy()[~fit]
    corr = {}
    for learner in ("t_learner", "x_learner"):
        model = fit_uplift(
            learner,
            f[fit],
            y[fit],
            a[fit],
            roles=roles,
            base_model="gradient_boosting",
            config=cfg,
        )
        eff = model.predict_effect(f[~fit])
        corr[learner] = float(np.corrcoef(eff, truth)[0, 1])
        assert eff.shape == truth.shape
    assert corr["t_learner"] > 0.5 and corr["x_learner"] > 0.6, corr
    assert corr["x_learner"] > corr["t_learner"]


def test_uplift_fit_bad_input_is_named() -> None:
    frame = generate_data(rows=500, seed=2)
    roles = _roles(frame)
    y = (frame[LABEL_COLUMN] == "yes").to_numpy(int)
    a = np.arange(500) % 2 == 0
    with pytest.raises(KeyError, match="tenure_months"):
        fit_uplift(
            "t_learner",
            frame.drop(columns=["tenure_months"]),
            y,
            a,
            roles=roles,
            base_model="logistic_regression",
            config=CandidatesConfig(),
        )
    with pytest.raises(ValueError, match="holdout arm"):
        fit_uplift(
            "t_learner",
            frame,
            np.where(a, y, 0),
            a,
            roles=roles,
            base_model="logistic_regression",
            config=CandidatesConfig(),
        )
    with pytest.raises(ValueError, match="unknown uplift learner"):
        fit_uplift(
            "s_learner",  # type: ignore[arg-type]
            frame,
            y,
            a,
            roles=roles,  # type: ignore[arg-type]
            base_model="logistic_regression",
            config=CandidatesConfig(),
        )


def test_uplift_contact_needs_positive_value_above_cutoff() -> None:
    eff = np.array([0.1, 0.1, -0.1, 0.02])
    values = np.array([400.0, 200.0, 400.0, 400.0])
    # ev = 25, 5, -55, -7
    assert uplift_contact(eff, values, contact_cost_usd=15).tolist() == [True, True, False, False]
    assert uplift_contact(eff, values, contact_cost_usd=15, cutoff_usd=10).tolist() == [
        True,
        False,
        False,
        False,
    ]


def _constant_trial(n: int, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    tau = np.where(rng.random(n) < 0.5, 0.3, 0.0)
    a = rng.random(n) < 0.5
    y = rng.random(n) < np.where(a, 0.5 - tau, 0.5)
    return tau, a, y.astype(int)


def test_uplift_qini_ranks_true_effect_above_random() -> None:
    tau, a, y = _constant_trial(40_000, 3)
    good = qini_coefficient(tau + 1e-6 * np.arange(len(tau)) / len(tau), y, a)
    rand = qini_coefficient(np.random.default_rng(4).random(len(tau)), y, a)
    # ideal: half the customers carry 0.3, targeting them first gives area 0.15 * 0.25
    assert good == pytest.approx(0.0375, abs=0.008)
    assert abs(rand) < 0.008
    curve = uplift_curve(tau, y, a)
    assert curve["contact_share"].iloc[-1] == pytest.approx(1.0)
    assert curve["incremental_retained_per_customer"].iloc[-1] == pytest.approx(0.15, abs=0.02)


def test_uplift_policy_profit_matches_known_effect() -> None:
    tau, a, y = _constant_trial(200_000, 5)
    values = np.full(len(tau), 100.0)
    # contacting the responsive half: 0.5 * (0.3 * 100 - 10) = 10 USD per customer
    assert policy_profit(tau > 0, y, a, values, contact_cost_usd=10) == pytest.approx(10, abs=0.6)
    # contacting the unresponsive half loses the cost on them: 0.5 * -10
    assert policy_profit(tau == 0, y, a, values, contact_cost_usd=10) == pytest.approx(-5, abs=0.6)
    assert policy_profit(np.zeros(len(a), bool), y, a, values, contact_cost_usd=10) == 0.0


def test_uplift_effect_calibration_per_decile() -> None:
    tau, a, y = _constant_trial(100_000, 6)
    good = effect_calibration(tau, y, a, bins=10)
    assert good.p_value > 0.001 and len(good.table) == 10
    bad = effect_calibration(np.zeros(len(tau)) + 1e-9 * np.arange(len(tau)), y, a, bins=10)
    assert bad.p_value < 1e-6 and bad.max_abs_gap > 0.1
    with pytest.raises(ValueError, match="both arms"):
        effect_calibration(tau, y, np.ones(len(tau), bool), bins=10)


def _policy() -> Policy:
    econ = EconomicsConfig(customer_value={"column": "monthly_charges_usd", "multiplier": 3.0})
    return Policy(
        {
            "economics": econ.model_dump(mode="json"),
            "cutoff_expected_value_usd": 0.0,
            "tiers": [
                {"name": "no_action", "min_expected_value_usd": None, "contact": False},
                {"name": "contact", "min_expected_value_usd": 0.0, "contact": True},
            ],
        }
    )


def _challenge(c: Campaign, config: BayesPilotConfig, rows: slice) -> UpliftChallenge:
    f = c.frame.iloc[rows].reset_index(drop=True)
    p0 = c.truth[P_NOT_CONTACTED].to_numpy()[rows]
    lookup = pd.Series(p0, index=f["customer_id"])
    return challenge_uplift(
        f,
        (f[LABEL_COLUMN] == "yes").to_numpy(int),
        f["assigned_contact"].to_numpy(),
        f["contacted"].to_numpy(),
        roles=_roles(generate_data(rows=10, seed=1)),
        risk=lambda X: lookup.loc[f.loc[X.index, "customer_id"]].to_numpy(),
        policy=_policy(),
        config=config,
    )


def test_uplift_challenge_needs_enough_randomized_outcomes(campaign: Campaign) -> None:
    cfg = BayesPilotConfig(uplift={"min_randomized_customers": 5_000})
    result = _challenge(campaign, cfg, slice(0, 6_000))
    assert result.status == "not_enough_randomized_outcomes" and result.winner is None
    assert result.candidates == () and "min_randomized_customers" in result.reason


def test_uplift_challenge_replaces_risk_policy_only_beyond_noise(campaign: Campaign) -> None:
    # many sleeping dogs whom a contact clearly pushes out: the gain is beyond noise
    dogs = simulate_campaign(
        generate_data(rows=60_000, seed=23),
        config=TreatmentResponseConfig(sleeping_dog_share=0.3, sleeping_dog_churn_increase=0.5),
        holdout_share=0.5,
        seed=8,
    )
    cfg = BayesPilotConfig(bootstrap={"resamples": 200}, uplift={"evaluation_share": 0.4})
    result = _challenge(dogs, cfg, slice(0, 60_000))
    assert result.status == "evaluated"
    assert result.fit_rows + result.judge_rows == 60_000
    assert {c.learner for c in result.candidates} == {"t_learner", "x_learner"}
    assert result.winner == "x_learner", result.reason
    assert "passes every uplift gate" in result.reason
    record = result.as_dict()
    assert isinstance(record["candidates"], list)
    assert record["candidates"][1]["gates"][0]["gate"] == "uplift-qini"
    # the same campaign where contacts hardly matter: nothing wins on ranking
    flat = simulate_campaign(
        generate_data(rows=30_000, seed=22),
        config=TreatmentResponseConfig(mean_save_rate=0.001, sleeping_dog_share=0.0),
        holdout_share=0.5,
        seed=7,
    )
    weak = _challenge(
        flat,
        BayesPilotConfig(
            bootstrap={"resamples": 200}, uplift={"base_model": "logistic_regression"}
        ),
        slice(0, 30_000),
    )
    assert weak.winner is None and weak.reason.startswith("the churn-risk policy stays")


def test_uplift_challenge_from_served_outcomes_uses_would_contact_rows(
    campaign: Campaign,
) -> None:
    f = campaign.frame.iloc[:20_000]
    p0 = campaign.truth[P_NOT_CONTACTED].to_numpy()[:20_000]
    values = f["monthly_charges_usd"].to_numpy() * 3.0
    would = p0 * 0.25 * values - COST > 0
    served = simulate_campaign(
        f.assign(true_churn_probability=p0),
        config=TreatmentResponseConfig(sleeping_dog_share=0.2, seed=5),
        holdout_share=0.3,
        seed=9,
        would_contact=would,
    ).frame
    joined = served.assign(churned=(served[LABEL_COLUMN] == "yes").astype(int))
    cfg = BayesPilotConfig(
        bootstrap={"resamples": 200},
        uplift={"min_randomized_customers": 500, "base_model": "logistic_regression"},
    )
    result = challenge_from_outcomes(
        joined,
        roles=_roles(generate_data(rows=10, seed=1)),
        risk=lambda X: p0[would][X.index.to_numpy()],  # rows renumbered within would-contact
        policy=_policy(),
        config=cfg,
    )
    assert result.status == "evaluated"
    assert result.holdout_customers + result.assigned_customers == int(would.sum())
    assert result.fit_rows + result.judge_rows == int(would.sum())
    assert len(result.candidates) == 2 and all(c.gates for c in result.candidates)
    with pytest.raises(KeyError, match="would_contact"):
        challenge_from_outcomes(
            joined.drop(columns=["would_contact"]),
            roles=_roles(generate_data(rows=10, seed=1)),
            risk=lambda X: p0[would][X.index.to_numpy()],  # rows renumbered within would-contact
            policy=_policy(),
            config=cfg,
        )
