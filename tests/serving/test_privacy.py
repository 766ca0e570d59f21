"""Privacy and secrets (issue 14): log file modes, age retention, hashed/none inputs and the
outcome join on hashed ids, and redaction of
passwords and tokens in the config records store and `bayespilot config` prints."""

from __future__ import annotations

import hashlib
import json
import os
import stat
import time
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from fastapi.testclient import TestClient

from configs.paths import Workspace
from configs.settings import REDACTED, BayesPilotConfig, build_config, redact_secrets, redact_uri
from flows.cli import main as cli_main
from flows.monitoring import join_ids, raw_inputs_mask
from serving.main import create_app
from serving.predlog import InputPolicy, PredictionLog, hash_id, log_key
from serving.settings import ServingSettings
from tasks.records import RecordStore

from ..conftest import small_layers
from .conftest import customer, serving_config

DAY_S = 86_400


def _mode(p: Path) -> int:
    return stat.S_IMODE(p.stat().st_mode)


def _settings(ws: Path, **serving: object) -> ServingSettings:
    return ServingSettings.from_config(serving_config(ws, **serving), environ={})


def test_predlog_files_created_0600_whatever_the_umask(tmp_path: Path) -> None:
    old = os.umask(0o022)
    try:
        log = PredictionLog(tmp_path / "predictions.jsonl", max_bytes=200, backups=2)
        for i in range(10):
            log.write([{"i": i, "pad": "x" * 60}])
    finally:
        os.umask(old)
    files = sorted(tmp_path.iterdir())
    assert {p.name for p in files} >= {
        "predictions.jsonl",
        "predictions.jsonl.1",
        "predictions.jsonl.lock",
    }
    assert {_mode(p) for p in files} == {0o600}


def test_predlog_file_mode_is_configurable_and_tightens_old_files(tmp_path: Path) -> None:
    path = tmp_path / "logs" / "predictions.jsonl"
    path.parent.mkdir()
    path.write_text("")
    path.chmod(0o644)  # a log from before the setting
    s = _settings(tmp_path / "ws", log_file_mode="0640")
    assert s.log_file_mode == 0o640
    log = s.open_log(path)
    log.write([{"a": 1}])
    assert _mode(path) == 0o640


def test_predlog_age_retention_removes_old_rotations(tmp_path: Path) -> None:
    path = tmp_path / "predictions.jsonl"
    log = PredictionLog(path, max_bytes=100, backups=5, max_age_days=7)
    for i in range(1, 4):
        path.with_name(f"predictions.jsonl.{i}").write_text("{}\n")
    old = time.time() - 10 * DAY_S
    for i in (2, 3):
        os.utime(path.with_name(f"predictions.jsonl.{i}"), (old, old))
    path.write_text("{}\n")
    os.utime(path, (old, old))  # the current file is never removed by age
    assert {p.name for p in log.expire()} == {"predictions.jsonl.2", "predictions.jsonl.3"}
    assert path.exists() and path.with_name("predictions.jsonl.1").exists()
    # a rotation expires too: the aged .1 moves to .2 and goes; the fresh current file
    # becomes .1 and stays
    os.utime(path.with_name("predictions.jsonl.1"), (old, old))
    os.utime(path, None)
    log.write([{"pad": "y" * 200}])
    names = {p.name for p in tmp_path.iterdir()}
    assert "predictions.jsonl.1" in names and "predictions.jsonl.2" not in names


def test_predlog_no_age_limit_keeps_rotations(tmp_path: Path) -> None:
    path = tmp_path / "p.jsonl"
    rotated = path.with_name("p.jsonl.1")
    rotated.write_text("{}\n")
    os.utime(rotated, (0, 0))
    assert PredictionLog(path, max_bytes=100, backups=2, max_age_days=None).expire() == []
    assert rotated.exists()


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
    text = s.prediction_log.read_text()
    assert "Alice-4711" not in text and "south" not in text
    line = json.loads(text.splitlines()[-1])
    assert line["inputs_mode"] == mode
    key = log_key(Workspace(workspace_copy).log_key)
    assert line["inputs"]["customer_id"] == hash_id(key, "Alice-4711")
    value = line["inputs"].pop("monthly_charges_usd")  # the customer value stays raw
    assert value == customer()["monthly_charges_usd"]
    if mode == "none":
        assert set(line["inputs"]) == {"customer_id"}
    else:
        assert set(line["inputs"]) == set(customer()) - {"monthly_charges_usd"}
    assert _mode(s.prediction_log) == 0o600


def test_service_full_inputs_logged_0600(workspace_copy: Path) -> None:
    s = _settings(workspace_copy)
    with TestClient(create_app(s, follow=False)) as c:
        assert c.post("/v1/score", json=customer(customer_id="Bob")).status_code == 200
    line = json.loads(s.prediction_log.read_text().splitlines()[-1])
    assert line["inputs"]["customer_id"] == "Bob" and line["inputs_mode"] == "full"
    assert _mode(s.prediction_log) == 0o600


def test_monitoring_joins_outcomes_on_hashed_ids(tmp_path: Path) -> None:
    ws = Workspace(tmp_path)
    key = log_key(ws.log_key)
    logged = pd.DataFrame(
        {
            "customer_id": ["A", hash_id(key, "B"), hash_id(key, "17")],
            "inputs_mode": [None, "hashed", "none"],
        }
    )
    outcomes = pd.DataFrame({"customer_id": ["A", "B", "17", "C"]})
    raw = raw_inputs_mask(logged)
    assert raw.tolist() == [True, False, False]
    logged_ids, label_ids = join_ids(ws, logged, outcomes, "customer_id", raw)
    assert set(logged_ids) == set(label_ids[:3]) and label_ids[3] not in set(logged_ids)
    all_raw = logged.iloc[:1].drop(columns=["inputs_mode"])
    ids, labels = join_ids(ws, all_raw, outcomes, "customer_id", raw_inputs_mask(all_raw))
    assert ids.tolist() == ["A"] and labels.tolist() == ["A", "B", "17", "C"]


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
