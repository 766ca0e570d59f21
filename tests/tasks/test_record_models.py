"""Typed records (tasks/record_models.py), their JSON Schema export, and the chain queries
(tasks/records.py) over them."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from jsonschema import Draft202012Validator, ValidationError

from tasks.record_models import (
    SCHEMA_DIR,
    ChallengerBody,
    ChallengerRecord,
    ChampionBlock,
    Features,
    MonitoringBody,
    MonitoringRecord,
    PolicyUpdateBody,
    PolicyUpdateRecord,
    PromotionBody,
    PromotionRecord,
    RecordSchemaError,
    RollbackBody,
    RollbackRecord,
    body_dict,
    parse_record,
    parse_records,
    schema_texts,
)
from tasks.records import (
    RecordNotFound,
    RecordStore,
    active_challenger,
    champion_of,
    current_champion,
    introducing_record,
    latest_monitoring,
    model_record,
    record_hash,
)


def _block(version: int, policy: str = "p1") -> ChampionBlock:
    return ChampionBlock(
        model_name="churn",
        model_version=str(version),
        model_uri=f"models:/churn/{version}",
        artifact_path=f"models/r{version}/model.joblib",
        artifact_sha256=f"{version:064x}",
        policy_id=policy,
        policy_path=f"models/r{version}/{policy}.json",
        policy_sha256="f" * 64,
        promoted_by_run=f"r{version}",
        features=Features(numeric=["tenure"], categorical=["plan"]),
    )


def _gate(name: str = "business", passed: bool = True) -> dict:
    return {
        "gate": name,
        "passed": passed,
        "metric": "profit (USD/customer)",
        "value": 1.5,
        "interval": [1.0, 2.0],
        "threshold": 0.0,
        "evidence": {"profit_at_stake_per_customer_usd": 3.0},
        "reason": "ok",
    }


class Chain:
    """A signed chain built only through the body models (the way the builders write)."""

    def __init__(self, tmp_path: Path) -> None:
        self.store = RecordStore(tmp_path / "promotions", tmp_path / "promotions.lock")

    def append(self, body: object) -> dict:
        from pydantic import BaseModel

        assert isinstance(body, BaseModel)
        return self.store.append(lambda _h: body_dict(body))[1]

    def champion(self) -> ChampionBlock | None:
        return current_champion(self.typed())

    def promote(self, version: int) -> dict:
        return self.append(
            PromotionBody(
                decision="promoted",
                reasons=["every gate passed"],
                champion=_block(version),
                previous_champion=self.champion(),
                model_name="churn",
                model_version=str(version),
                gates=[_gate()],
            )
        )

    def reject(self) -> dict:
        champ = self.champion()
        return self.append(
            PromotionBody(decision="rejected", reasons=["business failed"], champion=champ)
        )

    def challenger(self, version: int) -> dict:
        return self.append(
            ChallengerBody(champion=self.champion(), challenger=_block(version), gates=[_gate()])
        )

    def policy_update(self, policy: str) -> dict:
        champ = self.champion()
        assert champ is not None
        after = champ.model_copy(update={"policy_id": policy, "updated_by_run": "pu"})
        return self.append(
            PolicyUpdateBody(
                decision="policy-updated",
                champion=after,
                previous_champion=champ,
                gates=[_gate()],
                previous_policy_id=champ.policy_id,
            )
        )

    def monitor(self) -> dict:
        champ = self.champion()
        assert champ is not None
        return self.append(
            MonitoringBody(
                decision="ok",
                reasons=["no alert"],
                champion=champ,
                monitored_model_version=champ.model_version,
                monitored_policy_id=champ.policy_id,
                monitoring={"logged_predictions": 0},
                retrain="off",
            )
        )

    def typed(self) -> list:
        return parse_records(self.store.records())


def test_record_models_schema_files_are_current() -> None:
    """docs/record-schema/ is what `python -m tasks.record_models` writes now: a model change
    without re-exporting the schema fails here."""
    expected = schema_texts()
    committed = {p.name: p.read_text() for p in SCHEMA_DIR.glob("*.json")}
    assert sorted(committed) == sorted(expected)
    stale = [name for name, text in expected.items() if committed[name] != text]
    assert not stale, f"re-run `python -m tasks.record_models`: {stale} are out of date"
    index = json.loads(committed["index.json"])
    assert set(index["kinds"]) == {
        "promotion",
        "challenger",
        "policy-update",
        "rollback",
        "monitoring",
    }


def test_record_models_every_kind_parses_and_round_trips(tmp_path: Path) -> None:
    chain = Chain(tmp_path)
    chain.reject()
    chain.promote(1)
    chain.challenger(2)
    chain.policy_update("p2")
    chain.monitor()
    champ = chain.champion()
    assert champ is not None
    intro = introducing_record(chain.typed(), champ)
    chain.append(
        RollbackBody(
            reasons=["bad policy"],
            requested_by="pytest",
            champion=_block(1),
            previous_champion=champ,
            rolled_back_from={"model_version": champ.model_version, "record_id": intro.record_id},
        )
    )
    stored = chain.store.records()
    typed = parse_records(stored)
    assert [type(r) for r in typed] == [
        PromotionRecord,
        PromotionRecord,
        ChallengerRecord,
        PolicyUpdateRecord,
        MonitoringRecord,
        RollbackRecord,
    ]
    for raw, rec in zip(stored, typed, strict=True):
        assert body_dict(rec) == raw  # the typed view loses nothing and adds nothing
        assert record_hash(body_dict(rec)) == rec.record_id
        assert rec.signature is not None and rec.signature.algorithm == "ed25519"
    assert chain.store.verify().ok
    # the exported JSON Schema accepts the very files, each under its kind's schema
    any_kind = Draft202012Validator(json.loads((SCHEMA_DIR / "record.json").read_text()))
    for raw, rec in zip(stored, typed, strict=True):
        any_kind.validate(raw)
        name = "challenger" if isinstance(rec, ChallengerRecord) else rec.kind
        Draft202012Validator(json.loads((SCHEMA_DIR / f"{name}.json").read_text())).validate(raw)
    with pytest.raises(ValidationError):
        any_kind.validate({**stored[0], "decision": "challenged"})
    # a champion block carries updated_by_run only when a policy update set it
    assert "updated_by_run" not in stored[1]["champion"]
    assert stored[3]["champion"]["updated_by_run"] == "pu"
    assert typed[3].previous_record_id == typed[2].record_id


def test_record_models_refuse_unknown_fields_and_decisions() -> None:
    with pytest.raises(ValueError, match="challengr"):
        PromotionBody(decision="promoted", challengr=_block(1))  # type: ignore[call-arg]
    with pytest.raises(ValueError):
        PromotionBody(decision="challenger")  # type: ignore[arg-type]
    envelope = {"sequence": 1, "record_id": "a" * 64, "previous_record_id": None}
    with pytest.raises(RecordSchemaError, match="decision"):
        parse_record({**envelope, "kind": "rollback", "decision": "promoted"})
    with pytest.raises(RecordSchemaError, match="champion.model_name"):
        parse_record({**envelope, "kind": "monitoring", "decision": "ok", "champion": {}})
    with pytest.raises(RecordSchemaError, match="record 1"):
        parse_record({**envelope, "kind": "forged", "decision": "promoted"})
    with pytest.raises(RecordSchemaError, match="previous_record_id"):
        parse_record({"sequence": 1, "record_id": "a" * 64, "kind": "monitoring", "decision": "ok"})
    # a challenger is told apart from a promotion by its decision
    rec = parse_record(
        {
            **envelope,
            "kind": "promotion",
            "decision": "challenger",
            "challenger": body_dict(_block(2)),
        }
    )
    assert isinstance(rec, ChallengerRecord) and rec.challenger.model_version == "2"


def test_records_champion_of_typed_and_stored(tmp_path: Path) -> None:
    chain = Chain(tmp_path)
    assert champion_of(None) is None and current_champion([]) is None
    raw = chain.promote(1)
    typed = parse_record(raw)
    assert champion_of(typed) == _block(1)
    assert champion_of(raw) == body_dict(_block(1))


def test_records_introducing_and_model_record_follow_policy_updates(tmp_path: Path) -> None:
    chain = Chain(tmp_path)
    first = chain.promote(1)
    chain.reject()
    update = chain.policy_update("p2")
    chain.monitor()
    records = chain.typed()
    champ = current_champion(records)
    assert champ is not None and champ.policy_id == "p2"
    assert introducing_record(records, champ).record_id == update["record_id"]
    assert model_record(records, champ).record_id == first["record_id"]  # the model's gates
    # the old policy was introduced by the promotion
    assert introducing_record(records, _block(1)).record_id == first["record_id"]
    with pytest.raises(RecordNotFound, match="v7"):
        introducing_record(records, _block(7))
    with pytest.raises(RecordNotFound, match="v7"):
        model_record(records, _block(7))


def test_records_active_challenger_until_a_new_champion_retires_it(tmp_path: Path) -> None:
    chain = Chain(tmp_path)
    assert active_challenger([]) is None
    chain.promote(1)
    assert active_challenger(chain.typed()) is None
    chain.challenger(2)
    chall = chain.challenger(3)  # the newest challenger replaces the older one
    chain.monitor()
    chain.reject()  # a rejected run does not retire it
    active = active_challenger(chain.typed())
    assert active is not None and active.record_id == chall["record_id"]
    assert active.challenger.model_version == "3"
    chain.promote(4)  # a new champion retires it
    assert active_challenger(chain.typed()) is None


def test_records_active_challenger_retired_by_a_policy_update(tmp_path: Path) -> None:
    chain = Chain(tmp_path)
    chain.promote(1)
    chain.challenger(2)
    chain.policy_update("p2")
    assert active_challenger(chain.typed()) is None


def test_records_active_challenger_needs_the_champions_introducing_record(tmp_path: Path) -> None:
    chain = Chain(tmp_path)
    chain.promote(1)
    chain.append(MonitoringBody(decision="ok", champion=_block(5)))  # names an unknown champion
    with pytest.raises(RecordNotFound):
        active_challenger(chain.typed())


def test_records_latest_monitoring_after_a_sequence(tmp_path: Path) -> None:
    chain = Chain(tmp_path)
    chain.promote(1)
    old = chain.monitor()
    chall = chain.challenger(2)
    assert latest_monitoring(chain.typed()) is not None
    assert latest_monitoring(chain.typed(), after=chall["sequence"]) is None
    new = chain.monitor()
    found = latest_monitoring(chain.typed(), after=chall["sequence"])
    assert found is not None and found.record_id == new["record_id"] != old["record_id"]


def test_record_models_promotion_builder_sets_every_field(tmp_path: Path) -> None:
    """The promotion run's builder names every field of its body (none is left to a read-side
    default), so a field added to the model and forgotten in the builder fails here."""
    from configs.settings import build_config
    from tasks.promote import Registration, RunEvidence, _record_body, _seat_block

    ev = RunEvidence(
        run_id="r1",
        flow_run_id=None,
        mlflow_run_id=None,
        config=build_config({"paths": {"workspace": str(tmp_path)}}),
        data_source="table.csv",
        data_sha256="d" * 64,
        split_hashes={"train": "h"},
        split_rows={"train": 10},
        features={"numeric": ["tenure"], "categorical": ["plan"]},
        schema={"id_column": "customer_id"},
        candidate="logistic",
        calibration={"method": "isotonic"},
        candidates={},
        baselines={},
        gates=(),
        policy={"cutoff_expected_value_usd": 0.0},
        policy_id="p1",
        policy_path="models/r1/policy.json",
        policy_sha256="e" * 64,
        artifact_path="models/r1/model.joblib",
        artifact_sha256="f" * 64,
        gated_against=None,
        started_at="2026-01-01T00:00:00+00:00",
    )
    reg = Registration("churn", "1", "models:/churn/1")
    block = _seat_block(ev, reg)
    promoted = _record_body(ev, "promoted", ("every gate passed",), reg, block, None)
    challenger = _record_body(ev, "challenger", ("shadow",), reg, None, None, challenger=block)
    assert isinstance(promoted, PromotionBody) and isinstance(challenger, ChallengerBody)
    # challenger_record is set only by promote-challenger, uplift only by challenge-uplift
    unset = {"challenger_record", "uplift"}
    assert set(PromotionBody.model_fields) - promoted.model_fields_set == unset
    assert set(ChallengerBody.model_fields) - challenger.model_fields_set == {"uplift"}
    assert body_dict(challenger)["challenger"] == body_dict(block)
    assert "challenger" not in body_dict(promoted)
    with pytest.raises(ValueError, match="artifact"):
        _seat_block(RunEvidence(**{**ev.__dict__, "artifact_path": None}), reg)
