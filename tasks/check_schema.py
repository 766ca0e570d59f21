"""Does this run's table fit the workspace's champion? Checked before any training or gating.

A workspace holds one champion seat (one record chain). A run on another table in the same
workspace would train and gate for minutes and then fail the champion gate, because the champion
cannot score data without its own columns. This check compares the columns the champion was
gated on (its promotion record) with this run's column roles and stops with what to do.

What must match: the label column, the id column, every champion feature present as a feature of
the same kind (numeric or categorical), and the champion's customer-value column present. New
features in this run are allowed: the champion still scores on its own columns.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from tasks.load_data import ColumnRoles
from tasks.records import RecordStore

MAX_NAMES = 8


class FeatureSchemaMismatch(ValueError):
    """This run's columns differ from the workspace champion's; nothing was trained."""

    def __init__(self, message: str, differences: Sequence[str]) -> None:
        super().__init__(message)
        self.differences = tuple(differences)


def _names(columns: Iterable[str]) -> str:
    names = sorted(columns)
    shown = ", ".join(repr(c) for c in names[:MAX_NAMES])
    return shown + (f", ... (+{len(names) - MAX_NAMES} more)" if len(names) > MAX_NAMES else "")


def champion_record(
    records: Sequence[dict[str, Any]], champion: dict[str, Any]
) -> dict[str, Any] | None:
    """The run record that gated the champion's artifact: the promotion that made it champion
    (a policy update keeps it), or the challenger run a ``promote-challenger`` seated."""
    sha = champion.get("artifact_sha256")
    for rec in reversed(records):
        if not rec.get("schema"):
            continue  # not a training run's record
        decision = rec.get("decision")
        block = (rec.get("champion") if decision == "promoted" else rec.get("challenger")) or {}
        if decision in ("promoted", "challenger") and block.get("artifact_sha256") == sha:
            return rec
    return None


def schema_differences(
    champion_record: dict[str, Any], roles: ColumnRoles, *, features: dict[str, Any] | None = None
) -> list[str]:
    """What in ``roles`` keeps the champion of ``champion_record`` from being compared with
    this run (empty when nothing does). ``features`` overrides the record's feature lists."""
    recorded = features if features is not None else champion_record.get("features") or {}
    schema = champion_record.get("schema") or {}
    differences = []
    label = schema.get("label_column")
    if label is not None and label != roles.label_column:
        differences.append(f"label column: champion {label!r}, this run {roles.label_column!r}")
    id_column = schema.get("id_column")
    if id_column is not None and id_column != roles.id_column:
        differences.append(f"id column: champion {id_column!r}, this run {roles.id_column!r}")
    kinds = {"numeric": set(roles.numeric), "categorical": set(roles.categorical)}
    run_features = set(roles.features)
    missing: set[str] = set()
    for kind, names in kinds.items():
        champion_names = set(recorded.get(kind) or [])
        missing |= champion_names - run_features
        retyped = (champion_names & run_features) - names
        if retyped:
            differences.append(f"{kind} for the champion, not in this run: {_names(retyped)}")
    if missing:
        differences.append(
            f"{len(missing)} champion feature(s) missing from this run: {_names(missing)}"
        )
    value = schema.get("value_column")
    if value and value != roles.value_column and value not in run_features:
        differences.append(
            f"customer-value column: champion {value!r}, absent from this run "
            f"(this run: {roles.value_column!r})"
        )
    return differences


def check_feature_schema(
    champion_record: dict[str, Any],
    roles: ColumnRoles,
    *,
    features: dict[str, Any] | None = None,
    champion_name: str = "the champion",
) -> None:
    """Raise :class:`FeatureSchemaMismatch` when this run's columns cannot be gated against the
    champion of ``champion_record``, saying what differs and what to do."""
    differences = schema_differences(champion_record, roles, features=features)
    if not differences:
        return
    raise FeatureSchemaMismatch(
        f"this workspace's champion ({champion_name}) was trained on different columns than "
        "this run's data, so the champion gate cannot compare them:\n  - "
        + "\n  - ".join(differences)
        + "\nTo train a model for this table, use a fresh workspace: set BAYESPILOT_HOME (or "
        "paths.workspace) to a new directory. A workspace has one champion seat, so "
        "promotion.model_name alone does not separate two tables. If this is the champion's "
        "table, set data.* (label_column, id_column, numeric, categorical, ignore) and "
        "economics.customer_value.column as the champion's run did (bayespilot show <record>).",
        differences,
    )


def check_champion_schema(
    champion: dict[str, Any] | None, roles: ColumnRoles, *, promotions_dir: Path
) -> None:
    """:func:`check_feature_schema` against the workspace's current champion (none: no check).
    Reads the record that gated the champion from the chain in ``promotions_dir``."""
    if champion is None:
        return
    record = champion_record(RecordStore(promotions_dir).records(), champion) or {}
    name = f"{champion.get('model_name')} v{champion.get('model_version')}" + (
        f", record {str(record['record_id'])[:12]}" if record.get("record_id") else ""
    )
    check_feature_schema(record, roles, features=champion.get("features") or {}, champion_name=name)
