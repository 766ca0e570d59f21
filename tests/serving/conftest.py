from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from configs.settings import BayesPilotConfig, build_config
from serving.settings import ServingSettings

from ..conftest import small_layers


@pytest.fixture(scope="session")
def promoted_workspace(tmp_path_factory) -> Path:
    """A workspace with two promoted champions (v1, then v2), built once per session."""
    from flows.promotion import run_direct

    ws = tmp_path_factory.mktemp("promoted") / "ws"
    cfg = build_config(small_layers(ws))
    for _ in range(2):
        rec = run_direct(cfg).outcome.record
        assert rec["decision"] == "promoted", rec["reasons"]
    return ws


def serving_config(ws: Path, **serving: Any) -> BayesPilotConfig:
    return build_config(
        {"paths": {"workspace": str(ws)}, "serving": {"reload_interval_s": 0.2, **serving}}
    )


@pytest.fixture
def workspace_copy(promoted_workspace: Path, tmp_path: Path) -> Path:
    """A private copy a test may tamper with."""
    dst = tmp_path / "ws"
    shutil.copytree(promoted_workspace, dst)
    return dst


@pytest.fixture
def settings(workspace_copy: Path) -> ServingSettings:
    return ServingSettings.from_config(
        serving_config(workspace_copy), environ={"BAYESPILOT_ADMIN_TOKEN": "s3cret"}
    )


def customer(**overrides: Any) -> dict[str, Any]:
    row: dict[str, Any] = {
        "customer_id": "C-1",
        "region": "north",
        "contract": "month-to-month",
        "plan": "basic",
        "payment_method": "card",
        "acquisition_channel": "online",
        "paperless_billing": "yes",
        "tenure_months": 3,
        "monthly_charges_usd": 70.0,
        "total_charges_usd": 210.0,
        "age_years": 30,
        "num_products": 1,
        "support_calls_90d": 4,
        "late_payments_12m": 1,
        "usage_gb_30d": 20.0,
        "satisfaction_score": 4,
        "discount_pct": 0,
    }
    row.update(overrides)
    return row


def start_serve(
    config: Path, port: int, *extra: str, env: dict[str, str] | None = None
) -> subprocess.Popen[bytes]:
    """`bayespilot serve` on 127.0.0.1 in its own process group (output piped)."""
    cmd = [sys.executable, "-m", "flows.cli", "serve", "--config", str(config)]
    return subprocess.Popen(
        [*cmd, "--host", "127.0.0.1", "--port", str(port), *extra],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
