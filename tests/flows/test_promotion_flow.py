"""The churn-promotion flow under a Prefect test API, and the CLI around it."""

from __future__ import annotations

import json
from pathlib import Path
from uuid import UUID

import pytest
import yaml

from configs.paths import Workspace
from configs.settings import build_config
from flows.cli import main
from tasks.gates import GATE_IDS
from tasks.records import RecordStore

from ..conftest import FIXTURES, small_layers

pytestmark = pytest.mark.slow


def _artifact_keys(flow_run_id: str) -> set[str]:
    import asyncio

    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId

    async def read() -> set[str]:
        async with get_client() as client:
            arts = await client.read_artifacts(
                artifact_filter=ArtifactFilter(
                    flow_run_id=ArtifactFilterFlowRunId(any_=[flow_run_id])
                )
            )
            return {a.key for a in arts if a.key}

    return asyncio.run(read())


def _flow_run_state(flow_run_id: str) -> str:
    import asyncio

    from prefect.client.orchestration import get_client

    async def read() -> str:
        async with get_client() as client:
            run = await client.read_flow_run(UUID(flow_run_id))
            return str(run.state_type.value if run.state_type else "")

    return asyncio.run(read())


def test_promotion_flow_two_runs_promote_then_compare(prefect_harness, workspace: Path) -> None:
    from mlflow import MlflowClient

    from flows.promotion import run_prefect

    cfg = build_config(small_layers(workspace))
    first = run_prefect(cfg)
    rec1 = first.outcome.record
    assert rec1["decision"] == "promoted", rec1["reasons"]
    assert [g["gate"] for g in rec1["gates"]] == list(GATE_IDS)
    assert rec1["flow_run_id"] and _flow_run_state(rec1["flow_run_id"]) == "COMPLETED"
    keys = _artifact_keys(rec1["flow_run_id"])
    assert {f"gate-{g}" for g in GATE_IDS} | {"promotion-decision", "data-summary"} <= keys
    ws = Workspace.from_setting(str(workspace))
    client = MlflowClient(tracking_uri=ws.mlflow_tracking_uri)
    alias = client.get_model_version_by_alias(cfg.promotion.model_name, "champion")
    assert str(alias.version) == rec1["champion"]["model_version"]
    assert (ws.root / rec1["champion"]["artifact_path"]).is_file()

    second = run_prefect(cfg)
    rec2 = second.outcome.record
    champ_gate = next(g for g in rec2["gates"] if g["gate"] == "champion")
    assert champ_gate["evidence"]["champion_version"] == rec1["champion"]["model_version"]
    assert rec2["previous_champion"]["model_version"] == rec1["champion"]["model_version"]
    assert rec2["previous_record_id"] == rec1["record_id"]
    report = RecordStore(ws.promotions, ws.promotions_lock).verify()
    assert report.ok and report.records == 2
    if rec2["decision"] == "promoted":
        prev = client.get_model_version_by_alias(cfg.promotion.model_name, "previous")
        assert str(prev.version) == rec1["champion"]["model_version"]


def test_promotion_flow_rejection_keeps_champion(prefect_harness, workspace: Path) -> None:
    from flows.promotion import run_prefect

    cfg = build_config(small_layers(workspace))
    first = run_prefect(cfg).outcome.record
    assert first["decision"] == "promoted"
    strict = build_config(
        small_layers(workspace, gates={"business": {"min_profit_share": 0.99}})
    )
    second = run_prefect(strict).outcome.record
    assert second["decision"] == "rejected"
    assert any(r.startswith("business failed") for r in second["reasons"])
    assert second["champion"] == first["champion"]
    assert second["model_version"] is None


def test_promotion_flow_sampled_train_records_the_sample_check(
    prefect_harness, workspace: Path
) -> None:
    from flows.promotion import run_prefect
    from tasks.record_models import PromotionRecord, parse_record

    scale = {"train_sample_above_rows": 5_000, "train_sample_rows": 4_000}
    rec = run_prefect(build_config(small_layers(workspace, scale=scale))).outcome.record
    train = rec["data"]["plan"]["train"]
    assert train["sampled"] and train["rows_used"] == 4_000
    check = train["sample_check"]
    assert check["candidate"] == rec["candidate"]
    rows_full = rec["candidates"][rec["candidate"]]["train_rows"]
    assert (check["rows_full"], check["rows_half"]) == (rows_full, rows_full // 2)
    assert check["selection_rows"] == rec["data"]["split_rows"]["selection"]
    assert check["gain_nats"] == pytest.approx(check["log_loss_half"] - check["log_loss_full"])
    assert isinstance(check["climbing"], bool) and check["sentence"]
    climbing_note = any("scale.train_sample_rows" in n for n in rec["notes"])
    assert climbing_note == check["climbing"]
    typed = parse_record(rec)
    assert isinstance(typed, PromotionRecord)
    assert typed.data is not None and typed.data.plan is not None
    sample_check = typed.data.plan["train"].sample_check
    assert sample_check is not None and sample_check.rows_half == rows_full // 2
    assert "sample_check" not in rec["data"]["plan"]["test"]
    assert "train-sample-check" in _artifact_keys(rec["flow_run_id"])


def _write_config(tmp_path: Path, layers: dict) -> Path:
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(layers))
    return path


def test_cli_broken_file_exits_2_with_report_and_writes_nothing_else(
    tmp_path: Path, workspace: Path, capsys
) -> None:
    layers = {
        "paths": {"workspace": str(workspace)},
        "data": {
            "source": "file",
            "path": str(FIXTURES / "broken.csv"),
            "id_column": "customerID",
            "label_column": "Churn",
            "positive_label": "Yes",
        },
    }
    code = main(["run", "--no-prefect", "--config", str(_write_config(tmp_path, layers))])
    err = capsys.readouterr().err
    assert code == 2
    assert "customerID" in err and "MonthlyCharges" in err and "Churn" in err
    reports = list(workspace.glob("reports/*/validation.json"))
    assert len(reports) == 1
    body = json.loads(reports[0].read_text())
    assert {i["column"] for i in body["issues"]} == {"customerID", "Churn", "MonthlyCharges"}
    written = {p.relative_to(workspace).parts[0] for p in workspace.rglob("*") if p.is_file()}
    assert written <= {"reports", "prefect"}


def test_cli_bad_config_key_exits_2(capsys) -> None:
    assert main(["run", "--set", "economics.contact_cost=3"]) == 2
    assert "economics.contact_cost: unknown key" in capsys.readouterr().err


def test_cli_fail_on_reject_exits_3(tmp_path: Path, workspace: Path, capsys) -> None:
    layers = small_layers(
        workspace, rows=5000, gates={"business": {"min_profit_share": 0.99}}
    )
    path = _write_config(tmp_path, layers)
    assert main(["run", "--no-prefect", "--config", str(path), "--fail-on-reject"]) == 3
    out = capsys.readouterr().out
    assert "decision: REJECTED" in out and "business" in out
    assert main(["verify", "--config", str(path)]) == 0


def test_cli_telco_file_reaches_a_decision(tmp_path: Path, telco_layers, capsys) -> None:
    path = _write_config(tmp_path, telco_layers)
    assert main(["run", "--no-prefect", "--config", str(path)]) == 0
    assert "decision:" in capsys.readouterr().out


def test_cli_parser_knows_every_command() -> None:
    from flows.cli import build_parser

    parser = build_parser()
    assert parser.parse_args(["run", "--as-challenger", "--no-prefect"]).as_challenger
    for cmd in (
        ["history"],
        ["show", "1"],
        ["diff", "1", "2"],
        ["replay", "1"],
        ["verify"],
        ["policy-update"],
        ["monitor"],
        ["outcomes", "--input", "x.csv"],
        ["promote-challenger"],
        ["serve"],
        ["score", "--input", "a", "--output", "b"],
    ):
        assert parser.parse_args(cmd).command == cmd[0]
