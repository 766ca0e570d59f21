"""Every record kind as the real code writes it (promotion runs, a challenger run, a policy
update, monitoring, a rejected promote-challenger, a rollback) parses into its typed model,
round-trips to the very stored JSON, and the typed chain queries and the loader agree."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from jsonschema import Draft202012Validator

from configs.settings import build_config
from flows.challenger import promote_challenger
from flows.monitoring import run_monitoring
from flows.policy_update import run_policy_update
from flows.promotion import run_direct
from serving.admin import rollback
from serving.loader import resolve_challenger, resolve_champion
from serving.settings import ServingSettings
from tasks.record_models import (
    SCHEMA_DIR,
    ChallengerRecord,
    MonitoringRecord,
    PolicyUpdateRecord,
    PromotionRecord,
    RollbackRecord,
    body_dict,
    parse_records,
)
from tasks.records import RecordStore, active_challenger, current_champion, record_hash

from ..conftest import small_layers


@pytest.mark.slow
def test_record_models_parse_every_record_a_workspace_run_writes(workspace_copy: Path) -> None:
    ws = workspace_copy
    layers = small_layers(ws, monitoring={"min_rows": 10})
    config = build_config(layers)
    challenger_cfg = build_config({**layers, "promotion": {"register_as": "challenger"}})
    assert run_direct(challenger_cfg).outcome.decision == "challenger"
    settings = ServingSettings.from_config(config, environ={})
    assert resolve_challenger(settings) is not None  # the loader sees it, typed
    assert run_monitoring(config, use_prefect=False).record["kind"] == "monitoring"
    # no shadow evidence yet: promote-challenger writes a rejected promotion
    assert promote_challenger(config)["decision"] == "rejected"
    update = run_policy_update(
        build_config({**layers, "economics": {"contact_cost_usd": 20}}), use_prefect=False
    )
    assert update.decision == "policy-updated"
    store = RecordStore(ws / "promotions", ws / "promotions.lock")
    # the policy update retired the challenger: neither the loader nor a query sees it
    assert active_challenger(parse_records(store.records())) is None
    assert resolve_challenger(settings) is None
    rollback(settings, reason="test the rollback record", requested_by="pytest")

    stored = store.records()
    records = parse_records(stored)
    kinds = [type(r) for r in records]
    for cls in (
        PromotionRecord,
        ChallengerRecord,
        MonitoringRecord,
        PolicyUpdateRecord,
        RollbackRecord,
    ):
        assert cls in kinds, f"no {cls.__name__} written"
    for raw, rec in zip(stored, records, strict=True):
        assert body_dict(rec) == raw, f"record {rec.sequence} does not round-trip"
        assert record_hash(body_dict(rec)) == rec.record_id
    assert store.verify().ok
    any_kind = Draft202012Validator(json.loads((SCHEMA_DIR / "record.json").read_text()))
    for raw in stored:
        any_kind.validate(raw)  # the exported JSON Schema accepts them too
    challenge = next(r for r in records if isinstance(r, PromotionRecord) and r.challenger_record)
    assert challenge.decision == "rejected" and challenge.gates[-1].gate == "champion"
    # the loader resolves the rolled-back champion from the typed chain
    resolved = resolve_champion(settings)
    assert resolved.block == current_champion(records)
    assert isinstance(records[-1], RollbackRecord)
    assert records[-1].rolled_back_from is not None
