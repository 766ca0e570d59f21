"""Privacy and secrets (issue 14): decision file modes, age retention, hashed/none inputs and
the outcome join on hashed ids, and redaction of
passwords and tokens in the config records store and `bayespilot config` prints."""

from __future__ import annotations

import hashlib
import json
import os
import stat
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from fastapi.testclient import TestClient

from configs.paths import Workspace
from configs.settings import REDACTED, BayesPilotConfig, build_config, redact_secrets, redact_uri
from flows.cli import main as cli_main
from flows.monitoring import id_hasher
from serving.main import create_app
from serving.predlog import InputPolicy, hash_id, log_key
from serving.settings import ServingSettings
from tasks.decision_store import FIXED_COLUMNS, DecisionWriter, read_decisions
from tasks.monitor import outcome_id_map
from tasks.records import RecordStore

from ..conftest import small_layers
from .conftest import customer, serving_config

DAY_S = 86_400


def _mode(p: Path) -> int:
    return stat.S_IMODE(p.stat().st_mode)


def _settings(ws: Path, **serving: object) -> ServingSettings:
    return ServingSettings.from_config(serving_config(ws, **serving), environ={})


def test_decision_files_created_0600_whatever_the_umask(tmp_path: Path) -> None:
    old = os.umask(0o022)
    try:
        w = _settings(tmp_path / "ws").decision_writer("t")
        w.append_records([_decision(i) for i in range(10)])
        w.close()
    finally:
        os.umask(old)
    files = list((tmp_path / "ws" / "decisions").rglob("*.parquet"))
    assert files and {_mode(p) for p in files} == {0o600}


def test_decision_file_mode_is_configurable(tmp_path: Path) -> None:
    s = _settings(tmp_path / "ws", log_file_mode="0640")
    assert s.log_file_mode == 0o640
    w = s.decision_writer("t")
    w.append_records([_decision(0)])
    w.close()
    files = list((tmp_path / "ws" / "decisions").rglob("*.parquet"))
    assert files and {_mode(p) for p in files} == {0o640}


def test_service_start_applies_decision_retention(workspace_copy: Path) -> None:
    s = _settings(workspace_copy)
    old = DecisionWriter(s.workspace_paths.decisions, source="http", writer_id="old")
    long_ago = datetime.now(UTC) - timedelta(days=s.decisions_retention_days + 1)
    recent = datetime.now(UTC) - timedelta(days=s.decisions_retention_days - 1)
    old.append_records([_decision(0, long_ago), _decision(1, recent)])
    old.close()
    assert len(read_decisions(s.workspace_paths.decisions)) == 2
    create_app(s, follow=False)  # every worker expires old hours when it starts
    left = read_decisions(s.workspace_paths.decisions)
    assert left["request_id"].tolist() == ["r1"]


def _decision(i: int, at: datetime | None = None) -> dict[str, Any]:
    return {
        "time": at or datetime.now(UTC),
        "request_id": f"r{i}",
        "model_version": "1",
        "policy_id": "p",
        "customer_id": f"c{i}",
        "probability": 0.3,
        "action": "no_contact",
    }


def test_input_policy_hashed_and_none(tmp_path: Path) -> None:
    key = log_key(tmp_path / "serving" / "log.key")
    assert _mode(tmp_path / "serving" / "log.key") == 0o600 and len(key) == 32
    assert log_key(tmp_path / "serving" / "log.key") == key  # stable per workspace
    row = {"customer_id": "C-7", "region": "north", "tenure_months": 3.0}
    full = InputPolicy("full").apply(row, "customer_id")
    hashed = InputPolicy("hashed", key).apply(row, "customer_id")
    none = InputPolicy("none", key).apply(row, "customer_id")
    assert full == row
    assert set(hashed) == set(row) and all(v.startswith("hmac:") for v in hashed.values())
    assert "north" not in json.dumps(hashed) and "C-7" not in json.dumps(hashed)
    assert none == {"customer_id": hash_id(key, "C-7")} == {"customer_id": hashed["customer_id"]}
    kept = InputPolicy("none", key).apply(row, "customer_id", "tenure_months")
    assert kept == {**none, "tenure_months": 3.0}  # the customer value column stays raw
    assert hash_id(key, 17) == hash_id(key, "17")  # ids join whatever their JSON type
    assert hash_id(b"another workspace key" * 2, "C-7") != hash_id(key, "C-7")


@pytest.mark.parametrize("mode", ["hashed", "none"])
def test_service_logs_no_raw_inputs_when_hashed_or_none(workspace_copy: Path, mode: str) -> None:
    s = _settings(workspace_copy, log_inputs=mode)
    with TestClient(create_app(s, follow=False)) as c:
        r = c.post("/v1/score", json=customer(customer_id="Alice-4711", region="south"))
        assert r.status_code == 200 and r.json()["customer_id"] == "Alice-4711"
    rows = read_decisions(s.workspace_paths.decisions)
    assert len(rows) == 1
    text = rows.astype(str).to_json()
    assert "Alice-4711" not in text and "south" not in text
    key = log_key(Workspace(workspace_copy).log_key)
    line = rows.iloc[0]
    assert line["customer_id"] == hash_id(key, "Alice-4711")
    inputs = [c for c in rows.columns if c not in {*FIXED_COLUMNS, "tier", "latency_ms"}]
    assert line["monthly_charges_usd"] == customer()["monthly_charges_usd"]  # stays raw
    inputs.remove("monthly_charges_usd")
    if mode == "none":
        assert inputs == []
    else:
        assert set(inputs) == set(customer()) - {"monthly_charges_usd", "customer_id"}
        assert all(str(line[c]).startswith("hmac:") for c in inputs)
    files = list(s.workspace_paths.decisions.rglob("*.parquet"))
    assert files and {_mode(p) for p in files} == {0o600}


def test_service_full_inputs_logged_0600(workspace_copy: Path) -> None:
    s = _settings(workspace_copy)
    with TestClient(create_app(s, follow=False)) as c:
        assert c.post("/v1/score", json=customer(customer_id="Bob")).status_code == 200
    line = read_decisions(s.workspace_paths.decisions).iloc[-1]
    assert line["customer_id"] == "Bob" and line["region"] == customer()["region"]
    files = list(s.workspace_paths.decisions.rglob("*.parquet"))
    assert files and {_mode(p) for p in files} == {0o600}


def test_monitoring_joins_outcomes_on_hashed_ids(tmp_path: Path) -> None:
    ws = Workspace(tmp_path)
    assert id_hasher(ws) is None  # no key: nothing was ever logged hashed
    key = log_key(ws.log_key)
    logged = ["A", hash_id(key, "B"), hash_id(key, "17")]  # full, hashed, none
    outcomes = pd.Series(["A", "B", 17, "C"])
    ids = outcome_id_map(outcomes, id_hasher(ws))
    assert [ids.get(x) for x in logged] == ["A", "B", "17"]  # each logged id joins
    assert "C" in ids and hash_id(key, "C") in ids  # C was not logged: nothing joins it
    assert outcome_id_map(outcomes) == {"A": "A", "B": "B", "17": "17", "C": "C"}


# ------------------------------------------------------------------ secrets
def test_redact_uri_masks_passwords_and_secret_query_values() -> None:
    assert (
        redact_uri("postgresql+psycopg2://mlflow:hunter2@db:5432/mlflow")
        == f"postgresql+psycopg2://mlflow:{REDACTED}@db:5432/mlflow"
    )
    assert redact_uri("https://h/api?token=abc&x=1") == f"https://h/api?token={REDACTED}&x=1"
    for clean in ("sqlite:////tmp/mlflow.db", "http://user@host/x", "/plain/path"):
        assert redact_uri(clean) == clean


def test_redact_secrets_masks_secret_keys_not_env_names() -> None:
    tree: dict[str, Any] = {
        "serving": {"admin_token": "t0k3n", "admin_token_env": "BAYESPILOT_ADMIN_TOKEN"},
        "db": {"password": "pw", "url": "postgresql://u:pw@h/d"},
        "list": ["mysql://a:b@c/d", 3],
    }
    out = redact_secrets(tree)
    assert out["serving"] == {"admin_token": REDACTED, "admin_token_env": "BAYESPILOT_ADMIN_TOKEN"}
    assert out["db"] == {"password": REDACTED, "url": f"postgresql://u:{REDACTED}@h/d"}
    assert out["list"] == [f"mysql://a:{REDACTED}@c/d", 3]
    assert tree["db"]["password"] == "pw"  # a copy


def test_config_redacted_and_hashed_in_redacted_form() -> None:
    def cfg(password: str) -> BayesPilotConfig:
        uri = f"postgresql+psycopg2://mlflow:{password}@127.0.0.1:5432/mlflow"
        return build_config({"backends": {"mlflow_tracking_uri": uri, "prefect_database_url": uri}})

    a, b = cfg("hunter2"), cfg("other-secret")
    assert "hunter2@" in str(a.backends.mlflow_tracking_uri)
    assert "hunter2" not in json.dumps(a.redacted())
    assert "hunter2" not in a.canonical_json()
    assert a.sha256() == b.sha256()


def test_cli_config_prints_no_password(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    monkeypatch.setenv("BAYESPILOT__PATHS__WORKSPACE", str(tmp_path / "ws"))
    monkeypatch.setenv(
        "BAYESPILOT__BACKENDS__MLFLOW_TRACKING_URI", "postgresql://u:hunter2@127.0.0.1/m"
    )
    assert cli_main(["config"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["backends"]["mlflow_tracking_uri"] == f"postgresql://u:{REDACTED}@127.0.0.1/m"


def test_promotion_record_stores_the_redacted_config(promoted_workspace: Path) -> None:
    """Records hold ``config.redacted()``, and ``config_sha256`` hashes exactly that."""

    cfg = build_config({"paths": {"workspace": str(promoted_workspace)}})
    rec = next(r for r in RecordStore.for_config(cfg).records() if r.get("config"))
    stored = rec["config"]
    assert redact_secrets(stored) == stored
    canonical = json.dumps(stored, sort_keys=True, separators=(",", ":"))
    assert hashlib.sha256(canonical.encode()).hexdigest() == rec["config_sha256"]


def test_monitoring_on_hashed_logs_says_input_drift_unmeasurable_and_joins(
    workspace_copy: Path,
) -> None:
    from flows.monitoring import ingest_outcomes, run_monitoring

    layers = small_layers(workspace_copy)
    layers["serving"] = {"log_inputs": "none"}
    layers["monitoring"] = {"min_rows": 10}
    config = build_config(layers)
    s = ServingSettings.from_config(config, environ={})
    ids = [f"P{i}" for i in range(30)]
    with TestClient(create_app(s, follow=False)) as c:
        batch = {"customers": [customer(customer_id=i, tenure_months=n) for n, i in enumerate(ids)]}
        assert c.post("/v1/score", json=batch).status_code == 200
    labels = pd.DataFrame(
        {
            "customer_id": ids,
            "churned": ["yes" if n % 3 == 0 else "no" for n in range(30)],
            "observed_at": "2026-12-01T00:00:00Z",
        }
    )
    ingest_outcomes(labels, ws=Workspace(workspace_copy), config=config)
    summary = run_monitoring(config, use_prefect=False).record["monitoring"]
    assert "input drift cannot be measured" in summary["input_privacy"]
    assert summary["feature_drift"] == [] or all(
        r["feature"] in ("score", "contact_rate") for r in summary["feature_drift"]
    )
    assert summary["prediction_drift"]  # the score and contact rate are still tested
    assert summary["outcomes"]["rows"] == 30  # joined on the hashed ids
