"""The measured-impact loop (issue 17) through the CLI: serve with a randomized holdout,
outcomes drawn from a known treatment response (who was contacted included), monitoring
measures the save rate, and `policy-update --from-outcomes` uses it, or refuses."""

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
from flows.cli import main
from tasks.generate_data import TRUTH_COLUMN, generate_data
from tasks.record_models import MonitoringRecord, PolicyUpdateRecord, parse_records
from tasks.records import RecordStore
from tasks.simulate_campaign import P_CONTACTED, P_NOT_CONTACTED, treatment_response

from ..conftest import small_layers

EXPERIMENT = "retention-test"
TRUE_SAVE_RATE = 0.4  # no spread, no sleeping dogs: every contacted customer's churn x 0.6
DELIVERY = 0.9


@pytest.fixture(scope="module")
def promoted(tmp_path_factory) -> Path:
    from configs.settings import build_config
    from flows.promotion import run_direct

    ws = tmp_path_factory.mktemp("loop") / "ws"
    rec = run_direct(build_config(small_layers(ws))).outcome.record
    assert rec["decision"] == "promoted", rec["reasons"]
    return ws


def _config(tmp_path: Path, promoted: Path, share: float) -> tuple[Path, dict[str, Any]]:
    ws = tmp_path / "ws"
    shutil.copytree(promoted, ws)
    layers = small_layers(ws)
    layers["serving"] = {"experiment_id": EXPERIMENT, "holdout_share": share}
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
        for start in range(0, len(payload), 500):
            r = client.post("/v1/score", json={"customers": payload[start : start + 500]})
            assert r.status_code == 200, r.text[:300]
            results += r.json()["results"]
    return pd.DataFrame(results)


def _outcomes(day: pd.DataFrame, served: pd.DataFrame, seed: int = 5) -> pd.DataFrame:
    """Outcomes from the known treatment response: a contact (action) is delivered with
    probability DELIVERY; the churn probability is the contacted one when delivered."""
    truth = treatment_response(
        day,
        config=TreatmentResponseConfig(
            mean_save_rate=TRUE_SAVE_RATE, save_rate_spread=0.0, sleeping_dog_share=0.0
        ),
    )
    rng = np.random.default_rng(seed)
    contacted = (served["action"] == "contact").to_numpy() & (rng.random(len(day)) < DELIVERY)
    p = np.where(contacted, truth[P_CONTACTED], truth[P_NOT_CONTACTED])
    return pd.DataFrame(
        {
            "customer_id": day["customer_id"],
            "churned": np.where(rng.random(len(day)) < p, "yes", "no"),
            "observed_at": "2026-12-05T00:00:00Z",
            "delivered": np.where(contacted, "yes", "no"),
        }
    )


def test_outcomes_loop_measures_save_rate_and_updates_policy(
    tmp_path: Path, promoted: Path, capsys
) -> None:
    cfg, layers = _config(tmp_path, promoted, share=0.3)
    day = generate_data(rows=6000, seed=404)
    day["customer_id"] = "LOOP-" + day["customer_id"].str[5:]
    served = _serve(layers, day)
    held = served[served["holdout"]]
    assert (held["action"] == "no_contact").all() and held["would_contact"].sum() > 300
    labels = tmp_path / "outcomes.csv"
    _outcomes(day, served).to_csv(labels, index=False)
    args = ["--config", str(cfg), "--input", str(labels), "--contacted-column", "delivered"]
    assert main(["outcomes", *args]) == 0

    assert main(["monitor", "--no-prefect", "--config", str(cfg)]) == 0
    records = parse_records(RecordStore(tmp_path / "ws" / "promotions").records())
    mon = records[-1]
    assert isinstance(mon, MonitoringRecord) and mon.impact is not None
    impact = mon.impact
    assert impact.experiment.experiment_id == EXPERIMENT
    assert impact.experiment.holdout_share == 0.3 and impact.experiment.sample_ratio_ok
    assert impact.contacted_reported and impact.sufficient, impact.reason
    overall = impact.estimate["overall"] if impact.estimate else {}
    itt = overall["save_rate_itt"]
    # ITT includes undelivered contacts: its truth is the delivery share times the save rate
    assert itt["low"] < TRUE_SAVE_RATE * DELIVERY < itt["high"], itt
    assert impact.estimate and impact.estimate["cace_save_rate"]["point"] > itt["point"]
    assert overall["incremental_profit_total_usd"]["low"] is not None
    assert impact.conservative_save_rate is not None
    assert impact.conservative_save_rate["save_rate"] == pytest.approx(itt["low"])
    capsys.readouterr()

    assert main(["policy-update", "--no-prefect", "--from-outcomes", "--config", str(cfg)]) == 0
    printed = capsys.readouterr().out
    assert "save rate from outcomes: measured save rate" in printed
    rec = parse_records(RecordStore(tmp_path / "ws" / "promotions").records())[-1]
    assert isinstance(rec, PolicyUpdateRecord) and rec.save_rate_evidence is not None
    ev = rec.save_rate_evidence
    assert ev.monitoring_record == mon.record_id and ev.experiment_id == EXPERIMENT
    assert ev.rule == "lower_bound" and ev.save_rate == pytest.approx(itt["low"])
    assert ev.interval == [pytest.approx(itt["low"]), pytest.approx(itt["high"])]
    assert rec.economics is not None and rec.economics.source == "outcomes"
    assert rec.economics.values["save_rate"] == pytest.approx(ev.save_rate)
    assert rec.reasons[0].startswith("save rate from outcomes:")
    if rec.decision == "policy-updated":
        assert rec.policy is not None
        assert rec.policy["economics"]["save_rate"] == pytest.approx(ev.save_rate)


def test_policy_update_from_outcomes_refuses_without_or_with_too_little_evidence(
    tmp_path: Path, promoted: Path, capsys
) -> None:
    cfg, layers = _config(tmp_path, promoted, share=0.05)
    cmd = ["policy-update", "--no-prefect", "--from-outcomes", "--config", str(cfg)]
    before = len(RecordStore(tmp_path / "ws" / "promotions").records())
    assert main(cmd) == 1
    assert "no randomized evidence" in capsys.readouterr().err

    day = generate_data(rows=300, seed=405)
    served = _serve(layers, day)
    labels = tmp_path / "outcomes.csv"
    _outcomes(day, served).rename(columns={"delivered": "contacted"}).to_csv(labels, index=False)
    assert main(["outcomes", "--config", str(cfg), "--input", str(labels)]) == 0
    assert main(["monitor", "--no-prefect", "--config", str(cfg)]) == 0
    capsys.readouterr()
    assert main(cmd) == 1
    err = capsys.readouterr().err
    assert "too little randomized evidence" in err and "impact_min_events" in err
    # refused before anything was written: only the monitoring record was added
    kinds = [r["kind"] for r in RecordStore(tmp_path / "ws" / "promotions").records()[before:]]
    assert kinds == ["monitoring"]


def test_outcomes_contacted_column_errors_name_the_column(tmp_path: Path, capsys) -> None:
    cfg = tmp_path / "c.yaml"
    cfg.write_text(yaml.safe_dump({"paths": {"workspace": str(tmp_path / "ws")}}))
    frame = pd.DataFrame(
        {
            "customer_id": ["A", "B"],
            "churned": ["yes", "no"],
            "observed_at": "2026-12-05",
            "contacted": ["yes", "perhaps"],
        }
    )
    path = tmp_path / "o.csv"
    frame.to_csv(path, index=False)
    assert main(["outcomes", "--config", str(cfg), "--input", str(path)]) == 2
    assert "contacted: 1 value(s) are not true/false" in capsys.readouterr().err
    args = ["outcomes", "--config", str(cfg), "--input", str(path), "--contacted-column", "sent"]
    assert main(args) == 2
    assert "sent: column missing" in capsys.readouterr().err
    frame.assign(contacted=["yes", "no"]).to_csv(path, index=False)
    assert main(["outcomes", "--config", str(cfg), "--input", str(path)]) == 0
    stored = pd.read_parquet(next((tmp_path / "ws" / "outcomes").glob("*.parquet")))
    assert stored["contacted"].tolist() == [True, False]
