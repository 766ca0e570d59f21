"""The measured-impact loop under Prefect deployments on a real Prefect server (127.0.0.1, temp
PREFECT_HOME, everything stopped at the end): the promotion deployment seats a champion, the
service scores with a randomized holdout, outcomes come from a known treatment response, the
monitoring deployment measures the save rate, the policy-update deployment re-selects the
policy from it, the uplift-challenge deployment fits uplift candidates on the randomized
outcomes and the promote-challenger deployment decides. The save rate is the same for every
customer here, so the churn-risk ranking already orders customers by effect: the uplift
candidate must not replace the champion (tests/flows/test_outcomes_loop_uplift.py and
tests/flows/test_uplift_challenge.py have the case where it wins). Every step leaves a record
that says why."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from flows.cli import main
from tasks.generate_data import generate_data
from tasks.record_models import (
    MonitoringRecord,
    PolicyUpdateRecord,
    PromotionRecord,
    parse_records,
)
from tasks.records import RecordStore

from ..conftest import small_layers
from .test_outcomes_loop import EXPERIMENT, _outcomes, _serve
from .test_prefect_server import PREFECT, _deployed_worker, _run, prefect_server  # noqa: F401

pytestmark = [pytest.mark.server, pytest.mark.slow]


def test_outcomes_loop_under_deployments(
    prefect_server: dict[str, str],  # noqa: F811
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    env = prefect_server
    ws = tmp_path / "ws"
    layers = small_layers(ws, rows=8000)
    layers["serving"] = {"experiment_id": EXPERIMENT, "holdout_share": 0.3}
    layers["uplift"] = {"min_randomized_customers": 300}  # a small day: judged, not skipped
    config = tmp_path / "config.yaml"
    config.write_text(yaml.safe_dump(layers))
    store = RecordStore(ws / "promotions")

    def deployment(name: str, *params: str) -> str:
        cmd = [PREFECT, "deployment", "run", name, "--param", f"config_path={config}"]
        for p in params:
            cmd += ["--param", p]
        return _run([*cmd, "--watch", "--watch-timeout", "400"], env, tmp_path, timeout=420)

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
        deployment("churn-uplift-challenge/uplift-challenge")
        # the promotion step: nothing to promote (the uplift challenge kept the champion)
        promoted = deployment("churn-promote-challenger/promote-challenger")
    assert "NoChallenger" in promoted, promoted[-2000:]
    capsys.readouterr()
    assert main(["promote-challenger", "--config", str(config)]) == 1
    assert "no active challenger" in capsys.readouterr().err

    records = parse_records(store.records())
    assert [r.kind for r in records] == ["promotion", "monitoring", "policy-update", "promotion"]
    mon, pu, up = records[1], records[2], records[3]
    assert isinstance(mon, MonitoringRecord) and mon.flow_run_id
    assert mon.impact is not None and mon.impact.sufficient, mon.impact
    assert mon.impact.experiment.experiment_id == EXPERIMENT
    # contacts work (save rate 0.4 > the assumed 0.25): profit judged on the randomized
    # comparison, no false "realised profit below promoted" alert
    assert (mon.monitoring or {})["outcomes"]["profit_basis"] == "randomized_holdout"
    assert not any(r.startswith("realised profit") for r in mon.reasons), mon.reasons
    assert isinstance(pu, PolicyUpdateRecord) and pu.flow_run_id
    assert pu.save_rate_evidence is not None
    assert pu.save_rate_evidence.monitoring_record == mon.record_id
    assert pu.reasons[0].startswith("save rate from outcomes: measured save rate")
    assert pu.economics is not None and pu.economics.source == "outcomes"
    # the uplift challenge ran in its deployment, was judged, and kept the champion: why is said
    assert isinstance(up, PromotionRecord) and up.flow_run_id and up.decision == "rejected"
    assert up.uplift is not None and up.uplift["status"] == "evaluated", up.uplift
    assert up.uplift["winner"] is None and up.uplift["candidates"]
    assert up.reasons[0].startswith("uplift challenge (evaluated): the churn-risk policy stays")
    assert up.champion == (pu.champion if pu.decision == "policy-updated" else records[0].champion)
    assert store.verify().ok
