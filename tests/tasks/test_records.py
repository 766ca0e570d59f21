from __future__ import annotations

import json
import multiprocessing as mp
from pathlib import Path

import pytest

from tasks.gates import GateResult
from tasks.promote import decide
from tasks.records import (
    ChainError,
    RecordStore,
    VerificationError,
    champion_of,
    load_verified_model,
    record_hash,
)


def _store(tmp_path: Path) -> RecordStore:
    return RecordStore(tmp_path / "promotions", tmp_path / "promotions.lock")


def _body(head, decision="rejected", champion=None):
    return {"kind": "promotion", "decision": decision, "champion": champion or champion_of(head)}


def test_records_append_chain_and_verify(tmp_path: Path) -> None:
    store = _store(tmp_path)
    p1, r1 = store.append(lambda h: _body(h))
    p2, r2 = store.append(lambda h: _body(h, "promoted", {"model_version": "1"}))
    p3, r3 = store.append(lambda h: _body(h))
    assert [r["sequence"] for r in (r1, r2, r3)] == [1, 2, 3]
    assert r2["previous_record_id"] == r1["record_id"]
    assert r3["champion"] == {"model_version": "1"}  # carried forward by a rejection
    assert p2.name == f"000002-promotion-{r2['record_id'][:12]}.json"
    assert record_hash(json.loads(p3.read_text())) == r3["record_id"]
    report = store.verify()
    assert report.ok and report.records == 3 and report.head_id == r3["record_id"]


def test_records_tampering_is_detected(tmp_path: Path) -> None:
    store = _store(tmp_path)
    store.append(lambda h: _body(h))
    p2, _ = store.append(lambda h: _body(h, "promoted", {"model_version": "1"}))
    store.append(lambda h: _body(h))
    rec = json.loads(p2.read_text())
    rec["decision"] = "rejected"
    p2.write_text(json.dumps(rec))
    report = store.verify()
    assert not report.ok and any("edited" in p for p in report.problems)
    with pytest.raises(ChainError, match="broken chain"):
        store.append(lambda h: _body(h))


def test_records_deleted_record_breaks_chain(tmp_path: Path) -> None:
    store = _store(tmp_path)
    for _ in range(3):
        store.append(lambda h: _body(h))
    store.paths()[1].unlink()
    report = store.verify()
    assert not report.ok and any("chain broken" in p or "sequence" in p for p in report.problems)


def _append_many(directory: str, n: int) -> None:
    store = RecordStore(Path(directory) / "promotions", Path(directory) / "promotions.lock")
    for _ in range(n):
        store.append(lambda h: _body(h), timeout_s=30)


def test_records_concurrent_appends_never_fork(tmp_path: Path) -> None:
    ctx = mp.get_context("spawn")
    procs = [ctx.Process(target=_append_many, args=(str(tmp_path), 5)) for _ in range(3)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
        assert p.exitcode == 0
    report = _store(tmp_path).verify()
    assert report.ok, report.problems
    assert report.records == 15


def test_records_find_by_sequence_and_prefix(tmp_path: Path) -> None:
    store = _store(tmp_path)
    _, r1 = store.append(lambda h: _body(h))
    assert store.find("1")["record_id"] == r1["record_id"]
    assert store.find(r1["record_id"][:10])["sequence"] == 1
    with pytest.raises(KeyError):
        store.find("99")


def test_load_verified_model_refuses_tampered_artifact(tmp_path: Path) -> None:
    import joblib

    art = tmp_path / "models" / "m.joblib"
    art.parent.mkdir(parents=True)
    joblib.dump({"weights": [1, 2, 3]}, art)
    import hashlib

    sha = hashlib.sha256(art.read_bytes()).hexdigest()
    champ = {"artifact_path": "models/m.joblib", "artifact_sha256": sha}
    assert load_verified_model(tmp_path, champ) == {"weights": [1, 2, 3]}
    joblib.dump({"weights": [6, 6, 6]}, art)
    with pytest.raises(VerificationError, match="does not match"):
        load_verified_model(tmp_path, champ)
    with pytest.raises(VerificationError, match="leaves the workspace"):
        load_verified_model(tmp_path, {**champ, "artifact_path": "../../etc/passwd"})


def _gate(name: str, passed: bool) -> GateResult:
    return GateResult(
        gate=name,
        passed=passed,
        metric="m",
        value=1.0,
        interval=None,
        threshold=0.0,
        reason=f"{name} reason",
    )


def test_decide_needs_every_gate() -> None:
    from tasks.gates import GATE_IDS

    assert decide(tuple(_gate(g, True) for g in GATE_IDS))[0] == "promoted"
    decision, reasons = decide(tuple(_gate(g, g != "segments") for g in GATE_IDS))
    assert decision == "rejected" and reasons == ("segments failed: segments reason",)
    decision, reasons = decide(tuple(_gate(g, True) for g in GATE_IDS[:-1]))
    assert decision == "rejected" and "gate robustness did not run" in reasons
