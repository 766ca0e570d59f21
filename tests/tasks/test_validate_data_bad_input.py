"""Unit checks behind the bad-input corpus: what the loader refuses and how validation words it
(the CLI side is tests/flows/test_bad_input.py)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from configs.settings import BayesPilotConfig, ConfigError, build_config
from tasks.load_data import DataError, read_table, resolve_roles, with_row_id
from tasks.validate_data import close_columns, validate_table
from tests.fixtures.bad.make_bad import BASE, _frame


def _cfg(**changes: dict[str, object]) -> BayesPilotConfig:
    layers = {**BASE, "data": {**BASE["data"], "path": "unused.csv"}}
    for section, values in changes.items():
        layers[section] = {**layers.get(section, {}), **values}
    return build_config(layers)


def test_read_table_refuses_repeated_header_names_before_pandas_renames_them(
    tmp_path: Path,
) -> None:
    p = tmp_path / "t.csv"
    p.write_text("id,region,region\n1,a,b\n")
    with pytest.raises(DataError, match=r"duplicate column names \['region'\]") as raised:
        read_table(p)
    assert raised.value.column == "region"


@pytest.mark.parametrize(
    ("column", "values", "kind"),
    [
        ("tags", pa.array([["a"], []], type=pa.list_(pa.string())), "list"),
        ("addr", pa.array([{"zip": 1}, {"zip": 2}]), "struct"),
        ("blob", pa.array([b"x", b"y"], type=pa.binary()), "binary"),
    ],
)
def test_read_table_names_unsupported_parquet_column_and_type(
    tmp_path: Path, column: str, values: pa.Array, kind: str
) -> None:
    p = tmp_path / "t.parquet"
    pq.write_table(pa.table({"id": [1, 2], column: values}), p)
    with pytest.raises(DataError, match=kind) as raised:
        read_table(p)
    assert raised.value.column == column and repr(column) in str(raised.value)


@pytest.mark.parametrize(("text", "says"), [("", "is empty"), ("a,b\n", "no data rows")])
def test_read_table_empty_or_header_only_is_one_message(
    tmp_path: Path, text: str, says: str
) -> None:
    p = tmp_path / "t.csv"
    p.write_text(text)
    with pytest.raises(DataError, match=says):
        read_table(p)


def test_resolve_roles_mostly_numeric_column_stays_numeric() -> None:
    frame = _frame()
    frame["MonthlyCharges"] = frame["MonthlyCharges"].astype(object)
    frame.loc[::50, "MonthlyCharges"] = "abc"
    cfg = _cfg()
    roles = resolve_roles(frame, data=cfg.data)
    assert "MonthlyCharges" in roles.numeric
    report = validate_table(frame, config=cfg).validated.report
    (issue,) = report.issues
    assert issue.column == "MonthlyCharges" and "expected a number" in issue.check
    assert issue.failing_count == len(frame[::50]) and issue.examples == ("abc",)
    # below the share a column is text: a code like A1, B2 with a few digits-only values
    codes = pd.Series(["A1", "B2", "7", "C3"] * 10)
    assert "code" in resolve_roles(frame.assign(code=codes), data=cfg.data).categorical


def test_validate_data_reports_inf_with_column_and_count() -> None:
    frame = _frame().astype({"tenure": float})
    frame.loc[[1, 4, 9], "tenure"] = [np.inf, -np.inf, np.inf]
    report = validate_table(frame, config=_cfg()).validated.report
    (issue,) = report.issues
    assert issue.column == "tenure" and "inf" in issue.check and issue.failing_count == 3


def test_validate_data_exact_duplicate_rows_apart_from_conflicting_ids() -> None:
    frame = _frame()
    doubled = pd.concat([frame, frame.head(7)], ignore_index=True)
    ids = doubled["customerID"].to_numpy(copy=True)
    ids[[10, 11]] = ids[9]  # two more rows with row 9's id, differing elsewhere
    doubled["customerID"] = ids
    report = validate_table(doubled, config=_cfg()).validated.report
    by_column = {i.column: i for i in report.issues}
    assert set(by_column) == {"(table)", "customerID"}
    exact = by_column["(table)"]
    assert exact.failing_count == 7 and "drop_duplicates()" in exact.check
    conflicting = by_column["customerID"]
    assert conflicting.failing_count == 3 and "unique id" in conflicting.check


def test_validate_data_exact_repeats_are_kept_in_a_table_without_ids(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Without an id column two customers may share every recorded value: logged, not
    refused (with ids, the same repeats fail: the test above)."""
    frame = _frame().drop(columns=["customerID"])
    cfg = _cfg(data={"id_column": None})
    doubled = with_row_id(pd.concat([frame, frame.head(7)], ignore_index=True), data=cfg.data)
    with caplog.at_level("WARNING"):
        report = validate_table(doubled, config=cfg).validated.report
    assert report.passed, report.summary()
    assert any("7 row(s) repeat an earlier row" in r.getMessage() for r in caplog.records)


def test_validate_data_missing_column_names_key_and_closest_matches() -> None:
    frame = _frame().rename(columns=str.lower)
    report = validate_table(frame, config=_cfg()).validated.report
    churn = next(i for i in report.issues if i.column == "Churn")
    assert "data.label_column" in churn.check and "'churn'" in churn.check
    assert report.found_columns == tuple(frame.columns)
    assert report.summary().count("columns in the data:") == 1
    assert close_columns("MonthlyCharges", ["monthly_charges", "gender"]) == ["monthly_charges"]


def test_validate_data_capacity_count_larger_than_rows() -> None:
    frame = _frame()
    cfg = _cfg(economics={"capacity": len(frame) + 1})
    report = validate_table(frame, config=cfg).validated.report
    (issue,) = report.issues
    assert issue.column == "economics.capacity"
    assert validate_table(
        frame, config=_cfg(economics={"capacity": len(frame)})
    ).validated.report.passed


@pytest.mark.parametrize("capacity", [1.5, 0, -0.1, 7.25])
def test_config_capacity_must_be_share_or_whole_count(capacity: float) -> None:
    with pytest.raises(ConfigError, match="economics.capacity"):
        build_config({"economics": {"capacity": capacity}})


def test_config_unknown_key_suggests_the_key_meant() -> None:
    with pytest.raises(
        ConfigError, match=r"economics\.capacty: unknown key; did you mean capacity"
    ):
        build_config({"economics": {"capacty": 0.1}})
