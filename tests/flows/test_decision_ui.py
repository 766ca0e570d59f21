"""What the Prefect UI and MLflow show for a promotion run: the flow run's final state is named
after the decision, gate artifact descriptions begin with PASS or FAIL, the decision artifact
shows its plots inline and links the MLflow run, and the registered model version's source run
holds those plots and the gate evidence."""

from __future__ import annotations

from pathlib import Path

import pytest

from configs.settings import build_config
from flows.promotion import decision_state, run_prefect
from flows.reports import decision_markdown

from ..conftest import small_layers

pytestmark = pytest.mark.slow


def test_decision_state_names_the_decision_and_why() -> None:
    record = {
        "decision": "rejected",
        "sequence": 2,
        "record_id": "ab" * 32,
        "reasons": ["business failed: profit lower bound 1.2 <= 3.4 USD/customer"],
    }
    state = decision_state(record, {"decision": "rejected"})
    assert state.is_completed() and state.name == "Rejected"
    assert state.message is not None and "business failed" in state.message
    assert decision_state({**record, "decision": "challenger"}).name == "Challenger"


def test_decision_markdown_names_the_whole_test_split_evidence() -> None:
    record = {
        "decision": "promoted",
        "sequence": 1,
        "record_id": "cd" * 32,
        "run_id": "r1",
        "reasons": [],
        "gates": [],
        "data": {
            "full_test": {
                "rows": 2_000_000,
                "rows_judged": 1_000_000,
                "base_rate": 0.21,
                "mean_probability": 0.2105,
                "contact_rate": 0.31,
                "profit_per_customer_usd": 6.2,
                "profit_interval_usd": [6.1, 6.3],
                "confidence": 0.95,
                "ece": 0.004,
                "calibration_bins": 10,
                "sample_profit_per_customer_usd": 6.25,
                "sample_inside_interval": True,
            }
        },
    }
    text = decision_markdown(record, {})
    assert "## The whole test split (2,000,000 rows; the gates judged 1,000,000)" in text
    assert "the sample represents the split" in text
    outside = {**record["data"]["full_test"], "sample_inside_interval": False}  # type: ignore[index]
    assert "does not represent" in decision_markdown({**record, "data": {"full_test": outside}}, {})
    assert "whole test split" not in decision_markdown({**record, "data": {}}, {})


def test_decision_ui_promoted_run_state_artifacts_and_mlflow(tmp_path: Path) -> None:
    from mlflow import MlflowClient
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId

    config = build_config(small_layers(tmp_path / "ws", rows=3000))
    result = run_prefect(config)
    assert result.outcome.decision == "promoted"
    flow_run_id = result.outcome.record["flow_run_id"]
    with get_client(sync_client=True) as client:
        run = client.read_flow_run(flow_run_id)
        artifacts = client.read_artifacts(
            artifact_filter=ArtifactFilter(flow_run_id=ArtifactFilterFlowRunId(any_=[run.id]))
        )
    assert run.state is not None and run.state.is_completed()
    assert run.state.name == "Promoted"
    by_key = {a.key: a for a in artifacts}
    gates = [a for key, a in by_key.items() if key and key.startswith("gate-")]
    assert len(gates) == len(result.gates)
    assert all((a.description or "").startswith("PASS ") for a in gates)
    decision = by_key["promotion-decision"]
    assert (decision.description or "").startswith("PROMOTED")
    text = str(decision.data)
    assert "![" in text and "data:image/png;base64," in text  # plots the UI renders
    mlflow_run = result.outcome.record["mlflow_run_id"]
    assert f"MLflow run {mlflow_run}" in text

    mlflow = MlflowClient(tracking_uri=config.mlflow_uri())
    version = mlflow.get_model_version(
        config.promotion.model_name, result.outcome.record["model_version"]
    )
    assert version.run_id == mlflow_run
    plots = {Path(a.path).name for a in mlflow.list_artifacts(mlflow_run, "plots")}
    assert any(p.startswith("reliability-") and p.endswith(".png") for p in plots)
    evidence = {Path(a.path).name for a in mlflow.list_artifacts(mlflow_run, "evidence")}
    assert {"gates.json", "economics.json"} <= evidence
