"""Monitoring compares the shadow log with the *active* challenger only: one registered before
the current champion was introduced is retired (the rule shared with serving and
promote-challenger: ``tasks.records.active_challenger``)."""

from __future__ import annotations

import hashlib
from pathlib import Path

from configs.paths import Workspace
from flows.monitoring import _challenger_policy
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
    """A block whose policy document exists in the workspace (cutoff = version USD)."""
    policy = Policy({"cutoff_expected_value_usd": float(version)})
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
