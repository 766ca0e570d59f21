"""Per-partition functions (tasks/partitions.py), called directly on a small Parquet file."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from configs.settings import build_config
from tasks.generate_data import generate_data
from tasks.load_data import frame_sha256, load_data
from tasks.partitions import (
    PartitionCheck,
    concat_rows,
    conflicting_ids,
    exact_duplicates,
    profile_partition,
    read_partition,
    reduce_profiles,
    table_layout,
    take_rows,
)
from tasks.validate_data import validate_table


def _file(tmp_path: Path, frame: pd.DataFrame, row_group_rows: int) -> Path:
    path = tmp_path / "t.parquet"
    table = pa.Table.from_pandas(frame, preserve_index=False)
    pq.write_table(table, path, row_group_size=row_group_rows)
    return path


def _generated(rows: int) -> pd.DataFrame:
    return generate_data(rows=rows, seed=2).drop(columns=["true_churn_probability"])


def test_partitions_layout_groups_row_groups_and_keeps_whole_file_dtypes(tmp_path: Path) -> None:
    frame = _generated(2500)
    # a missing integer in the last row group only
    products = frame["num_products"].astype("Int64").mask(frame.index == 2400)
    table = pa.Table.from_pandas(frame.assign(num_products=products), preserve_index=False)
    path = tmp_path / "t.parquet"
    # without pandas' metadata (as most writers), a gap makes the whole column float
    pq.write_table(table.replace_schema_metadata(None), path, row_group_size=500)
    layout = table_layout(path, partition_rows=1000)
    assert [p.row_groups for p in layout.partitions] == [(0, 1), (2, 3), (4,)]
    assert [p.offset for p in layout.partitions] == [0, 1000, 2000]
    assert "num_products" in layout.as_float
    cfg = build_config({"data": {"source": "file", "path": str(path)}})
    whole = load_data(cfg).frame
    first = read_partition(layout, layout.partitions[0], data=cfg.data)
    assert dict(first.dtypes) == dict(whole.dtypes)  # float although this part has no gap
    assert list(first.index) == list(range(1000))


def test_partitions_profiles_reduce_to_the_whole_table_hash(tmp_path: Path) -> None:
    path = _file(tmp_path, _generated(2500), 300)
    cfg = build_config({"data": {"source": "file", "path": str(path), "id_column": None}})
    layout = table_layout(path, partition_rows=700)
    profiles = [profile_partition(layout, p, data=cfg.data) for p in layout.partitions]
    sha256, hashes, _, labels, booleans = reduce_profiles(profiles)
    assert sha256 == load_data(cfg).sha256
    assert len(hashes) == 2500 and not booleans
    assert int(labels.sum()) == 2500 and set(labels.index) == {"yes", "no"}


def test_partitions_duplicates_and_shared_ids_by_hash() -> None:
    rows = np.array([5, 7, 5, 9, 7, 1], dtype=np.uint64)
    assert exact_duplicates(rows).tolist() == [2, 4]
    ids = np.array([10, 11, 10, 12, 11, 12], dtype=np.uint64)
    # rows 2 and 4 are exact copies (left out); rows 3 and 5 share id 12 but differ
    assert conflicting_ids(ids, exact_duplicates(rows)).tolist() == [3, 5]


def test_partitions_take_rows_gives_the_clean_rows_at_positions(tmp_path: Path) -> None:
    path = _file(tmp_path, _generated(2000), 400)
    cfg = build_config(
        {"data": {"source": "file", "path": str(path), "segment_columns": ["region"]}}
    )
    table = validate_table(load_data(cfg).frame, config=cfg)
    clean = table.validated.frame
    assert clean is not None
    roles = table.roles
    check = PartitionCheck.of(
        roles,
        label_values=("yes", "no"),
        id_generated=False,
    )
    layout = table_layout(path, partition_rows=800)
    wanted = np.array([3, 799, 800, 1500, 1999])
    parts = [
        take_rows(
            layout,
            p,
            wanted[(wanted >= p.offset) & (wanted < p.offset + p.rows)],
            data=cfg.data,
            check=check,
        )
        for p in layout.partitions
    ]
    got = concat_rows(parts)
    pd.testing.assert_frame_equal(got, clean.take(wanted).reset_index(drop=True))
    assert frame_sha256(got) == frame_sha256(clean, positions=wanted)
