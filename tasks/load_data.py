"""Getting data: the generator or the user's own CSV/Parquet file, plus column roles."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from configs.settings import ROW_ID_COLUMN, BayesPilotConfig, DataConfig
from tasks.generate_data import TRUTH_COLUMN, generate_data


class DataError(ValueError):
    """Input data that cannot be used, with the file/column and what was expected."""


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


def frame_sha256(frame: pd.DataFrame) -> str:
    """SHA-256 of a canonical serialization: column names, dtypes, then row hashes in order."""
    digest = hashlib.sha256()
    cols = sorted(frame.columns)
    digest.update("\x1f".join(f"{c}:{frame[c].dtype}" for c in cols).encode())
    if len(frame):
        row_hashes = pd.util.hash_pandas_object(frame[cols], index=False).to_numpy()
        digest.update(np.ascontiguousarray(row_hashes).tobytes())
    return digest.hexdigest()


def read_table(path: str | Path) -> pd.DataFrame:
    """Read a CSV or Parquet file; blank cells stay as read (validation decides)."""
    p = Path(path)
    if not p.is_file():
        raise DataError(f"data.path: file not found: {p}")
    suffix = p.suffix.lower()
    try:
        if suffix in {".parquet", ".pq"}:
            return pd.read_parquet(p)
        if suffix in {".csv", ".txt"} or suffix.endswith("csv"):
            return pd.read_csv(p, low_memory=False)
    except (ValueError, OSError, pd.errors.ParserError) as exc:
        raise DataError(f"data.path: cannot read {p}: {exc}") from None
    raise DataError(f"data.path: expected a .csv or .parquet file, got {p.name!r}")


def with_row_id(frame: pd.DataFrame, *, data: DataConfig) -> pd.DataFrame:
    """``frame`` itself when ``data.id_column`` is set; otherwise a copy with the explicit id
    column ``row_id`` (0, 1, 2, ...: the row's position in the table as read) first."""
    if data.id_column is not None:
        return frame
    if ROW_ID_COLUMN in frame.columns:
        raise DataError(
            f"data.id_column is null, so the loader adds a row-number id column "
            f"{ROW_ID_COLUMN!r}, but the table already has a column {ROW_ID_COLUMN!r}: set "
            f"data.id_column: {ROW_ID_COLUMN} if it identifies rows, or rename that column"
        )
    out = frame.reset_index(drop=True)
    out.insert(0, ROW_ID_COLUMN, np.arange(len(out), dtype=np.int64))
    return out


def load_data(config: BayesPilotConfig) -> LoadedData:
    """Generate or read the data named by ``config.data``. With ``data.id_column: null`` the
    frame gains the row-number column ``row_id``; the hash is of the data as read, without it."""
    if config.data.source == "synthetic":
        frame = generate_data(rows=config.synthetic.rows, seed=config.synthetic.seed)
        truth = frame[TRUTH_COLUMN]
        frame = frame.drop(columns=[TRUTH_COLUMN])
        source = f"synthetic(rows={config.synthetic.rows}, seed={config.synthetic.seed})"
        sha256 = frame_sha256(frame)
        frame = with_row_id(frame, data=config.data)
        return LoadedData(frame=frame, source=source, sha256=sha256, truth=truth)
    assert config.data.path is not None  # guaranteed by DataConfig
    frame = read_table(config.data.path)
    sha256 = frame_sha256(frame)
    frame = with_row_id(frame, data=config.data)
    return LoadedData(frame=frame, source=str(Path(config.data.path)), sha256=sha256)


def _looks_numeric(series: pd.Series) -> bool:
    if pd.api.types.is_bool_dtype(series):
        return False
    if pd.api.types.is_numeric_dtype(series):
        return True
    text = series.dropna().astype(str).str.strip()
    text = text[text != ""]
    if text.empty:
        return False
    sample = text.head(1000)  # a text column usually shows itself in the first rows
    if not pd.to_numeric(sample, errors="coerce").notna().all():
        return False
    return bool(pd.to_numeric(text, errors="coerce").notna().all())


def resolve_roles(
    frame: pd.DataFrame, *, data: DataConfig, value_column: str | None = None
) -> ColumnRoles:
    """Column roles from config, inferring numeric/categorical from the data where not given:
    ``data.categorical`` alone makes those columns categorical (a numeric-looking code, say)
    and infers the rest; ``data.numeric`` alone makes every other column categorical; both
    together are the exact feature lists.

    An object column whose non-blank values all parse as numbers (e.g. a charges column with a
    few blank cells) is numeric.
    """
    # the generator's true probability is never a feature, even in a CSV of its output
    id_column = data.effective_id_column
    reserved = {id_column, data.label_column, TRUTH_COLUMN, *data.ignore}
    candidates = [c for c in frame.columns if c not in reserved]
    if data.numeric is not None:
        numeric = [c for c in data.numeric if c not in reserved]
    else:
        excluded = set(data.categorical or [])
        numeric = [c for c in candidates if c not in excluded and _looks_numeric(frame[c])]
    inferred = [c for c in candidates if c not in set(numeric)]
    if data.categorical is not None:
        categorical = [c for c in data.categorical if c not in reserved]
        if data.numeric is None:  # listed ones are categorical; the rest is inferred
            categorical += [c for c in inferred if c not in set(categorical)]
    else:
        categorical = inferred
    ignored = tuple(c for c in frame.columns if c in set(data.ignore))
    return ColumnRoles(
        id_column=id_column,
        label_column=data.label_column,
        numeric=tuple(numeric),
        categorical=tuple(categorical),
        ignored=ignored,
        segment_columns=tuple(data.segment_columns),
        value_column=value_column,
    )
