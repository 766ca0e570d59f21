"""Getting data: the generator or the user's own CSV/Parquet file, plus column roles."""

from __future__ import annotations

import csv
import hashlib
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from configs.settings import (
    DEFAULT_NUMERIC_INFERENCE_SHARE,
    ROW_ID_COLUMN,
    BayesPilotConfig,
    DataConfig,
)
from tasks.generate_data import TRUTH_COLUMN, generate_data

T = TypeVar("T")

MAX_LISTED_COLUMNS = 40
# A text column with at most this share (0-1) of distinct values among its cells is held as
# categories; one with more (an id, free text) as Arrow strings. Either way no object column.
CATEGORY_MAX_DISTINCT_SHARE = 0.5


class DataError(ValueError):
    """Input data that cannot be used, with the file/column and what was expected.

    ``column`` names the offending column (or config key) when there is one. A deterministic
    input error: retrying cannot fix it, and the flow ends in a named failed state.
    """

    def __init__(self, message: str, *, column: str | None = None) -> None:
        super().__init__(message)
        self.column = column


@dataclass(frozen=True)
class Refused:
    """A :class:`DataError` returned as a value by a function run on a Dask worker, which then
    does not log bad input as a failed computation with a traceback; :func:`unrefused` raises
    it again where the result is taken."""

    message: str
    column: str | None


def refusals_returned(fn: Callable[..., T], /, *args: Any, **kwargs: Any) -> T | Refused:
    """``fn(*args, **kwargs)``, or its :class:`DataError` as a :class:`Refused` value."""
    try:
        return fn(*args, **kwargs)
    except DataError as exc:
        return Refused(str(exc), exc.column)


def unrefused(value: T | Refused) -> T:
    """``value``, or the :class:`DataError` a :class:`Refused` stands for, raised."""
    if isinstance(value, Refused):
        raise DataError(value.message, column=value.column)
    return value


@dataclass(frozen=True)
class LoadedData:
    """Raw data as read, and (synthetic only) the true churn probability kept apart."""

    frame: pd.DataFrame
    source: str
    sha256: str
    truth: pd.Series | None = None


@dataclass(frozen=True)
class ColumnRoles:
    """Which column plays which part. Features are ``numeric + categorical``."""

    id_column: str
    label_column: str
    numeric: tuple[str, ...]
    categorical: tuple[str, ...]
    ignored: tuple[str, ...]
    segment_columns: tuple[str, ...]
    value_column: str | None

    @property
    def features(self) -> tuple[str, ...]:
        return self.numeric + self.categorical

    @property
    def required(self) -> tuple[str, ...]:
        """Columns a scoring request must carry (id, features, value column)."""
        cols = (self.id_column, *self.features)
        if self.value_column and self.value_column not in cols:
            cols = (*cols, self.value_column)
        return cols


def hash_dtype_name(dtype: object, *, categories: str = "str") -> str:
    """The dtype as the hash names it, so a typed table hashes as the untyped one did: text
    held as Arrow or pandas strings is ``str`` (pandas' text dtype); text held as categories
    is ``categories``: ``str`` for a loaded table (read untyped, text was ``str``), ``object``
    for the clean table (which held categorical features as objects)."""
    if isinstance(dtype, pd.CategoricalDtype):
        cats = dtype.categories.dtype
        is_text = pd.api.types.is_object_dtype(cats) or isinstance(cats, pd.StringDtype)
        return categories if is_text else str(dtype)
    if isinstance(dtype, pd.StringDtype) or (
        isinstance(dtype, pd.ArrowDtype) and pa.types.is_string(dtype.pyarrow_dtype)
    ):
        return "str"
    return str(dtype)


def frame_sha256(
    frame: pd.DataFrame,
    *,
    positions: np.ndarray | None = None,
    chunk_rows: int | None = None,
    categories: str = "str",
) -> str:
    """SHA-256 of a canonical serialization: column names, dtypes, then row hashes in order.

    ``positions`` hashes those rows of ``frame`` (in that order) as if they were a frame of
    their own, without building it; ``chunk_rows`` streams the row hashes in chunks of that
    many rows (same digest, memory per chunk); ``categories``: see :func:`hash_dtype_name`."""
    digest = hashlib.sha256()
    cols = sorted(frame.columns)
    digest.update(hash_header(frame, categories=categories))
    n = len(frame) if positions is None else len(positions)
    step = chunk_rows or max(n, 1)
    for start in range(0, n, step):
        stop = min(start + step, n)
        if positions is None:
            part = frame.iloc[start:stop][cols] if step < n else frame[cols]
        else:
            part = frame.take(positions[start:stop])[cols]
        digest.update(row_hashes(part).tobytes())
    return digest.hexdigest()


def hash_header(frame: pd.DataFrame, *, categories: str = "str") -> bytes:
    """What :func:`frame_sha256` hashes first: the sorted column names with their dtypes."""
    return "\x1f".join(
        f"{c}:{hash_dtype_name(frame[c].dtype, categories=categories)}"
        for c in sorted(frame.columns)
    ).encode()


def row_hashes(frame: pd.DataFrame) -> np.ndarray:
    """One 64-bit hash per row of ``frame`` over its columns in sorted order (by value: text
    held as categories, Arrow strings or objects hashes alike): what :func:`frame_sha256`
    streams after the header, and what tells rows equal in every column apart."""
    cols = sorted(frame.columns)
    out = pd.util.hash_pandas_object(frame[cols], index=False).to_numpy()
    return np.ascontiguousarray(out, dtype=np.uint64)


def _duplicates(names: list[str]) -> list[str]:
    return [name for name, n in Counter(names).items() if n > 1]


def _csv_header(p: Path) -> list[str] | None:
    """The header row as written (pandas would rename a repeated name to ``name.1``)."""
    with p.open(newline="", encoding="utf-8-sig", errors="replace") as fh:
        for row in csv.reader(fh):
            if row:
                return row
    return None


def _unsupported_arrow_type(dtype: pa.DataType) -> bool:
    """Cells that are not one number, text, boolean or time: nested, binary or unions."""
    if pa.types.is_dictionary(dtype):
        return _unsupported_arrow_type(dtype.value_type)
    return bool(
        pa.types.is_nested(dtype)
        or pa.types.is_binary(dtype)
        or pa.types.is_large_binary(dtype)
        or pa.types.is_fixed_size_binary(dtype)
        or pa.types.is_binary_view(dtype)
    )


def _check_parquet_schema(p: Path) -> None:
    schema = pq.read_schema(p)
    dup = _duplicates(list(schema.names))
    if dup:
        raise DataError(
            f"data.path: {p.name} has duplicate column names {dup}: every column needs its own "
            "name (rename or drop the repeats)",
            column=dup[0],
        )
    bad = [(f.name, str(f.type)) for f in schema if _unsupported_arrow_type(f.type)]
    if bad:
        listed = "; ".join(f"{name!r} is {dtype}" for name, dtype in bad)
        raise DataError(
            f"data.path: {p.name} has columns of an unsupported Parquet type ({listed}): "
            "every cell must be one number, text, boolean or timestamp; flatten nested "
            "columns into plain ones or drop them from the file",
            column=bad[0][0],
        )


def _check_csv_header(p: Path) -> None:
    header = _csv_header(p)
    if header is None:
        raise DataError(f"data.path: {p.name} is empty: no header row and no data rows")
    dup = _duplicates([name.strip() for name in header])
    if dup:
        raise DataError(
            f"data.path: {p.name} has duplicate column names {dup} in its header: every "
            "column needs its own name (rename or drop the repeats)",
            column=dup[0],
        )


def typed_text(series: pd.Series) -> pd.Series:
    """A text column held lean: ``category`` when at most ``CATEGORY_MAX_DISTINCT_SHARE`` of
    its cells are distinct values, Arrow strings otherwise. Cells are unchanged; a column that
    is not all text (numbers mixed with text, booleans) is returned as it is."""
    if isinstance(series.dtype, pd.CategoricalDtype):
        return series
    if series.dtype == object:
        if pd.api.types.infer_dtype(series, skipna=True) not in {"string", "empty"}:
            return series
    elif not isinstance(series.dtype, pd.StringDtype):
        return series
    distinct = series.nunique(dropna=True)
    if distinct <= max(1, CATEGORY_MAX_DISTINCT_SHARE * len(series)):
        return series.astype("category")
    return series.astype("string[pyarrow]")


def typed_frame(frame: pd.DataFrame) -> pd.DataFrame:
    """``frame`` with its text columns typed by :func:`typed_text` (a new frame; the numbers
    are shared, not copied)."""
    text = [
        c
        for c in frame.columns
        if frame[c].dtype == object or isinstance(frame[c].dtype, pd.StringDtype)
    ]
    if not text:
        return frame
    out = frame.copy(deep=False)
    for c in text:
        out[c] = typed_text(frame[c])
    return out


def _read_parquet_typed(p: Path) -> pd.DataFrame:
    """Read a Parquet file with text columns as categories (read as dictionaries) when the
    first row group shows few distinct values, as Arrow strings otherwise: never as Python
    objects."""
    few = dictionary_columns(pq.ParquetFile(p))
    table = pq.read_table(p, read_dictionary=few) if few else pq.read_table(p)
    return arrow_to_pandas(table)


def dictionary_columns(pf: pq.ParquetFile) -> list[str]:
    """Text columns read as categories: those whose first row group has at most
    ``CATEGORY_MAX_DISTINCT_SHARE`` of its cells distinct."""
    text = [
        f.name
        for f in pf.schema_arrow
        if pa.types.is_string(f.type) or pa.types.is_large_string(f.type)
    ]
    few: list[str] = []
    if text and pf.metadata.num_row_groups:
        first = pf.read_row_group(0, columns=text)
        for name in text:
            distinct = len(pc.unique(first.column(name)))
            if distinct <= max(1, CATEGORY_MAX_DISTINCT_SHARE * first.num_rows):
                few.append(name)
        del first
    return few


def arrow_to_pandas(table: pa.Table) -> pd.DataFrame:
    """An Arrow table as pandas with text as Arrow strings (dictionaries as categories);
    consumes ``table``."""
    arrow_text = pd.StringDtype("pyarrow")
    mapper = {pa.string(): arrow_text, pa.large_string(): arrow_text}
    frame: pd.DataFrame = table.to_pandas(types_mapper=mapper.get, self_destruct=True)
    return frame


def read_table(path: str | Path) -> pd.DataFrame:
    """Read a CSV or Parquet file; blank cells stay as read (validation decides).

    Refused with a :class:`DataError` before any row is used: a missing or empty file, a
    header without rows, repeated column names (checked on the header as written, which
    pandas would rename), and Parquet columns of nested or binary types.
    """
    p = Path(path)
    if not p.is_file():
        raise DataError(f"data.path: file not found: {p}")
    suffix = p.suffix.lower()
    try:
        if suffix in {".parquet", ".pq"}:
            _check_parquet_schema(p)
            frame = _read_parquet_typed(p)
        elif suffix in {".csv", ".txt"} or suffix.endswith("csv"):
            _check_csv_header(p)
            frame = typed_frame(pd.read_csv(p, low_memory=False))
        else:
            raise DataError(f"data.path: expected a .csv or .parquet file, got {p.name!r}")
    except (ValueError, OSError, pd.errors.ParserError, pa.ArrowException) as exc:
        if isinstance(exc, DataError):
            raise
        reason = " ".join(str(exc).split())  # pandas' parser messages end in a newline
        raise DataError(f"data.path: cannot read {p}: {reason}") from None
    if frame.empty:
        columns = ", ".join(str(c) for c in frame.columns[:MAX_LISTED_COLUMNS])
        raise DataError(
            f"data.path: {p.name} has no data rows (only a header: {columns or 'no columns'})"
        )
    return frame


def with_row_id(frame: pd.DataFrame, *, data: DataConfig, start: int = 0) -> pd.DataFrame:
    """``frame`` itself when ``data.id_column`` is set; otherwise a copy with the explicit id
    column ``row_id`` (0, 1, 2, ...: the row's position in the table as read) first. ``start``:
    the position of ``frame``'s first row in the table (a partition of it), which is then
    also the copy's first index label."""
    if data.id_column is not None:
        return frame
    if ROW_ID_COLUMN in frame.columns:
        raise DataError(
            f"data.id_column is null, so the loader adds a row-number id column "
            f"{ROW_ID_COLUMN!r}, but the table already has a column {ROW_ID_COLUMN!r}: set "
            f"data.id_column: {ROW_ID_COLUMN} if it identifies rows, or rename that column"
        )
    out = frame.reset_index(drop=True)
    if start:
        out.index = pd.RangeIndex(start, start + len(out))
    out.insert(0, ROW_ID_COLUMN, np.arange(start, start + len(out), dtype=np.int64))
    return out


def load_data(config: BayesPilotConfig) -> LoadedData:
    """Generate or read the data named by ``config.data``. With ``data.id_column: null`` the
    frame gains the row-number column ``row_id``; the hash is of the data as read, without it."""
    if config.data.source == "synthetic":
        frame = generate_data(rows=config.synthetic.rows, seed=config.synthetic.seed)
        truth = frame[TRUTH_COLUMN]
        frame = typed_frame(frame.drop(columns=[TRUTH_COLUMN]))
        source = f"synthetic(rows={config.synthetic.rows}, seed={config.synthetic.seed})"
        sha256 = frame_sha256(frame)
        frame = with_row_id(frame, data=config.data)
        return LoadedData(frame=frame, source=source, sha256=sha256, truth=truth)
    assert config.data.path is not None  # guaranteed by DataConfig
    frame = read_table(config.data.path)
    sha256 = frame_sha256(frame)
    frame = with_row_id(frame, data=config.data)
    return LoadedData(frame=frame, source=str(Path(config.data.path)), sha256=sha256)


def numeric_share(series: pd.Series) -> float:
    """Share (0-1) of the non-blank cells that parse as numbers (1.0 for a numeric dtype,
    0.0 for booleans or a column with no non-blank cell)."""
    if pd.api.types.is_bool_dtype(series):
        return 0.0
    if pd.api.types.is_numeric_dtype(series):
        return 1.0
    text = series.dropna().astype(str).str.strip()
    text = text[text != ""]
    if text.empty:
        return 0.0
    return float(pd.to_numeric(text, errors="coerce").notna().mean())


def _looks_numeric(series: pd.Series, min_share: float) -> bool:
    """Mostly numbers: at least ``min_share`` of the non-blank cells parse. The others are
    then bad cells of a numeric column (validation reports them), not a reason to treat the
    column as categorical."""
    if pd.api.types.is_bool_dtype(series):
        return False
    if pd.api.types.is_numeric_dtype(series):
        return True
    sample = series.head(1000)  # a text column usually shows itself in the first rows
    sample_share = numeric_share(sample)
    if sample_share == 0.0 or sample_share < min_share / 2:
        return False
    return numeric_share(series) >= min_share


def resolve_roles(
    frame: pd.DataFrame,
    *,
    data: DataConfig,
    value_column: str | None = None,
    numeric_inference_share: float = DEFAULT_NUMERIC_INFERENCE_SHARE,
) -> ColumnRoles:
    """Column roles from config, inferring numeric/categorical from the data where not given:
    ``data.categorical`` alone makes those columns categorical (a numeric-looking code, say)
    and infers the rest; ``data.numeric`` alone makes every other column categorical; both
    together are the exact feature lists.

    A text column where at least ``numeric_inference_share`` (0-1) of the non-blank cells
    parse as numbers is numeric (e.g. a charges column with a few blank cells, or with a few
    typos, which validation then reports cell by cell).
    """
    return roles_from_columns(
        [str(c) for c in frame.columns],
        lambda c: _looks_numeric(frame[c], numeric_inference_share),
        data=data,
        value_column=value_column,
    )


def roles_from_columns(
    columns: list[str],
    looks_numeric: Callable[[str], bool],
    *,
    data: DataConfig,
    value_column: str | None = None,
) -> ColumnRoles:
    """:func:`resolve_roles` given the table's column names and, per column, whether it looks
    numeric (asked only for columns the config leaves to inference); the partitioned path
    answers it from per-partition counts."""
    # the generator's true probability is never a feature, even in a CSV of its output
    id_column = data.effective_id_column
    reserved = {id_column, data.label_column, TRUTH_COLUMN, *data.ignore}
    candidates = [c for c in columns if c not in reserved]
    if data.numeric is not None:
        numeric = [c for c in data.numeric if c not in reserved]
    else:
        excluded = set(data.categorical or [])
        numeric = [c for c in candidates if c not in excluded and looks_numeric(c)]
    inferred = [c for c in candidates if c not in set(numeric)]
    if data.categorical is not None:
        categorical = [c for c in data.categorical if c not in reserved]
        if data.numeric is None:  # listed ones are categorical; the rest is inferred
            categorical += [c for c in inferred if c not in set(categorical)]
    else:
        categorical = inferred
    ignored = tuple(c for c in columns if c in set(data.ignore))
    return ColumnRoles(
        id_column=id_column,
        label_column=data.label_column,
        numeric=tuple(numeric),
        categorical=tuple(categorical),
        ignored=ignored,
        segment_columns=tuple(data.segment_columns),
        value_column=value_column,
    )
