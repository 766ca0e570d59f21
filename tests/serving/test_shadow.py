"""A shadow challenger: registered beside the champion, scored after each response, logged,
and compared by the monitoring flow."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from configs.settings import build_config
from flows.monitoring import run_monitoring
from flows.promotion import run_direct
from serving.main import create_app
from serving.settings import ServingSettings
from tasks.records import RecordStore

from ..conftest import small_layers
from .conftest import customer

pytestmark = pytest.mark.slow


def test_shadow_challenger_scored_logged_and_compared(tmp_path: Path) -> None:
    from mlflow import MlflowClient

    ws = tmp_path / "ws"
    layers = small_layers(ws, monitoring={"min_rows": 10})
    assert run_direct(build_config(layers)).outcome.decision == "promoted"
    challenger_layers = small_layers(
        ws,
        promotion={"register_as": "challenger"},
        candidates={"seed": 8},
        monitoring={"min_rows": 10},
    )
    out = run_direct(build_config(challenger_layers)).outcome
    assert out.decision == "challenger", out.reasons
    head = RecordStore(ws / "promotions").head()
    assert head is not None and head["champion"]["model_version"] == "1"
    assert head["challenger"]["model_version"] == "2"
    client = MlflowClient(tracking_uri=f"sqlite:///{ws / 'mlflow.db'}")
    assert str(client.get_model_version_by_alias("churn-risk", "champion").version) == "1"
    assert str(client.get_model_version_by_alias("churn-risk", "challenger").version) == "2"

    settings = ServingSettings.from_config(build_config(layers), environ={})
    rows = [
        customer(customer_id=f"S{i}", tenure_months=i, monthly_charges_usd=40.0 + i)
        for i in range(40)
    ]
    with TestClient(create_app(settings, follow=False)) as c:
        assert c.get("/readyz").json()["challenger_version"] == "2"
        r = c.post("/v1/score", json={"customers": rows})
        assert r.status_code == 200
        assert {x["model_version"] for x in r.json()["results"]} == {"1"}
    lines = [json.loads(x) for x in settings.prediction_log.read_text().splitlines()]
    shadow = [x for x in lines if x.get("role") == "challenger"]
    assert len(shadow) == 40 and {x["model_version"] for x in shadow} == {"2"}
    assert all(x["champion_action"] in ("contact", "no_contact") for x in shadow)

    result = run_monitoring(build_config(layers), use_prefect=False)
    comparison = result.record["monitoring"]["challenger"]
    assert comparison["shadow_predictions"] == 40
    assert 0.0 <= comparison["action_flip_rate"] <= 1.0

    # outcomes for the shadowed customers, then promotion on the shadow evidence
    import pandas as pd

    from configs.paths import Workspace
    from flows.challenger import promote_challenger
    from flows.monitoring import ingest_outcomes

    labels = pd.DataFrame(
        {
            "customer_id": [f"S{i}" for i in range(40)],
            "churned": ["yes" if i % 3 == 0 else "no" for i in range(40)],
            "observed_at": "2026-12-01T00:00:00Z",
        }
    )
    ingest_outcomes(labels, ws=Workspace(ws), config=build_config(layers))
    again = run_monitoring(build_config(layers), use_prefect=False)
    comp = again.record["monitoring"]["challenger"]
    assert comp["labelled"] == 40 and len(comp["profit_difference_interval"]) == 2
    record = promote_challenger(build_config(layers))
    gate = next(g for g in record["gates"] if g["gate"] == "champion")
    assert gate["metric"] == "shadow profit difference (USD/customer)"
    expect = comp["profit_difference_interval"][0] > -layers_margin(layers)
    assert record["decision"] == ("promoted" if expect else "rejected")
    if expect:
        assert record["champion"]["model_version"] == "2"
        assert str(client.get_model_version_by_alias("churn-risk", "champion").version) == "2"
    assert RecordStore(ws / "promotions").verify().ok


def layers_margin(layers: dict) -> float:
    return build_config(layers).gates.champion.profit_margin_usd_per_customer
