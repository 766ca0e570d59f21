"""The HTTP service through TestClient: every route, refusals, reload, rollback."""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from fastapi.testclient import TestClient

from serving.loader import load_champion
from serving.main import create_app
from serving.settings import ServingSettings
from tasks.decision_store import read_decisions
from tasks.records import RecordStore, load_verified_model
from tasks.select_policy import Policy, decide

from .conftest import customer, serving_config

AUTH = {"Authorization": "Bearer s3cret"}
JSON = {"Content-Type": "application/json"}


def client_for(settings: ServingSettings, follow: bool = False) -> TestClient:
    return TestClient(create_app(settings, follow=follow))


def test_service_scores_one_customer_with_policy(settings: ServingSettings) -> None:
    with client_for(settings) as c:
        r = c.post("/v1/score", json=customer())
        assert r.status_code == 200, r.text
        body = r.json()
    champ = load_champion(settings)
    model = load_verified_model(settings.workspace, champ.block)
    frame = pd.DataFrame([customer()])
    p = model.predict_proba(frame[list(champ.scorer.features)])[:, 1][0]
    assert body["churn_probability"] == pytest.approx(p, abs=1e-9)
    policy = Policy(champ.policy.document)
    d = decide(
        np.array([p]), policy.values(frame["monthly_charges_usd"].to_numpy(), 1), policy.document
    )
    assert body["expected_value_usd"] == pytest.approx(d.expected_value_usd[0], abs=1e-3)
    assert body["action"] == ("contact" if d.contact[0] else "no_contact")
    assert body["tier"] == d.tier[0]
    assert body["model_version"] == "2" and body["policy_id"] == champ.policy_id
    assert body["customer_id"] == "C-1" and body["warnings"] == []


def test_service_batch_and_warnings(settings: ServingSettings) -> None:
    rows = [customer(customer_id=f"C-{i}", tenure_months=i) for i in range(5)]
    rows[1]["usage_gb_30d"] = None
    rows[2]["region"] = "atlantis"
    with client_for(settings) as c:
        r = c.post("/v1/score", json={"customers": rows})
    assert r.status_code == 200
    results = r.json()["results"]
    assert [x["customer_id"] for x in results] == [f"C-{i}" for i in range(5)]
    assert results[1]["warnings"] == ["usage_gb_30d: missing value imputed"]
    assert results[2]["warnings"] == ["region: unknown category ignored"]
    assert {x["action"] for x in results} <= {"contact", "no_contact"}


def test_service_invalid_input_422_names_fields(settings: ServingSettings) -> None:
    bad = customer(tenure_months="lots", monthly_charges_usd=-5, unexpected=1)
    del bad["customer_id"]
    with client_for(settings) as c:
        r = c.post("/v1/score", json={"customers": [customer(), bad]})
        assert r.status_code == 422
        errors = {e["field"]: e for e in r.json()["error"]["fields"]}
        assert errors["customers[1].tenure_months"]["expected"] == "number"
        assert errors["customers[1].monthly_charges_usd"]["expected"] == "a number >= 0"
        assert errors["customers[1].customer_id"]["expected"] == "a value"
        assert "customers[1].unexpected" in errors
        bad_json = c.post("/v1/score", content=b"{not json", headers=JSON)
        assert bad_json.status_code == 400 and bad_json.json()["error"]["code"] == "invalid_json"


def test_service_oversized_body_and_batch_413(workspace_copy: Path) -> None:
    s = ServingSettings.from_config(
        serving_config(workspace_copy, max_body_bytes=4096, max_batch_customers=3), environ={}
    )
    with client_for(s) as c:
        big = {"customers": [customer(customer_id=f"C{i}") for i in range(40)]}
        assert c.post("/v1/score", json=big).status_code == 413
        four = {"customers": [customer(customer_id=f"C{i}") for i in range(4)]}
        r = c.post("/v1/score", json=four)
        assert r.status_code == 413 and "limit 3" in r.text


def test_model_card_health_ready_metrics(settings: ServingSettings) -> None:
    with client_for(settings) as c:
        card = c.get("/v1/model").json()
        assert card["model_version"] == "2" and card["decision"] == "promoted"
        assert [g["gate"] for g in card["gates"]][0] == "baseline"
        assert all(g["passed"] for g in card["gates"])
        assert card["policy"]["cutoff_expected_value_usd"] == 0
        assert card["calibration_method"] in ("none", "sigmoid", "segment_sigmoid", "isotonic")
        assert set(card["data"]["split_hashes"]) == {"train", "selection", "test"}
        assert c.get("/healthz").json() == {"status": "alive"}
        ready = c.get("/readyz")
        assert ready.status_code == 200 and ready.json()["ready"] is True
        c.post("/v1/score", json=customer())
        text = c.get("/metrics").text
        assert 'bayespilot_requests_total{route="/v1/score",status="200"} 1.0' in text
        assert "bayespilot_request_latency_seconds_bucket" in text
        assert 'bayespilot_model_info{model_name="churn-risk",model_version="2"' in text
        assert "bayespilot_predictions_total" in text


def _assert_not_ready(settings: ServingSettings, fragment: str) -> None:
    with client_for(settings) as c:
        r = c.get("/readyz")
        assert r.status_code == 503
        assert fragment in (r.json()["last_error"] or "")
        assert c.post("/v1/score", json=customer()).status_code == 503
        assert c.get("/healthz").status_code == 200


def test_refuses_without_champion(tmp_path: Path) -> None:
    s = ServingSettings.from_config(serving_config(tmp_path / "empty"), environ={})
    _assert_not_ready(s, "no promotion record yet")


def test_refuses_tampered_artifact(settings: ServingSettings) -> None:
    champ = RecordStore(settings.workspace / "promotions").head()["champion"]  # type: ignore[index]
    art = settings.workspace / champ["artifact_path"]
    art.write_bytes(art.read_bytes() + b"\0")
    _assert_not_ready(settings, "does not match the record")


def test_refuses_rejected_only_history(tmp_path: Path) -> None:
    ws = tmp_path / "ws"
    store = RecordStore(ws / "promotions", ws / "promotions.lock")
    store.append(
        lambda h: {"kind": "promotion", "decision": "rejected", "champion": None, "gates": []}
    )
    s = ServingSettings.from_config(serving_config(ws), environ={})
    _assert_not_ready(s, "no champion")


def test_refuses_broken_chain(settings: ServingSettings) -> None:
    first = sorted((settings.workspace / "promotions").glob("*.json"))[0]
    rec = json.loads(first.read_text())
    rec["reasons"] = ["edited afterwards"]
    first.write_text(json.dumps(rec))
    _assert_not_ready(settings, "record chain broken")


def test_refuses_registry_alias_mismatch(settings: ServingSettings) -> None:
    from mlflow import MlflowClient

    MlflowClient(tracking_uri=settings.tracking_uri).set_registered_model_alias(
        settings.model_name, "champion", "1"
    )
    _assert_not_ready(settings, "alias 'champion' points at v1")


def test_admin_routes_need_token(workspace_copy: Path, settings: ServingSettings) -> None:
    no_token = ServingSettings.from_config(serving_config(workspace_copy), environ={})
    with client_for(no_token) as c:
        assert c.post("/v1/admin/reload").status_code == 403
    with client_for(settings) as c:
        assert c.post("/v1/admin/reload").status_code == 401
        assert c.post("/v1/admin/reload", headers={"Authorization": "Bearer no"}).status_code == 401
        r = c.post("/v1/admin/reload", headers=AUTH)
        assert r.status_code == 200 and r.json()["model_version"] == "2"


def test_rollback_moves_alias_appends_record_and_swaps(settings: ServingSettings) -> None:
    from mlflow import MlflowClient

    with client_for(settings) as c:
        r = c.post(
            "/v1/admin/rollback",
            headers=AUTH,
            json={"reason": "bad week in prod", "requested_by": "oncall-ana"},
        )
        assert r.status_code == 200, r.text
        assert r.json()["model_version"] == "1"
        assert c.post("/v1/score", json=customer()).json()["model_version"] == "1"
    store = RecordStore(settings.workspace / "promotions")
    head = store.head()
    assert head is not None and head["kind"] == "rollback"
    assert head["requested_by"] == "oncall-ana" and head["reasons"] == ["bad week in prod"]
    assert store.verify().ok
    mv = MlflowClient(tracking_uri=settings.tracking_uri).get_model_version_by_alias(
        settings.model_name, "champion"
    )
    assert str(mv.version) == "1"


def test_follows_head_and_keeps_verified_model_on_bad_head(settings: ServingSettings) -> None:
    with client_for(settings, follow=True) as c:
        assert c.get("/readyz").json()["model_version"] == "2"
        store = RecordStore(
            settings.workspace / "promotions", settings.workspace / "promotions.lock"
        )
        head = store.head()
        assert head is not None
        bogus = {**head["champion"], "model_version": "99", "artifact_sha256": "0" * 64}
        store.append(
            lambda h: {
                "kind": "promotion",
                "decision": "promoted",
                "champion": bogus,
                "gates": head["gates"],
            }
        )
        deadline = time.time() + 10
        while time.time() < deadline and not c.get("/readyz").json()["last_error"]:
            time.sleep(0.1)
        ready = c.get("/readyz").json()
        assert ready["ready"] and ready["model_version"] == "2"
        assert ready["last_error"]
        assert c.post("/v1/score", json=customer()).json()["model_version"] == "2"


def test_head_naming_same_champion_moves_head_without_reload(settings: ServingSettings) -> None:
    app = create_app(settings, follow=False)
    state = app.state.serving
    with TestClient(app) as c:
        before = state.current
        store = RecordStore(
            settings.workspace / "promotions", settings.workspace / "promotions.lock"
        )
        _, rec = store.append(
            lambda h: {"kind": "monitoring", "decision": "ok", "champion": (h or {})["champion"]}
        )
        assert state.check() is False
        after = state.current
        assert after.champion.scorer is before.champion.scorer  # nothing unpickled again
        assert after.loaded_at == before.loaded_at
        ready = c.get("/readyz").json()
        assert ready["head_record_id"] == rec["record_id"] and ready["model_version"] == "2"
        assert c.get("/v1/model").json()["head_kind"] == "monitoring"
        # a head naming another model is loaded
        from serving.admin import rollback

        rollback(settings, reason="test the other branch", requested_by="pytest")
        assert state.check() is True
        assert state.current.champion.model_version == "1"
        assert c.get("/readyz").json()["model_version"] == "1"


def test_decision_store_rows_per_customer(settings: ServingSettings) -> None:
    with client_for(settings) as c:
        c.post(
            "/v1/score",
            json={"customers": [customer(customer_id="A"), customer(customer_id="B")]},
            headers={"x-request-id": "req-42"},
        )
    # the app's shutdown wrote the worker's buffered decisions
    rows = read_decisions(settings.workspace_paths.decisions)
    assert rows["customer_id"].tolist() == ["A", "B"]
    assert set(rows["request_id"]) == {"req-42"} and set(rows["source"]) == {"http"}
    assert {"time", "model_version", "policy_id", "probability", "action", "latency_ms"} <= set(
        rows.columns
    )
    assert (rows["would_contact"] == (rows["action"] == "contact")).all()
    assert rows["tenure_months"].notna().all()  # the raw inputs (serving.log_inputs: full)


def test_service_explain_flag_gives_reasons(settings: ServingSettings) -> None:
    with client_for(settings) as c:
        plain = c.post("/v1/score", json=customer()).json()
        explained = c.post("/v1/score?explain=true", json=customer()).json()
    assert "reasons" not in plain
    reasons = explained["reasons"]
    assert len(reasons) == 3
    effects = [abs(r["effect_on_probability"]) for r in reasons]
    assert effects == sorted(effects, reverse=True) and effects[0] > 0.01
    assert explained["churn_probability"] == plain["churn_probability"]
    assert {r["feature"] for r in reasons} <= set(customer())


def test_loader_refuses_unchecked_fast_scorer() -> None:
    from serving.loader import NotReady, _check_gates
    from tasks.record_models import PromotionRecord

    def record(gates: list[dict]) -> PromotionRecord:
        unit = {"metric": "m", "value": None, "interval": None, "threshold": None}
        return PromotionRecord.model_validate(
            {
                "sequence": 1,
                "record_id": "a" * 64,
                "previous_record_id": None,
                "kind": "promotion",
                "decision": "promoted",
                "gates": [{**unit, **g} for g in gates],
            }
        )

    gates = [
        {"gate": "technical", "passed": True, "evidence": {"extra": {}}},
        {"gate": "baseline", "passed": True, "evidence": {}},
    ]
    with pytest.raises(NotReady, match="no passing fast-scorer exactness check"):
        _check_gates(record(gates))
    gates[0]["evidence"] = {"extra": {"fast_scorer": {"passed": True}}}
    _check_gates(record(gates))
    gates[1]["passed"] = False
    with pytest.raises(NotReady, match="did not pass every gate"):
        _check_gates(record(gates))
