"""The randomized holdout (issue 17): stable hash assignment, its share, no contact for a
holdout customer, the fields of the response and the log, /v1/model, batch == HTTP."""

from __future__ import annotations

import json
import logging
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from fastapi.testclient import TestClient

from configs.settings import ConfigError, build_config
from flows.cli import main
from serving.experiment import (
    HASH_RULE,
    HOLDOUT_TIER,
    Experiment,
    apply_holdout,
    assignment_uniform,
    experiment_from_config,
    id_text,
)
from serving.main import create_app
from serving.settings import ServingSettings
from tasks.decision_store import read_decisions
from tasks.generate_data import TRUTH_COLUMN, generate_data

from .conftest import serving_config

IDS = [f"C-{i:06d}" for i in range(2000)] + list(range(500))
EXPERIMENT = "retention-2026-12"


def test_experiment_assignment_is_stable_across_processes() -> None:
    """Another interpreter with another hash seed assigns exactly the same u (no hash())."""
    here = assignment_uniform(EXPERIMENT, IDS)
    code = (
        "import json, sys; from serving.experiment import assignment_uniform; "
        "ids = json.loads(sys.stdin.read()); "
        f"print(json.dumps(assignment_uniform({EXPERIMENT!r}, ids).tolist()))"
    )
    env = {**os.environ, "PYTHONHASHSEED": "12345"}
    out = subprocess.run(
        [sys.executable, "-c", code],
        input=json.dumps(IDS),
        capture_output=True,
        text=True,
        check=True,
        env=env,
        cwd=Path(__file__).resolve().parents[2],
    )
    there = np.array(json.loads(out.stdout))
    assert np.array_equal(here, there)
    assert ((here >= 0) & (here < 1)).all()


def test_experiment_assignment_follows_the_documented_rule() -> None:
    """u is the first 8 bytes of SHA-256 over id + separator + id text, / 2**64."""
    import hashlib

    digest = hashlib.sha256(f"{EXPERIMENT}\x1fC-000042".encode()).digest()
    expected = int.from_bytes(digest[:8], "big") / 2**64
    assert assignment_uniform(EXPERIMENT, ["C-000042"])[0] == pytest.approx(expected, abs=1e-15)
    assert "sha256" in HASH_RULE


def test_experiment_id_text_normalises_numbers() -> None:
    """17, 17.0, numpy 17 and "17" are one customer; 17.5 stays itself."""
    assert {id_text(17), id_text(17.0), id_text(np.int64(17)), id_text("17")} == {"17"}
    assert id_text(17.5) == "17.5" and id_text(True) == "true"
    u = assignment_uniform(EXPERIMENT, [17, 17.0, "17", np.int64(17)])
    assert len(set(u.tolist())) == 1


def test_experiment_share_within_binomial_tolerance() -> None:
    """The held-out share is the configured one within 4.5 binomial standard errors, and a
    new experiment id draws an independent holdout (overlap ~ share squared)."""
    n, share = 200_000, 0.05
    ids = [f"cust-{i}" for i in range(n)]
    a = Experiment("exp-a", share).holdout(ids)
    b = Experiment("exp-b", share).holdout(ids)
    se = math.sqrt(share * (1 - share) / n)
    assert abs(a.mean() - share) < 4.5 * se
    assert abs(b.mean() - share) < 4.5 * se
    both = share * share
    assert abs((a & b).mean() - both) < 4.5 * math.sqrt(both * (1 - both) / n)


def test_apply_holdout_never_contacts_a_holdout_customer() -> None:
    ids = [f"x{i}" for i in range(5000)]
    would = np.arange(5000) % 3 != 0
    arm = apply_holdout(Experiment(EXPERIMENT, 0.2), ids, would)
    assert not (arm.contact & arm.holdout).any()
    assert np.array_equal(arm.contact, would & ~arm.holdout)
    assert np.array_equal(arm.would_contact, would) and arm.experiment_id == EXPERIMENT
    off = apply_holdout(None, ids, would)
    assert np.array_equal(off.contact, would) and not off.holdout.any()
    assert off.experiment_id is None


def test_config_experiment_id_without_share_is_an_error() -> None:
    with pytest.raises(ConfigError, match="holdout_share"):
        build_config({"serving": {"experiment_id": "e1", "holdout_share": 0}})


def test_config_share_without_experiment_id_runs_no_holdout(caplog) -> None:
    cfg = build_config({"serving": {"holdout_share": 0.1}})
    with caplog.at_level(logging.INFO, logger="serving.experiment"):
        assert experiment_from_config(cfg.serving) is None
    assert "takes effect only with serving.experiment_id" in caplog.text
    on = build_config({"serving": {"holdout_share": 0.1, "experiment_id": "e1"}})
    assert experiment_from_config(on.serving) == Experiment("e1", 0.1)


def _settings(ws: Path, share: float = 0.3) -> ServingSettings:
    return ServingSettings.from_config(
        serving_config(ws, experiment_id=EXPERIMENT, holdout_share=share)
    )


def _customers(n: int = 300) -> pd.DataFrame:
    return generate_data(rows=n, seed=99).drop(columns=["churned", TRUTH_COLUMN])


def test_service_holdout_response_and_log_fields(workspace_copy: Path) -> None:
    settings = _settings(workspace_copy)
    frame = _customers()
    payload = json.loads(frame.to_json(orient="records"))
    with TestClient(create_app(settings, follow=False)) as c:
        r = c.post("/v1/score", json={"customers": payload})
        assert r.status_code == 200, r.text
        card = c.get("/v1/model").json()
    res = pd.DataFrame(r.json()["results"])
    expected = Experiment(EXPERIMENT, 0.3).holdout(frame["customer_id"].tolist())
    assert res["holdout"].to_numpy(bool).tolist() == expected.tolist()
    held = res[res["holdout"]]
    assert len(held) > 0 and (held["action"] == "no_contact").all()
    assert (held["tier"] == HOLDOUT_TIER).all()
    assert held["would_contact"].any(), "no holdout customer the policy would contact"
    free = res[~res["holdout"]]
    assert ((free["action"] == "contact") == free["would_contact"]).all()
    assert (free["tier"] != HOLDOUT_TIER).all()
    assert (res["experiment_id"] == EXPERIMENT).all()
    stored = read_decisions(settings.workspace_paths.decisions)  # written at shutdown
    assert stored["holdout"].tolist() == res["holdout"].tolist()
    assert stored["would_contact"].tolist() == res["would_contact"].tolist()
    assert set(stored["experiment_id"]) == {EXPERIMENT}
    exp = card["experiment"]
    assert exp["experiment_id"] == EXPERIMENT and exp["holdout_share"] == 0.3
    assert exp["hash_rule"] == HASH_RULE and exp["holdout_action"] == "no_contact"


def test_service_without_experiment_reports_none(workspace_copy: Path) -> None:
    settings = ServingSettings.from_config(serving_config(workspace_copy))
    assert settings.experiment is None
    with TestClient(create_app(settings, follow=False)) as c:
        body = c.post("/v1/score", json=json.loads(_customers(3).to_json(orient="records"))[0])
        card = c.get("/v1/model").json()
    assert body.json()["holdout"] is False and body.json()["experiment_id"] is None
    assert body.json()["would_contact"] == (body.json()["action"] == "contact")
    assert card["experiment"] is None


@pytest.mark.parametrize("suffix", [".csv", ".parquet"])
def test_batch_holdout_equals_http(workspace_copy: Path, tmp_path: Path, suffix: str) -> None:
    """`bayespilot score` assigns the same customers to the holdout as the service."""
    settings = _settings(workspace_copy)
    frame = _customers()
    src, out = tmp_path / f"in{suffix}", tmp_path / f"out{suffix}"
    frame.to_csv(src, index=False) if suffix == ".csv" else frame.to_parquet(src)
    cfg = tmp_path / "c.yaml"
    cfg.write_text(
        f"paths: {{workspace: {workspace_copy}}}\n"
        f"serving: {{experiment_id: {EXPERIMENT}, holdout_share: 0.3}}\n"
    )
    assert main(["score", "--config", str(cfg), "--input", str(src), "--output", str(out)]) == 0
    batch = pd.read_csv(out) if suffix == ".csv" else pd.read_parquet(out)
    with TestClient(create_app(settings, follow=False)) as c:
        payload = json.loads(frame.to_json(orient="records"))
        api = pd.DataFrame(c.post("/v1/score", json={"customers": payload}).json()["results"])
    for col in ("action", "tier", "would_contact", "holdout", "experiment_id"):
        assert batch[col].tolist() == api[col].tolist(), col
    assert batch["holdout"].any()
