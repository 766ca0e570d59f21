"""The whole measured-impact loop (issue 17) through the CLI, up to the uplift challenger:
serve a churn-risk champion with a randomized holdout -> outcomes from a known treatment
response (who was contacted included) -> monitoring -> policy-update from outcomes -> uplift
challenger -> promotion. Each step leaves a record whose reasons explain the decision.

With sleeping dogs (customers a contact pushes out) the uplift policy, which leaves them
alone, has to win beyond noise and be promoted; with a save rate that is the same for everyone
the churn-risk ranking already orders customers by effect, and the uplift candidate must not
replace the champion."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import yaml

from configs.settings import TreatmentResponseConfig
from flows.cli import main
from tasks.generate_data import generate_data
from tasks.record_models import (
    ChallengerRecord,
    MonitoringRecord,
    PolicyUpdateRecord,
    PromotionRecord,
    parse_records,
)
from tasks.records import RecordStore
from tasks.simulate_campaign import P_CONTACTED, P_NOT_CONTACTED, treatment_response

from ..conftest import small_layers
from .test_outcomes_loop import _serve, promoted  # noqa: F401

EXPERIMENT = "retention-uplift"
DELIVERY = 0.9
SLEEPING_DOGS = TreatmentResponseConfig(sleeping_dog_share=0.3, sleeping_dog_churn_increase=0.5)
FLAT = TreatmentResponseConfig(mean_save_rate=0.4, save_rate_spread=0.0, sleeping_dog_share=0.0)


def _config(tmp_path: Path, promoted: Path) -> Path:  # noqa: F811
    ws = tmp_path / "ws"
    shutil.copytree(promoted, ws)
    layers = small_layers(ws)
    layers["serving"] = {"experiment_id": EXPERIMENT, "holdout_share": 0.5}
    layers["uplift"] = {"min_randomized_customers": 1000, "evaluation_share": 0.4}
    layers["bootstrap"] = {"resamples": 200}
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(layers))
    return path


def _campaign(tmp_path: Path, cfg: Path, rows: int, response: TreatmentResponseConfig) -> None:
    """Serve ``rows`` new customers, draw their outcomes from ``response`` (a contact is
    delivered with probability DELIVERY) and ingest them with the contacted column."""
    layers = yaml.safe_load(cfg.read_text())
    day = generate_data(rows=rows, seed=404)
    day["customer_id"] = "UPL-" + day["customer_id"].str[5:]
    served = _serve(layers, day)
    truth = treatment_response(day, config=response)
    rng = np.random.default_rng(11)
    contacted = (served["action"] == "contact").to_numpy() & (rng.random(rows) < DELIVERY)
    p = np.where(contacted, truth[P_CONTACTED], truth[P_NOT_CONTACTED])
    labels = tmp_path / "outcomes.csv"
    pd.DataFrame(
        {
            "customer_id": day["customer_id"],
            "churned": np.where(rng.random(rows) < p, "yes", "no"),
            "observed_at": "2026-12-05T00:00:00Z",
            "delivered": np.where(contacted, "yes", "no"),
        }
    ).to_csv(labels, index=False)
    args = ["--config", str(cfg), "--input", str(labels), "--contacted-column", "delivered"]
    assert main(["outcomes", *args]) == 0


def _loop_to_challenge(cfg: Path, tmp_path: Path) -> list[Any]:
    """monitor -> policy-update --from-outcomes -> challenge-uplift; the records they added."""
    store = RecordStore(tmp_path / "ws" / "promotions")
    before = len(store.records())
    assert main(["monitor", "--no-prefect", "--config", str(cfg)]) == 0
    assert main(["policy-update", "--no-prefect", "--from-outcomes", "--config", str(cfg)]) == 0
    assert main(["challenge-uplift", "--config", str(cfg)]) == 0
    return parse_records(store.records())[before:]


def _check_monitoring_and_update(mon: Any, update: Any) -> None:
    assert isinstance(mon, MonitoringRecord) and mon.reasons
    assert mon.impact is not None and mon.impact.sufficient, mon.impact
    outcomes = (mon.monitoring or {})["outcomes"]
    # realised profit from the randomized comparison, calibration on customers not contacted
    assert outcomes["profit_basis"] == "randomized_holdout", outcomes["profit_note"]
    assert 0 < outcomes["calibration_rows"] < outcomes["rows"]
    assert isinstance(update, PolicyUpdateRecord) and update.save_rate_evidence is not None
    assert update.save_rate_evidence.monitoring_record == mon.record_id
    assert update.reasons[0].startswith("save rate from outcomes:")


def test_outcomes_loop_uplift_challenger_wins_with_sleeping_dogs_and_is_promoted(
    tmp_path: Path,
    promoted: Path,  # noqa: F811
    capsys,
) -> None:
    cfg = _config(tmp_path, promoted)
    _campaign(tmp_path, cfg, 30_000, SLEEPING_DOGS)
    mon, update, chall = _loop_to_challenge(cfg, tmp_path)
    _check_monitoring_and_update(mon, update)

    assert isinstance(chall, ChallengerRecord), chall.reasons
    assert chall.uplift is not None and chall.uplift["status"] == "evaluated"
    assert chall.candidate == f"uplift:{chall.uplift['winner']}"
    assert chall.reasons[0].startswith("uplift challenger:")
    gates = {g.gate: g for g in chall.gates}
    assert {"uplift-qini", "uplift-profit"} <= set(gates) and all(g.passed for g in chall.gates)
    profit = gates["uplift-profit"]
    low = profit.interval[0] if profit.interval else None
    assert isinstance(low, (int, float)) and low > 0  # the profit gain's lower bound: beyond noise
    champion = update.champion if update.decision == "policy-updated" else mon.champion
    assert chall.champion == champion  # the churn-risk champion still serves
    capsys.readouterr()

    assert main(["promote-challenger", "--config", str(cfg)]) == 0
    promo = parse_records(RecordStore(tmp_path / "ws" / "promotions").records())[-1]
    assert isinstance(promo, PromotionRecord) and promo.decision == "promoted", promo.reasons
    assert promo.champion == chall.challenger and promo.challenger_record == chall.record_id
    assert "uplift evidence on randomized held-out outcomes" in promo.reasons[0]
    assert RecordStore(tmp_path / "ws" / "promotions").verify().ok


def test_outcomes_loop_uplift_without_heterogeneity_keeps_the_champion(
    tmp_path: Path,
    promoted: Path,  # noqa: F811
    capsys,
) -> None:
    cfg = _config(tmp_path, promoted)
    _campaign(tmp_path, cfg, 12_000, FLAT)
    mon, update, rejected = _loop_to_challenge(cfg, tmp_path)
    _check_monitoring_and_update(mon, update)
    # the programme works (true save rate 0.4 > the assumed 0.25): no false profit alert
    assert not any(r.startswith("realised profit") for r in mon.reasons), mon.reasons

    assert isinstance(rejected, PromotionRecord) and rejected.decision == "rejected"
    assert rejected.uplift is not None and rejected.uplift["winner"] is None
    assert rejected.reasons[0].startswith(
        "uplift challenge (evaluated): the churn-risk policy stays"
    )
    champion = update.champion if update.decision == "policy-updated" else mon.champion
    assert rejected.champion == champion
    capsys.readouterr()
    assert main(["promote-challenger", "--config", str(cfg)]) == 1
    assert "no active challenger" in capsys.readouterr().err
    assert RecordStore(tmp_path / "ws" / "promotions").verify().ok
