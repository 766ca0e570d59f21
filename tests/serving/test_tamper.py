"""Tampering with a promoted workspace: each case is refused by `bayespilot verify` (exit 1,
with the reason), by a freshly started loader, and by a running service, which says why in
/readyz and keeps serving the model it verified at load."""

from __future__ import annotations

import hashlib
import json
import pickle
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml
from fastapi.testclient import TestClient

from flows.cli import main as cli_main
from serving.loader import NotReady, load_challenger, load_champion
from serving.main import create_app
from serving.settings import ServingSettings
from tasks.records import RecordStore, record_hash, signed_message
from tasks.signing import KeySettings, load_signer

from .conftest import customer


class _WritesMarker:
    """A pickle payload: unpickling it runs code that writes ``marker``."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Any, ...]:
        return (exec, (f"open({str(self.marker)!r}, 'w').write('code ran')",))


def _head(ws: Path) -> tuple[Path, dict[str, Any]]:
    path = RecordStore(ws / "promotions").paths()[-1]
    return path, json.loads(path.read_text())


def _write_record(ws: Path, rec: dict[str, Any], replace: Path | None = None) -> None:
    """Write ``rec`` under the name its (recomputed) record_id gives it."""
    rec["record_id"] = record_hash(rec)
    if replace is not None:
        replace.unlink()
    name = f"{rec['sequence']:06d}-{rec['kind']}-{rec['record_id'][:12]}.json"
    (ws / "promotions" / name).write_text(json.dumps(rec, indent=2, sort_keys=True))


def flip_artifact_byte(ws: Path, tmp_path: Path) -> str:
    _, head = _head(ws)
    art = ws / head["champion"]["artifact_path"]
    data = bytearray(art.read_bytes())
    data[len(data) // 2] ^= 0x01
    art.write_bytes(bytes(data))
    return "model artifact model.joblib SHA-256"


def edit_gate_recompute_hash(ws: Path, tmp_path: Path) -> str:
    path, head = _head(ws)
    head["gates"][0]["value"] = 123.0
    _write_record(ws, head, replace=path)  # signature left as it was: it no longer matches
    return "bad signature"


def _forge_record(ws: Path, tmp_path: Path) -> dict[str, Any]:
    """A record naming a new model file whose unpickling would write ``tmp_path/marker``."""
    _, head = _head(ws)
    evil = ws / "models" / "forged" / "model.joblib"
    evil.parent.mkdir(parents=True)
    evil.write_bytes(pickle.dumps(_WritesMarker(tmp_path / "marker")))
    champion = {
        **head["champion"],
        "artifact_path": "models/forged/model.joblib",
        "artifact_sha256": hashlib.sha256(evil.read_bytes()).hexdigest(),
    }
    forged = {k: v for k, v in head.items() if k != "signature"}
    forged.update(
        champion=champion,
        previous_champion=head["champion"],
        sequence=head["sequence"] + 1,
        previous_record_id=head["record_id"],
    )
    return forged


def forge_unsigned_record(ws: Path, tmp_path: Path) -> str:
    _write_record(ws, _forge_record(ws, tmp_path))
    return "unsigned"


def forge_record_signed_by_own_key(ws: Path, tmp_path: Path) -> str:
    forged = _forge_record(ws, tmp_path)
    forger = KeySettings(
        private_key_path=tmp_path / "forger" / "key.pem",
        trusted_keys_dir=tmp_path / "forger" / "trusted",
        workspace=ws,  # its public key lands in <workspace>/keys/, which is not trusted
        environ={},
    )
    forged["record_id"] = record_hash(forged)
    forged["signature"] = load_signer(forger).sign(signed_message(forged))
    _write_record(ws, forged)
    return "unknown key"


def edit_policy_file(ws: Path, tmp_path: Path) -> str:
    _, head = _head(ws)
    policy = ws / head["champion"]["policy_path"]
    doc = json.loads(policy.read_text())
    doc["contact_cost_usd"] = 0.01
    policy.write_text(json.dumps(doc))
    return "policy document"


def delete_newest_promotion(ws: Path, tmp_path: Path) -> str:
    path, head = _head(ws)
    assert head["decision"] == "promoted"
    path.unlink()
    return "were deleted"


def delete_newest_rejection(ws: Path, tmp_path: Path) -> str:
    store = RecordStore(ws / "promotions", ws / "promotions.lock")
    path, rec = store.append(
        lambda h: {
            "kind": "promotion",
            "decision": "rejected",
            "reasons": ["business failed"],
            "champion": (h or {})["champion"],
            "gates": [],
        }
    )
    path.unlink()  # hiding a failed attempt
    return "were deleted"


def _put_back_older_head_marker(ws: Path) -> None:
    """What an attacker holding a copy of an older (validly signed) ``promotions/HEAD`` does
    after deleting the newest record: the chain and its marker agree again."""
    store = RecordStore(ws / "promotions", ws / "promotions.lock")
    older = store.records()[-1]
    store._write_head_marker(older, store.signer())  # byte-equal to the older copy
    assert store._head_marker_problems(store.records(), store.trust()) == []


def delete_newest_promotion_and_put_back_older_head(ws: Path, tmp_path: Path) -> str:
    delete_newest_promotion(ws, tmp_path)
    _put_back_older_head_marker(ws)
    return "newer records were deleted"


def delete_newest_rejection_and_put_back_older_head(ws: Path, tmp_path: Path) -> str:
    delete_newest_rejection(ws, tmp_path)
    _put_back_older_head_marker(ws)
    return "newer records were deleted"


def move_alias_by_hand(ws: Path, tmp_path: Path) -> str:
    """The registry alias moved back to v1 outside BayesPilot (v2 was seated by its record,
    so this is not the crash window between a record and its alias move)."""
    from mlflow import MlflowClient

    from configs.settings import build_config

    uri = build_config({"paths": {"workspace": str(ws)}}).mlflow_uri()
    MlflowClient(tracking_uri=uri).set_registered_model_alias("churn-risk", "champion", "1")
    return "points at v1"


CASES: list[Callable[[Path, Path], str]] = [
    flip_artifact_byte,
    edit_gate_recompute_hash,
    forge_unsigned_record,
    forge_record_signed_by_own_key,
    edit_policy_file,
    delete_newest_promotion,
    delete_newest_rejection,
    delete_newest_promotion_and_put_back_older_head,
    delete_newest_rejection_and_put_back_older_head,
    move_alias_by_hand,
]


def _verify(ws: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    cfg = tmp_path / "verify.yaml"
    cfg.write_text(yaml.safe_dump({"paths": {"workspace": str(ws)}}))
    rc = cli_main(["verify", "--config", str(cfg)])
    out = capsys.readouterr()
    return rc, out.out + out.err


def test_tamper_untouched_workspace_verifies(
    settings: ServingSettings, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    rc, out = _verify(settings.workspace, tmp_path, capsys)
    assert rc == 0, out
    assert "chain intact and signed: 2 record(s)" in out
    assert "file(s) match" in out
    assert load_champion(settings).model_version == "2"


@pytest.mark.parametrize("tamper", CASES, ids=lambda f: f.__name__)
def test_tamper_is_refused_by_verify_fresh_loader_and_running_service(
    tamper: Callable[[Path, Path], str],
    settings: ServingSettings,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    app = create_app(settings, follow=False)
    state = app.state.serving
    with TestClient(app) as client:
        assert client.get("/readyz").json()["model_version"] == "2"
        reason = tamper(settings.workspace, tmp_path)

        # the running service: a forced reload refuses, says why, keeps the verified model
        state.check(force=True)
        ready = client.get("/readyz")
        assert ready.status_code == 200
        body = ready.json()
        assert body["ready"] and body["model_version"] == "2"
        assert reason in (body["last_error"] or ""), body["last_error"]
        assert client.post("/v1/score", json=customer()).json()["model_version"] == "2"

    # a freshly started loader refuses with the reason
    with pytest.raises(NotReady, match=reason):
        load_champion(settings)

    # `bayespilot verify` exits 1 and names the problem
    rc, out = _verify(settings.workspace, tmp_path, capsys)
    assert rc == 1 and "verification FAILED" in out and reason in out, out

    # no forged pickle was ever unpickled
    assert not (tmp_path / "marker").exists()


def test_tamper_forged_pickle_payload_is_live(tmp_path: Path, workspace_copy: Path) -> None:
    """The forged artifact really would run code if it were unpickled (so the refusals above
    are what keeps the marker from being written)."""
    import io

    import joblib

    forged = _forge_record(workspace_copy, tmp_path)
    joblib.load(io.BytesIO((workspace_copy / forged["champion"]["artifact_path"]).read_bytes()))
    assert (tmp_path / "marker").read_text() == "code ran"


def test_tamper_verify_reports_hand_moved_alias(
    settings: ServingSettings, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from mlflow import MlflowClient

    MlflowClient(tracking_uri=settings.tracking_uri).set_registered_model_alias(
        settings.model_name, "champion", "1"
    )
    rc, out = _verify(settings.workspace, tmp_path, capsys)
    assert rc == 1 and "alias 'champion'" in out and "points at v1" in out, out


def test_tamper_verify_lists_every_problem(
    settings: ServingSettings, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    flip_artifact_byte(settings.workspace, tmp_path)
    edit_policy_file(settings.workspace, tmp_path)
    first = sorted((settings.workspace / "promotions").glob("*.json"))[0]
    rec = json.loads(first.read_text())
    del rec["signature"]
    first.write_text(json.dumps(rec))
    rc, out = _verify(settings.workspace, tmp_path, capsys)
    assert rc == 1
    assert "unsigned" in out and "model artifact" in out and "policy document" in out, out


def test_tamper_forged_challenger_is_refused_by_shadow_loader_and_batch_score(
    settings: ServingSettings, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    ws = settings.workspace
    forged = _forge_record(ws, tmp_path)
    forged.update(decision="challenger", challenger=forged["champion"])
    forged["champion"] = forged["previous_champion"]
    _write_record(ws, forged)
    with pytest.raises(NotReady, match="unsigned"):
        load_challenger(settings)  # what challenger scoring loads (resolve + load)
    cfg = tmp_path / "score.yaml"
    cfg.write_text(yaml.safe_dump({"paths": {"workspace": str(ws)}}))
    frame = tmp_path / "in.csv"
    frame.write_text(",".join(customer()) + "\n" + ",".join(map(str, customer().values())) + "\n")
    rc = cli_main(
        ["score", "--config", str(cfg), "--input", str(frame), "--output", str(tmp_path / "o.csv")]
    )
    err = capsys.readouterr().err
    assert rc == 1 and "not ready" in err and "unsigned" in err, err
    assert not (tmp_path / "o.csv").exists()
    assert not (tmp_path / "marker").exists()


def test_tamper_verify_sign_unsigned_adopts_a_legacy_workspace(
    settings: ServingSettings, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    ws = settings.workspace
    for path in RecordStore(ws / "promotions").paths():  # as written before signing existed
        rec = json.loads(path.read_text())
        del rec["signature"]
        path.write_text(json.dumps(rec))
    (ws / "promotions" / "HEAD").unlink()
    with pytest.raises(NotReady, match="unsigned"):
        load_champion(settings)
    cfg = tmp_path / "verify.yaml"
    cfg.write_text(yaml.safe_dump({"paths": {"workspace": str(ws)}}))
    rc = cli_main(["verify", "--config", str(cfg), "--sign-unsigned"])
    out = capsys.readouterr().out
    assert rc == 0 and "signed 2 record(s)" in out and "chain intact and signed" in out, out
    assert load_champion(settings).model_version == "2"
