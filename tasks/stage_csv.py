"""A CSV file staged as Parquet, with the column types a whole-file read gives it.

The Dask engine reads tables in partitions of Parquet row groups (``tasks.partitions``). A CSV
file has no row groups, and its cells have no types until pandas infers them over the whole
file (``tasks.load_data.read_table``), so a partition of it read alone can type a column
differently (a run of blank cells reads as float, a column of whole numbers with one text
cell further down reads as text). :func:`stage_csv` therefore reads the file twice, chunk by
chunk with pandas' own parser (quoting, line endings and errors as the whole-file read):

1. **types**: each chunk is read with inference, and each column's chunk types are joined
   (:func:`join_kinds`) into the type pandas infers for the whole column;
2. **rows**: each chunk is read again with those types and written as one row group of a
   Parquet file (written to a temp name, then renamed).

The second read also counts each text column's distinct values (by 64-bit hash, given up past
the cap), so the layout holds as categories, sorted, exactly the columns the whole-file read
does (:class:`StagedCsv`). A partition of the staged file then reads the cells, dtypes and
missing cells of the whole-file read, so the data hash, the validation report and the splits
(frame for frame) equal the local engine's. Memory is
one chunk. Column types pandas gives only to unusual cells (whole numbers beyond the 64-bit
range, in a column without text) are refused with the column's name rather than guessed.
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
from pandas._libs.parsers import STR_NA_VALUES

from tasks.load_data import (
    CATEGORY_MAX_DISTINCT_SHARE,
    MAX_LISTED_COLUMNS,
    DataError,
    _check_csv_header,
)

log = logging.getLogger(__name__)

# a column's type in one chunk, and the joined (whole-file) types
INT, FLOAT, EMPTY, BOOL, BOOL_MISSING, TEXT, OTHER = (
    "int",
    "float",
    "empty",
    "bool",
    "bool-with-missing",
    "text",
    "other",
)
# what pandas reads as a missing cell by default (``pandas.read_csv``'s ``na_values``)
_MISSING_MARKERS = sorted(STR_NA_VALUES | {""})
_HUGE = 2**63  # whole numbers from here on are not int64
_READ_AS = {INT: "int64", FLOAT: "float64", BOOL: "bool", BOOL_MISSING: "boolean", TEXT: str}
_ARROW = {
    INT: pa.int64(),
    FLOAT: pa.float64(),
    BOOL: pa.bool_(),
    BOOL_MISSING: pa.bool_(),
    TEXT: pa.string(),
}


def is_csv(path: str | Path) -> bool:
    """A path the loader reads as CSV (``tasks.load_data.read_table``)."""
    suffix = Path(path).suffix.lower()
    return suffix in {".csv", ".txt"} or suffix.endswith("csv")


def column_kind(series: pd.Series) -> str:
    """The type pandas inferred for ``series`` (one chunk of a column), as a kind. Whole
    numbers at or beyond the signed 64-bit limits send pandas down paths of their own
    (unsigned, Python integers, text that keeps its missing-cell markers, float or text by
    the order of the cells), so a chunk that holds one, or may have (a float of that size
    and whole), is :data:`OTHER`, whatever its dtype."""
    dtype = series.dtype
    if isinstance(dtype, pd.StringDtype):
        if series.isin(_MISSING_MARKERS).any() or _holds_huge_integer(series):
            return OTHER
        return TEXT
    if pd.api.types.is_bool_dtype(dtype):
        return BOOL
    if isinstance(dtype, np.dtype) and dtype == np.int64:
        return INT
    if isinstance(dtype, np.dtype) and dtype == np.float64:
        values = series.to_numpy()
        finite = values[np.isfinite(values)]
        if len(finite) and np.any((np.abs(finite) >= _HUGE) & (finite == np.floor(finite))):
            return OTHER  # may have been read from such a whole number
        return EMPTY if series.isna().all() else FLOAT
    if pd.api.types.is_object_dtype(dtype) and (
        pd.api.types.infer_dtype(series, skipna=True) == "boolean"
    ):
        return BOOL_MISSING
    return OTHER  # unsigned or Python integers


def _holds_huge_integer(text: pd.Series) -> bool:
    """Some cell is a whole number at or beyond the signed 64-bit limits (19 digits or more)."""
    long = text[text.str.len() >= 19].dropna().str.strip()
    long = long[long.str.fullmatch(r"[+-]?\d+")]
    return any(abs(int(v)) >= _HUGE for v in long)


def join_kinds(kinds: Iterable[str], *, column: str) -> str:
    """The type pandas infers for a whole column from the types it infers for its chunks:
    text anywhere makes text; numbers and booleans together are text; booleans with a
    missing cell anywhere (or a chunk of only missing cells) keep Python booleans and gaps;
    whole numbers everywhere stay integers; any other mix of numbers and gaps is float (a
    column of only missing cells too). Refused: whole numbers at or beyond the signed 64-bit
    limits (:data:`OTHER`), which pandas types by rules of their own."""
    seen = set(kinds)
    if OTHER in seen:
        raise DataError(
            f"data.path: column {column!r} holds whole numbers at or beyond the signed 64-bit "
            "limits (+/-9.2e18), which the dask engine cannot type chunk by chunk as pandas "
            "types the whole file. Expected smaller numbers or text: convert the file to "
            "Parquet, or use scaleout.engine: local",
            column=column,
        )
    if TEXT in seen:
        return TEXT
    numbers = seen & {INT, FLOAT}
    booleans = seen & {BOOL, BOOL_MISSING}
    if numbers and booleans:
        return TEXT
    if booleans:
        return BOOL if seen == {BOOL} else BOOL_MISSING
    if seen == {INT}:
        return INT
    return FLOAT


def _chunks(path: Path, chunk_rows: int, dtype: dict[str, Any] | None) -> Iterator[pd.DataFrame]:
    with pd.read_csv(path, chunksize=chunk_rows, low_memory=False, dtype=dtype) as reader:
        yield from reader


def csv_types(path: str | Path, *, chunk_rows: int) -> tuple[dict[str, set[str]], int]:
    """Pass 1: each column's kinds over the chunks (in file order) and the number of data
    rows."""
    kinds: dict[str, set[str]] = {}
    rows = 0
    for chunk in _chunks(Path(path), chunk_rows, None):
        rows += len(chunk)
        for c in chunk.columns:
            seen = kinds.setdefault(str(c), set())
            if len(chunk):
                seen.add(column_kind(chunk[c]))
    return kinds, rows


@dataclass(frozen=True)
class StagedCsv:
    """What staging found: the data rows and the text columns the whole-file read holds as
    categories (``tasks.load_data.typed_text``: at most ``CATEGORY_MAX_DISTINCT_SHARE`` of
    the rows distinct), in file order."""

    rows: int
    categories: tuple[str, ...]


class _Distinct:
    """Distinct non-missing values of the text columns, counted by their 64-bit hashes (two
    of n distinct values collide with probability about n²/2⁶⁵) and given up for a column
    once there are more than ``cap`` (it is then not categorical); memory at most ``cap``
    hashes a column."""

    def __init__(self, columns: list[str], cap: float) -> None:
        self.cap = cap
        self.seen: dict[str, np.ndarray] = {c: np.zeros(0, dtype=np.uint64) for c in columns}

    def add(self, chunk: pd.DataFrame) -> None:
        for c in list(self.seen):
            cells = chunk[c].dropna()
            hashes = pd.util.hash_pandas_object(cells, index=False).to_numpy(dtype=np.uint64)
            both = np.union1d(self.seen[c], hashes)
            if len(both) > self.cap:
                del self.seen[c]
            else:
                self.seen[c] = both

    def categorical(self) -> tuple[str, ...]:
        return tuple(self.seen)


def stage_csv(path: str | Path, out: str | Path, *, chunk_rows: int) -> StagedCsv:
    """Write CSV ``path`` to the Parquet file ``out`` with the whole-file column types, one
    row group per ``chunk_rows`` rows (see the module docstring).
    Refused with the loader's :class:`DataError`: a missing or empty file, a header without
    rows, repeated column names, a line pandas cannot parse, a column of unusual whole
    numbers (named)."""
    p, target = Path(path), Path(out)
    if not p.is_file():
        raise DataError(f"data.path: file not found: {p}")
    _check_csv_header(p)
    tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
    try:
        seen, rows = csv_types(p, chunk_rows=chunk_rows)
        if rows == 0:
            columns = ", ".join(list(seen)[:MAX_LISTED_COLUMNS])
            raise DataError(
                f"data.path: {p.name} has no data rows (only a header: {columns or 'no columns'})"
            )
        kinds = {c: join_kinds(k, column=c) for c, k in seen.items()}
        schema = pa.schema([(c, _ARROW[k]) for c, k in kinds.items()])
        read_as = {c: _READ_AS[k] for c, k in kinds.items()}
        target.parent.mkdir(parents=True, exist_ok=True)
        written = 0
        distinct = _Distinct(
            [c for c, k in kinds.items() if k == TEXT], max(1, CATEGORY_MAX_DISTINCT_SHARE * rows)
        )
        with pq.ParquetWriter(tmp, schema) as writer:
            for chunk in _chunks(p, chunk_rows, read_as):
                chunk.columns = [str(c) for c in chunk.columns]
                distinct.add(chunk)
                writer.write_table(
                    pa.Table.from_pandas(chunk, schema=schema, preserve_index=False),
                    row_group_size=max(len(chunk), 1),
                )
                written += len(chunk)
        if written != rows:  # the file changed between the passes
            raise DataError(
                f"data.path: {p.name} changed while it was read ({rows} rows, then {written})"
            )
        os.replace(tmp, target)
    except (ValueError, OSError, pd.errors.ParserError, pa.ArrowException) as exc:
        if isinstance(exc, DataError):
            raise
        reason = " ".join(str(exc).split())
        raise DataError(f"data.path: cannot read {p}: {reason}") from None
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
    log.info("staged %s as Parquet (%s rows, %d columns) at %s", p, f"{rows:,}", len(kinds), target)
    return StagedCsv(rows, distinct.categorical())
