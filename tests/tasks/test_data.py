"""Generator, loading, column roles, validation and splits by plain calls."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import roc_auc_score

from configs.settings import ROW_ID_COLUMN, BayesPilotConfig, build_config, load_config
from tasks.evaluate import customer_values, realised_profit
from tasks.generate_data import TRUTH_COLUMN, generate_data
from tasks.load_data import (
    DataError,
    frame_sha256,
    load_data,
    read_table,
    resolve_roles,
    with_row_id,
)
from tasks.split_data import SPLIT_NAMES, split_data
from tasks.validate_data import validate_table

from ..conftest import FIXTURES


def _path(cfg: BayesPilotConfig) -> Path:
    """The configured data file (these tests always configure one)."""
    assert cfg.data.path is not None
    return Path(cfg.data.path)


def test_generate_data_is_deterministic_for_a_seed() -> None:
    a = generate_data(rows=3000, seed=5)
    b = generate_data(rows=3000, seed=5)
    pd.testing.assert_frame_equal(a, b)
    assert not a.equals(generate_data(rows=3000, seed=6))


def test_generate_data_has_realistic_shape() -> None:
    df = generate_data(rows=60_000, seed=7)
    y = (df["churned"] == "yes").to_numpy()
    features = [c for c in df.columns if c not in ("customer_id", "churned", TRUTH_COLUMN)]
    assert len(features) >= 12
    assert 0.2 <= y.mean() <= 0.3
    assert 0.78 <= roc_auc_score(y, df[TRUTH_COLUMN]) <= 0.88
    small = (df["region"] == "islands").mean()
    assert 0.02 <= small <= 0.05
    assert df[["total_charges_usd", "usage_gb_30d"]].isna().mean().between(0.005, 0.1).all()


def test_generate_data_default_economics_make_policy_matter() -> None:
    cfg = load_config(Path("configs/default.yaml"), environ={})
    df = generate_data(rows=60_000, seed=7)
    p = df[TRUTH_COLUMN].to_numpy()
    values = customer_values(df, economics=cfg.economics)
    profit = realised_profit(p, values, economics=cfg.economics)  # expected, with the truth
    assert profit.mean() < 0  # contacting everyone loses money
    assert np.where(profit > 0, profit, 0).mean() > 2  # a good policy earns it


def test_load_data_keeps_truth_out_of_features(small_config) -> None:
    loaded = load_data(small_config)
    assert TRUTH_COLUMN not in loaded.frame.columns
    assert loaded.truth is not None and len(loaded.truth) == len(loaded.frame)
    roles = resolve_roles(loaded.frame, data=small_config.data)
    assert TRUTH_COLUMN not in roles.features
    assert "customer_id" not in roles.features and "churned" not in roles.features


def test_resolve_roles_reads_blank_numeric_as_numeric(telco_frame) -> None:
    cfg = build_config({"data": {"id_column": "customerID", "label_column": "Churn"}})
    roles = resolve_roles(telco_frame, data=cfg.data)
    assert "TotalCharges" in roles.numeric
    assert "Contract" in roles.categorical


def test_resolve_roles_listed_categorical_keeps_other_text_columns(telco_frame) -> None:
    data = {"id_column": "customerID", "label_column": "Churn", "categorical": ["SeniorCitizen"]}
    roles = resolve_roles(telco_frame, data=build_config({"data": data}).data)
    assert roles.categorical[0] == "SeniorCitizen" and "SeniorCitizen" not in roles.numeric
    assert {"Contract", "PaymentMethod", "gender"} <= set(roles.categorical)
    assert {"tenure", "MonthlyCharges", "TotalCharges"} <= set(roles.numeric)
    both = {**data, "numeric": ["tenure"]}
    exact = resolve_roles(telco_frame, data=build_config({"data": both}).data)
    assert exact.numeric == ("tenure",) and exact.categorical == ("SeniorCitizen",)


def test_read_table_rejects_unknown_suffix(tmp_path: Path) -> None:
    p = tmp_path / "x.xlsx"
    p.write_text("nope")
    with pytest.raises(DataError, match="expected a .csv or .parquet"):
        read_table(p)


def test_read_table_missing_file_names_path(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="data.path: file not found"):
        read_table(tmp_path / "none.csv")


def test_read_table_parquet_roundtrip(tmp_path: Path, telco_frame) -> None:
    p = tmp_path / "t.parquet"
    telco_frame.to_parquet(p)
    assert len(read_table(p)) == len(telco_frame)


def test_validate_data_telco_fixture_passes_and_counts_blanks(telco_layers) -> None:
    cfg = build_config(telco_layers)
    out = validate_table(read_table(_path(cfg)), config=cfg).validated
    assert out.report.passed, out.report.summary()
    blanks = out.report.blank_as_missing["TotalCharges"]
    assert blanks > 0
    assert out.frame is not None and out.frame["TotalCharges"].isna().sum() == blanks
    assert set(out.frame["Churn"].unique()) == {0, 1}


def test_validate_data_reports_three_problems_at_once(telco_layers) -> None:
    cfg = build_config(telco_layers)
    out = validate_table(read_table(FIXTURES / "broken.csv"), config=cfg).validated
    assert not out.report.passed and out.frame is None
    by_col = {(i.column, i.check.split(" [")[0]) for i in out.report.issues}
    assert ("customerID", "duplicate values: each row needs a unique id") in by_col
    assert any(c == "Churn" and "allowed labels" in k for c, k in by_col)
    assert any(c == "MonthlyCharges" and "expected a number" in k for c, k in by_col)
    assert len(out.report.issues) == 3
    examples = {e for i in out.report.issues for e in i.examples}
    assert {"Maybe", "twelve"} <= examples


def test_validate_data_default_labels_fail_on_capitalised_yes(telco_layers) -> None:
    layers = {**telco_layers, "data": {**telco_layers["data"], "positive_label": "yes"}}
    cfg = build_config(layers)
    out = validate_table(read_table(_path(cfg)), config=cfg).validated
    assert not out.report.passed
    assert any(i.column == "Churn" for i in out.report.issues)


def test_validate_data_missing_configured_column(telco_layers) -> None:
    layers = {**telco_layers, "data": {**telco_layers["data"], "segment_columns": ["Region"]}}
    cfg = build_config(layers)
    out = validate_table(read_table(_path(cfg)), config=cfg).validated
    assert [i.column for i in out.report.issues] == ["Region"]


def test_validate_data_constant_label(small_config) -> None:
    frame = load_data(small_config).frame.assign(churned="no")
    report = validate_table(frame, config=small_config).validated.report
    assert any("label is constant" in i.check for i in report.issues)


def test_validate_data_leakage_names_the_column(small_config) -> None:
    frame = load_data(small_config).frame
    leaky = frame.assign(refund_flag=np.where(frame["churned"] == "yes", 1.0, 0.0))
    report = validate_table(leaky, config=small_config).validated.report
    assert [i.column for i in report.issues] == ["refund_flag"]
    assert "leakage" in report.issues[0].check


def test_validate_data_missing_share_limit(small_config) -> None:
    frame = load_data(small_config).frame.copy()
    frame.loc[frame.index[: len(frame) // 2], "usage_gb_30d"] = np.nan
    report = validate_table(frame, config=small_config).validated.report
    assert any(i.column == "usage_gb_30d" and "missing share" in i.check for i in report.issues)


def test_validate_data_does_not_mutate_input(small_config) -> None:
    frame = load_data(small_config).frame
    before = frame.copy()
    validate_table(frame, config=small_config)
    pd.testing.assert_frame_equal(frame, before)


def test_validate_data_small_classes_fail(small_config) -> None:
    frame = load_data(small_config).frame.head(200)
    report = validate_table(frame, config=small_config).validated.report
    assert any("too small for the splits" in i.check for i in report.issues)


def test_split_data_disjoint_stratified_reproducible(small_config) -> None:
    loaded = load_data(small_config)
    table = validate_table(loaded.frame, config=small_config)
    assert table.validated.frame is not None
    a = split_data(table.validated.frame, roles=table.roles, config=small_config.split)
    b = split_data(table.validated.frame, roles=table.roles, config=small_config.split)
    assert a.hashes == b.hashes
    ids = [set(a.frame(n)["customer_id"]) for n in SPLIT_NAMES]
    assert sum(len(s) for s in ids) == len(loaded.frame)
    assert len(set().union(*ids)) == len(loaded.frame)
    rates = list(a.positive_rate.values())
    assert max(rates) - min(rates) < 0.01
    assert a.rows["test"] == pytest.approx(0.2 * len(loaded.frame), abs=2)
    other = split_data(
        table.validated.frame,
        roles=table.roles,
        config=small_config.split.model_copy(update={"seed": 99}),
    )
    assert other.hashes["test"] != a.hashes["test"]


def test_resolve_roles_never_uses_the_truth_column() -> None:
    cfg = build_config({})
    roles = resolve_roles(generate_data(rows=500, seed=1), data=cfg.data)
    assert TRUTH_COLUMN not in roles.features and "tenure_months" in roles.numeric


ORANGE = Path(__file__).resolve().parents[3] / "shared" / "data" / "orange-telecom-churn"


def _no_id_layers(path: Path) -> dict[str, Any]:
    return {
        "data": {
            "source": "file",
            "path": str(path),
            "id_column": None,
            "label_column": "Churn",
            "positive_label": "Yes",
        }
    }


def test_load_data_without_id_column_adds_row_number(tmp_path: Path, telco_frame) -> None:
    table = telco_frame.drop(columns=["customerID"])
    path = tmp_path / "no_ids.csv"
    table.to_csv(path, index=False)
    cfg = build_config(_no_id_layers(path))
    loaded = load_data(cfg)
    assert loaded.frame.columns[0] == ROW_ID_COLUMN
    assert loaded.frame[ROW_ID_COLUMN].tolist() == list(range(len(table)))
    assert list(loaded.frame.columns[1:]) == list(table.columns)
    # the hash is of the table as read, not of the added column
    assert loaded.sha256 == frame_sha256(read_table(path))
    table_roles = validate_table(loaded.frame, config=cfg)
    assert table_roles.roles.id_column == ROW_ID_COLUMN
    assert ROW_ID_COLUMN not in table_roles.roles.features
    assert table_roles.validated.report.passed, table_roles.validated.report.summary()
    assert table_roles.validated.frame is not None
    assert ROW_ID_COLUMN in table_roles.validated.frame.columns


def test_with_row_id_refuses_existing_row_id_column(telco_frame) -> None:
    cfg = build_config(_no_id_layers(FIXTURES / "telco_sample.csv"))
    clash = telco_frame.rename(columns={"customerID": ROW_ID_COLUMN})
    with pytest.raises(DataError, match=r"already has a column 'row_id'.*data.id_column"):
        with_row_id(clash, data=cfg.data)


def test_with_row_id_keeps_input_and_frame_with_ids_unchanged(telco_frame) -> None:
    before = telco_frame.copy()
    with_row_id(telco_frame, data=build_config({}).data)
    out = with_row_id(telco_frame, data=build_config(_no_id_layers(Path("x.csv"))).data)
    pd.testing.assert_frame_equal(telco_frame, before)
    assert ROW_ID_COLUMN in out.columns and ROW_ID_COLUMN not in telco_frame.columns


def test_validate_data_missing_id_column_says_what_to_set(telco_layers, telco_frame) -> None:
    layers = {**telco_layers, "data": {**telco_layers["data"], "id_column": "customer_id"}}
    cfg = build_config(layers)
    frame = telco_frame.rename(columns={"customerID": "CustomerID"})
    report = validate_table(frame, config=cfg).validated.report
    assert not report.passed
    issues = [i for i in report.issues if i.column == "customer_id"]
    assert len(issues) == 1  # one issue, not pandera's "column missing" as well
    # the look-alike is then a feature: an identifier with too many categories
    assert [i.column for i in report.issues if i.column != "customer_id"] == ["CustomerID"]
    check = issues[0].check
    assert "set data.id_column" in check and "null for a table without ids" in check
    assert "'CustomerID'" in check  # the look-alike (case and spelling)
    assert "columns in the data: CustomerID, gender" in report.summary()
    assert issues[0].examples == ("CustomerID",)


def test_validate_data_missing_id_column_without_lookalike_lists_columns(telco_layers) -> None:
    cfg = build_config(telco_layers)
    frame = read_table(_path(cfg)).drop(columns=["customerID"])
    report = validate_table(frame, config=cfg).validated.report
    (issue,) = report.issues
    assert issue.column == "customerID" and "another case" not in issue.check
    assert "nothing similar" in issue.check
    # the table's columns are listed once, under the issues
    assert "Contract" in report.found_columns and "MonthlyCharges" in report.found_columns
    assert "columns in the data: " in report.summary() and "Contract" in report.summary()


@pytest.mark.skipif(not ORANGE.is_dir(), reason="shared Orange table not present")
def test_validate_data_orange_table_without_ids_passes() -> None:
    cfg = build_config(
        {
            "data": {
                **_no_id_layers(ORANGE / "churn-bigml-80.csv")["data"],
                "positive_label": "TRUE",
            }
        }
    )
    loaded = load_data(cfg)
    out = validate_table(loaded.frame, config=cfg)
    assert out.validated.report.passed, out.validated.report.summary()
    assert out.roles.id_column == ROW_ID_COLUMN
    assert set(out.validated.report.label_counts) == {"True", "False"}
    assert out.validated.frame is not None
    assert out.validated.frame["Churn"].mean() == pytest.approx(0.145, abs=0.01)


@pytest.mark.parametrize("positive", ["TRUE", "true", True])
def test_validate_data_reads_true_false_text_labels(tmp_path: Path, telco_frame, positive) -> None:
    table = telco_frame.assign(Churn=np.where(telco_frame["Churn"] == "Yes", "TRUE", "FALSE"))
    path = tmp_path / "tf.csv"
    table.to_csv(path, index=False)
    layers = _no_id_layers(path)
    layers["data"].update(id_column="customerID", positive_label=positive)
    cfg = build_config(layers)
    out = validate_table(load_data(cfg).frame, config=cfg).validated
    assert out.report.passed, out.report.summary()
    assert out.frame is not None
    assert int(out.frame["Churn"].sum()) == int((telco_frame["Churn"] == "Yes").sum())
