"""Test helpers for the monitoring loop: a day of shifted traffic, scored by the service into
the workspace's prediction log, and the outcomes that arrive for it later."""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import pandas as pd

from tasks.generate_data import TRUTH_COLUMN, generate_data


def shifted_day(rows: int, seed: int) -> pd.DataFrame:
    """A day of customers: pricier plans, shorter tenure, more month-to-month contracts."""
    rng = np.random.default_rng(seed)
    day = generate_data(rows=rows, seed=seed)
    day["customer_id"] = "DAY-" + day["customer_id"].str[5:]
    day["monthly_charges_usd"] = (day["monthly_charges_usd"] * 1.5).round(2)
    day["tenure_months"] = (day["tenure_months"] * 0.4).astype("int64")
    flip = rng.random(rows) < 0.5
    day.loc[flip, "contract"] = "month-to-month"
    return day


def serve_day(layers: dict[str, Any], day: pd.DataFrame, batch: int = 500) -> None:
    """Score ``day`` through the service (in-process), which appends to the prediction log."""
    from fastapi.testclient import TestClient

    from configs.settings import build_config
    from serving.main import create_app
    from serving.settings import ServingSettings

    payload = json.loads(day.drop(columns=["churned", TRUTH_COLUMN]).to_json(orient="records"))
    settings = ServingSettings.from_config(build_config(layers), environ={})
    with TestClient(create_app(settings, follow=False)) as client:
        for start in range(0, len(payload), batch):
            r = client.post("/v1/score", json={"customers": payload[start : start + batch]})
            assert r.status_code == 200, r.text[:500]


def decayed_outcomes(day: pd.DataFrame, seed: int = 7, churn_rate: float = 0.03) -> pd.DataFrame:
    """Outcome labels for ``day``: after the shift almost nobody churns, so contacts are wasted
    and realised profit decays."""
    rng = np.random.default_rng(seed)
    return pd.DataFrame(
        {
            "customer_id": day["customer_id"],
            "churned": np.where(rng.random(len(day)) < churn_rate, "yes", "no"),
            "observed_at": "2026-11-30T00:00:00Z",
        }
    )
