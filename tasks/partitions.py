"""A Parquet table in partitions: per-partition summaries that reduce to the whole table's.

Plain functions on one partition (consecutive row groups of the file, read the way
``tasks.load_data.read_table`` reads the whole file) and the reductions of their results to
what the local path computes on the whole table: the data hash, column roles, the
validation report, the label vector and the rows at given positions. The Dask wiring (which
process calls what) lives in ``flows/distributed.py``; nothing here imports Dask.

What a partition returns is a summary whose size does not grow with the table's columns:
8 bytes per row for the row hashes (data hash, exact duplicate rows), 8 for the id hashes
(ids shared across partitions), 1 for the label, plus per-column counts, the schema's
failure cases and, for categorical features, their distinct values (at most
``DISTINCT_VALUES_CAP`` per partition).
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from configs.settings import (
    ROW_ID_COLUMN,
    DataConfig,
    EconomicsConfig,
    SplitConfig,
    ValidationConfig,
)
from schemas.churn import CATEGORIES_ERROR, MISSING_SHARE_ERROR, build_schema
from tasks.load_data import (
    ColumnRoles,
    DataError,
    _check_parquet_schema,
    arrow_to_pandas,
    dictionary_columns,
    hash_header,
    numeric_share,
    row_hashes,
    with_row_id,
)
from tasks.validate_data import (
    MAX_EXAMPLES,
    MISSING_COLUMN,
    ValidationIssue,
    ValidationReport,
    _clean,
    _missing_column_issue,
    _missing_id_issue,
    _split_schema,
    blanks_to_missing,
    capacity_issues,
    duplicate_issues,
    issues_from_failures,
    label_as_text,
    label_issues,
    label_texts,
    schema_failures,
)

# At most this many distinct values of a categorical feature come back from one partition
# (the max_categories check needs only max_categories + 1 of them to fail).
DISTINCT_VALUES_CAP = 10_000
# rows of the table's head whose numeric share decides whether a text column is worth
# counting in full (tasks.load_data._looks_numeric)
HEAD_ROWS = 1000


@dataclass(frozen=True)
class Partition:
    """Row groups ``row_groups`` of the file: rows ``offset`` to ``offset + rows - 1``."""

    row_groups: tuple[int, ...]
    offset: int
    rows: int


@dataclass(frozen=True)
class TableLayout:
    """How a Parquet file is read in partitions so that every partition has the dtypes the
    whole file read at once has: text read as categories (``dictionary``: few distinct
    values in the first row group) or Arrow strings; integer (boolean) columns with a
    missing cell anywhere read as float (object), as pandas reads the whole column."""

    path: str
    rows: int
    columns: tuple[str, ...]
    partitions: tuple[Partition, ...]
    dictionary: tuple[str, ...]
    as_float: tuple[str, ...]
    as_object: tuple[str, ...]
    numeric: tuple[str, ...] = ()
    """Columns of a numeric (integer or floating) type: numeric to the loader."""
    head_numeric_share: dict[str, float] = field(default_factory=dict)
    """Per text column, the share of its first ``HEAD_ROWS`` non-blank cells that parse as
    numbers (the quick look column-role inference takes first)."""
    csv_types: bool = False
    """A staged CSV (``tasks.stage_csv``): types as pandas gives them to a CSV file read
    whole, i.e. categories in sorted order (not the order of the file's dictionaries) and
    gaps in a column of booleans as NaN (not None)."""


def table_layout(
    path: str | Path, *, partition_rows: int, categories: tuple[str, ...] | None = None
) -> TableLayout:
    """Plan the partitions of a Parquet file (consecutive row groups of at least
    ``partition_rows`` rows, the last one smaller) from its footer and its first row group.
    Refuses what :func:`tasks.load_data.read_table` refuses, with the same errors.
    ``categories``: the text columns read as categories (a staged CSV, whose staging
    counted them over the whole file: the layout then has ``csv_types``); by default those
    whose first row group shows few distinct values."""
    p = Path(path)
    if not p.is_file():
        raise DataError(f"data.path: file not found: {p}")
    if p.suffix.lower() not in {".parquet", ".pq"}:  # as read_table says it
        raise DataError(f"data.path: expected a .csv or .parquet file, got {p.name!r}")
    try:
        _check_parquet_schema(p)
        pf = pq.ParquetFile(p)
        meta = pf.metadata
        schema = pf.schema_arrow
        columns = tuple(schema.names)
        if meta.num_rows == 0:
            listed = ", ".join(columns[:40])
            raise DataError(
                f"data.path: {p.name} has no data rows (only a header: {listed or 'no columns'})"
            )
        few = dictionary_columns(pf) if categories is None else list(categories)
        as_float: list[str] = []
        as_object: list[str] = []
        for i, f in enumerate(schema):
            if not (pa.types.is_integer(f.type) or pa.types.is_boolean(f.type)):
                continue
            if _null_count(pf, i, f.name) > 0:
                (as_object if pa.types.is_boolean(f.type) else as_float).append(f.name)
        text = [
            f.name for f in schema if pa.types.is_string(f.type) or pa.types.is_large_string(f.type)
        ]
        head: dict[str, float] = {}
        if text:
            first = arrow_to_pandas(pf.read_row_group(0, columns=text))
            head = {c: numeric_share(first[c].head(HEAD_ROWS)) for c in text}
    except (ValueError, OSError, pa.ArrowException) as exc:
        if isinstance(exc, DataError):
            raise
        reason = " ".join(str(exc).split())
        raise DataError(f"data.path: cannot read {p}: {reason}") from None
    parts: list[Partition] = []
    group: list[int] = []
    offset = start = 0
    for i in range(meta.num_row_groups):
        group.append(i)
        offset += meta.row_group(i).num_rows
        if offset - start >= partition_rows or i == meta.num_row_groups - 1:
            parts.append(Partition(tuple(group), start, offset - start))
            group, start = [], offset
    return TableLayout(
        path=str(p),
        rows=meta.num_rows,
        columns=columns,
        partitions=tuple(pt for pt in parts if pt.rows),
        dictionary=tuple(few),
        as_float=tuple(as_float),
        as_object=tuple(as_object),
        numeric=tuple(
            f.name for f in schema if pa.types.is_integer(f.type) or pa.types.is_floating(f.type)
        ),
        head_numeric_share=head,
        csv_types=categories is not None,
    )


def _null_count(pf: pq.ParquetFile, index: int, name: str) -> int:
    """Missing cells of column ``index``: from the row groups' statistics, or by reading the
    one column where a row group has none."""
    total = 0
    for g in range(pf.metadata.num_row_groups):
        stats = pf.metadata.row_group(g).column(index).statistics
        if stats is None or not stats.has_null_count:
            return int(pf.read(columns=[name]).column(0).null_count)
        total += int(stats.null_count)
    return total


def read_partition(layout: TableLayout, part: Partition, *, data: DataConfig) -> pd.DataFrame:
    """One partition as the whole-file read would hold its rows (same dtypes), indexed by
    the rows' positions in the table, with the ``row_id`` column when ``data.id_column`` is
    null."""
    pf = pq.ParquetFile(layout.path, read_dictionary=list(layout.dictionary) or None)
    frame = arrow_to_pandas(pf.read_row_groups(list(part.row_groups)))
    for c in layout.as_float:
        if isinstance(frame[c].dtype, np.dtype) and frame[c].dtype.kind in "iu":
            frame[c] = frame[c].astype("float64")  # a numpy integer column cannot hold a gap
    for c in layout.as_object:
        if isinstance(frame[c].dtype, np.dtype) and frame[c].dtype.kind == "b":
            frame[c] = frame[c].astype(object)
    if layout.csv_types:
        for c in layout.dictionary:
            frame[c] = frame[c].cat.set_categories(frame[c].cat.categories.sort_values())
        for c in layout.as_object:
            frame[c] = frame[c].where(frame[c].notna(), np.nan)
    frame.index = pd.RangeIndex(part.offset, part.offset + len(frame))
    if data.id_column is None:
        return with_row_id(frame, data=data, start=part.offset)
    return frame


def _as_read(frame: pd.DataFrame, data: DataConfig) -> pd.DataFrame:
    """The partition without the row number the loader adds (the data hash is of the table
    as read)."""
    return frame.drop(columns=[ROW_ID_COLUMN]) if data.id_column is None else frame


@dataclass(frozen=True)
class PartitionProfile:
    """What column roles, the label values and the data hash need from one partition."""

    rows: int
    header: bytes
    row_hashes: np.ndarray
    numeric_counts: dict[str, tuple[int, int]]
    """Per text column asked about: (non-blank cells, cells of them that parse as numbers)."""
    label_counts: dict[str, int]
    label_booleans: bool
    label_cells: int


def profile_partition(
    layout: TableLayout,
    part: Partition,
    *,
    data: DataConfig,
    count_numeric: tuple[str, ...] = (),
) -> PartitionProfile:
    """Row hashes (for the data hash and exact duplicates), the label's text counts, and for
    the ``count_numeric`` text columns how many cells parse as numbers."""
    frame = read_partition(layout, part, data=data)
    as_read = _as_read(frame, data)
    counts: dict[str, tuple[int, int]] = {}
    for c in count_numeric:
        text = frame[c].dropna().astype(str).str.strip()
        text = text[text != ""]
        counts[c] = (len(text), int(pd.to_numeric(text, errors="coerce").notna().sum()))
    label_counts: dict[str, int] = {}
    booleans = False
    cells = 0
    if data.label_column in frame.columns:
        texts, booleans = label_texts(frame[data.label_column])
        label_counts = {str(k): int(v) for k, v in texts.items()}
        cells = int(frame[data.label_column].notna().sum())
    return PartitionProfile(
        rows=len(frame),
        header=hash_header(as_read),
        row_hashes=row_hashes(as_read),
        numeric_counts=counts,
        label_counts=label_counts,
        label_booleans=booleans,
        label_cells=cells,
    )


def reduce_profiles(
    profiles: list[PartitionProfile],
) -> tuple[str, np.ndarray, dict[str, float], pd.Series, bool]:
    """The data hash (``frame_sha256`` of the table as read: the same stream of row hashes),
    all row hashes in table order, each counted text column's numeric share, the label's text
    value counts (most frequent first) and whether the label holds booleans."""
    headers = {p.header for p in profiles}
    if len(headers) != 1:
        raise DataError(
            "data.path: the file's row groups read with different column types; rewrite it "
            "with one schema"
        )
    digest = hashlib.sha256(headers.pop())
    for p in profiles:
        digest.update(p.row_hashes.tobytes())
    hashes = np.concatenate([p.row_hashes for p in profiles])
    shares: dict[str, float] = {}
    for c in profiles[0].numeric_counts:
        seen = sum(p.numeric_counts[c][0] for p in profiles)
        parsed = sum(p.numeric_counts[c][1] for p in profiles)
        shares[c] = parsed / seen if seen else 0.0
    total: dict[str, int] = {}
    for p in profiles:
        for k, v in p.label_counts.items():
            total[k] = total.get(k, 0) + v
    counts = pd.Series(total, dtype="int64").sort_values(ascending=False, kind="stable")
    with_values = [p for p in profiles if p.label_cells]
    booleans = bool(with_values) and all(p.label_booleans for p in with_values)
    return digest.hexdigest(), hashes, shares, counts, booleans


@dataclass(frozen=True)
class PartitionCheck:
    """What validating one partition needs from the whole table: the roles and the label
    values allowed (the positive first)."""

    roles_numeric: tuple[str, ...]
    roles_categorical: tuple[str, ...]
    id_column: str
    label_column: str
    value_column: str | None
    segment_columns: tuple[str, ...]
    label_values: tuple[str, ...]
    id_generated: bool

    @classmethod
    def of(
        cls, roles: ColumnRoles, *, label_values: tuple[str, ...], id_generated: bool
    ) -> PartitionCheck:
        return cls(
            roles_numeric=roles.numeric,
            roles_categorical=roles.categorical,
            id_column=roles.id_column,
            label_column=roles.label_column,
            value_column=roles.value_column,
            segment_columns=roles.segment_columns,
            label_values=label_values,
            id_generated=id_generated,
        )

    @property
    def roles(self) -> ColumnRoles:
        """The column roles a partition is checked with (ignored columns play no part)."""
        return ColumnRoles(
            id_column=self.id_column,
            label_column=self.label_column,
            numeric=self.roles_numeric,
            categorical=self.roles_categorical,
            ignored=(),
            segment_columns=self.segment_columns,
            value_column=self.value_column,
        )


@dataclass(frozen=True)
class PartitionValidation:
    """One partition's share of the validation report."""

    rows: int
    blanks: dict[str, int]
    missing: dict[str, int]
    distinct: dict[str, list[object]]
    distinct_capped: dict[str, bool]
    failures: pd.DataFrame | None
    label_counts: dict[str, int]
    labels: np.ndarray
    """The label as 0/1 (int8): 1 where it equals the positive label."""
    id_hashes: np.ndarray | None
    """64-bit hashes of the ids (missing ids as the null hash), None for a generated id."""


def validate_partition(
    layout: TableLayout,
    part: Partition,
    *,
    data: DataConfig,
    check: PartitionCheck,
    validation: ValidationConfig,
    chunk_rows: int | None,
) -> PartitionValidation:
    """Blank cells, the schema's row-level failures (pandera, chunk by chunk, with the rows'
    table positions), missing cells and distinct values per feature (for the whole-column
    checks), the label counts and vector, and the id hashes of one partition."""
    roles = check.roles
    frame = read_partition(layout, part, data=data)
    work = frame.copy(deep=False)
    blanks = blanks_to_missing(work, roles=roles)
    label_present = roles.label_column in work.columns
    if label_present:
        label_as_text(work, roles=roles)
    schema = build_schema(
        roles,
        label_values=list(check.label_values),
        max_missing_share=validation.max_missing_share,
        max_categories=validation.max_categories,
        unique_id=False,
    )
    row_schema, _ = _split_schema(schema)
    failures = schema_failures(work, row_schema, chunk_rows=chunk_rows or len(work))
    missing = {c: int(work[c].isna().sum()) for c in roles.features if c in work.columns}
    distinct: dict[str, list[object]] = {}
    capped: dict[str, bool] = {}
    for c in roles.categorical:
        if c in work.columns:
            values = pd.unique(work[c].dropna())
            capped[c] = len(values) > DISTINCT_VALUES_CAP
            distinct[c] = list(values[:DISTINCT_VALUES_CAP])
    label_counts: dict[str, int] = {}
    labels: np.ndarray = np.zeros(0, dtype=np.int8)
    if label_present and check.label_values:
        label_counts = {str(k): int(v) for k, v in work[roles.label_column].value_counts().items()}
        labels = (work[roles.label_column] == check.label_values[0]).to_numpy(dtype=np.int8)
    id_hashes = None
    if not check.id_generated and roles.id_column in frame.columns:
        id_hashes = np.ascontiguousarray(
            pd.util.hash_pandas_object(frame[roles.id_column], index=False).to_numpy(),
            dtype=np.uint64,
        )
    return PartitionValidation(
        rows=len(frame),
        blanks=blanks,
        missing=missing,
        distinct=distinct,
        distinct_capped=capped,
        failures=failures,
        label_counts=label_counts,
        labels=labels,
        id_hashes=id_hashes,
    )


# the hash pandas gives a missing cell (hash_pandas_object of None / NaN)
NULL_HASH = np.uint64(pd.util.hash_pandas_object(pd.Series([None], dtype=object)).iloc[0])


def whole_column_failures(
    parts: list[PartitionValidation],
    *,
    check: PartitionCheck,
    validation: ValidationConfig,
) -> pd.DataFrame | None:
    """The whole-column checks (missing share, number of categories) on the partitions'
    counts, as the failure cases pandera gives for them on the whole column (column, check
    message, a bare False, no row index)."""
    rows = sum(p.rows for p in parts)
    out = []
    share = validation.max_missing_share
    for c in (*check.roles_numeric, *check.roles_categorical):
        if c not in parts[0].missing:
            continue
        missing = sum(p.missing[c] for p in parts)
        if not missing / max(rows, 1) <= share:
            out.append({"column": c, "check": f"{MISSING_SHARE_ERROR} <= {share:g}"})
        if c in check.roles_categorical and distinct_count(parts, c) > validation.max_categories:
            out.append(
                {
                    "column": c,
                    "check": f"{CATEGORIES_ERROR} {validation.max_categories} distinct values "
                    "(list identifier-like columns under data.ignore)",
                }
            )
    if not out:
        return None
    frame = pd.DataFrame(out)
    frame["schema_context"] = "Column"
    frame["failure_case"] = False
    frame["index"] = np.nan
    return frame


def distinct_count(parts: list[PartitionValidation], column: str) -> int:
    """Distinct non-missing values of a categorical feature over all partitions (a lower
    bound when a partition held more than ``DISTINCT_VALUES_CAP``)."""
    seen: set[object] = set()
    for p in parts:
        seen.update(p.distinct.get(column, ()))
    return len(seen)


def merged_failures(
    parts: list[PartitionValidation],
    whole: pd.DataFrame | None,
    *,
    column_order: list[str],
) -> pd.DataFrame | None:
    """The partitions' failure cases and the whole-column ones as one table, as
    ``schema_failures`` gives them for the whole table chunk by chunk: table-level failures
    that every partition repeats kept once, grouped by the schema's column order."""
    frames = [p.failures for p in parts if p.failures is not None]
    if whole is not None:
        frames.append(whole)
    if not frames:
        return None
    out = pd.concat(frames, ignore_index=True)
    once = out["index"].isna()
    key = out["column"].astype(str) + "\x1f" + out["check"].astype(str) + "\x1f"
    key += out["failure_case"].astype(str)
    out = out[~(once & key.duplicated())]
    order = {name: i for i, name in enumerate(column_order)}
    column = out["column"].where(out["column"].notna(), out["failure_case"])
    rank = column.map(lambda c: order.get(str(c), len(order))).astype(int)
    return out.iloc[np.argsort(rank.to_numpy(), kind="stable")].reset_index(drop=True)


def exact_duplicates(hashes: np.ndarray) -> np.ndarray:
    """Sorted positions of rows whose row hash equals an earlier row's (``duplicated(keep=
    'first')`` by the rows' 64-bit hashes of every column)."""
    order = np.argsort(hashes, kind="stable")
    ranked = hashes[order]
    later = np.zeros(len(hashes), dtype=bool)
    later[1:] = ranked[1:] == ranked[:-1]
    return np.sort(order[later])


def conflicting_ids(id_hashes: np.ndarray, exact: np.ndarray) -> np.ndarray:
    """Sorted positions of the rows (exact duplicates left out, missing ids ignored) whose id
    another such row shares (``duplicated(keep=False)`` by 64-bit id hashes)."""
    keep = np.ones(len(id_hashes), dtype=bool)
    keep[exact] = False
    keep &= id_hashes != NULL_HASH
    positions = np.flatnonzero(keep)
    values = id_hashes[positions]
    _, inverse, counts = np.unique(values, return_inverse=True, return_counts=True)
    return positions[counts[inverse] > 1]


def take_rows(
    layout: TableLayout,
    part: Partition,
    positions: np.ndarray,
    *,
    data: DataConfig,
    check: PartitionCheck,
) -> pd.DataFrame:
    """The clean rows (``tasks.validate_data``'s clean table: numbers as float, label as 0/1)
    at table ``positions`` (sorted, inside this partition), in that order."""
    roles = check.roles
    frame = read_partition(layout, part, data=data)
    work = frame.take(np.asarray(positions, dtype=np.int64) - part.offset).copy(deep=False)
    blanks_to_missing(work, roles=roles)
    label_as_text(work, roles=roles)
    return _clean(work, roles=roles, positive=check.label_values[0])


def id_values(
    layout: TableLayout, part: Partition, positions: np.ndarray, *, data: DataConfig, column: str
) -> list[str]:
    """The id column's cells as text at table ``positions`` inside this partition."""
    frame = read_partition(layout, part, data=data)
    cells = frame[column].take(np.asarray(positions, dtype=np.int64) - part.offset)
    return [str(v) for v in cells.astype(str)]


def _same_category_type(columns: list[pd.Series]) -> list[pd.Series]:
    """``columns`` with the categories of those that have none (a partition where every cell
    is missing) typed as the others', which ``union_categoricals`` requires."""
    typed = [s.cat.categories.dtype for s in columns if len(s.cat.categories)]
    if not typed:
        return columns
    empty = pd.Index([], dtype=typed[0])
    return [s if len(s.cat.categories) else s.cat.set_categories(empty) for s in columns]


def concat_rows(frames: list[pd.DataFrame], *, sort_categories: bool = False) -> pd.DataFrame:
    """Clean rows of several partitions as one frame (positions 0..n-1): categorical columns
    keep categories (their union, in order of first appearance, as the whole-file read
    unifies the row groups' dictionaries; sorted with ``sort_categories``, as a whole CSV
    read types them)."""
    frames = [f for f in frames if len(f)] or frames[:1]
    cats = [c for c in frames[0].columns if isinstance(frames[0][c].dtype, pd.CategoricalDtype)]
    unified = {
        c: pd.api.types.union_categoricals(
            _same_category_type([f[c] for f in frames]),
            ignore_order=True,
            sort_categories=sort_categories,
        )
        for c in cats
    }
    out = pd.concat(frames, ignore_index=True)
    for c, values in unified.items():
        out[c] = pd.Series(values, index=out.index)
    return out


@dataclass(frozen=True)
class PartitionedIssues:
    """The validation report's parts found from the partitions (leakage is judged after, on
    the sampled clean rows, when nothing else failed)."""

    issues: tuple[ValidationIssue, ...]
    blanks: dict[str, int]
    missing_share: dict[str, float]
    label_counts: dict[str, int]
    columns: tuple[str, ...]


def partitioned_issues(
    parts: list[PartitionValidation],
    *,
    columns: list[str],
    row_hashes_in_order: np.ndarray,
    roles: ColumnRoles,
    check: PartitionCheck,
    data: DataConfig,
    validation: ValidationConfig,
    split: SplitConfig,
    economics: EconomicsConfig | None,
    id_values_at: Callable[[np.ndarray], list[str]],
) -> PartitionedIssues:
    """``tasks.validate_data.validate_data``'s issues, in its order, from the partitions'
    summaries: exact duplicate rows (by row hash) and conflicting ids over the whole table,
    the capacity, missing id/segment columns, the schema's failures and whole-column checks,
    the label. ``id_values_at`` gives the id text at table positions (a few, for examples)."""
    rows = sum(p.rows for p in parts)
    exact = exact_duplicates(row_hashes_in_order)
    conflicting = np.zeros(0, dtype=np.int64)
    conflicting_texts: list[str] = []
    distinct_conflicting = 0
    id_parts = [p.id_hashes for p in parts]
    if roles.id_column in columns and all(h is not None for h in id_parts):
        id_hashes = np.concatenate([h for h in id_parts if h is not None])
        conflicting = conflicting_ids(id_hashes, exact)
        if len(conflicting):
            _, first = np.unique(id_hashes[conflicting], return_index=True)
            distinct_conflicting = len(first)
            shown = conflicting[np.sort(first)[:MAX_EXAMPLES]]
            conflicting_texts = id_values_at(shown)
    issues = duplicate_issues(
        n_exact=len(exact),
        first_exact_rows=[int(i) for i in exact[:MAX_EXAMPLES]],
        roles=roles,
        conflicting_rows=len(conflicting),
        conflicting_ids=conflicting_texts,
        distinct_conflicting=distinct_conflicting,
    )
    issues.extend(capacity_issues(economics, rows=rows))
    if roles.id_column not in columns:
        issues.append(_missing_id_issue(columns, roles=roles, data=data))
    for seg in roles.segment_columns:
        if seg not in columns:
            issues.append(
                _missing_column_issue(seg, columns, f"{MISSING_COLUMN} (data.segment_columns)")
            )
    whole = whole_column_failures(parts, check=check, validation=validation)
    schema = build_schema(
        roles,
        label_values=list(check.label_values),
        max_missing_share=validation.max_missing_share,
        max_categories=validation.max_categories,
        unique_id=False,
    )
    failures = merged_failures(parts, whole, column_order=list(schema.columns))
    if failures is not None:
        issues.extend(
            i
            for i in issues_from_failures(
                failures,
                columns,
                rows=rows,
                missing_of=lambda c: sum(p.missing.get(c, 0) for p in parts),
                distinct_of=lambda c: distinct_count(parts, c),
                roles=roles,
                data=data,
            )
            if not (i.column == roles.id_column and i.check.startswith(MISSING_COLUMN))
        )
    label_counts: dict[str, int] = {}
    if roles.label_column in columns:
        for p in parts:
            for k, v in p.label_counts.items():
                label_counts[k] = label_counts.get(k, 0) + v
        label_counts = dict(sorted(label_counts.items(), key=lambda kv: -kv[1]))
        issues.extend(
            label_issues(
                label_counts, positive=check.label_values[0], rows=rows, roles=roles, split=split
            )
        )
    blanks: dict[str, int] = {}
    for c in (*roles.numeric, *roles.categorical, roles.value_column):
        n = sum(p.blanks.get(c, 0) for p in parts) if c else 0
        if c and n:
            blanks[c] = n
    missing_share = {
        c: round(sum(p.missing[c] for p in parts) / rows, 4)
        for c in roles.features
        if c in parts[0].missing and sum(p.missing[c] for p in parts) > 0
    }
    return PartitionedIssues(
        issues=tuple(issues),
        blanks=blanks,
        missing_share=missing_share,
        label_counts=label_counts,
        columns=tuple(columns),
    )


def partitioned_report(
    found: PartitionedIssues, *, rows: int, extra: list[ValidationIssue]
) -> ValidationReport:
    """The whole table's ``ValidationReport`` from the partitions' issues plus ``extra``
    (the leakage screen's)."""
    issues = (*found.issues, *extra)
    column_missing = any(i.check.startswith(MISSING_COLUMN) for i in issues)
    return ValidationReport(
        passed=not issues,
        rows=rows,
        columns=len(found.columns),
        issues=issues,
        blank_as_missing=found.blanks,
        missing_share=found.missing_share,
        label_counts=found.label_counts,
        found_columns=found.columns if column_missing else (),
    )
