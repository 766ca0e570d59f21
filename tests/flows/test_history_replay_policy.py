"""Decision history, diff, replay and the policy-only update, through the CLI."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
import yaml
from fastapi.testclient import TestClient

from configs.settings import build_config
from flows.cli import main
from serving.main import create_app
from serving.settings import ServingSettings
from tasks.records import RecordStore

from ..conftest import small_layers

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def promoted(tmp_path_factory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("hist")
    ws = root / "ws"
    cfg = root / "config.yaml"
    cfg.write_text(yaml.safe_dump(small_layers(ws)))
    assert main(["run", "--no-prefect", "--config", str(cfg)]) == 0
    return ws, cfg


def test_history_show_diff(promoted, capsys) -> None:
    ws, cfg = promoted
    assert main(["history", "--config", str(cfg), "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert rows[0]["decision"] == "promoted" and rows[0]["failed_gates"] == []
    assert main(["show", "--config", str(cfg), "1", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["sequence"] == 1
    assert main(["show", "--config", str(cfg), "1"]) == 0
    summary = capsys.readouterr().out
    assert "PROMOTED" in summary and "economics: contact cost" in summary
    assert "business" in summary and len(summary) < 20000  # a summary, not the record
    assert main(["show", "--config", str(cfg), "999"]) == 2
    capsys.readouterr()
    assert main(["diff", "--config", str(cfg), "1", "1"]) == 0
    assert "no material change" in capsys.readouterr().out


def test_replay_agrees_and_refuses_changed_data(promoted, tmp_path: Path, capsys) -> None:
    ws, cfg = promoted
    assert main(["replay", "--config", str(cfg), "1"]) == 0
    out = capsys.readouterr().out
    assert "replay AGREES" in out and "technical" in out and "excluded" in out
    # a record whose data no longer matches: edit the config to a different seed copy
    rec = RecordStore(ws / "promotions").find("1")
    rec["config"]["synthetic"]["seed"] = 8
    from configs.paths import Workspace
    from flows.promotion import DataMismatch
    from flows.replay import replay

    with pytest.raises(DataMismatch, match="does not match"):
        replay(rec, workspace=Workspace(ws))


def test_policy_update_appends_record_and_service_follows(promoted, capsys) -> None:
    ws, cfg = promoted
    before = RecordStore(ws / "promotions").head()
    assert before is not None
    code = main(
        [
            "policy-update",
            "--no-prefect",
            "--config",
            str(cfg),
            "--set",
            "economics.contact_cost_usd=20",
        ]
    )
    assert code == 0
    out = capsys.readouterr().out
    assert "POLICY-UPDATED" in out
    head = RecordStore(ws / "promotions").head()
    assert head is not None and head["kind"] == "policy-update"
    assert head["champion"]["model_version"] == before["champion"]["model_version"]
    assert head["champion"]["policy_id"] != before["champion"]["policy_id"]
    assert [g["gate"] for g in head["gates"]] == ["business", "threshold", "segments", "error-cost"]
    settings = ServingSettings.from_config(
        build_config({"paths": {"workspace": str(ws)}}), environ={}
    )
    with TestClient(create_app(settings, follow=False)) as c:
        card = c.get("/v1/model").json()
        assert card["policy_id"] == head["champion"]["policy_id"]
        assert card["policy"]["economics"]["contact_cost_usd"] == 20


def test_policy_update_rejected_keeps_policy(promoted, capsys) -> None:
    ws, cfg = promoted
    before = RecordStore(ws / "promotions").head()
    assert before is not None
    code = main(
        [
            "policy-update",
            "--no-prefect",
            "--config",
            str(cfg),
            "--fail-on-reject",
            "--set",
            "economics.contact_cost_usd=200",
        ]
    )
    assert code == 3
    head = RecordStore(ws / "promotions").head()
    assert head is not None and head["decision"] == "rejected"
    assert head["champion"] == before["champion"]
    rows = pd.DataFrame(json.loads(json.dumps(head["gates"])))
    assert not rows["passed"].all()
