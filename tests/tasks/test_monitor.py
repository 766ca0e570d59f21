"""Monitoring building blocks by plain calls: PSI, KS, drift, log reading, outcomes."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from configs.settings import MonitoringConfig
from tasks.load_data import ColumnRoles
from tasks.monitor import (
    build_reference,
    clean_outcomes,
    feature_drift,
    ks_against_reference,
    psi,
    read_prediction_log,
    skew,
)


def _roles() -> ColumnRoles:
    return ColumnRoles("id", "y", ("x",), ("c",), (), (), None)


def test_psi_zero_for_same_and_large_for_shift() -> None:
    a = np.array([0.25, 0.25, 0.25, 0.25])
    assert psi(a, a) == pytest.approx(0.0)
    assert psi(a, np.array([0.7, 0.1, 0.1, 0.1])) > 0.2


def test_drift_flags_shifted_numeric_and_new_category(rng) -> None:
    train = pd.DataFrame({"x": rng.normal(0, 1, 5000), "c": rng.choice(["a", "b"], 5000)})
    ref = build_reference(train, _roles(), rng.random(1000), rng.random(1000) < 0.3)
    same = pd.DataFrame({"x": rng.normal(0, 1, 2000), "c": rng.choice(["a", "b"], 2000)})
    moved = pd.DataFrame({"x": rng.normal(1.0, 1, 2000), "c": rng.choice(["a", "zz"], 2000)})
    cfg = MonitoringConfig()
    assert not any(r["alert"] for r in feature_drift(ref, same, config=cfg))
    rows = {r["feature"]: r for r in feature_drift(ref, moved, config=cfg)}
    assert rows["x"]["alert"] and rows["x"]["ks"] > 0.3 and rows["c"]["alert"]
    assert ks_against_reference(ref["features"]["x"], same["x"].to_numpy()) < 0.05


def test_skew_counts_mismatching_values() -> None:
    logged = pd.DataFrame({"id": ["a", "b", "c"], "x": [1.0, 2.0, 3.0], "c": ["u", "v", "w"]})
    source = pd.DataFrame({"id": ["a", "b", "z"], "x": [1.0, 2.5, 0.0], "c": ["u", "v", "w"]})
    out = skew(logged, source, id_column="id", features=["x", "c"])
    assert out["matched_customers"] == 2
    assert {r["feature"]: r["mismatch_share"] for r in out["features"]} == {"x": 0.5, "c": 0.0}


def test_read_prediction_log_roles_and_window(tmp_path: Path) -> None:
    log = tmp_path / "p.jsonl"
    rows = [
        {
            "time": "2026-11-01T00:00:00",
            "inputs": {"id": "a", "x": 1},
            "probability": 0.2,
            "action": "no_contact",
        },
        {
            "time": "2026-11-02T00:00:00",
            "inputs": {"id": "b", "x": 2},
            "probability": 0.6,
            "action": "contact",
        },
        {
            "time": "2026-11-02T00:00:00",
            "role": "challenger",
            "inputs": {"id": "b", "x": 2},
            "probability": 0.5,
            "action": "contact",
            "champion_action": "contact",
        },
    ]
    log.write_text("".join(json.dumps(r) + "\n" for r in rows))
    champ = read_prediction_log(log)
    assert champ["id"].tolist() == ["a", "b"]
    assert read_prediction_log(log, since="2026-11-02")["id"].tolist() == ["b"]
    assert read_prediction_log(log, role="challenger")["champion_action"].tolist() == ["contact"]
    (tmp_path / "q.jsonl").write_text(json.dumps(rows[0]) + "\n")
    assert read_prediction_log(tmp_path / "q.jsonl", role="challenger").empty


def test_clean_outcomes_names_bad_columns() -> None:
    ok = clean_outcomes(
        pd.DataFrame({"id": ["a"], "y": ["yes"], "observed_at": ["2026-11-01"]}),
        id_column="id",
        label_column="y",
        positive_label="yes",
        negative_label="no",
    )
    assert ok["churned"].tolist() == [1]
    with pytest.raises(ValueError, match="y: values outside"):
        clean_outcomes(
            pd.DataFrame({"id": ["a"], "y": ["maybe"], "observed_at": ["2026"]}),
            id_column="id",
            label_column="y",
            positive_label="yes",
            negative_label="no",
        )
    with pytest.raises(ValueError, match="observed_at: column missing"):
        clean_outcomes(
            pd.DataFrame({"id": ["a"], "y": ["yes"]}),
            id_column="id",
            label_column="y",
            positive_label="yes",
            negative_label="no",
        )
