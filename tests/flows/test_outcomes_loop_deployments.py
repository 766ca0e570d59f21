"""The measured-impact loop under Prefect deployments on a real Prefect server (127.0.0.1, temp
PREFECT_HOME, everything stopped at the end): the promotion deployment seats a champion, the
service scores with a randomized holdout, outcomes come from a known treatment response, the
monitoring deployment measures the save rate, and the policy-update deployment re-selects the
policy from it. Every step leaves a record that says why."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from flows.cli import main
from tasks.generate_data import generate_data
from tasks.record_models import MonitoringRecord, PolicyUpdateRecord, parse_records
from tasks.records import RecordStore

from ..conftest import small_layers
from .test_outcomes_loop import EXPERIMENT, _outcomes, _serve
from .test_prefect_server import PREFECT, _deployed_worker, _run, prefect_server  # noqa: F401

pytestmark = [pytest.mark.server, pytest.mark.slow]


def test_outcomes_loop_under_deployments(prefect_server: dict[str, str], tmp_path: Path) -> None:  # noqa: F811
    env = prefect_server
    ws = tmp_path / "ws"
    layers = small_layers(ws, rows=8000)
    layers["serving"] = {"experiment_id": EXPERIMENT, "holdout_share": 0.3}
    config = tmp_path / "config.yaml"
    config.write_text(yaml.safe_dump(layers))
    store = RecordStore(ws / "promotions")

    def deployment(name: str, *params: str) -> None:
        cmd = [PREFECT, "deployment", "run", name, "--param", f"config_path={config}"]
        for p in params:
            cmd += ["--param", p]
        _run([*cmd, "--watch", "--watch-timeout", "400"], env, tmp_path, timeout=420)

    with _deployed_worker(env, tmp_path):
        deployment("churn-promotion/adhoc")
        first = store.head()
        assert first is not None
        assert first["decision"] == "promoted", first["reasons"]

        day = generate_data(rows=6000, seed=404)
        day["customer_id"] = "LOOP-" + day["customer_id"].str[5:]
        served = _serve(layers, day)
        assert served["holdout"].any() and served["experiment_id"].eq(EXPERIMENT).all()
        labels = tmp_path / "outcomes.csv"
        _outcomes(day, served).to_csv(labels, index=False)
        args = ["--config", str(config), "--input", str(labels), "--contacted-column", "delivered"]
        assert main(["outcomes", *args]) == 0

        deployment("churn-monitoring/daily")
        deployment("churn-policy-update/policy-update", "from_outcomes=true")

    records = parse_records(store.records())
    assert [r.kind for r in records] == ["promotion", "monitoring", "policy-update"]
    mon, pu = records[1], records[2]
    assert isinstance(mon, MonitoringRecord) and mon.flow_run_id
    assert mon.impact is not None and mon.impact.sufficient, mon.impact
    assert mon.impact.experiment.experiment_id == EXPERIMENT
    assert isinstance(pu, PolicyUpdateRecord) and pu.flow_run_id
    assert pu.save_rate_evidence is not None
    assert pu.save_rate_evidence.monitoring_record == mon.record_id
    assert pu.reasons[0].startswith("save rate from outcomes: measured save rate")
    assert pu.economics is not None and pu.economics.source == "outcomes"
    assert store.verify().ok
