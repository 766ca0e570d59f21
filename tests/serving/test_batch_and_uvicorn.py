"""Batch scoring equals the service; one real uvicorn on 127.0.0.1 scores over HTTP."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import httpx
import pandas as pd
import pytest
from fastapi.testclient import TestClient

from flows.cli import main
from serving.batch import score_file
from serving.loader import load_champion
from serving.main import create_app
from serving.settings import ServingSettings
from tasks.decision_store import DecisionWriter, count_decisions, read_decisions
from tasks.generate_data import TRUTH_COLUMN, generate_data

from ..conftest import free_port
from .conftest import customer, serving_config, start_serve


def _rows(n: int = 60) -> pd.DataFrame:
    df = generate_data(rows=n, seed=321).drop(columns=["churned", TRUTH_COLUMN])
    df.loc[2, "usage_gb_30d"] = None
    df.loc[3, "region"] = "atlantis"
    return df


@pytest.mark.parametrize("suffix", [".csv", ".parquet"])
def test_batch_scoring_equals_service(
    settings: ServingSettings, tmp_path: Path, suffix: str, capsys
) -> None:
    df = _rows()
    src = tmp_path / f"in{suffix}"
    out = tmp_path / f"out{suffix}"
    df.to_csv(src, index=False) if suffix == ".csv" else df.to_parquet(src)
    cfg = tmp_path / "c.yaml"
    cfg.write_text(f"paths: {{workspace: {settings.workspace}}}\n")
    assert main(["score", "--config", str(cfg), "--input", str(src), "--output", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "rows 60, scored 60, rejected 0" in printed and "expected profit" in printed
    batch = pd.read_csv(out) if suffix == ".csv" else pd.read_parquet(out)
    assert list(batch.columns) == [
        "customer_id",
        "churn_probability",
        "expected_value_usd",
        "action",
        "tier",
        "model_version",
        "policy_id",
        "would_contact",
        "holdout",
        "experiment_id",
    ]
    payload = json.loads(df.to_json(orient="records"))
    with TestClient(create_app(settings, follow=False)) as c:
        results = c.post("/v1/score", json={"customers": payload}).json()["results"]
    api = pd.DataFrame(results)
    assert api["customer_id"].tolist() == batch["customer_id"].tolist()
    assert (api["churn_probability"] - batch["churn_probability"]).abs().max() < 1e-12
    assert api["action"].tolist() == batch["action"].tolist()
    assert api["tier"].tolist() == batch["tier"].tolist()
    assert (api["expected_value_usd"] - batch["expected_value_usd"]).abs().max() < 1e-9


def test_batch_scoring_rejects_bad_rows_with_reason(
    settings: ServingSettings, tmp_path: Path
) -> None:
    df = _rows(30)
    df["tenure_months"] = df["tenure_months"].astype(object)
    df.loc[4, "tenure_months"] = "soon"
    df.loc[6, "monthly_charges_usd"] = -3.0
    src, out = tmp_path / "in.csv", tmp_path / "out.csv"
    df.to_csv(src, index=False)
    cfg = tmp_path / "c.yaml"
    cfg.write_text(f"paths: {{workspace: {settings.workspace}}}\n")
    assert main(["score", "--config", str(cfg), "--input", str(src), "--output", str(out)]) == 0
    scored = pd.read_csv(out)
    rejects = pd.read_csv(tmp_path / "out.rejects.csv")
    assert len(scored) == 28 and len(rejects) == 2
    reasons = dict(zip(rejects["customer_id"], rejects["reject_reason"], strict=True))
    assert "tenure_months" in reasons[df.loc[4, "customer_id"]]
    assert "monthly_charges_usd" in reasons[df.loc[6, "customer_id"]]


def test_batch_scoring_missing_column_exits_2(settings: ServingSettings, tmp_path: Path) -> None:
    src = tmp_path / "in.csv"
    _rows(10).drop(columns=["contract"]).to_csv(src, index=False)
    cfg = tmp_path / "c.yaml"
    cfg.write_text(f"paths: {{workspace: {settings.workspace}}}\n")
    code = main(
        ["score", "--config", str(cfg), "--input", str(src), "--output", str(tmp_path / "o.csv")]
    )
    assert code == 2 and not (tmp_path / "o.csv").exists()


def test_batch_scoring_stores_every_decision(
    settings: ServingSettings, tmp_path: Path, capsys
) -> None:
    df = _rows(60)
    src, out = tmp_path / "in.parquet", tmp_path / "out.parquet"
    df.to_parquet(src)
    cfg = tmp_path / "c.yaml"
    cfg.write_text(f"paths: {{workspace: {settings.workspace}}}\n")
    assert main(["score", "--config", str(cfg), "--input", str(src), "--output", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "60 decisions stored (run " in printed
    run = printed.split("(run ")[1].split(")")[0]
    stored = read_decisions(settings.workspace_paths.decisions, sources=["batch"])
    stored = stored[stored["request_id"] == run].reset_index(drop=True)
    batch = pd.read_parquet(out)
    assert stored["customer_id"].tolist() == batch["customer_id"].astype(str).tolist()
    assert (stored["probability"] - batch["churn_probability"]).abs().max() < 1e-12
    assert stored["action"].tolist() == batch["action"].tolist()
    assert (stored["would_contact"] == (stored["action"] == "contact")).all()
    assert stored["tenure_months"].tolist() == df["tenure_months"].astype(float).tolist()
    assert stored["region"].tolist() == df["region"].tolist()  # raw inputs: log_inputs full


def test_batch_scoring_that_fails_leaves_no_decisions(
    settings: ServingSettings, tmp_path: Path
) -> None:
    src = tmp_path / "in.csv"
    _rows(50).to_csv(src, index=False)
    root = tmp_path / "decisions"
    writer = DecisionWriter(root, source="batch", writer_id="t", flush_rows=10)

    def stop(rows: int) -> None:
        assert list(root.rglob("*.parquet"))  # decisions of earlier chunks were written
        if rows >= 30:
            raise RuntimeError("interrupted")

    with pytest.raises(RuntimeError, match="interrupted"):
        score_file(
            load_champion(settings, pin=False),
            src,
            tmp_path / "out.csv",
            chunk_rows=10,
            progress=stop,
            decisions=writer,
        )
    assert not list(root.rglob("*.parquet")) and not (tmp_path / "out.csv").exists()


@pytest.mark.server
def test_real_uvicorn_scores_over_http(workspace_copy: Path, tmp_path: Path) -> None:
    port = free_port()
    cfg = tmp_path / "c.yaml"
    cfg.write_text(f"paths: {{workspace: {workspace_copy}}}\n")
    env = {**os.environ, "BAYESPILOT_ADMIN_TOKEN": "t0ken"}
    proc = start_serve(cfg, port, env=env)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.time() + 60
        while time.time() < deadline:
            try:
                if httpx.get(f"{base}/readyz", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert proc.poll() is None, proc.stdout.read().decode()  # type: ignore[union-attr]
            time.sleep(0.3)
        r = httpx.post(f"{base}/v1/score", json=customer(), timeout=5)
        assert r.status_code == 200
        assert r.json()["model_version"] == "2"
        assert httpx.get(f"{base}/metrics", timeout=5).status_code == 200
    finally:
        proc.terminate()
        proc.wait(20)
    # the worker wrote its buffered decision to the store as it shut down
    ex = ServingSettings.from_config(serving_config(workspace_copy), environ={})
    assert count_decisions(ex.workspace_paths.decisions) == {"http": 1}
