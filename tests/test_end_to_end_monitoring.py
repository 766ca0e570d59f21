"""End to end: promote, serve a day of traffic whose distribution shifts, ingest outcomes,
run monitoring: drift and decay are detected, named and recorded, and a retrain runs."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
import yaml

from flows.cli import main
from tasks.records import RecordStore

from .conftest import small_layers
from .traffic import decayed_outcomes, serve_day, shifted_day

pytestmark = pytest.mark.slow


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
    serve_day(layers, day)
    # after the shift almost nobody churns: contacts are wasted, realised profit decays
    outcomes = decayed_outcomes(day)
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
