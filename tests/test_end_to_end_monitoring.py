"""End to end: promote, serve a day of traffic whose distribution shifts, ingest outcomes,
run monitoring: drift and decay are detected, named and recorded, and a retrain runs."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from fastapi.testclient import TestClient

from configs.settings import build_config
from flows.cli import main
from serving.main import create_app
from serving.settings import ServingSettings
from tasks.generate_data import TRUTH_COLUMN, generate_data
from tasks.records import RecordStore

from .conftest import small_layers

pytestmark = pytest.mark.slow


def shifted_day(rows: int, seed: int) -> pd.DataFrame:
    """A day of customers: pricier plans, shorter tenure, more month-to-month contracts."""
    rng = np.random.default_rng(seed)
    day = generate_data(rows=rows, seed=seed)
    day["customer_id"] = "DAY-" + day["customer_id"].str[5:]
    day["monthly_charges_usd"] = (day["monthly_charges_usd"] * 1.5).round(2)
    day["tenure_months"] = (day["tenure_months"] * 0.4).astype("int64")
    flip = rng.random(rows) < 0.5
    day.loc[flip, "contract"] = "month-to-month"
    return day


def test_monitoring_detects_shift_and_decay_and_retrains(tmp_path: Path, capsys) -> None:
    ws = tmp_path / "ws"
    layers = small_layers(ws)
    layers["monitoring"] = {"retrain": "inline", "min_rows": 200}
    cfg_path = tmp_path / "config.yaml"
    cfg_path.write_text(yaml.safe_dump(layers))
    assert main(["run", "--no-prefect", "--config", str(cfg_path)]) == 0
    first = RecordStore(ws / "promotions").head()
    assert first is not None and first["decision"] == "promoted" and first["reference"]

    day = shifted_day(1500, seed=555)
    payload = json.loads(day.drop(columns=["churned", TRUTH_COLUMN]).to_json(orient="records"))
    settings = ServingSettings.from_config(build_config(layers), environ={})
    with TestClient(create_app(settings, follow=False)) as client:
        for start in range(0, len(payload), 500):
            r = client.post("/v1/score", json={"customers": payload[start : start + 500]})
            assert r.status_code == 200
    # after the shift almost nobody churns: contacts are wasted, realised profit decays
    rng = np.random.default_rng(7)
    outcomes = pd.DataFrame(
        {
            "customer_id": day["customer_id"],
            "churned": np.where(rng.random(len(day)) < 0.03, "yes", "no"),
            "observed_at": "2026-11-30T00:00:00Z",
        }
    )
    labels = tmp_path / "outcomes.csv"
    outcomes.to_csv(labels, index=False)
    assert main(["outcomes", "--config", str(cfg_path), "--input", str(labels)]) == 0
    capsys.readouterr()

    assert main(["monitor", "--no-prefect", "--config", str(cfg_path)]) == 0
    printed = capsys.readouterr().out
    assert "monitoring: ALERT" in printed
    store = RecordStore(ws / "promotions")
    records = store.records()
    monitoring = next(r for r in records if r["kind"] == "monitoring")
    reasons = " ".join(monitoring["reasons"])
    assert "drift in monthly_charges_usd" in reasons and "drift in tenure_months" in reasons
    assert "realised profit" in reasons
    assert monitoring["champion"] == first["champion"]  # monitoring never changes it
    drift = {r["feature"]: r for r in monitoring["monitoring"]["feature_drift"]}
    assert drift["monthly_charges_usd"]["alert"] and not drift["age_years"]["alert"]
    out = monitoring["monitoring"]["outcomes"]
    assert out["rows"] == 1500 and out["precision"] < 0.1
    retrain = records[-1]
    assert (
        retrain["kind"] == "promotion"
        and retrain["trigger"]["monitoring_record"] == (monitoring["record_id"])
    )
    assert "drift" in retrain["trigger"]["reason"]
    assert store.verify().ok


def test_outcomes_bad_file_exits_2(tmp_path: Path, capsys) -> None:
    bad = tmp_path / "o.csv"
    pd.DataFrame(
        {"customer_id": ["A"], "churned": ["perhaps"], "observed_at": ["yesterday"]}
    ).to_csv(bad, index=False)
    cfg = tmp_path / "c.yaml"
    cfg.write_text(
        yaml.safe_dump(
            {"paths": {"workspace": str(tmp_path / "ws")}, "data": {"negative_label": "no"}}
        )
    )
    assert main(["outcomes", "--config", str(cfg), "--input", str(bad)]) == 2
    err = capsys.readouterr().err
    assert "churned: values outside" in err and "observed_at" in err
