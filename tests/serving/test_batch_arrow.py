"""The Arrow batch path (threads, Arrow output and decision rows) equals the pandas reference
(``score_frame`` + ``batch_decisions`` + ``decision_table``), row for row."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from serving.batch import (
    batch_decisions,
    plan_partitions,
    score_file,
    score_partition,
    validate_chunk,
)
from serving.experiment import Experiment
from serving.loader import Champion, load_champion
from serving.predlog import InputPolicy
from serving.scoring import score_frame
from serving.settings import ServingSettings
from tasks.decision_store import DecisionWriter, decision_table, read_decisions
from tasks.generate_data import TRUTH_COLUMN, generate_data

CHUNK = 23


def _input(n: int = 150) -> pd.DataFrame:
    df = generate_data(rows=n, seed=99).drop(columns=["churned", TRUTH_COLUMN])
    df.loc[2, "usage_gb_30d"] = None
    df.loc[3, "region"] = "atlantis"  # unknown category
    df.loc[4, "contract"] = None  # missing category
    df.loc[5, "monthly_charges_usd"] = -3.0  # rejected
    df.loc[40, "monthly_charges_usd"] = None  # rejected
    df.loc[41, "customer_id"] = None  # rejected
    return df


def _reference(
    champion: Champion,
    df: pd.DataFrame,
    experiment: Experiment | None,
    inputs: InputPolicy,
    run_id: str,
) -> tuple[pa.Table, pa.Table]:
    """Output and decision rows of the pandas path, chunk by chunk."""
    outs, decs = [], []
    for start in range(0, len(df), CHUNK):
        good, _ = validate_chunk(df.iloc[start : start + CHUNK], champion)
        scored = score_frame(champion, good, experiment)
        outs.append(pa.Table.from_pandas(scored, preserve_index=False))
        frame = batch_decisions(champion, good, scored, inputs=inputs, run_id=run_id)
        decs.append(decision_table(frame, "batch"))
    return pa.concat_tables(outs), pa.concat_tables(decs)


def _stored(root: Path) -> pd.DataFrame:
    df = read_decisions(root).drop(columns=["time", "source"])
    return df.sort_values("customer_id", kind="stable").reset_index(drop=True)


def _frame(table: pa.Table) -> pd.DataFrame:
    df = table.drop_columns(["time", "source"]).to_pandas()
    df.columns = [c.removeprefix("input.") for c in df.columns]
    return df.sort_values("customer_id", kind="stable").reset_index(drop=True)


@pytest.mark.parametrize("mode", ["full", "hashed"])
def test_score_file_arrow_path_equals_the_pandas_reference(
    settings: ServingSettings, tmp_path: Path, mode: str
) -> None:
    champion = load_champion(settings, pin=False)
    df = _input()
    src = tmp_path / "in.parquet"
    df.to_parquet(src, index=False)
    experiment = Experiment("exp-arrow", 0.3)
    inputs = InputPolicy("full") if mode == "full" else InputPolicy("hashed", b"k" * 32)
    root = tmp_path / "decisions"
    writer = DecisionWriter(root, source="batch", writer_id="t", flush_rows=40)
    summary = score_file(
        champion,
        src,
        tmp_path / "out.parquet",
        chunk_rows=CHUNK,
        experiment=experiment,
        decisions=writer,
        inputs=inputs,
        run_id="run-1",
        threads=2,
    )
    writer.close()
    ref_out, ref_dec = _reference(
        champion, pq.read_table(src).to_pandas(), experiment, inputs, "run-1"
    )
    assert summary.rejected == 3 and summary.scored == len(df) - 3 and summary.holdout > 0
    out = pq.read_table(tmp_path / "out.parquet")
    assert out.schema.equals(ref_out.schema, check_metadata=True)
    assert out.equals(ref_out)  # same rows, same order as the input
    pd.testing.assert_frame_equal(_stored(root), _frame(ref_dec), check_dtype=False)
    assert summary.contacts == int(
        (out.column("action").to_numpy(zero_copy_only=False) == "contact").sum()
    )


def test_batch_decisions_keep_each_rows_own_id_and_inputs_beside_rejected_rows(
    settings: ServingSettings, tmp_path: Path
) -> None:
    champion = load_champion(settings, pin=False)
    df = _input()
    src = tmp_path / "in.csv"
    df.to_csv(src, index=False)
    root = tmp_path / "decisions"
    writer = DecisionWriter(root, source="batch", writer_id="t")
    score_file(champion, src, tmp_path / "out.csv", chunk_rows=CHUNK, decisions=writer, threads=2)
    writer.close()
    stored = _stored(root).set_index("customer_id")
    kept = df.dropna(subset=["customer_id", "monthly_charges_usd"])
    kept = kept[kept["monthly_charges_usd"] >= 0].set_index("customer_id")
    assert sorted(stored.index) == sorted(kept.index)
    for col in ("monthly_charges_usd", "tenure_months", "usage_gb_30d"):
        np.testing.assert_array_equal(
            stored.loc[kept.index, col].to_numpy(float), kept[col].to_numpy(float)
        )
    assert stored.loc[kept.index, "region"].tolist() == kept["region"].tolist()
    out = pd.read_csv(tmp_path / "out.csv")
    assert out["customer_id"].tolist() == kept.index.tolist()  # input order
    by_id = stored.loc[out["customer_id"]]
    np.testing.assert_allclose(
        by_id["probability"].to_numpy(), out["churn_probability"], rtol=1e-12
    )


def test_score_partition_scores_like_score_file(settings: ServingSettings, tmp_path: Path) -> None:
    champion = load_champion(settings, pin=False)
    df = _input()
    src = tmp_path / "in.parquet"
    pq.write_table(pa.Table.from_pandas(df, preserve_index=False), src, row_group_size=40)
    score_file(champion, src, tmp_path / "whole.parquet", chunk_rows=CHUNK)
    parts = plan_partitions(src, CHUNK)  # whole row groups of >= CHUNK rows: one each
    assert [p.row_groups for p in parts] == [(0,), (1,), (2,), (3,)]
    assert [p.first_row for p in parts] == [0, 40, 80, 120]
    assert [p.row_groups for p in plan_partitions(src, 70)] == [(0, 1), (2, 3)]
    root = tmp_path / "decisions"
    summaries = []
    for part in parts:
        writer = DecisionWriter(root, source="batch", writer_id=f"p{part.index}")
        summaries.append(
            score_partition(
                champion,
                part,
                tmp_path / "parts",
                tmp_path / "rejects",
                chunk_rows=CHUNK,
                decisions=writer,
                run_id="r",
            )
        )
        writer.close()
    assert sum(s.rows for s in summaries) == len(df) and sum(s.rejected for s in summaries) == 3
    whole = pq.read_table(tmp_path / "whole.parquet")
    joined = pa.concat_tables(pq.read_table(s.output) for s in summaries if s.output)
    assert joined.equals(whole)
    assert len(read_decisions(root)) == whole.num_rows
    assert len(pq.read_table(tmp_path / "rejects")) == 3
