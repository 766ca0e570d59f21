"""Monitoring compares the challenger's stored decisions with the *active* challenger only: one
registered before the current champion was introduced is retired (the rule shared with serving
and promote-challenger: ``tasks.records.active_challenger``). It reads them from the decision
store by window, and a challenger that cannot be scored leaves the comparison standing."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pandas as pd

from configs.paths import Workspace
from configs.settings import build_config
from flows.monitoring import _challenger_evidence, _challenger_policy
from tasks.decision_store import DecisionWriter
from tasks.record_models import (
    ChallengerBody,
    ChampionBlock,
    Features,
    PromotionBody,
    body_dict,
    parse_records,
)
from tasks.records import RecordStore
from tasks.select_policy import Policy


def _seat(ws: Path, version: int) -> ChampionBlock:
    """A block whose policy document exists in the workspace (cutoff = version USD; the
    economics the comparison's realised profit reads)."""
    policy = Policy(
        {
            "cutoff_expected_value_usd": float(version),
            "economics": {
                "customer_value": {"column": "monthly_charges_usd", "multiplier": 3.0},
                "save_rate": 0.3,
                "contact_cost_usd": 5.0,
            },
        }
    )
    path = ws / "models" / f"r{version}" / "policy.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(policy.to_json())
    return ChampionBlock(
        model_name="churn",
        model_version=str(version),
        model_uri=f"models:/churn/{version}",
        artifact_path=f"models/r{version}/model.joblib",
        artifact_sha256=f"{version:064x}",
        policy_id=policy.policy_id,
        policy_path=str(path.relative_to(ws)),
        policy_sha256=hashlib.sha256(path.read_bytes()).hexdigest(),
        promoted_by_run=f"r{version}",
        features=Features(numeric=["tenure"]),
    )


def _promote(store: RecordStore, block: ChampionBlock) -> None:
    store.append(lambda _h: body_dict(PromotionBody(decision="promoted", champion=block)))


def _challenge(store: RecordStore, champion: ChampionBlock, block: ChampionBlock) -> None:
    body = ChallengerBody(champion=champion, challenger=block)
    store.append(lambda _h: body_dict(body))


def test_monitoring_challenger_policy_is_the_active_challengers(tmp_path: Path) -> None:
    ws = Workspace(tmp_path)
    store = RecordStore(ws.promotions, ws.promotions_lock)
    v1, v2 = _seat(tmp_path, 1), _seat(tmp_path, 2)
    _promote(store, v1)
    assert _challenger_policy(ws, parse_records(store.records())) is None
    _challenge(store, v1, v2)
    policy = _challenger_policy(ws, parse_records(store.records()))
    assert policy is not None and policy.policy_id == v2.policy_id


def test_monitoring_ignores_a_challenger_retired_by_a_new_champion(tmp_path: Path) -> None:
    ws = Workspace(tmp_path)
    store = RecordStore(ws.promotions, ws.promotions_lock)
    v1, v2, v3 = _seat(tmp_path, 1), _seat(tmp_path, 2), _seat(tmp_path, 3)
    _promote(store, v1)
    _challenge(store, v1, v2)
    _promote(store, v3)  # v3 replaced the champion: v2's challenge is over
    records = parse_records(store.records())
    assert any(r.decision == "challenger" for r in records)
    assert _challenger_policy(ws, records) is None


def _challenger_rows(n: int, *, hour: int, version: str = "2") -> pd.DataFrame:
    """Stored challenger decisions: every third one differs from the champion's action."""
    return pd.DataFrame(
        {
            "time": pd.Timestamp(f"2026-12-05T{hour:02d}:00:00Z") + pd.to_timedelta(range(n), "s"),
            "request_id": [f"r{hour}-{i}" for i in range(n)],
            "model_version": version,
            "policy_id": "p",
            "customer_id": [f"C{hour}-{i}" for i in range(n)],
            "probability": 0.5,
            "action": ["contact" if i % 3 == 0 else "no_contact" for i in range(n)],
            "champion_action": "no_contact",
            "input.monthly_charges_usd": 50.0,
        }
    )


def _store(ws: Workspace, frame: pd.DataFrame) -> None:
    with DecisionWriter(ws.decisions, source="challenger", writer_id="t") as w:
        w.append(frame)


def test_monitoring_challenger_evidence_reads_the_window_from_the_store(tmp_path: Path) -> None:
    ws = Workspace(tmp_path)
    store = RecordStore(ws.promotions, ws.promotions_lock)
    v1, v2 = _seat(tmp_path, 1), _seat(tmp_path, 2)
    _promote(store, v1)
    _challenge(store, v1, v2)
    _store(ws, _challenger_rows(9, hour=8))
    _store(ws, _challenger_rows(6, hour=10))
    config = build_config(
        {
            "paths": {"workspace": str(tmp_path)},
            "data": {"id_column": "cust"},
            "monitoring": {"score_challenger": False},
        }
    )
    records = parse_records(store.records())
    policy = _challenger_policy(ws, records)
    assert policy is not None
    outcomes = pd.DataFrame({"cust": [f"C10-{i}" for i in range(6)], "churned": [1, 0] * 3})
    window = _challenger_evidence(
        config, ws, records, outcomes, policy, "2026-12-05T10:00:00Z", "2026-12-05T11:00:00Z"
    )
    assert window["shadow_predictions"] == 6 and window["challenger_versions"] == ["2"]
    assert window["action_flip_rate"] == round(2 / 6, 5)
    assert window["labelled"] == 6  # joined on the configured id column
    assert "scoring" not in window  # monitoring.score_challenger off: nothing scored
    whole = _challenger_evidence(config, ws, records, pd.DataFrame(), policy, None, None)
    assert whole["shadow_predictions"] == 15 and "labelled" not in whole


def test_monitoring_reports_a_challenger_that_cannot_be_scored(tmp_path: Path) -> None:
    """The challenger's artifacts do not exist here: the scoring fails, monitoring says why
    in the comparison and still compares what the store holds."""
    ws = Workspace(tmp_path)
    store = RecordStore(ws.promotions, ws.promotions_lock)
    v1, v2 = _seat(tmp_path, 1), _seat(tmp_path, 2)
    _promote(store, v1)
    _challenge(store, v1, v2)
    _store(ws, _challenger_rows(4, hour=9))
    config = build_config({"paths": {"workspace": str(tmp_path)}})
    records = parse_records(store.records())
    policy = _challenger_policy(ws, records)
    assert policy is not None
    out = _challenger_evidence(config, ws, records, pd.DataFrame(), policy, None, None)
    assert out["shadow_predictions"] == 4
    assert set(out["scoring"]) == {"error"} and out["scoring"]["error"]
