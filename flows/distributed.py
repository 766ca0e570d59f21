"""The Dask engine's data path: load, validate and split a table on partitions.

With ``scaleout.engine: dask`` and a ``data.path``, the flow process never reads the table.
A CSV file is first staged as Parquet by one worker (``tasks.stage_csv``: two chunked reads,
one chunk in memory, the whole-file read's column types) into the run's staging folder,
removed when the run ends. The workers read the Parquet table partition by partition
(``scaleout.dask_partition_rows`` rows of consecutive row groups, ``tasks.partitions``) and
return summaries; the flow reduces them:

1. **load**: per partition the 64-bit row hashes (8 bytes a row), the label's text counts and,
   for text columns that may be numeric, parse counts. The flow streams the row hashes into
   the data hash in table order, which gives exactly ``frame_sha256`` of the whole table (the
   local engine's hash, so records and replays compare like with like), and resolves the
   column roles as the local loader would.
2. **validate**: per partition blank cells, pandera's row-level failures (with the rows'
   table positions), missing counts and distinct values per feature, label counts, the label
   as 0/1 (1 byte a row) and the id hashes. Exact duplicate rows and ids shared by differing
   rows are found over the whole table from the row and id hashes; whole-column checks on the
   summed counts. The leakage screen runs on the same seeded rows the local engine samples
   (``validation.leakage_sample_rows``), fetched from the workers.
3. **split**: the flow computes the split positions from the label vector alone, with the
   local engine's function (``tasks.split_data.split_plan``: the same positions, samples and
   plan), and the workers return only the clean rows at those positions. ``Splits`` then holds
   just the sampled rows (``total_rows`` keeps the table's size), with the local engine's
   hashes, sizes and positive rates.

The flow process's memory is bounded by the scale caps (train sample + the judged selection
and test samples), plus 17 bytes a row of the table for the hashes and labels, not by the
table. Everything after the split is the local engine's code, except the evidence pass over
the whole test split (when the test split was sampled, ``tasks.evidence_pass``): the chosen
model is scattered once and the workers score their partitions' test rows, returning
statistics only (:func:`full_test_stats`).

One cluster per run: with ``scaleout.dask_address`` null, :func:`dask_cluster` starts one
``LocalCluster`` (worker processes, ``dask_memory_limit`` each, 127.0.0.1) that the data path
and the DaskTaskRunner share, and closes it when the run ends.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import pandas as pd

from configs.paths import staged_table
from configs.settings import ROW_ID_COLUMN, BayesPilotConfig
from tasks.evidence_pass import PassStats, partition_pass_stats
from tasks.load_data import (
    ColumnRoles,
    LoadedData,
    refusals_returned,
    roles_from_columns,
    unrefused,
)
from tasks.partitions import (
    PartitionCheck,
    PartitionedIssues,
    PartitionValidation,
    TableLayout,
    concat_rows,
    id_values,
    partitioned_issues,
    partitioned_report,
    profile_partition,
    reduce_profiles,
    table_layout,
    take_rows,
    validate_partition,
)
from tasks.reconcile import run_scratch
from tasks.split_data import (
    SPLIT_NAMES,
    Splits,
    positive_rates,
    split_plan,
    splits_over,
)
from tasks.stage_csv import StagedCsv, is_csv, stage_csv
from tasks.validate_data import (
    ValidationReport,
    label_values_from,
    leakage_issues,
    leakage_positions,
)

log = logging.getLogger(__name__)
T = TypeVar("T")

# the scheduler address of the cluster this process started for the current run
_ACTIVE: list[str] = []


def uses_partitions(config: BayesPilotConfig) -> bool:
    """The Dask engine on a file (Parquet, or CSV staged as Parquet): the data path runs on
    partitions. (The generator's data is made in the flow process, as with the local
    engine.)"""
    return (
        config.scaleout.engine == "dask"
        and config.data.source == "file"
        and config.data.path is not None
    )


def needs_staging(config: BayesPilotConfig) -> bool:
    """The partitioned data path reads a CSV file, which a worker stages as Parquet first
    (``tasks.stage_csv``) in the run's staging folder."""
    return uses_partitions(config) and is_csv(str(config.data.path))


@contextmanager
def staging_for_run(config: BayesPilotConfig, folder: Path) -> Iterator[None]:
    """The run's staging ``folder`` (``configs.paths.Workspace.run_staging``) for the block,
    when the data path stages a CSV file (:func:`needs_staging`): held alive, then removed
    with what was staged. Nothing otherwise."""
    if not needs_staging(config):
        yield
        return
    with run_scratch(folder):
        yield


@contextmanager
def dask_cluster(config: BayesPilotConfig) -> Iterator[str]:
    """The scheduler address of the run's cluster: ``scaleout.dask_address``, the cluster a
    caller already started in this process for the run, or a ``LocalCluster`` started here
    (``dask_workers`` processes of ``dask_threads_per_worker`` threads, ``dask_memory_limit``
    each, 127.0.0.1, no dashboard) and closed on exit."""
    sc = config.scaleout
    if sc.dask_address:
        yield sc.dask_address
        return
    if _ACTIVE:
        yield _ACTIVE[-1]
        return
    from distributed import LocalCluster

    cluster = LocalCluster(
        n_workers=sc.dask_workers,
        threads_per_worker=sc.dask_threads_per_worker,
        processes=True,
        memory_limit=sc.dask_memory_limit or "auto",
        dashboard_address=None,
        host="127.0.0.1",
    )
    address = str(cluster.scheduler_address)
    log.info(
        "started a LocalCluster at %s: %d workers, memory limit %s each",
        address,
        sc.dask_workers,
        sc.dask_memory_limit or "auto",
    )
    _ACTIVE.append(address)
    try:
        yield address
    finally:
        _ACTIVE.remove(address)
        cluster.close()


@contextmanager
def data_client(config: BayesPilotConfig) -> Iterator[Any]:
    """A ``distributed.Client`` of the run's cluster (see :func:`dask_cluster`)."""
    from distributed import Client

    with dask_cluster(config) as address:
        client = Client(address, set_as_default=False)
        try:
            yield client
        finally:
            client.close()


def _each(client: Any, fn: Callable[..., T], layout: TableLayout, **kwargs: Any) -> Iterator[T]:
    """``fn(layout, part, **kwargs)`` for every partition on the cluster, results in partition
    order (each released once taken)."""
    futures = [
        client.submit(refusals_returned, fn, layout, p, pure=False, **kwargs)
        for p in layout.partitions
    ]
    for f in futures:
        out: T = unrefused(f.result())
        f.release()
        yield out


@dataclass(frozen=True)
class PartitionedLoad:
    """What the load pass leaves for validation: the layout, the data as the record names it,
    the row hashes (in table order), the roles and the label's text counts."""

    layout: TableLayout
    loaded: LoadedData
    row_hashes: np.ndarray
    roles: ColumnRoles
    label_counts: pd.Series
    label_booleans: bool

    def __repr__(self) -> str:
        return f"PartitionedLoad({self.loaded.source}, {self.layout.rows} rows)"


def _columns(layout: TableLayout, config: BayesPilotConfig) -> list[str]:
    """The loaded table's columns (with the row number the loader adds when there is no id)."""
    cols = list(layout.columns)
    return [ROW_ID_COLUMN, *cols] if config.data.id_column is None else cols


def load_partitioned(
    config: BayesPilotConfig, client: Any, *, staging: Path | None = None
) -> PartitionedLoad:
    """The load pass: layout, data hash, column roles (see the module docstring). A CSV file
    is staged as Parquet into the folder ``staging`` first (the run's, which must be where
    the workers can write and read)."""
    assert config.data.path is not None
    path = str(Path(config.data.path))
    rows = config.scaleout.dask_partition_rows
    read, categories = path, None
    if is_csv(path):
        if staging is None:
            raise ValueError("the dask engine stages a CSV file: a staging folder is needed")
        read = str(staged_table(staging))
        staged: StagedCsv = unrefused(
            client.submit(
                refusals_returned, stage_csv, path, read, chunk_rows=rows, pure=False
            ).result()
        )
        categories = staged.categories
    layout: TableLayout = unrefused(
        client.submit(
            refusals_returned,
            table_layout,
            read,
            partition_rows=rows,
            categories=categories,
            pure=False,
        ).result()
    )
    share = config.validation.numeric_inference_share
    # a text column that shows itself as text in its first cells is not counted in full
    # (tasks.load_data._looks_numeric)
    ask = tuple(
        c for c, head in layout.head_numeric_share.items() if not (head == 0.0 or head < share / 2)
    )
    profiles = list(
        _each(
            client,
            profile_partition,
            layout,
            data=config.data,
            count_numeric=ask,
        )
    )
    sha256, hashes, shares, label_counts, booleans = reduce_profiles(profiles)
    del profiles
    numeric_dtype = set(layout.numeric)

    def looks_numeric(c: str) -> bool:
        if c in numeric_dtype:
            return True
        return c in shares and shares[c] >= share

    roles = roles_from_columns(
        _columns(layout, config),
        looks_numeric,
        data=config.data,
        value_column=config.economics.customer_value.column,
    )
    frame = pd.DataFrame(columns=_columns(layout, config))  # the header only: no rows held
    loaded = LoadedData(frame=frame, source=path, sha256=sha256)
    log.info(
        "loaded %s on %d partitions: %s rows, data hash %s",
        path,
        len(layout.partitions),
        f"{layout.rows:,}",
        sha256[:12],
    )
    return PartitionedLoad(layout, loaded, hashes, roles, label_counts, booleans)


@dataclass(frozen=True)
class PartitionedTable:
    """The validated table as the flow holds it: the report, roles, the label vector (0/1,
    int8, table order) and what the workers need to clean rows."""

    layout: TableLayout
    report: ValidationReport
    roles: ColumnRoles
    check: PartitionCheck
    labels: np.ndarray

    def __repr__(self) -> str:
        return f"PartitionedTable({self.layout.path}, passed={self.report.passed})"


def _fetch(
    client: Any,
    layout: TableLayout,
    positions: np.ndarray,
    fn: Callable[..., T],
    **kwargs: Any,
) -> list[T]:
    """``fn(layout, part, positions_in_part, **kwargs)`` on the partitions holding any of the
    sorted table ``positions``, in partition order."""
    futures = []
    for part in layout.partitions:
        lo, hi = np.searchsorted(positions, [part.offset, part.offset + part.rows])
        if hi > lo:
            futures.append(
                client.submit(
                    refusals_returned, fn, layout, part, positions[lo:hi], pure=False, **kwargs
                )
            )
    out: list[T] = []
    for f in futures:
        out.append(unrefused(f.result()))
        f.release()
    return out


def validate_partitioned(
    load: PartitionedLoad, config: BayesPilotConfig, client: Any
) -> PartitionedTable:
    """The validation pass (see the module docstring): the same report as the local
    engine's ``validate_table``."""
    layout, roles = load.layout, load.roles
    columns = _columns(layout, config)
    label_present = roles.label_column in columns
    positive, negative = (
        label_values_from(load.label_counts, booleans=load.label_booleans, data=config.data)
        if label_present
        else (str(config.data.positive_label), None)
    )
    check = PartitionCheck.of(
        roles,
        label_values=(positive, *([negative] if negative is not None else [])),
        id_generated=config.data.id_column is None,
    )
    parts: list[PartitionValidation] = list(
        _each(
            client,
            validate_partition,
            layout,
            data=config.data,
            check=check,
            validation=config.validation,
            chunk_rows=config.scale.chunk_rows,
        )
    )

    def id_texts(positions: np.ndarray) -> list[str]:
        order = np.argsort(positions, kind="stable")
        fetched = _fetch(
            client,
            layout,
            positions[order],
            id_values,
            data=config.data,
            column=roles.id_column,
        )
        flat = [v for part in fetched for v in part]
        out = [""] * len(positions)
        for i, v in zip(order, flat, strict=True):
            out[i] = v
        return out

    found: PartitionedIssues = partitioned_issues(
        parts,
        columns=columns,
        row_hashes_in_order=load.row_hashes,
        roles=roles,
        check=check,
        data=config.data,
        validation=config.validation,
        split=config.split,
        economics=config.economics,
        id_values_at=id_texts,
    )
    labels = np.concatenate([p.labels for p in parts]) if label_present else np.zeros(0)
    del parts
    extra = []
    if not found.issues and label_present:
        sample = leakage_positions(layout.rows, config.validation)
        if sample is None:
            sample = np.arange(layout.rows)
        rows = _clean_rows(client, layout, sample, config=config, check=check)
        extra = leakage_issues(rows, roles=roles, validation=config.validation)
    report = partitioned_report(found, rows=layout.rows, extra=extra)
    return PartitionedTable(layout, report, roles, check, labels.astype(np.int8))


def _clean_rows(
    client: Any,
    layout: TableLayout,
    positions: np.ndarray,
    *,
    config: BayesPilotConfig,
    check: PartitionCheck,
) -> pd.DataFrame:
    """The clean rows at table ``positions`` (any order, no repeats), in that order."""
    order = np.argsort(positions, kind="stable")
    ranked = positions[order]
    frames = _fetch(client, layout, ranked, take_rows, data=config.data, check=check)
    rows = concat_rows(frames, sort_categories=layout.csv_types)  # in ranked order
    back = np.empty(len(order), dtype=np.int64)
    back[order] = np.arange(len(order))
    return rows.take(back).reset_index(drop=True)


def split_partitioned(table: PartitionedTable, config: BayesPilotConfig, client: Any) -> Splits:
    """The split pass (see the module docstring): the local engine's positions, samples,
    plan and hashes, over just the sampled rows."""
    y = table.labels
    index, plan = split_plan(y, roles=table.roles, config=config.split, scale=config.scale)
    needed = np.sort(np.concatenate([index[name] for name in SPLIT_NAMES]))
    frames = _fetch(client, table.layout, needed, take_rows, data=config.data, check=table.check)
    data = concat_rows(frames, sort_categories=table.layout.csv_types)
    local = {name: np.searchsorted(needed, index[name]) for name in SPLIT_NAMES}
    return splits_over(
        data,
        local,
        roles=table.roles,
        positive_rate=positive_rates(y, index),
        plan=plan,
        chunk_rows=config.scale.chunk_rows,
        total_rows=len(y),
    )


def full_test_stats(
    table: PartitionedTable,
    positions: np.ndarray,
    model: Any,
    policy: Any,
    *,
    features: tuple[str, ...],
    edges: np.ndarray,
    config: BayesPilotConfig,
    client: Any,
) -> list[PassStats]:
    """The evidence pass over every test row on partitions (``tasks.evidence_pass``): the
    model is shipped to each worker once (scattered), each worker reads its partition, keeps
    the test rows at the sorted table ``positions``, scores them and returns only their
    statistics, in partition order."""
    [shipped] = client.scatter([model], broadcast=True, hash=False)
    try:
        return _fetch(
            client,
            table.layout,
            positions,
            partition_pass_stats,
            model=shipped,
            policy=policy,
            data=config.data,
            check=table.check,
            features=features,
            economics=config.economics,
            edges=edges,
        )
    finally:
        shipped.release()
