"""The Dask engine on a real LocalCluster: data on partitions, the local engine's decision.

A cluster of 2 worker processes with a per-worker memory limit (127.0.0.1, no dashboard) is
started for the module and closed after it; the runs reach it through
``scaleout.dask_address``. The flow process is kept from reading the table: the local
loader's readers raise in it for the Dask runs (the workers, other processes, read it).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from configs.settings import build_config
from tasks.generate_data import write_parquet

from ..conftest import small_layers

pytestmark = pytest.mark.slow

ROWS = 30_000
ROW_GROUP_ROWS = 4_000


@pytest.fixture(scope="module")
def cluster_address() -> Iterator[str]:
    from distributed import LocalCluster

    cluster = LocalCluster(
        n_workers=2,
        threads_per_worker=1,
        processes=True,
        memory_limit="1GiB",
        dashboard_address=None,
        host="127.0.0.1",
    )
    try:
        yield str(cluster.scheduler_address)
    finally:
        cluster.close()


@pytest.fixture(scope="module")
def table(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("dask-data") / "churn.parquet"
    return write_parquet(path, rows=ROWS, seed=11, block_rows=ROW_GROUP_ROWS)


def _layers(workspace: Path, data: Path, **scaleout: Any) -> dict[str, Any]:
    layers = small_layers(workspace)
    layers["data"].update({"source": "file", "path": str(data)})
    # caps below the table's size, so that the sampled path is the one compared
    layers["scale"] = {
        "train_sample_above_rows": 15_000,
        "train_sample_rows": 12_000,
        "judge_max_rows": 5_000,
        "chunk_rows": 7_000,
    }
    layers["scaleout"] = {"engine": "threads", **scaleout}
    return layers


def _no_local_reads(monkeypatch: pytest.MonkeyPatch) -> None:
    import tasks.load_data as load_data

    def refuse(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("the flow process read the table")

    monkeypatch.setattr(load_data, "read_table", refuse)
    monkeypatch.setattr(load_data, "_read_parquet_typed", refuse)
    monkeypatch.setattr(load_data, "load_data", refuse)


def test_dask_engine_decides_as_the_local_engine_without_reading_the_table(
    tmp_path: Path, table: Path, cluster_address: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from flows.promotion import run_direct

    local = run_direct(build_config(_layers(tmp_path / "local", table))).outcome.record
    with monkeypatch.context() as m:
        _no_local_reads(m)
        dask_cfg = build_config(
            _layers(
                tmp_path / "dask",
                table,
                engine="dask",
                dask_address=cluster_address,
                dask_partition_rows=ROW_GROUP_ROWS * 2,
            )
        )
        on_dask = run_direct(dask_cfg).outcome.record
    assert on_dask["decision"] == local["decision"]
    assert on_dask["candidate"] == local["candidate"]
    assert on_dask["policy_id"] == local["policy_id"]
    assert on_dask["data"] == local["data"]  # source, data hash, split hashes, rows, plan
    assert on_dask["data"]["plan"]["train"]["sampled"]
    # the train sample check ran on the cluster with the same figures (inside data above)
    assert on_dask["data"]["plan"]["train"]["sample_check"]["rows_full"] > 0
    # the evidence pass over every test row (the test split is sampled): the same figures
    full_test = on_dask["data"]["full_test"]
    assert full_test == local["data"]["full_test"]
    assert full_test["rows"] == on_dask["data"]["plan"]["test"]["rows_available"] > 5_000
    assert full_test["rows_judged"] == on_dask["data"]["plan"]["test"]["rows_used"] == 5_000
    gates = lambda r: {g["gate"]: (g["passed"], g["value"]) for g in r["gates"]}  # noqa: E731
    assert {k: v for k, v in gates(on_dask).items() if k != "technical"} == {
        k: v for k, v in gates(local).items() if k != "technical"
    }


def test_dask_engine_bad_value_in_one_partition_fails_as_locally(
    tmp_path: Path, table: Path, cluster_address: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from flows.promotion import ValidationFailed, run_direct

    frame = pq.read_table(table).to_pandas()
    charges = frame["monthly_charges_usd"].astype(object)
    charges.iloc[ROWS - 100] = "n/a"  # in the last partition only
    frame["monthly_charges_usd"] = charges.astype(str)
    bad = tmp_path / "bad.parquet"
    pq.write_table(
        pa.Table.from_pandas(frame, preserve_index=False), bad, row_group_size=ROW_GROUP_ROWS
    )
    with pytest.raises(ValidationFailed) as local:
        run_direct(build_config(_layers(tmp_path / "local", bad)))
    with monkeypatch.context() as m, pytest.raises(ValidationFailed) as on_dask:
        _no_local_reads(m)
        run_direct(
            build_config(
                _layers(tmp_path / "dask", bad, engine="dask", dask_address=cluster_address)
            )
        )
    assert on_dask.value.report == local.value.report
    (issue,) = on_dask.value.report.issues
    assert issue.column == "monthly_charges_usd" and issue.examples == ("n/a",)
    assert on_dask.value.report_path.is_file()


def test_dask_engine_stages_a_csv_on_a_worker_and_decides_as_locally(
    tmp_path: Path, table: Path, cluster_address: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A CSV file: a worker stages it as Parquet with the whole-file types (here one blank
    in the last partition makes a whole-number column float), the partitions are read on
    the workers, and the record equals the local engine's on the same CSV. The staging
    folder is gone when the run ends."""
    import pandas as pd

    from flows.promotion import run_direct

    frame = pq.read_table(table).to_pandas()
    frame["tenure_months"] = frame["tenure_months"].astype("Int64")
    frame.loc[ROWS - 10, "tenure_months"] = pd.NA
    csv = tmp_path / "churn.csv"
    frame.to_csv(csv, index=False)
    local = run_direct(build_config(_layers(tmp_path / "local", csv))).outcome.record
    with monkeypatch.context() as m:
        _no_local_reads(m)
        m.setattr(pd, "read_csv", _refuse_read)  # this process never parses the file
        on_dask = run_direct(
            build_config(
                _layers(
                    tmp_path / "dask",
                    csv,
                    engine="dask",
                    dask_address=cluster_address,
                    dask_partition_rows=ROW_GROUP_ROWS * 2,
                )
            )
        ).outcome.record
    assert (on_dask["decision"], on_dask["candidate"]) == (local["decision"], local["candidate"])
    assert on_dask["policy_id"] == local["policy_id"]
    assert on_dask["data"] == local["data"]  # source (the CSV), data hash, split hashes, plan
    assert on_dask["data"]["full_test"] == local["data"]["full_test"]
    staging = tmp_path / "dask" / "staging"
    assert not staging.exists() or not any(staging.iterdir())


def _refuse_read(*args: Any, **kwargs: Any) -> None:
    raise AssertionError("the flow process parsed the CSV")
