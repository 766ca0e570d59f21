"""Shared fixtures: small configs, frames and workspaces in temp dirs."""

from __future__ import annotations

import os
import shutil
import socket
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

# Prefect state for the whole test session lives in a temp dir (set before prefect imports).
_PREFECT_HOME = tempfile.mkdtemp(prefix="bayespilot-prefect-home-")
os.environ["PREFECT_HOME"] = _PREFECT_HOME
os.environ.pop("PREFECT_API_URL", None)
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
# the ephemeral API's 20 s start-up limit is too short on a busy 2-core machine
os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "120")
os.environ.setdefault("PREFECT_LOGGING_TO_API_WHEN_MISSING_FLOW", "ignore")
os.environ.setdefault("OMP_NUM_THREADS", "1")
# the promotion signing key and trusted public keys: a session temp dir, never the real home
_KEY_HOME = tempfile.mkdtemp(prefix="bayespilot-keys-")
os.environ["XDG_CONFIG_HOME"] = _KEY_HOME
# the chains' high-water marks (tasks/freshness.py): the same temp home
os.environ["XDG_STATE_HOME"] = _KEY_HOME
os.environ.pop("BAYESPILOT_SIGNING_KEY", None)
for _name in [n for n in os.environ if n.startswith("BAYESPILOT__SIGNING__")]:
    os.environ.pop(_name)

from configs.settings import BayesPilotConfig, build_config  # noqa: E402

FIXTURES = Path(__file__).resolve().parent / "fixtures"


def pytest_unconfigure(config: pytest.Config) -> None:
    """Remove the session's Prefect home once every fixture has been torn down."""
    shutil.rmtree(_PREFECT_HOME, ignore_errors=True)
    shutil.rmtree(_KEY_HOME, ignore_errors=True)


def free_port() -> int:
    """A free TCP port on 127.0.0.1 (for servers the tests start themselves)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def small_layers(workspace: Path, rows: int = 10000, **extra: Any) -> dict[str, Any]:
    """A fast config: small data, fewer resamples and folds (thresholds unchanged)."""
    layers: dict[str, Any] = {
        "paths": {"workspace": str(workspace)},
        "data": {"segment_columns": ["region", "contract"]},
        "synthetic": {"rows": rows, "seed": 7},
        "economics": {"customer_value": {"column": "monthly_charges_usd", "multiplier": 3.0}},
        "bootstrap": {"resamples": 300},
        "policy": {"bootstrap_resamples": 100},
        "candidates": {"random_forest": {"n_estimators": 40}},
        "gates": {
            "calibration": {"simulations": 200},
            "threshold": {"resamples": 60},
            "stability": {"n_splits": 3, "n_repeats": 1},
            "technical": {"latency_rows": 30, "latency_repeats": 2, "reload_rows": 300},
        },
    }
    for key, value in extra.items():
        layers.setdefault(key, {}).update(value)
    return layers


def generator_splits(workspace: Path, rows: int) -> tuple[BayesPilotConfig, Any]:
    """The small config on ``rows`` generated customers, validated and split."""
    from tasks.load_data import load_data
    from tasks.split_data import split_data
    from tasks.validate_data import validate_table

    cfg = build_config(small_layers(workspace, rows=rows))
    table = validate_table(load_data(cfg).frame, config=cfg)
    assert table.validated.frame is not None
    return cfg, split_data(table.validated.frame, roles=table.roles, config=cfg.split)


@pytest.fixture
def workspace(tmp_path: Path) -> Path:
    ws = tmp_path / "ws"
    ws.mkdir()
    return ws


@pytest.fixture
def small_config(workspace: Path) -> BayesPilotConfig:
    return build_config(small_layers(workspace))


@pytest.fixture
def telco_frame() -> pd.DataFrame:
    return pd.read_csv(FIXTURES / "telco_sample.csv")


@pytest.fixture
def telco_layers(workspace: Path) -> dict[str, Any]:
    return {
        "paths": {"workspace": str(workspace)},
        "data": {
            "source": "file",
            "path": str(FIXTURES / "telco_sample.csv"),
            "id_column": "customerID",
            "label_column": "Churn",
            "positive_label": "Yes",
            "segment_columns": ["Contract"],
        },
        "economics": {"customer_value": {"column": "MonthlyCharges", "multiplier": 3.0}},
    }


@pytest.fixture
def rng() -> Iterator[np.random.Generator]:
    yield np.random.default_rng(0)
