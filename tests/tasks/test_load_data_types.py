"""Lean loading: no object columns, and the same content hash as an untyped read."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from configs.settings import build_config
from tasks.generate_data import TRUTH_COLUMN, generate_blocks, write_parquet
from tasks.load_data import frame_sha256, load_data, read_table


def _no_object_columns(frame: pd.DataFrame) -> None:
    objects = [c for c in frame.columns if frame[c].dtype == object]
    assert not objects, f"object columns after loading: {objects}"


def test_load_data_synthetic_has_no_object_columns_and_hashes_as_before() -> None:
    cfg = build_config({"synthetic": {"rows": 2_000}})
    loaded = load_data(cfg)
    _no_object_columns(loaded.frame)
    assert isinstance(loaded.frame["region"].dtype, pd.CategoricalDtype)
    from tasks.generate_data import generate_data

    untyped = generate_data(rows=2_000, seed=cfg.synthetic.seed).drop(columns=[TRUTH_COLUMN])
    assert loaded.sha256 == frame_sha256(untyped)


def test_read_table_parquet_and_csv_are_typed_with_the_untyped_hash(tmp_path: Path) -> None:
    pq_path = write_parquet(tmp_path / "t.parquet", rows=3_000, seed=5, block_rows=700)
    typed = read_table(pq_path)
    _no_object_columns(typed)
    assert isinstance(typed["contract"].dtype, pd.CategoricalDtype)
    assert not isinstance(typed["customer_id"].dtype, pd.CategoricalDtype)  # many values
    assert frame_sha256(typed) == frame_sha256(pd.read_parquet(pq_path))
    csv_path = tmp_path / "t.csv"
    pd.read_parquet(pq_path).to_csv(csv_path, index=False)
    from_csv = read_table(csv_path)
    _no_object_columns(from_csv)
    assert frame_sha256(from_csv) == frame_sha256(pd.read_csv(csv_path, low_memory=False))
    assert frame_sha256(typed, chunk_rows=301) == frame_sha256(typed)


def test_generate_blocks_are_seeded_and_numbered_on() -> None:
    a = pd.concat(list(generate_blocks(rows=1_000, seed=3, block_rows=300)), ignore_index=True)
    b = pd.concat(list(generate_blocks(rows=1_000, seed=3, block_rows=300)), ignore_index=True)
    pd.testing.assert_frame_equal(a, b)
    assert len(a) == 1_000 and a["customer_id"].is_unique
    assert a["customer_id"].iloc[[0, -1]].tolist() == ["CUST-00000001", "CUST-00001000"]
    _no_object_columns(a)
