"""Rollback: append a ``rollback`` record (reason, who asked) seating the previous champion,
then move the MLflow alias back, under the record lock.

Crash-consistent order, like a promotion (``tasks/reconcile.py``): reconcile what an earlier
killed run left -> append the record (the source of truth; fsynced) -> remove alias
``previous`` -> alias ``champion`` -> tag ``seated_by_record``. A kill after the record leaves
a *lagging* alias: serving follows the chain at once, the next run moves the alias.
"""

from __future__ import annotations

import logging
from typing import Any

from serving.loader import store_for
from serving.settings import ServingSettings
from tasks.failpoints import failpoint
from tasks.reconcile import MlflowRegistry, move_champion_alias, reconcile_workspace
from tasks.record_models import RollbackBody, RolledBackFrom, body_dict, parse_records
from tasks.records import (
    RecordNotFound,
    current_champion,
    git_state,
    introducing_record,
    now_iso,
    resolve_artifact,
    verify_file,
)
from tasks.signing import SigningError

log = logging.getLogger(__name__)


class RollbackError(RuntimeError):
    pass


def rollback(settings: ServingSettings, *, reason: str, requested_by: str) -> dict[str, Any]:
    """Seat the champion the current one replaced; returns the ``rollback`` record. The
    record's notes say what the start-of-run reconciliation repaired."""
    store = store_for(settings)
    try:  # before anything: without the key no rollback record could be written
        store.signer()
    except SigningError as exc:
        raise RollbackError(
            f"{exc}. A rollback appends a signed record: run it where the promotion key is"
        ) from None
    with store.locked(60.0):
        cleanup = reconcile_workspace(
            store,
            settings.workspace_paths.models,
            tracking_uri=settings.tracking_uri,
            model_name=settings.model_name,
        )
        records = parse_records(store.records())
        current = current_champion(records)
        if current is None:
            raise RollbackError("no champion to roll back")
        try:
            intro = introducing_record(records, current)
        except RecordNotFound as exc:
            raise RollbackError(str(exc)) from None
        target = intro.previous_champion
        if target is None:
            raise RollbackError(f"model v{current.model_version} has no previous champion")
        verify_file(
            resolve_artifact(settings.workspace, target.artifact_path),
            target.artifact_sha256,
            "previous model artifact",
        )
        verify_file(
            resolve_artifact(settings.workspace, target.policy_path),
            target.policy_sha256,
            "previous policy document",
        )
        body = RollbackBody(
            reasons=[reason],
            requested_by=requested_by,
            champion=target,
            previous_champion=current,
            rolled_back_from=RolledBackFrom(
                model_version=current.model_version, record_id=intro.record_id
            ),
            notes=list(cleanup.notes()),
            **git_state(),
            finished_at=now_iso(),
        )
        _, record = store.append_locked(lambda _head: body_dict(body))
        failpoint("rollback:after-record")
        move_champion_alias(
            MlflowRegistry(settings.tracking_uri),
            target.model_name,
            target.model_version,
            record,
            stage="rollback",
        )
        failpoint("rollback:after-alias")
    log.info(
        "rolled back from v%s to v%s (record %s)",
        current.model_version,
        target.model_version,
        record["record_id"][:12],
    )
    return record
