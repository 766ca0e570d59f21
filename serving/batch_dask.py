"""Batch scoring on a Dask cluster (``bayespilot score --engine dask``): the wiring only.

The Parquet input is cut into partitions of whole row groups (``serving.batch.plan_partitions``);
a CSV input is first cut by one worker into the chunks the local engine reads, one Parquet file
each (``serving.batch.stage_csv_chunks``, in a hidden folder beside the output, removed at the
end), one partition each.
Each partition is scored on a worker by ``serving.batch.score_partition`` (a plain function):

- the worker loads the verified champion once per process (``serving.loader.load_champion``,
  the same verification as serving: only what the record promoted) and refuses to score when
  it is not the champion the command loaded (a promotion in between);
- it writes its part of the output, ``<output>/part-<n>.parquet`` (the output is a Parquet
  dataset directory; rejected rows go to ``<rejects>/part-<n>.parquet``, only for partitions
  that have any), and its decisions through its own ``DecisionWriter``
  (``source="batch"``, ``request_id`` the run id);
- the command receives only per-partition summaries (rows, rejected, contacted, files).

The parts are written into a hidden temp directory beside the output, renamed into place when
every partition succeeded. When one fails, the other partitions are cancelled, the decision
files the finished ones wrote are deleted (a failed partition deletes its own) and the temp
directory is removed: a failed run leaves no output and no decisions.

Workers read the input and write the output, the rejects and the decision store under the same
paths as the command: on a multi-node cluster these must be on a shared filesystem.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pandas as pd

from configs.settings import BayesPilotConfig
from serving.batch import (
    BatchSummary,
    Partition,
    PartitionSummary,
    input_kind,
    part_name,
    plan_partitions,
    score_partition,
    stage_csv_chunks,
)
from serving.loader import Champion
from serving.scoring import RESULT_COLUMNS
from tasks.failpoints import failpoint
from tasks.load_data import DataError, refusals_returned, unrefused

log = logging.getLogger(__name__)

_CHAMPIONS: dict[str, Champion] = {}  # per worker process: config JSON -> loaded champion
_LOCK = threading.Lock()


def worker_champion(config: BayesPilotConfig, model_version: str, policy_id: str) -> Champion:
    """The verified champion of ``config``'s workspace, loaded once per process; raises
    RuntimeError when it is not ``model_version`` with ``policy_id`` (what the command
    scores with)."""
    from serving.loader import load_champion
    from serving.settings import ServingSettings

    key = config.model_dump_json()
    wanted = (model_version, policy_id)
    with _LOCK:
        champion = _CHAMPIONS.get(key)
        if champion is None or (champion.model_version, champion.policy_id) != wanted:
            # first use, or a promotion since the cached one was loaded: load (verify) again
            champion = load_champion(ServingSettings.from_config(config), pin=True)
            _CHAMPIONS[key] = champion
    if (champion.model_version, champion.policy_id) != wanted:
        raise RuntimeError(
            f"the worker's champion is model v{champion.model_version} with policy "
            f"{champion.policy_id[:12]}, the run scores v{model_version} with policy "
            f"{policy_id[:12]} (a promotion during the run?)"
        )
    return champion


def score_partition_task(
    part: Partition,
    *,
    config: BayesPilotConfig,
    model_version: str,
    policy_id: str,
    output_dir: str,
    rejects_dir: str,
    run_id: str,
) -> PartitionSummary:
    """What a worker runs for one partition: the champion (cached), its own decision writer,
    ``score_partition``; the summary lists the decision files written."""
    from distributed import Event

    from serving.settings import ServingSettings
    from tasks.decision_store import BATCH_FLUSH_INTERVAL_S, DecisionWriter

    champion = worker_champion(config, model_version, policy_id)
    stop = Event(abort_event_name(run_id))
    settings = ServingSettings.from_config(config)
    writer = DecisionWriter(
        settings.workspace_paths.decisions,
        source="batch",
        writer_id=f"score-{run_id[:12]}-p{part.index}",
        flush_rows=config.decisions.batch_flush_rows,
        flush_interval_s=BATCH_FLUSH_INTERVAL_S,
        file_mode=settings.log_file_mode,
        compression=config.decisions.compression,
    )
    summary = score_partition(
        champion,
        part,
        Path(output_dir),
        Path(rejects_dir),
        chunk_rows=config.serving.batch_chunk_rows,
        experiment=settings.experiment,
        decisions=writer,
        inputs=settings.input_policy(),
        run_id=run_id,
        abort=stop.is_set,
    )
    try:
        writer.close()
    except BaseException:
        writer.abort()
        raise
    failpoint(f"batch:partition-written:{part.index}")
    files = tuple(str(p) for p in writer.written_files())
    return PartitionSummary(
        **{**summary.__dict__, "decisions": writer.rows_written, "decision_files": files}
    )


def abort_event_name(run_id: str) -> str:
    """The ``distributed.Event`` a failed run sets so its other partitions stop."""
    return f"bayespilot-batch-abort-{run_id}"


def run_decision_files(root: Path, run_id: str) -> list[Path]:
    """Every decision file the partitions of run ``run_id`` wrote (their writer ids name the
    run), wherever a partition got to before it failed or was killed."""
    return sorted(root.glob(f"date=*/hour=*/batch-score-{run_id[:12]}-p*.parquet"))


@contextlib.contextmanager
def local_cluster(
    workers: int, memory_limit: str | None, threads_per_worker: int = 1
) -> Iterator[Any]:
    """A ``distributed.LocalCluster`` on 127.0.0.1 (no dashboard) and its client, closed at
    the end."""
    from distributed import Client, LocalCluster

    cluster = LocalCluster(
        n_workers=workers,
        threads_per_worker=threads_per_worker,
        memory_limit=memory_limit if memory_limit is not None else "auto",
        host="127.0.0.1",
        dashboard_address=None,
        processes=True,
    )
    try:
        with Client(cluster, set_as_default=False) as client:  # callers pass it explicitly
            yield client
    finally:
        cluster.close()


def _replace_dir(tmp: Path, final: Path) -> None:
    """Rename ``tmp`` to ``final``; an existing ``final`` is moved aside first and removed."""
    old = None
    if final.exists():
        if not final.is_dir():
            raise DataError(
                f"--output: {final} exists and is not a directory (the dask engine "
                "writes a Parquet dataset directory)"
            )
        old = final.with_name(f".{final.name}.old-{uuid.uuid4().hex[:8]}")
        os.rename(final, old)
    os.rename(tmp, final)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def score_file_dask(
    client: Any,
    config: BayesPilotConfig,
    champion: Champion,
    input_path: Path,
    output_path: Path,
    *,
    rejects_path: Path | None = None,
    run_id: str | None = None,
) -> BatchSummary:
    """Score the Parquet or CSV file ``input_path`` on the cluster of ``client`` into the
    Parquet dataset directory ``output_path`` (module docstring). Partitions of a Parquet file
    are whole row groups of at least ``serving.batch_chunk_rows`` rows, the same cut as the
    local engine's chunks; a CSV file is first cut by one worker into the local engine's
    chunks, one Parquet file each (``stage_csv_chunks``, in a hidden folder beside the output,
    removed at the end). Both give the local engine's scores to the last bit."""
    chunk_rows = config.serving.batch_chunk_rows
    if input_kind(input_path) == "parquet":
        parts = plan_partitions(input_path, chunk_rows)
        return _score_parts(client, config, champion, parts, output_path, rejects_path, run_id)
    staging = output_path.with_name(f".{output_path.name}.staged-{uuid.uuid4().hex[:8]}")
    staging.mkdir(parents=True)
    try:
        parts = unrefused(
            client.submit(
                refusals_returned, stage_csv_chunks, input_path, staging, chunk_rows, pure=False
            ).result()
        )
        return _score_parts(client, config, champion, parts, output_path, rejects_path, run_id)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _score_parts(
    client: Any,
    config: BayesPilotConfig,
    champion: Champion,
    parts: list[Partition],
    output_path: Path,
    rejects_path: Path | None,
    run_id: str | None,
) -> BatchSummary:
    """:func:`score_file_dask` once the partitions are known."""
    from distributed import Event, as_completed

    from serving.settings import ServingSettings

    run_id = run_id or uuid.uuid4().hex
    rejects_path = rejects_path or output_path.with_name(f"{output_path.name}.rejects")
    tag = uuid.uuid4().hex[:8]
    tmp_out = output_path.with_name(f".{output_path.name}.tmp-{tag}")
    tmp_rej = rejects_path.with_name(f".{rejects_path.name}.tmp-{tag}")
    tmp_out.mkdir(parents=True)
    tmp_rej.mkdir(parents=True)
    done: list[PartitionSummary] = []
    ok = False
    futures = client.map(
        score_partition_task,
        parts,
        config=config,
        model_version=champion.model_version,
        policy_id=champion.policy_id,
        output_dir=str(tmp_out),
        rejects_dir=str(tmp_rej),
        run_id=run_id,
        key=[f"score-{run_id[:12]}-p{p.index}" for p in parts],
        pure=False,
    )
    try:
        for fut in as_completed(futures, loop=client.loop):
            done.append(fut.result())
        ok = True
    finally:
        if not ok:
            # a cancelled task that is already running still finishes and writes its
            # decisions: stop every partition at its next chunk, wait until all have ended,
            # then remove whatever any of them wrote (a killed worker cleans up nothing)
            Event(abort_event_name(run_id), client=client).set()
            client.gather(futures, errors="skip")  # returns once every partition has ended
            for f in run_decision_files(
                ServingSettings.from_config(config).workspace_paths.decisions, run_id
            ):
                f.unlink(missing_ok=True)
            shutil.rmtree(tmp_out, ignore_errors=True)
            shutil.rmtree(tmp_rej, ignore_errors=True)
    done.sort(key=lambda s: s.index)
    if not any(s.output for s in done):  # nothing scored: one empty part, as score_file does
        empty = pd.DataFrame(columns=[champion.id_column, *RESULT_COLUMNS])
        empty.to_parquet(tmp_out / part_name(0), index=False)
    _replace_dir(tmp_out, output_path)
    rejected = sum(s.rejected for s in done)
    if rejected:
        _replace_dir(tmp_rej, rejects_path)
    else:
        shutil.rmtree(tmp_rej, ignore_errors=True)
    steps: dict[str, float] = {}
    for s in done:
        for k, v in s.step_seconds.items():
            steps[k] = steps.get(k, 0.0) + v
    return BatchSummary(
        sum(s.rows for s in done),
        sum(s.scored for s in done),
        rejected,
        sum(s.contacts for s in done),
        sum(s.expected_profit_usd for s in done),
        output_path,
        rejects_path if rejected else None,
        sum(s.holdout for s in done),
        sum(s.held_back for s in done),
        None if config.serving.experiment_id is None else champion_experiment(config),
        decisions=sum(s.decisions for s in done),
        run_id=run_id,
        step_seconds=steps,
        partitions=len(done),
        decision_files=tuple(f for s in done for f in s.decision_files),
    )


def champion_experiment(config: BayesPilotConfig) -> str | None:
    """The experiment id the workers apply (``ServingSettings.experiment``)."""
    from serving.settings import ServingSettings

    exp = ServingSettings.from_config(config).experiment
    return None if exp is None else exp.experiment_id
