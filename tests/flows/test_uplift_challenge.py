"""The uplift challenger path (issue 17) through the CLI: serve a churn-risk champion with a
randomized holdout, outcomes from a known treatment response, `challenge-uplift` registers
the uplift learner as challenger (or records why not), `promote-challenger` promotes it on
its uplift evidence, and the service then decides by the uplift rule."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import yaml

from configs.settings import TreatmentResponseConfig
from flows.challenger import churn_promote_challenger
from flows.cli import main
from tasks.generate_data import TRUTH_COLUMN, generate_data
from tasks.record_models import ChallengerRecord, PromotionRecord, parse_records
from tasks.records import RecordStore
from tasks.simulate_campaign import EFFECT, P_CONTACTED, P_NOT_CONTACTED, TYPE, treatment_response

from ..conftest import small_layers

EXPERIMENT = "uplift-test"
ECONOMICS: dict[str, Any] = {"economics": {"contact_cost_usd": 5.0}}


@pytest.fixture(scope="module")
def promoted(tmp_path_factory) -> Path:
    from configs.settings import build_config
    from flows.promotion import run_direct

    ws = tmp_path_factory.mktemp("uplift") / "ws"
    # a cheap contact: the churn-risk policy contacts most customers, sleeping dogs included
    rec = run_direct(build_config(small_layers(ws, **ECONOMICS))).outcome.record
    assert rec["decision"] == "promoted", rec["reasons"]
    return ws


def _config(tmp_path: Path, promoted: Path) -> tuple[Path, dict[str, Any]]:
    ws = tmp_path / "ws"
    shutil.copytree(promoted, ws)
    layers = small_layers(ws, **ECONOMICS)
    layers["serving"] = {"experiment_id": EXPERIMENT, "holdout_share": 0.5}
    layers["uplift"] = {"min_randomized_customers": 1000, "evaluation_share": 0.4}
    layers["bootstrap"] = {"resamples": 200}
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(layers))
    return path, layers


def _serve(layers: dict[str, Any], day: pd.DataFrame) -> pd.DataFrame:
    """Score ``day`` through the service in-process (it logs every decision)."""
    from fastapi.testclient import TestClient

    from configs.settings import build_config
    from serving.main import create_app
    from serving.settings import ServingSettings

    payload = json.loads(day.drop(columns=["churned", TRUTH_COLUMN]).to_json(orient="records"))
    settings = ServingSettings.from_config(build_config(layers), environ={})
    results = []
    with TestClient(create_app(settings, follow=False)) as client:
        for start in range(0, len(payload), 1000):
            r = client.post("/v1/score", json={"customers": payload[start : start + 1000]})
            assert r.status_code == 200, r.text[:300]
            results += r.json()["results"]
    return pd.DataFrame(results)


def _outcomes(day: pd.DataFrame, served: pd.DataFrame, truth: pd.DataFrame) -> pd.DataFrame:
    """Outcomes drawn from the known response: the contacted churn probability for a customer
    whose action was contact, the uncontacted one otherwise."""
    rng = np.random.default_rng(5)
    contacted = (served["action"] == "contact").to_numpy()
    p = np.where(contacted, truth[P_CONTACTED], truth[P_NOT_CONTACTED])
    return pd.DataFrame(
        {
            "customer_id": day["customer_id"],
            "churned": np.where(rng.random(len(day)) < p, "yes", "no"),
            "observed_at": "2026-12-05T00:00:00Z",
            "contacted": np.where(contacted, "yes", "no"),
        }
    )


def _records(tmp_path: Path) -> list[Any]:
    return parse_records(RecordStore(tmp_path / "ws" / "promotions").records())


def _campaign(
    tmp_path: Path, layers: dict[str, Any], cfg: Path, rows: int, response: TreatmentResponseConfig
) -> tuple[pd.DataFrame, pd.DataFrame]:
    day = generate_data(rows=rows, seed=404)
    day["customer_id"] = "UP-" + day["customer_id"].str[5:]
    truth = treatment_response(day, config=response)
    served = _serve(layers, day)
    labels = tmp_path / "outcomes.csv"
    _outcomes(day, served, truth).to_csv(labels, index=False)
    assert main(["outcomes", "--config", str(cfg), "--input", str(labels)]) == 0
    return day, truth


def test_uplift_challenge_registers_and_promotes_a_policy_that_spares_sleeping_dogs(
    tmp_path: Path, promoted: Path, capsys
) -> None:
    cfg, layers = _config(tmp_path, promoted)
    response = TreatmentResponseConfig(sleeping_dog_share=0.3, sleeping_dog_churn_increase=0.5)
    day, truth = _campaign(tmp_path, layers, cfg, 60_000, response)
    champion = _records(tmp_path)[-1].champion
    capsys.readouterr()

    assert main(["challenge-uplift", "--config", str(cfg)]) == 0
    rec = _records(tmp_path)[-1]
    assert isinstance(rec, ChallengerRecord), rec.reasons
    assert rec.uplift is not None and rec.candidate == f"uplift:{rec.uplift['winner']}"
    assert "passes every uplift gate" in rec.reasons[0]
    assert {g.gate for g in rec.gates} >= {"uplift-qini", "uplift-profit"}
    assert all(g.passed for g in rec.gates)
    assert rec.champion == champion  # the churn-risk champion still serves
    assert rec.policy is not None and rec.policy["kind"] == "uplift"
    assert "uplift challenge: challenger" in capsys.readouterr().out

    # monitoring runs with the uplift challenger registered (it scores it in batch too)
    assert main(["monitor", "--no-prefect", "--config", str(cfg)]) == 0
    # the promote-challenger flow (deployment promote-challenger) ends named after the decision
    state = churn_promote_challenger.fn(config_path=str(cfg))
    assert state.name == "Promoted", state.message
    promo = _records(tmp_path)[-1]
    assert isinstance(promo, PromotionRecord) and promo.decision == "promoted", promo.reasons
    assert promo.champion == rec.challenger and promo.uplift == rec.uplift
    assert "uplift evidence on randomized held-out outcomes" in promo.reasons[0]
    from tasks.reconcile import MlflowRegistry

    registry = MlflowRegistry(f"sqlite:///{tmp_path / 'ws' / 'mlflow.db'}")
    assert registry.alias_version(rec.challenger.model_name, "champion") == (
        rec.challenger.model_version
    )

    # the service now decides by the uplift rule; the holdout still applies
    again = day.iloc[:4000].assign(customer_id=lambda f: "UP2-" + f["customer_id"].str[3:])
    served = _serve(layers, again)
    assert (served["model_version"] == rec.challenger.model_version).all()
    assert "uplift_effect" in served.columns and served["uplift_effect"].notna().all()
    assert (served.loc[served["holdout"], "action"] == "no_contact").all()
    value = again["monthly_charges_usd"].to_numpy() * 3.0
    cost = float(rec.policy["economics"]["contact_cost_usd"])
    ev = served["uplift_effect"].to_numpy() * value - cost
    cutoff = float(rec.policy["cutoff_expected_value_usd"])
    assert np.array_equal(served["would_contact"].to_numpy(), (ev > 0) & (ev >= cutoff))
    dogs = (truth[TYPE].to_numpy()[:4000] == "sleeping_dog") & ~served["holdout"].to_numpy()
    assert dogs.sum() > 100
    # sleeping dogs: predicted to be pushed out, and (nearly) none is contacted
    assert served.loc[dogs, "uplift_effect"].mean() < 0
    assert (served.loc[dogs, "action"] == "no_contact").mean() > 0.9
    assert truth[EFFECT].to_numpy()[:4000][dogs].max() < 0
    # its rule needs no save rate: policy-update refuses and says where a new one comes from
    capsys.readouterr()
    assert main(["policy-update", "--no-prefect", "--config", str(cfg)]) != 0
    assert "challenge-uplift" in capsys.readouterr().err


def test_uplift_challenge_without_heterogeneity_is_rejected_and_champion_stays(
    tmp_path: Path, promoted: Path, capsys
) -> None:
    cfg, layers = _config(tmp_path, promoted)
    response = TreatmentResponseConfig(mean_save_rate=0.001, sleeping_dog_share=0.0)
    _campaign(tmp_path, layers, cfg, 12_000, response)
    champion = _records(tmp_path)[-1].champion
    capsys.readouterr()

    assert main(["challenge-uplift", "--config", str(cfg)]) == 0
    rec = _records(tmp_path)[-1]
    assert isinstance(rec, PromotionRecord) and rec.decision == "rejected"
    assert rec.champion == champion and rec.uplift is not None
    assert rec.uplift["winner"] is None
    assert rec.reasons[0].startswith("uplift challenge (evaluated): the churn-risk policy stays")
    assert main(["promote-challenger", "--config", str(cfg)]) == 1
    assert "no active challenger" in capsys.readouterr().err
    state = churn_promote_challenger.fn(config_path=str(cfg))
    assert state.name == "NoChallenger" and state.is_completed()
    assert _records(tmp_path)[-1].record_id == rec.record_id
