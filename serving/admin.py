"""Rollback: move the MLflow alias back to the previous champion and append a ``rollback``
record (reason, who asked), under the record lock."""

from __future__ import annotations

import contextlib
from typing import Any

from serving.loader import NotReady, introducing_record, store_for
from serving.settings import ServingSettings
from tasks.records import champion_of, git_state, now_iso, resolve_artifact, verify_file
from tasks.signing import SigningError


class RollbackError(RuntimeError):
    pass


def rollback(settings: ServingSettings, *, reason: str, requested_by: str) -> dict[str, Any]:
    store = store_for(settings)
    try:  # before the alias moves: without the key no rollback record could be written
        store.signer()
    except SigningError as exc:
        raise RollbackError(
            f"{exc}. A rollback appends a signed record: run it where the promotion key is"
        ) from None
    with store.locked(60.0):
        records = store.records()
        current = champion_of(records[-1]) if records else None
        if current is None:
            raise RollbackError("no champion to roll back")
        try:
            intro = introducing_record(records, current)
        except NotReady as exc:
            raise RollbackError(str(exc)) from None
        target = intro.get("previous_champion")
        if not target:
            raise RollbackError(f"model v{current['model_version']} has no previous champion")
        verify_file(
            resolve_artifact(settings.workspace, target["artifact_path"]),
            target["artifact_sha256"],
            "previous model artifact",
        )
        verify_file(
            resolve_artifact(settings.workspace, target["policy_path"]),
            target["policy_sha256"],
            "previous policy document",
        )
        from mlflow import MlflowClient

        client = MlflowClient(tracking_uri=settings.tracking_uri)
        client.set_registered_model_alias(
            str(target["model_name"]), "champion", str(target["model_version"])
        )
        with contextlib.suppress(Exception):  # the alias may not exist; nothing to undo
            client.delete_registered_model_alias(str(current["model_name"]), "previous")
        body = {
            "kind": "rollback",
            "decision": "rolled-back",
            "reasons": [reason],
            "requested_by": requested_by,
            "champion": target,
            "previous_champion": current,
            "rolled_back_from": {
                "model_version": current["model_version"],
                "record_id": intro["record_id"],
            },
            **git_state(),
            "finished_at": now_iso(),
        }
        _, record = store.append_locked(lambda _head: body)
        return record
