"""Rollback protection: a chain cut back to an older, validly signed state is refused."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

from tasks.freshness import HighWater
from tasks.records import RecordStore
from tasks.signing import KeySettings


def _store(tmp_path: Path, ws: str = "ws") -> RecordStore:
    home = tmp_path / "home"
    keys = KeySettings(
        private_key_path=home / "promotion-key.pem",
        trusted_keys_dir=home / "trusted",
        workspace=tmp_path / ws,
        environ={},
        state_dir=home / "state",
    )
    return RecordStore(tmp_path / ws / "promotions", tmp_path / ws / "promotions.lock", keys=keys)


def _body(head: dict[str, Any] | None) -> dict[str, Any]:
    return {"kind": "promotion", "decision": "rejected", "champion": None}


def _cut_back_to(store: RecordStore, keep: int) -> None:
    """Delete every record after ``keep`` and re-sign a marker for the one left at the end
    (what an attacker holding an older HEAD copy achieves)."""
    for path in store.paths()[keep:]:
        path.unlink()
    store._write_head_marker(store.records()[-1], store.signer())


def test_freshness_append_raises_the_mark_to_the_newest_record(tmp_path: Path) -> None:
    store = _store(tmp_path)
    store.append(_body)
    _, second = store.append(_body)
    marks = list((tmp_path / "home" / "state").glob("*.json"))
    assert len(marks) == 1
    mark = json.loads(marks[0].read_text())
    assert (mark["sequence"], mark["record_id"]) == (2, second["record_id"])


def test_freshness_chain_cut_back_with_an_older_head_marker_is_refused(tmp_path: Path) -> None:
    store = _store(tmp_path)
    for _ in range(3):
        store.append(_body)
    _cut_back_to(store, 2)
    report = store.verify()
    assert not report.ok
    (problem,) = report.problems  # the marker and the signatures see nothing wrong
    assert "seen record 3" in problem and "ends at record 2" in problem
    assert "delete" in problem  # the way out for an intended restore is named


def test_freshness_rewritten_chain_of_the_same_length_is_refused(tmp_path: Path) -> None:
    store = _store(tmp_path)
    store.append(_body)
    store.append(_body)
    _cut_back_to(store, 1)
    # another writer that never saw record 2 appends a different record 2
    other = RecordStore(
        store.directory,
        store.lock_path,
        keys=KeySettings(**{**store.keys.__dict__, "state_dir": tmp_path / "other-state"}),
    )
    other.append(lambda h: {**_body(h), "reasons": ["a different record 2"]})
    report = store.verify()
    assert not report.ok
    assert any("was rewritten" in p for p in report.problems), report.problems


def test_freshness_intended_restore_is_accepted_once_the_mark_is_deleted(tmp_path: Path) -> None:
    store = _store(tmp_path)
    for _ in range(3):
        store.append(_body)
    _cut_back_to(store, 2)
    for mark in (tmp_path / "home" / "state").glob("*.json"):
        mark.unlink()
    assert store.verify().ok
    _, third = store.append(_body)
    assert third["sequence"] == 3 and store.verify().ok


def test_freshness_a_copied_workspace_is_a_chain_of_its_own(tmp_path: Path) -> None:
    store = _store(tmp_path)
    store.append(_body)
    shutil.copytree(tmp_path / "ws", tmp_path / "copy")
    copy = _store(tmp_path, "copy")
    copy.append(_body)  # the copy moves on ...
    assert store.verify().ok  # ... which says nothing about the original
    assert copy.verify().ok


def test_freshness_unwritable_state_dir_does_not_fail_verification(tmp_path: Path) -> None:
    store = _store(tmp_path)
    store.append(_body)
    blocked = HighWater(tmp_path / "file-not-dir" / "state")
    (tmp_path / "file-not-dir").write_text("")
    blocked.advance(store.directory, store.records())  # logged, not raised
    assert blocked.problem(store.directory, store.records()) is None
