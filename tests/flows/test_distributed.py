"""The partitioned data path (flows/distributed.py) reduces to what the local engine computes.

The partitions run in this process through an in-process stand-in for the Dask client (the
same calls, executed at once), so the reductions are checked on many tables quickly; the
real LocalCluster is tests/flows/test_dask_engine.py.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from configs.settings import BayesPilotConfig, build_config
from flows import distributed
from tasks.generate_data import generate_data
from tasks.load_data import load_data
from tasks.split_data import SPLIT_NAMES, split_data
from tasks.validate_data import ValidationReport, validate_table
from tests.fixtures.bad.make_bad import BASE, _frame


class _Done:
    def __init__(self, value: Any) -> None:
        self.value = value

    def result(self) -> Any:
        return self.value

    def release(self) -> None:
        return None


class InProcessClient:
    """``client.submit`` run at once in this process (a scattered value is passed as itself)."""

    def submit(self, fn: Callable[..., Any], *args: Any, pure: bool = True, **kw: Any) -> _Done:
        kw = {k: v.value if isinstance(v, _Done) else v for k, v in kw.items()}
        return _Done(fn(*args, **kw))

    def scatter(self, values: list[Any], **kw: Any) -> list[_Done]:
        return [_Done(v) for v in values]


def _write(frame: pd.DataFrame, path: Path, row_group_rows: int) -> Path:
    pq.write_table(
        pa.Table.from_pandas(frame, preserve_index=False), path, row_group_size=row_group_rows
    )
    return path


def _config(path: Path, layers: dict[str, Any], partition_rows: int) -> BayesPilotConfig:
    merged = {k: dict(v) if isinstance(v, dict) else v for k, v in layers.items()}
    merged["data"] = {**merged.get("data", {}), "source": "file", "path": str(path)}
    merged["scaleout"] = {"engine": "dask", "dask_partition_rows": partition_rows}
    return build_config(merged)


def _table_file(frame: pd.DataFrame, tmp_path: Path, fmt: str, row_group_rows: int) -> Path:
    """``frame`` as a Parquet file (row groups of ``row_group_rows``) or a CSV file."""
    if fmt == "csv":
        path = tmp_path / "t.csv"
        frame.to_csv(path, index=False)
        return path
    return _write(frame, tmp_path / "t.parquet", row_group_rows)


def _both(cfg: BayesPilotConfig) -> tuple[Any, Any, ValidationReport, ValidationReport]:
    local = load_data(cfg)
    table = validate_table(local.frame, config=cfg)
    client = InProcessClient()
    staging = Path(str(cfg.data.path)).parent / "staging"
    load = distributed.load_partitioned(cfg, client, staging=staging)
    checked = distributed.validate_partitioned(load, cfg, client)
    assert load.loaded.sha256 == local.sha256
    assert checked.roles == table.roles
    return table, checked, table.validated.report, checked.report


def _same_report(a: ValidationReport, b: ValidationReport) -> None:
    key = lambda i: (i.column, i.check)  # noqa: E731
    assert sorted(b.issues, key=key) == sorted(a.issues, key=key)
    assert asdict(replace(b, issues=())) == asdict(replace(a, issues=()))


def _bad_frame() -> pd.DataFrame:
    """80 rows with bad cells in several partitions and columns."""
    f = _frame().astype({"tenure": float, "MonthlyCharges": object})
    f.loc[[3, 40, 77], "tenure"] = [np.inf, -np.inf, np.inf]
    f.loc[[5, 61], "MonthlyCharges"] = ["abc", "x"]
    f.loc[[7, 70], "Churn"] = "Maybe"
    f.loc[50:, "Contract"] = None  # 37.5 % missing: a whole-column check
    f["MonthlyCharges"] = f["MonthlyCharges"].astype(str)
    return f


@pytest.mark.parametrize(
    ("fmt", "partition_rows"), [("parquet", 9), ("parquet", 30), ("parquet", 200), ("csv", 9)]
)
def test_distributed_validation_reports_the_local_issues(
    tmp_path: Path, fmt: str, partition_rows: int
) -> None:
    path = _table_file(_bad_frame(), tmp_path, fmt, row_group_rows=9)
    cfg = _config(path, BASE, partition_rows)
    _, _, local, parts = _both(cfg)
    assert not local.passed
    _same_report(local, parts)
    columns = {i.column for i in parts.issues}
    assert {"tenure", "MonthlyCharges", "Churn", "Contract"} <= columns


def test_distributed_validation_finds_duplicates_across_partitions(tmp_path: Path) -> None:
    f = _frame()
    f = pd.concat([f, f.iloc[[2, 11]]], ignore_index=True)  # exact copies, other partitions
    ids = f["customerID"].astype(object).to_numpy(copy=True)
    ids[-1] = ids[40]  # a copy that now shares another row's id
    f["customerID"] = ids
    path = _write(f, tmp_path / "dups.parquet", row_group_rows=10)
    cfg = _config(path, BASE, 10)
    _, _, local, parts = _both(cfg)
    assert [i.column for i in local.issues] == ["(table)", "customerID"]
    assert parts.issues == local.issues
    _same_report(local, parts)


def test_distributed_path_without_ids_keeps_row_numbers_and_passes(tmp_path: Path) -> None:
    frame = generate_data(rows=3000, seed=4).drop(columns=["true_churn_probability"])
    path = _write(frame.drop(columns=["customer_id"]), tmp_path / "noid.parquet", 700)
    layers = {
        "data": {"id_column": None, "segment_columns": ["region", "contract"]},
        "economics": {"customer_value": {"column": "monthly_charges_usd", "multiplier": 3.0}},
        "validation": {"leakage_sample_rows": 1000},
    }
    cfg = _config(path, layers, 1000)
    table, checked, local, parts = _both(cfg)
    assert local.passed and parts == local
    assert table.validated.frame is not None
    want = split_data(table.validated.frame, roles=table.roles, config=cfg.split, scale=cfg.scale)
    got = distributed.split_partitioned(checked, cfg, InProcessClient())
    assert got.hashes == want.hashes and got.rows == want.rows and got.plan == want.plan
    assert got.table_rows == want.table_rows == 3000
    for name in SPLIT_NAMES:
        pd.testing.assert_frame_equal(got.frame(name), want.frame(name))


@pytest.mark.parametrize("fmt", ["parquet", "csv"])
def test_distributed_split_samples_the_local_rows_above_the_caps(
    tmp_path: Path, fmt: str
) -> None:
    """A CSV file is staged as Parquet with the whole-file types: the splits are the local
    engine's frame for frame (dtypes and categories too)."""
    frame = generate_data(rows=6000, seed=9).drop(columns=["true_churn_probability"])
    path = _table_file(frame, tmp_path, fmt, 1100)
    layers = {
        "data": {"segment_columns": ["region", "contract"]},
        "economics": {"customer_value": {"column": "monthly_charges_usd", "multiplier": 3.0}},
        "scale": {
            "train_sample_above_rows": 2000,
            "train_sample_rows": 1500,
            "judge_max_rows": 700,
            "chunk_rows": 500,
        },
    }
    cfg = _config(path, layers, 2000)
    table, checked, local, parts = _both(cfg)
    assert parts == local
    assert table.validated.frame is not None
    want = split_data(table.validated.frame, roles=table.roles, config=cfg.split, scale=cfg.scale)
    got = distributed.split_partitioned(checked, cfg, InProcessClient())
    assert got.plan["train"]["sampled"] and got.plan["test"]["rows_used"] == 700
    assert got.hashes == want.hashes and got.positive_rate == want.positive_rate
    assert got.table_rows == want.table_rows == 6000
    assert len(got.data) == sum(got.rows.values()) < len(table.validated.frame)
    for name in SPLIT_NAMES:
        pd.testing.assert_frame_equal(got.frame(name), want.frame(name))
        np.testing.assert_array_equal(got.y(name), want.y(name))


class _Score:
    """A fixed estimator: a logistic of one numeric feature (probabilities 0-1)."""

    def predict_proba(self, X: pd.DataFrame) -> np.ndarray:  # noqa: N803
        p = 1 / (1 + np.exp(-(X["tenure_months"].to_numpy() - 20.0) / 10.0))
        return np.column_stack([1 - p, p])


@dataclass(frozen=True)
class _Chosen:
    estimator: _Score


def test_distributed_full_test_pass_equals_the_local_chunks(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from flows.promotion import full_test_pass
    from tasks.select_policy import Policy

    frame = generate_data(rows=6000, seed=4).drop(columns=["true_churn_probability"])
    path = _write(frame, tmp_path / "t.parquet", 900)
    layers = {
        "data": {"segment_columns": ["region", "contract"]},
        "economics": {"customer_value": {"column": "monthly_charges_usd", "multiplier": 3.0}},
        "scale": {"judge_max_rows": 500, "chunk_rows": 333},
    }
    cfg = _config(path, layers, 1800)
    table, checked, _, _ = _both(cfg)
    assert table.validated.frame is not None
    local_splits = split_data(
        table.validated.frame, roles=table.roles, config=cfg.split, scale=cfg.scale
    )
    part_splits = distributed.split_partitioned(checked, cfg, InProcessClient())
    assert local_splits.plan["test"]["sampled"]
    policy = Policy(
        {
            "cutoff_expected_value_usd": 0.0,
            "economics": cfg.economics.model_dump(mode="json"),
            "tiers": [
                {"name": "none", "min_expected_value_usd": None, "contact": False},
                {"name": "call", "min_expected_value_usd": 0.0, "contact": True},
            ],
        }
    )
    sample_p = _Score().predict_proba(local_splits.test)[:, 1]
    kw: dict[str, Any] = {"sample_p": sample_p, "sample_profit_usd": 1.0, "config": cfg}
    local = full_test_pass(local_splits, None, _Chosen(_Score()), policy, **kw)  # type: ignore[arg-type]
    monkeypatch.setattr(distributed, "data_client", _in_process_client)
    parts = full_test_pass(part_splits, checked, _Chosen(_Score()), policy, **kw)  # type: ignore[arg-type]
    assert parts.as_dict() == local.as_dict()
    assert local.rows == local_splits.plan["test"]["rows_available"] > local.rows_judged == 500


@contextmanager
def _in_process_client(config: BayesPilotConfig) -> Iterator[InProcessClient]:
    yield InProcessClient()


def test_distributed_csv_refusal_comes_back_as_a_value_and_is_raised_in_the_flow(
    tmp_path: Path,
) -> None:
    """A worker returns bad input as a value (no failed computation logged with a traceback on
    the worker); the flow raises it as the loader's DataError, naming the column, and nothing
    is left staged."""
    from tasks.load_data import DataError, Refused, refusals_returned
    from tasks.stage_csv import stage_csv

    path = tmp_path / "t.csv"
    path.write_text("id,Churn,iccid\n1,Yes,5\n2,No,89014103211118510720000\n")
    staged = tmp_path / "staging" / "table.parquet"
    value = refusals_returned(stage_csv, path, staged, chunk_rows=10)
    assert isinstance(value, Refused) and value.column == "iccid"
    cfg = _config(path, {"data": {"id_column": "id", "label_column": "Churn"}}, 10)
    with pytest.raises(DataError, match="'iccid'") as err:
        distributed.load_partitioned(cfg, InProcessClient(), staging=staged.parent)
    assert err.value.column == "iccid"
    assert not staged.exists()


def test_distributed_refuses_a_file_neither_csv_nor_parquet_as_locally(tmp_path: Path) -> None:
    from tasks.load_data import DataError

    path = tmp_path / "t.xlsx"
    path.write_bytes(b"PK\x03\x04")
    cfg = _config(path, {}, 10)
    with pytest.raises(DataError) as local:
        load_data(cfg)
    with pytest.raises(DataError) as parts:
        distributed.load_partitioned(cfg, InProcessClient(), staging=tmp_path / "staging")
    assert str(parts.value) == str(local.value)
