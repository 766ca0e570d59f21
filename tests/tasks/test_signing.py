"""Signed records: keys, signatures, trust, and read-once verified loading."""

from __future__ import annotations

import hashlib
import io
import json
import pickle
import stat
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from configs.settings import SigningConfig
from tasks.records import (
    RecordStore,
    VerificationError,
    load_verified_model,
    read_verified,
    record_hash,
    signed_message,
)
from tasks.signing import (
    KeySettings,
    SigningError,
    fingerprint,
    load_signer,
    load_trust,
)


def _keys(tmp_path: Path, name: str = "owner", **extra: Any) -> KeySettings:
    home = tmp_path / name
    return KeySettings(
        private_key_path=home / "promotion-key.pem",
        trusted_keys_dir=home / "trusted",
        workspace=tmp_path / "ws",
        **{"environ": {}, "state_dir": home / "state", **extra},
    )


def _store(tmp_path: Path, keys: KeySettings) -> RecordStore:
    ws = tmp_path / "ws"
    return RecordStore(ws / "promotions", ws / "promotions.lock", keys=keys)


def _body(head: dict[str, Any] | None) -> dict[str, Any]:
    return {"kind": "promotion", "decision": "rejected", "champion": None}


def _pem(key: Ed25519PrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def test_signing_first_use_creates_private_key_0600_outside_workspace(tmp_path: Path) -> None:
    keys = _keys(tmp_path)
    signer = load_signer(keys)
    assert keys.private_key_path.is_file()
    assert stat.S_IMODE(keys.private_key_path.stat().st_mode) == 0o600
    pub_name = f"{signer.key_id[:16]}.pub"
    # public half published to the trusted folder and the workspace; no private key there
    assert (keys.trusted_keys_dir / pub_name).is_file()
    assert (tmp_path / "ws" / "keys" / pub_name).is_file()
    assert not any(b"PRIVATE" in p.read_bytes() for p in (tmp_path / "ws").rglob("*.pub"))
    assert load_signer(keys).key_id == signer.key_id  # reused, not re-created


def test_signing_default_key_path_honours_xdg_config_home(tmp_path: Path) -> None:
    keys = KeySettings.from_config(
        SigningConfig(), tmp_path / "ws", environ={"XDG_CONFIG_HOME": str(tmp_path / "cfg")}
    )
    assert keys.private_key_path == tmp_path / "cfg" / "bayespilot" / "promotion-key.pem"
    assert keys.trusted_keys_dir == tmp_path / "cfg" / "bayespilot" / "trusted"


def test_signing_refuses_group_readable_key_file(tmp_path: Path) -> None:
    keys = _keys(tmp_path)
    load_signer(keys)
    keys.private_key_path.chmod(0o644)
    with pytest.raises(SigningError, match="chmod 600"):
        load_signer(keys)


def test_signing_environment_override_pem_and_path(tmp_path: Path) -> None:
    key = Ed25519PrivateKey.generate()
    expected = fingerprint(key.public_key())
    from_pem = load_signer(_keys(tmp_path, environ={"BAYESPILOT_SIGNING_KEY": _pem(key).decode()}))
    assert from_pem.key_id == expected and "PEM" in from_pem.source
    path = tmp_path / "secret.pem"
    path.write_bytes(_pem(key))
    from_path = load_signer(_keys(tmp_path, environ={"BAYESPILOT_SIGNING_KEY": str(path)}))
    assert from_path.key_id == expected
    assert not (tmp_path / "owner" / "promotion-key.pem").exists()  # nothing created


def test_signing_without_key_and_create_off_says_what_to_do(tmp_path: Path) -> None:
    keys = _keys(tmp_path, create_key=False)
    with pytest.raises(SigningError, match="signing.private_key_path or \\$BAYESPILOT_SIGNING_KEY"):
        _store(tmp_path, keys).append(_body)
    assert not keys.private_key_path.exists()


def test_signing_records_are_signed_and_verify(tmp_path: Path) -> None:
    store = _store(tmp_path, _keys(tmp_path))
    _, r1 = store.append(_body)
    _, r2 = store.append(_body)
    sig = r2["signature"]
    assert sig["algorithm"] == "ed25519" and sig["key_id"] == store.signer().key_id
    assert record_hash(r2) == r2["record_id"]  # the signature is outside the hash
    report = store.verify()
    assert report.ok, report.problems
    assert report.records == 2 and report.head_id == r2["record_id"]


def test_signing_recomputed_hash_after_edit_is_refused(tmp_path: Path) -> None:
    store = _store(tmp_path, _keys(tmp_path))
    path, rec = store.append(_body)
    rec["decision"] = "promoted"
    rec["record_id"] = record_hash(rec)
    new = path.with_name(f"000001-promotion-{rec['record_id'][:12]}.json")
    path.unlink()
    new.write_text(json.dumps(rec))
    report = store.verify()
    assert not report.ok
    assert any("bad signature" in p for p in report.problems), report.problems


def test_signing_unsigned_record_is_refused(tmp_path: Path) -> None:
    store = _store(tmp_path, _keys(tmp_path))
    path, rec = store.append(_body)
    del rec["signature"]
    path.write_text(json.dumps(rec))
    report = store.verify()
    assert not report.ok and any("unsigned" in p for p in report.problems), report.problems


def test_signing_unknown_key_is_refused_even_if_published_in_workspace(tmp_path: Path) -> None:
    owner = _keys(tmp_path)
    _store(tmp_path, owner).append(_body)
    # a forger with write access to the workspace signs with a key of their own; signing
    # publishes its public key into <workspace>/keys/, which is not trusted by default
    forger = _keys(tmp_path, "forger")
    _store(tmp_path, forger).signer()
    forged_store = RecordStore(tmp_path / "ws" / "promotions", keys=forger)
    head = forged_store.records()[-1]
    forged = {**_body(head), "sequence": 2, "previous_record_id": head["record_id"]}
    forged["record_id"] = record_hash(forged)
    forged["signature"] = forged_store.signer().sign(signed_message(forged))
    (
        tmp_path / "ws" / "promotions" / f"000002-promotion-{forged['record_id'][:12]}.json"
    ).write_text(json.dumps(forged))
    assert len(list((tmp_path / "ws" / "keys").glob("*.pub"))) == 2
    report = _store(tmp_path, owner).verify()
    assert not report.ok
    assert any("000002" in p and "unknown key" in p for p in report.problems), report.problems
    # opting in to workspace keys is what would let it through (documented as unsafe)
    lax = _keys(tmp_path, trust_workspace_keys=True)
    assert _store(tmp_path, lax).verify().ok


def test_signing_appending_refuses_a_chain_with_a_forged_record(tmp_path: Path) -> None:
    store = _store(tmp_path, _keys(tmp_path))
    path, rec = store.append(_body)
    rec["signature"]["key_id"] = "0" * 64
    path.write_text(json.dumps(rec))
    with pytest.raises(Exception, match="broken chain"):
        store.append(_body)


def test_signing_trusted_keys_list_accepts_a_copied_public_key(tmp_path: Path) -> None:
    owner = _keys(tmp_path)
    _store(tmp_path, owner).append(_body)
    pub = next((tmp_path / "ws" / "keys").glob("*.pub"))
    copied = tmp_path / "serving-host" / "champion.pub"
    copied.parent.mkdir()
    copied.write_bytes(pub.read_bytes())
    public_only = KeySettings(
        private_key_path=tmp_path / "none" / "key.pem",
        trusted_keys_dir=tmp_path / "none" / "trusted",
        trusted_keys=(copied,),
        create_key=False,
        environ={},
    )
    assert len(load_trust(public_only).keys) == 1
    assert _store(tmp_path, public_only).verify().ok
    assert not (tmp_path / "none").exists()  # verifying never creates a key


class _WritesMarker:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Any, ...]:
        return (exec, (f"open({str(self.marker)!r}, 'w').write('ran')",))


def test_signing_load_verified_model_unpickles_only_the_checked_bytes(tmp_path: Path) -> None:
    import joblib

    art = tmp_path / "models" / "m.joblib"
    art.parent.mkdir()
    joblib.dump({"weights": [1, 2, 3]}, art)
    sha = hashlib.sha256(art.read_bytes()).hexdigest()
    block = {"artifact_path": "models/m.joblib", "artifact_sha256": sha}
    assert load_verified_model(tmp_path, block) == {"weights": [1, 2, 3]}
    marker = tmp_path / "marker"
    art.write_bytes(pickle.dumps(_WritesMarker(marker)))  # swapped after the record was made
    with pytest.raises(VerificationError, match="does not match the record"):
        load_verified_model(tmp_path, block)
    assert not marker.exists()
    # the payload is live: unpickled without the check it would have run
    joblib.load(io.BytesIO(art.read_bytes()))
    assert marker.read_text() == "ran"


def test_signing_read_verified_names_missing_file(tmp_path: Path) -> None:
    with pytest.raises(VerificationError, match="model artifact missing"):
        read_verified(tmp_path / "nope.joblib", "0" * 64, "model artifact")


def test_signing_head_marker_shows_a_deleted_newest_record(tmp_path: Path) -> None:
    store = _store(tmp_path, _keys(tmp_path))
    store.append(_body)
    newest, _ = store.append(_body)
    assert json.loads(store.head_marker_path.read_text())["sequence"] == 2
    newest.unlink()
    report = store.verify()
    assert not report.ok
    assert any("chain ends at 1" in p and "deleted" in p for p in report.problems), report.problems
    store.head_marker_path.unlink()
    report = store.verify()
    assert not report.ok and any("HEAD is missing" in p for p in report.problems)


def test_signing_head_marker_one_behind_is_a_crash_and_is_repaired(tmp_path: Path) -> None:
    store = _store(tmp_path, _keys(tmp_path))
    store.append(_body)
    after_first = store.head_marker_path.read_bytes()
    store.append(_body)
    store.head_marker_path.write_bytes(after_first)  # killed between record and marker
    assert store.verify().ok
    _, third = store.append(_body)
    assert json.loads(store.head_marker_path.read_text())["record_id"] == third["record_id"]
    store.head_marker_path.write_bytes(after_first)  # two behind: not a crash
    assert not store.verify().ok


def test_signing_head_marker_must_be_signed_by_a_trusted_key(tmp_path: Path) -> None:
    store = _store(tmp_path, _keys(tmp_path))
    store.append(_body)
    marker = json.loads(store.head_marker_path.read_text())
    marker["signature"]["value"] = marker["signature"]["value"][::-1]
    store.head_marker_path.write_text(json.dumps(marker))
    report = store.verify()
    assert not report.ok and any("head marker HEAD: bad signature" in p for p in report.problems)


def _legacy_chain(store: RecordStore) -> list[Path]:
    """A chain as written before signing: hashes and links, no signatures, no head marker."""
    paths = [store.append(_body)[0] for _ in range(3)]
    for path in paths:
        rec = json.loads(path.read_text())
        del rec["signature"]
        path.write_text(json.dumps(rec))
    store.head_marker_path.unlink()
    return paths


def test_signing_sign_unsigned_adopts_an_intact_legacy_chain(tmp_path: Path) -> None:
    store = _store(tmp_path, _keys(tmp_path))
    paths = _legacy_chain(store)
    ids = [json.loads(p.read_text())["record_id"] for p in paths]
    assert not store.verify().ok
    assert store.sign_unsigned() == 3
    report = store.verify()
    assert report.ok, report.problems
    assert [json.loads(p.read_text())["record_id"] for p in paths] == ids  # links unchanged


def test_signing_sign_unsigned_refuses_an_edited_legacy_chain(tmp_path: Path) -> None:
    from tasks.records import ChainError

    store = _store(tmp_path, _keys(tmp_path))
    paths = _legacy_chain(store)
    rec = json.loads(paths[1].read_text())
    rec["decision"] = "promoted"
    paths[1].write_text(json.dumps(rec))
    with pytest.raises(ChainError, match="other problems.*edited"):
        store.sign_unsigned()
    assert "signature" not in json.loads(paths[0].read_text())  # nothing was signed


def test_signing_checks_of_a_long_chain_cost_its_new_records_only(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import tasks.records as records

    store = _store(tmp_path, _keys(tmp_path))
    for _ in range(3):
        store.append(_body)
    assert store.verify().ok
    calls: list[str] = []
    real = records.signed_message

    def counted(rec: dict[str, Any]) -> bytes:
        calls.append(str(rec["record_id"]))
        return real(rec)

    monkeypatch.setattr(records, "signed_message", counted)
    assert store.verify().ok
    assert calls == []  # the same bytes, the same trusted key: nothing verified again
    store.append(_body)
    calls.clear()
    assert store.verify().ok
    assert len(calls) == 1  # only the new record
    # an edit (new bytes) is always checked afresh, even with a recomputed hash
    path = store.paths()[1]
    rec = json.loads(path.read_text())
    rec["decision"] = "promoted"
    rec["record_id"] = record_hash(rec)
    path.write_text(json.dumps(rec))
    assert any("bad signature" in p for p in store.verify().problems)
