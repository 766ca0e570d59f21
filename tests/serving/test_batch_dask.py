"""Batch scoring on a dask LocalCluster (2 workers, memory limit, 127.0.0.1) equals the local
path; a failed run leaves no output and no decisions."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from configs.settings import build_config
from serving.batch import BatchSummary, score_file
from serving.batch_dask import local_cluster, score_file_dask
from serving.loader import Champion, load_champion
from serving.settings import ServingSettings
from tasks.decision_store import DecisionWriter, read_decisions
from tasks.generate_data import TRUTH_COLUMN, generate_data


def _decisions(root: Path, run_id: str) -> pd.DataFrame:
    df = read_decisions(root)
    df = df[df["request_id"] == run_id].drop(columns=["time", "request_id"])
    return df.sort_values("customer_id", kind="stable").reset_index(drop=True)


def _score_locally(
    settings: ServingSettings,
    champion: Champion,
    src: Path,
    out: Path,
    run_id: str,
    chunk_rows: int,
) -> BatchSummary:
    """The local engine's ``score_file`` of ``src`` (2 threads), decisions stored as run
    ``run_id``."""
    writer = DecisionWriter(settings.workspace_paths.decisions, source="batch", writer_id="local")
    local = score_file(
        champion,
        src,
        out,
        chunk_rows=chunk_rows,
        experiment=settings.experiment,
        decisions=writer,
        inputs=settings.input_policy(),
        run_id=run_id,
        threads=2,
    )
    writer.close()
    return local


@pytest.mark.server
def test_score_file_dask_equals_local_on_a_local_cluster(
    workspace_copy: Path, tmp_path: Path
) -> None:
    config = build_config(
        {
            "paths": {"workspace": str(workspace_copy)},
            "serving": {"batch_chunk_rows": 50, "experiment_id": "exp-d", "holdout_share": 0.2},
        }
    )
    settings = ServingSettings.from_config(config, environ={})
    champion = load_champion(settings, pin=False)
    df = generate_data(rows=300, seed=7).drop(columns=["churned", TRUTH_COLUMN])
    df.loc[10, "monthly_charges_usd"] = -1.0  # rejected
    df.loc[70, "region"] = None
    src = tmp_path / "in.parquet"
    pq.write_table(pa.Table.from_pandas(df, preserve_index=False), src, row_group_size=60)
    root = settings.workspace_paths.decisions
    local = _score_locally(settings, champion, src, tmp_path / "local.parquet", "local-run", 50)
    with local_cluster(2, "1GiB") as client:
        summary = score_file_dask(client, config, champion, src, tmp_path / "dask")
        other = dataclasses.replace(
            champion, block=champion.block.model_copy(update={"model_version": "999"})
        )
        with pytest.raises(RuntimeError, match="promotion during the run"):
            score_file_dask(client, config, other, src, tmp_path / "failed")
    assert summary.partitions == 5 and len(summary.decision_files) == 5
    assert (summary.rows, summary.scored, summary.rejected) == (300, 299, 1)
    assert (summary.contacts, summary.holdout, summary.held_back) == (
        local.contacts,
        local.holdout,
        local.held_back,
    )
    assert summary.holdout > 0 and summary.expected_profit_usd == pytest.approx(
        local.expected_profit_usd, rel=1e-12
    )
    parts = sorted((tmp_path / "dask").glob("part-*.parquet"))
    assert [p.name for p in parts] == [f"part-{i:05d}.parquet" for i in range(5)]
    dask_out = pa.concat_tables(pq.read_table(p) for p in parts)
    assert dask_out.equals(pq.read_table(tmp_path / "local.parquet"))  # same rows and order
    assert len(pq.read_table(tmp_path / "dask.rejects")) == 1
    pd.testing.assert_frame_equal(
        _decisions(root, summary.run_id or ""), _decisions(root, "local-run")
    )
    # the failed run: no output, no temp directories, no decisions
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "dask",
        "dask.rejects",
        "in.parquet",
        "local.parquet",
        "local.rejects.parquet",
        "ws",
    ]
    assert set(read_decisions(root)["request_id"]) == {"local-run", summary.run_id}


def test_score_engine_dask_refuses_a_missing_input_before_starting_a_cluster(
    workspace_copy: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from flows.cli import main

    cfg = tmp_path / "c.yaml"
    cfg.write_text(f"paths: {{workspace: {workspace_copy}}}\n")
    out = tmp_path / "o"
    for name in ("missing.csv", "missing.parquet", "in.txt"):
        argv = ["score", "--config", str(cfg), "--input", str(tmp_path / name)]
        assert main([*argv, "--output", str(out), "--engine", "dask"]) == 2
        err = capsys.readouterr().err
        assert "bad input" in err and name in err
    assert not out.exists()


@pytest.mark.server
def test_score_file_dask_scores_a_csv_in_the_local_engines_chunks(
    workspace_copy: Path, tmp_path: Path
) -> None:
    """A CSV input: one worker cuts it into the chunks the local engine reads (pandas types
    each chunk by itself: a chunk whose only gap makes a count column float), the workers
    score them; output, counts and decisions equal the local engine's, and the staged
    chunks are gone."""
    config = build_config(
        {"paths": {"workspace": str(workspace_copy)}, "serving": {"batch_chunk_rows": 40}}
    )
    settings = ServingSettings.from_config(config, environ={})
    champion = load_champion(settings, pin=False)
    df = generate_data(rows=200, seed=3).drop(columns=["churned", TRUTH_COLUMN])
    df["num_products"] = df["num_products"].astype("Int64")
    df.loc[90, "num_products"] = pd.NA  # float in its chunk only
    df.loc[150, "monthly_charges_usd"] = -1.0  # rejected
    src = tmp_path / "in.csv"
    df.to_csv(src, index=False)
    root = settings.workspace_paths.decisions
    local = _score_locally(settings, champion, src, tmp_path / "local.parquet", "local-csv", 40)
    with local_cluster(2, "1GiB") as client:
        summary = score_file_dask(client, config, champion, src, tmp_path / "dask")
    assert summary.partitions == 5
    assert (summary.rows, summary.scored, summary.rejected) == (200, local.scored, 1)
    assert summary.contacts == local.contacts
    parts = sorted((tmp_path / "dask").glob("part-*.parquet"))
    dask_out = pa.concat_tables(pq.read_table(p) for p in parts)
    assert dask_out.equals(pq.read_table(tmp_path / "local.parquet"))
    pd.testing.assert_frame_equal(
        _decisions(root, summary.run_id or ""), _decisions(root, "local-csv")
    )
    assert not list(tmp_path.glob(".dask.*"))  # no staged chunks, no temp directories


@pytest.mark.server
def test_score_file_dask_failed_partition_leaves_no_decision_of_its_run(
    workspace_copy: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A worker killed after its partition wrote every decision (SIGKILL: no cleanup in that
    process) fails the run while other partitions are still scoring; the command stops them,
    waits until all have ended and removes every decision file of the run: the store holds
    nothing of it, and there is no output."""
    import dask
    from distributed import KilledWorker

    from tasks.failpoints import FAILPOINT_ENV

    config = build_config(
        {"paths": {"workspace": str(workspace_copy)}, "serving": {"batch_chunk_rows": 50}}
    )
    champion = load_champion(ServingSettings.from_config(config, environ={}), pin=False)
    df = generate_data(rows=600, seed=3).drop(columns=["churned", TRUTH_COLUMN])
    src = tmp_path / "in.parquet"
    pq.write_table(pa.Table.from_pandas(df, preserve_index=False), src, row_group_size=50)
    monkeypatch.setenv(FAILPOINT_ENV, "batch:partition-written:1")  # inherited by the workers
    with (
        dask.config.set({"distributed.scheduler.allowed-failures": 0}),
        local_cluster(2, "1GiB") as client,
        pytest.raises(KilledWorker),
    ):
        score_file_dask(client, config, champion, src, tmp_path / "out", run_id="f" * 32)
    root = ServingSettings.from_config(config, environ={}).workspace_paths.decisions
    stored = read_decisions(root)
    assert stored.empty or "f" * 32 not in set(stored["request_id"])
    assert not list(root.glob("date=*/hour=*/batch-score-ffffffffffff-*"))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.parquet", "ws"]
