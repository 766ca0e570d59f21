from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from configs.paths import Workspace
from configs.settings import build_config
from tasks.calibrate import calibrate
from tasks.evaluate import customer_values, profit_at_stake
from tasks.evidence import measure_stability
from tasks.gates import GATE_IDS, GateResult
from tasks.promote import Registration, RunEvidence, promote
from tasks.records import RecordStore
from tasks.select_policy import select_policy
from tasks.train_candidates import (
    CANDIDATE_NAMES,
    RuleBaseline,
    train_baselines,
    train_candidate,
)

from ..conftest import generator_splits


@pytest.fixture(scope="module")
def splits(tmp_path_factory):
    return generator_splits(tmp_path_factory.mktemp("ws"), 5000)


def test_train_candidate_fits_pipeline_on_train_only(splits) -> None:
    cfg, s = splits
    for name in CANDIDATE_NAMES:
        m = train_candidate(s, name=name, config=cfg.candidates)
        assert m.ok, m.error
        assert m.train_rows == s.rows["train"]
        p = m.predict(s.X("test"))
        assert p.shape == (s.rows["test"],) and ((p >= 0) & (p <= 1)).all()
    imputer = m.estimator.named_steps["preprocess"].named_transformers_["numeric"]  # type: ignore[union-attr]
    medians = imputer.named_steps["impute"].statistics_
    train_median = np.nanmedian(s.X("train")["tenure_months"].to_numpy(dtype=float))
    assert medians[0] == train_median


def test_train_candidate_failure_is_returned_not_raised(splits) -> None:
    cfg, s = splits
    bad = cfg.candidates.model_copy(
        update={
            "logistic_regression": cfg.candidates.logistic_regression.model_copy(update={"C": -1.0})
        }
    )
    m = train_candidate(s, name="logistic_regression", config=bad)
    assert not m.ok and m.error is not None


def test_train_baselines_rule_uses_one_feature(splits) -> None:
    cfg, s = splits
    baselines = {b.name: b for b in train_baselines(s, config=cfg.candidates)}
    assert set(baselines) == {"majority", "stratified", "rule"}
    rule = baselines["rule"].estimator
    assert isinstance(rule, RuleBaseline) and rule.feature_ in s.roles.features
    assert len(np.unique(baselines["rule"].predict(s.X("test")))) == 2
    assert np.allclose(baselines["majority"].predict(s.X("test")), s.y("train").mean())


def test_calibrate_chooses_by_selection_log_loss(splits) -> None:
    cfg, s = splits
    m = train_candidate(s, name="random_forest", config=cfg.candidates)
    strict = cfg.calibration.model_copy(update={"tie_z": 0.0})  # no preference for simplicity
    c = calibrate(m, s, config=strict)
    assert c.method in ("none", "sigmoid", "isotonic", "segment_sigmoid")
    losses = {k: v["log_loss"] for k, v in c.selection_metrics.items()}
    assert c.method == min(losses, key=lambda k: losses[k])
    assert {"roc_auc", "pr_auc", "brier", "log_loss", "ece"} <= set(c.selection_metrics["none"])


def test_calibrate_skips_isotonic_below_min_rows(splits) -> None:
    cfg, s = splits
    m = train_candidate(s, name="logistic_regression", config=cfg.candidates)
    cal_cfg = cfg.calibration.model_copy(update={"min_rows_for_isotonic": 10**6})
    c = calibrate(m, s, config=cal_cfg)
    assert "isotonic" not in c.selection_metrics and "isotonic not considered" in c.reason


def calibrated_with_policy(cfg, s, name: str):  # type: ignore[no-untyped-def]
    """A calibrated candidate and the policy selected for it on the selection split."""
    c = calibrate(train_candidate(s, name=name, config=cfg.candidates), s, config=cfg.calibration)
    policy = select_policy(
        c.predict(s.X("selection")),
        s.y("selection"),
        s.selection,
        economics=cfg.economics,
        policy=cfg.policy,
        bootstrap=cfg.bootstrap,
        calibration_method=c.method,
        population_rows=5000,
    ).policy
    return c, policy


def test_measure_stability_refits_folds(splits) -> None:
    cfg, s = splits
    c, pol = calibrated_with_policy(cfg, s, "logistic_regression")
    ev = measure_stability(c, s, pol, config=cfg)
    assert len(ev.fold_auc) == cfg.gates.stability.n_splits * cfg.gates.stability.n_repeats
    assert all(0.6 < a < 0.95 for a in ev.fold_auc)


def _evidence(cfg, gated_against=None, all_pass=True) -> RunEvidence:
    gates = tuple(
        GateResult(
            gate=g,
            passed=all_pass or g != "business",
            metric="m",
            value=1.0,
            interval=None,
            threshold=0.0,
            evidence={},
            reason="r",
        )
        for g in GATE_IDS
    )
    return RunEvidence(
        run_id="r1",
        flow_run_id=None,
        mlflow_run_id=None,
        config=cfg,
        data_source="x",
        data_sha256="d",
        split_hashes={},
        split_rows={},
        features={"numeric": [], "categorical": []},
        schema={},
        candidate="c",
        calibration={},
        candidates={},
        baselines={},
        gates=gates,
        policy={},
        policy_id="pid",
        policy_path="models/r1/policy.json",
        policy_sha256="ps",
        artifact_path="models/r1/model.joblib",
        artifact_sha256="as",
        gated_against=gated_against,
        started_at="t",
    )


def test_promote_rejected_never_registers_or_moves_champion(tmp_path: Path) -> None:
    cfg = build_config({"paths": {"workspace": str(tmp_path)}})
    ws = Workspace.from_setting(str(tmp_path))
    calls: list[str] = []

    def register() -> Registration:
        calls.append("register")
        return Registration("m", str(len(calls)), "models:/m/1")

    out = promote(
        _evidence(cfg),
        workspace=ws,
        register=register,
        move_aliases=lambda r, c: calls.append("alias"),
    )
    assert out.decision == "promoted" and calls == ["register", "alias"]
    champion = out.record["champion"]
    out2 = promote(
        _evidence(cfg, gated_against=champion, all_pass=False),
        workspace=ws,
        register=register,
        move_aliases=lambda r, c: calls.append("alias"),
    )
    assert out2.decision == "rejected" and calls == ["register", "alias"]
    assert out2.record["champion"] == champion
    assert any("business failed" in r for r in out2.record["reasons"])


def test_promote_stale_champion_comparison_is_rejected(tmp_path: Path) -> None:
    cfg = build_config({"paths": {"workspace": str(tmp_path)}})
    ws = Workspace.from_setting(str(tmp_path))
    reg = iter(range(1, 10))

    def register() -> Registration:
        return Registration("m", str(next(reg)), "models:/m/x")

    promote(_evidence(cfg), workspace=ws, register=register, move_aliases=lambda r, c: None)
    # a second run that gated against "no champion" must not replace the new champion
    out = promote(
        _evidence(cfg, gated_against=None),
        workspace=ws,
        register=register,
        move_aliases=lambda r, c: None,
    )
    assert out.decision == "rejected" and "champion changed" in out.reasons[0]
    assert RecordStore(ws.promotions, ws.promotions_lock).verify().ok


def test_explain_ranks_features_and_error_slices(splits) -> None:
    from tasks.explain import explain

    cfg, s = splits
    c, pol = calibrated_with_policy(cfg, s, "gradient_boosting")
    e = explain(c.estimator, s, pol, config=cfg)
    top = e["permutation_importance"]["roc_auc"]
    assert top[0]["feature"] == "contract" and top[0]["mean_drop"] > 0.03
    assert {"profit_usd_per_customer", "roc_auc"} == set(e["permutation_importance"])
    costs = [d["error_cost_per_customer_usd"] for d in e["error_slices"]]
    assert (
        costs == sorted(costs, reverse=True)
        and costs[0] >= e["overall_error_cost_per_customer_usd"]
    )
    assert all(d["rows"] >= cfg.explain.min_slice_rows for d in e["error_slices"])


class _Brittle:
    """Churn probability from the cents of the monthly charge: any noise scrambles it."""

    def predict(self, X):  # noqa: N803
        cents = np.round(X["monthly_charges_usd"].to_numpy(dtype=float) * 100) % 100
        return np.where(cents >= 50, 0.9, 0.02)


def test_measure_robustness_fails_brittle_model(splits) -> None:
    from tasks.evidence import measure_robustness
    from tasks.gates import gate_robustness

    cfg, s = splits
    c, pol = calibrated_with_policy(cfg, s, "gradient_boosting")
    values = customer_values(s.test, economics=cfg.economics)
    stake = profit_at_stake(s.y("test"), values, economics=cfg.economics)
    good = measure_robustness(c.predict, s, pol, config=cfg)
    assert gate_robustness(good, stake=stake, config=cfg.gates.robustness).passed
    names = [p.name for p in good.perturbations]
    assert any("missing" in n for n in names) and any("unseen" in n for n in names)
    bad = measure_robustness(_Brittle().predict, s, pol, config=cfg)
    result = gate_robustness(bad, stake=stake, config=cfg.gates.robustness)
    assert not result.passed and "numeric noise" in result.reason


def test_measure_robustness_samples_a_test_split_above_its_cap(splits) -> None:
    from tasks.evidence import measure_robustness
    from tasks.gates import gate_robustness

    cfg, s = splits
    c, pol = calibrated_with_policy(cfg, s, "gradient_boosting")
    n = len(s.y("test"))
    whole = measure_robustness(c.predict, s, pol, config=cfg)
    assert whole.sampled_rows is None  # at or below the cap: every test row, as before
    capped_cfg = cfg.model_copy(
        update={
            "gates": cfg.gates.model_copy(
                update={"robustness": cfg.gates.robustness.model_copy(update={"max_rows": n // 2})}
            )
        }
    )
    calls: list[int] = []

    def predict(X):  # noqa: N803
        calls.append(len(X))
        return c.predict(X)

    base_p = c.predict(s.X("test"))  # as the flow passes it: the test split scored once
    capped = measure_robustness(predict, s, pol, config=capped_cfg, base_p=base_p)
    assert capped.sampled_rows == n // 2
    assert calls and max(calls) == n // 2  # nothing beyond the sample is re-scored
    assert [p.name for p in capped.perturbations] == [p.name for p in whole.perturbations]
    values = customer_values(s.test, economics=cfg.economics)
    stake = profit_at_stake(s.y("test"), values, economics=cfg.economics)
    result = gate_robustness(capped, stake=stake, config=capped_cfg.gates.robustness)
    assert result.evidence["sampled_rows"] == n // 2
    assert "sampled_rows" not in gate_robustness(
        whole, stake=stake, config=cfg.gates.robustness
    ).evidence
