"""The champion's recorded columns against this run's column roles, by plain calls."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tasks.check_schema import (
    FeatureSchemaMismatch,
    champion_record,
    check_champion_schema,
    check_feature_schema,
)
from tasks.load_data import ColumnRoles
from tasks.records import RecordStore

ROLES = ColumnRoles(
    id_column="customer_id",
    label_column="churned",
    numeric=("tenure_months", "monthly_charges_usd"),
    categorical=("region", "contract"),
    ignored=(),
    segment_columns=("region",),
    value_column="monthly_charges_usd",
)
FEATURES = {"numeric": list(ROLES.numeric), "categorical": list(ROLES.categorical)}


def _record(**schema: Any) -> dict[str, Any]:
    base = {"id_column": "customer_id", "label_column": "churned", "value_column": None}
    return {
        "record_id": "ab" * 32,
        "decision": "promoted",
        "champion": {"artifact_sha256": "f" * 64, "features": FEATURES},
        "features": FEATURES,
        "schema": {**base, **schema},
    }


def test_check_feature_schema_same_columns_passes() -> None:
    check_feature_schema(_record(value_column="monthly_charges_usd"), ROLES)


def test_check_feature_schema_allows_new_features_in_this_run() -> None:
    roles = ColumnRoles(**{**ROLES.__dict__, "numeric": (*ROLES.numeric, "usage_gb_30d")})
    check_feature_schema(_record(), roles)


def test_check_feature_schema_other_table_names_every_difference() -> None:
    other = ColumnRoles(
        id_column="row_id",
        label_column="Churn",
        numeric=("Total day minutes",),
        categorical=("State",),
        ignored=(),
        segment_columns=(),
        value_column=None,
    )
    with pytest.raises(FeatureSchemaMismatch) as err:
        check_feature_schema(_record(value_column="monthly_charges_usd"), other)
    diffs = err.value.differences
    assert diffs[0] == "label column: champion 'churned', this run 'Churn'"
    assert diffs[1] == "id column: champion 'customer_id', this run 'row_id'"
    assert any(
        d.startswith("4 champion feature(s) missing from this run: 'contract'") for d in diffs
    )
    assert any("customer-value column: champion 'monthly_charges_usd'" in d for d in diffs)
    message = str(err.value)
    assert "BAYESPILOT_HOME" in message and "paths.workspace" in message
    assert "promotion.model_name alone does not separate" in message


def test_check_feature_schema_feature_changed_kind_fails() -> None:
    roles = ColumnRoles(
        **{
            **ROLES.__dict__,
            "numeric": ("tenure_months",),
            "categorical": ("region", "contract", "monthly_charges_usd"),
        }
    )
    with pytest.raises(FeatureSchemaMismatch, match="numeric for the champion, not in this run"):
        check_feature_schema(_record(), roles)


def test_check_feature_schema_dropped_feature_fails() -> None:
    roles = ColumnRoles(**{**ROLES.__dict__, "categorical": ("region",)})
    with pytest.raises(FeatureSchemaMismatch, match=r"1 champion feature\(s\) missing.*'contract'"):
        check_feature_schema(_record(), roles)


def test_champion_record_finds_the_promoting_record_not_the_head() -> None:
    promoted = _record()
    later = {**_record(label_column="other"), "decision": "rejected"}
    assert champion_record([promoted, later], promoted["champion"]) is promoted
    assert champion_record([later], promoted["champion"]) is None
    shadow = {**_record(label_column="x"), "decision": "challenger", "champion": None}
    shadow["challenger"] = {"artifact_sha256": "c" * 64}
    seated = {"decision": "promoted", "champion": shadow["challenger"]}  # promote-challenger
    assert champion_record([promoted, shadow, seated], shadow["challenger"]) is shadow


def test_check_champion_schema_without_champion_or_records(tmp_path: Path) -> None:
    check_champion_schema(None, ROLES, promotions_dir=tmp_path / "none")
    champion = {"model_name": "m", "model_version": "1", "features": {"numeric": ["x"]}}
    with pytest.raises(FeatureSchemaMismatch, match=r"(?s)champion \(m v1\).*'x'"):
        check_champion_schema(champion, ROLES, promotions_dir=tmp_path / "none")


def test_check_champion_schema_reads_the_chain(tmp_path: Path) -> None:
    store = RecordStore(tmp_path / "promotions", tmp_path / "lock")
    body = {**_record(label_column="Exited"), "kind": "promotion"}
    _, rec = store.append(lambda _head: body)
    champion = {**body["champion"], "model_name": "m", "model_version": "3"}
    with pytest.raises(FeatureSchemaMismatch, match=rf"m v3, record {rec['record_id'][:12]}"):
        check_champion_schema(champion, ROLES, promotions_dir=store.directory)
