"""What a monitoring alert sends to the promotion deployment: never a secret."""

from __future__ import annotations

import json

from configs.settings import load_config
from flows.monitoring import retrain_parameters

TRIGGER = {"monitoring_record": "abc", "reason": "drift"}


def test_retrain_parameters_carry_a_config_without_secrets() -> None:
    config = load_config(None, overrides=["paths.workspace=/tmp/ws"])
    params = retrain_parameters(config, TRIGGER)
    assert params["trigger"] == TRIGGER
    assert params["config_json"] == config.model_dump(mode="json")


def test_retrain_parameters_never_send_an_inline_password() -> None:
    uri = "postgresql+psycopg2://mlflow:s3cr3t-pw@127.0.0.1:5432/mlflow"
    config = load_config(None, overrides=[f"backends.mlflow_tracking_uri={uri}"])
    params = retrain_parameters(config, TRIGGER)
    assert params == {"trigger": TRIGGER}
    assert "s3cr3t-pw" not in json.dumps(params)
