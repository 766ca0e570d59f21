"""The decision store: every decision (HTTP, batch, challenger) as rows in hourly Parquet files.

Layout under the workspace's ``decisions/`` (``Workspace.decisions``), Hive-style so pyarrow,
pandas and DuckDB read it as a partitioned dataset::

    decisions/date=YYYY-MM-DD/hour=HH/<source>-<writer>-<n>.parquet        one flush
    decisions/date=YYYY-MM-DD/hour=HH/<source>-<writer>-<a>_<b>.parquet    flushes a..b merged

- **One file per writer and flush, no locks between writers.** A ``DecisionWriter`` buffers rows
  and writes them, split by the hour of their ``time``, to a hidden temp file in the partition
  that is fsync'd and renamed into place: readers never see a half-written file and ignore
  temp files (names starting with ``.``). ``<writer>`` is the given writer id plus a random
  token per writer instance, so a restarted worker never reuses a name.
- **Loss window.** A killed process loses only its unflushed buffer: at most ``flush_rows``
  rows and at most ``flush_interval_s`` seconds of decisions (the flush happens when either
  is reached; ``close`` flushes the rest).
- **Small files are merged.** Flushes smaller than ``flush_rows`` (the interval flushes of a
  quiet HTTP worker) are merged per hour partition into one ``<a>_<b>`` file once the writer
  has moved past that hour (and at ``close``). The merged file is renamed into place before
  its parts are deleted; readers of this module skip parts a merged file covers, so a crash
  between the two duplicates nothing (the leftovers go at the next ``expire_decisions``).
- **Retention by age**: ``expire_decisions`` deletes whole hour partitions that ended more
  than ``max_age_days`` ago.

Columns (``FIXED_COLUMNS``): time (timestamp[us, UTC]), source, request_id, model_version,
policy_id, customer_id (as logged, raw or ``hmac:...``), probability, action (``contact`` /
``no_contact``, what is done), expected_value_usd (the policy's expected value of contacting,
USD), would_contact, holdout, experiment_id, champion_action; optional ``tier`` and
``latency_ms``; the champion's raw inputs as ``input.<feature>`` (none in ``hashed``/``none``
logging beyond what the input policy keeps). Files of different champions may carry different
``input.*`` columns: readers take the union, missing values are null.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import secrets
import shutil
import threading
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

log = logging.getLogger(__name__)

INPUT_PREFIX = "input."
SOURCES = ("http", "batch", "challenger")
US_PER_HOUR = 3_600_000_000
SECONDS_PER_DAY = 86_400
TMP_PREFIX = "."
BACKLOG_FLUSHES = 2  # a background writer's caller flushes itself past this many flush_rows
# a batch run flushes by rows only (its files are whole batch_flush_rows; a failed run
# removes them anyway): no interval flush makes small files to merge (seconds)
BATCH_FLUSH_INTERVAL_S = 86_400.0
STALE_TMP_S = 3_600  # temp files older than this (seconds) are a dead writer's leftovers

FIXED_SCHEMA = pa.schema(
    [
        ("time", pa.timestamp("us", tz="UTC")),
        ("source", pa.string()),
        ("request_id", pa.string()),
        ("model_version", pa.string()),
        ("policy_id", pa.string()),
        ("customer_id", pa.string()),
        ("probability", pa.float64()),
        ("action", pa.string()),
        ("expected_value_usd", pa.float64()),
        ("would_contact", pa.bool_()),
        ("holdout", pa.bool_()),
        ("experiment_id", pa.string()),
        ("champion_action", pa.string()),
    ]
)
FIXED_COLUMNS: tuple[str, ...] = tuple(FIXED_SCHEMA.names)
OPTIONAL_SCHEMA = pa.schema([("tier", pa.string()), ("latency_ms", pa.float64())])
REQUIRED_COLUMNS = (
    "request_id",
    "model_version",
    "policy_id",
    "customer_id",
    "probability",
    "action",
)

_FILE_RE = re.compile(r"^(?P<source>[a-z]+)-(?P<writer>.+)-(?P<a>\d+)(?:_(?P<b>\d+))?\.parquet$")
_PART_RE = re.compile(r"^date=(\d{4}-\d{2}-\d{2})$")
_HOUR_RE = re.compile(r"^hour=(\d{2})$")


# ------------------------------------------------------------------------------ layout
def partition_dir(root: Path, hour_start: datetime) -> Path:
    """The partition folder of the hour starting at ``hour_start`` (UTC)."""
    return root / f"date={hour_start:%Y-%m-%d}" / f"hour={hour_start:%H}"


def _hour_of_dir(date_dir: Path, hour_dir: Path) -> datetime | None:
    d, h = _PART_RE.match(date_dir.name), _HOUR_RE.match(hour_dir.name)
    if not d or not h:
        return None
    try:
        return datetime.strptime(f"{d.group(1)} {h.group(1)}", "%Y-%m-%d %H").replace(tzinfo=UTC)
    except ValueError:
        return None


def _partitions(root: Path) -> list[tuple[datetime, Path]]:
    """Every hour partition under ``root``, oldest first."""
    out: list[tuple[datetime, Path]] = []
    if not root.is_dir():
        return out
    for date_dir in root.iterdir():
        if not date_dir.is_dir() or not _PART_RE.match(date_dir.name):
            continue
        for hour_dir in date_dir.iterdir():
            start = _hour_of_dir(date_dir, hour_dir) if hour_dir.is_dir() else None
            if start is not None:
                out.append((start, hour_dir))
    return sorted(out)


@dataclass(frozen=True)
class _StoredFile:
    path: Path
    source: str
    writer: str
    first: int
    last: int


def _live_files(hour_dir: Path) -> tuple[list[_StoredFile], list[_StoredFile]]:
    """(files to read, parts superseded by a merged file) of one partition. Temp files and
    anything not named like a decision file are ignored."""
    files = []
    try:
        names = os.listdir(hour_dir)
    except FileNotFoundError:
        return [], []
    for name in names:
        m = _FILE_RE.match(name)
        if m is None:
            continue
        a = int(m.group("a"))
        b = int(m.group("b")) if m.group("b") else a
        files.append(_StoredFile(hour_dir / name, m.group("source"), m.group("writer"), a, b))
    merged = [f for f in files if f.last > f.first]
    live: list[_StoredFile] = []
    dead: list[_StoredFile] = []
    for f in files:
        covered = any(
            g is not f
            and g.source == f.source
            and g.writer == f.writer
            and g.first <= f.first
            and f.last <= g.last
            and (g.last - g.first) > (f.last - f.first)
            for g in merged
        )
        (dead if covered else live).append(f)
    return sorted(live, key=lambda f: f.path.name), dead


def parse_time(value: datetime | str | None) -> datetime | None:
    """A UTC datetime from a datetime (naive = UTC) or an ISO-8601 text; None stays None.
    Raises ValueError naming the value when the text is not a time."""
    if value is None:
        return None
    if isinstance(value, str):
        try:
            ts = pd.Timestamp(value)
        except ValueError as exc:
            raise ValueError(f"time: {value!r} is not an ISO-8601 time") from exc
        value = ts.to_pydatetime()
    if value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    return value.astimezone(UTC)


# ------------------------------------------------------------------------------ writing
def _now_us() -> int:
    return time.time_ns() // 1000


def decision_table(frame: pd.DataFrame, source: str) -> pa.Table:
    """``frame`` (fixed columns, ``input.*`` columns, optional tier/latency_ms) as an Arrow
    table in the store's schema. Defaults: time now, would_contact ``action == "contact"``,
    holdout False, experiment_id/champion_action null, expected_value_usd NaN. Raises
    ValueError naming a missing required column or a column of another name."""
    missing = [c for c in REQUIRED_COLUMNS if c not in frame.columns]
    if missing:
        raise ValueError(f"decision rows: required column(s) missing: {', '.join(missing)}")
    allowed = set(FIXED_COLUMNS) | set(OPTIONAL_SCHEMA.names)
    unknown = [c for c in frame.columns if c not in allowed and not str(c).startswith(INPUT_PREFIX)]
    if unknown:
        raise ValueError(
            f"decision rows: unknown column(s) {unknown[:5]}; inputs go in "
            f"'{INPUT_PREFIX}<feature>' columns"
        )
    n = len(frame)
    if "source" in frame.columns and not (frame["source"] == source).all():
        raise ValueError(f"source: rows of another source than this writer's {source!r}")
    arrays: dict[str, pa.Array] = {}
    if "time" in frame.columns:
        raw = frame["time"]
        fmt = "ISO8601" if raw.dtype == object else None  # texts: ISO-8601 only
        t = pd.to_datetime(raw, utc=True, errors="coerce", format=fmt)
        if t.isna().any():
            raise ValueError(f"time: {int(t.isna().sum())} values are not timestamps")
        arrays["time"] = pa.array(t.dt.as_unit("us"), type=FIXED_SCHEMA.field("time").type)
    else:
        arrays["time"] = pa.array(np.full(n, _now_us(), dtype="datetime64[us]")).cast(
            FIXED_SCHEMA.field("time").type
        )
    arrays["source"] = pa.array(np.full(n, source, dtype=object), pa.string())
    action = frame["action"]
    defaults: dict[str, Any] = {
        "expected_value_usd": lambda: np.full(n, np.nan),
        "would_contact": lambda: (action == "contact").to_numpy(),
        "holdout": lambda: np.zeros(n, dtype=bool),
        "experiment_id": lambda: pa.nulls(n, pa.string()),
        "champion_action": lambda: pa.nulls(n, pa.string()),
    }
    for fld in FIXED_SCHEMA:
        if fld.name in ("time", "source"):
            continue
        if fld.name in frame.columns:
            col = frame[fld.name]
            if (
                pa.types.is_string(fld.type)
                and col.dtype != object
                and not isinstance(col.dtype, pd.StringDtype)
            ):
                col = col.astype(str).where(col.notna(), None)
            arrays[fld.name] = pa.array(col, type=fld.type, from_pandas=True)
        else:
            value = defaults[fld.name]()
            arrays[fld.name] = value if isinstance(value, pa.Array) else pa.array(value, fld.type)
    for fld in OPTIONAL_SCHEMA:
        if fld.name in frame.columns:
            arrays[fld.name] = pa.array(frame[fld.name], type=fld.type, from_pandas=True)
    for c in frame.columns:
        if str(c).startswith(INPUT_PREFIX):
            arrays[str(c)] = input_array(frame[c])
    return pa.table(arrays)


def input_array(col: pd.Series) -> pa.Array:
    """An input column as Arrow; values of mixed kinds (a number where text is expected, as
    a request may send) are kept as their text."""
    try:
        return pa.array(col, from_pandas=True)
    except (pa.ArrowInvalid, pa.ArrowTypeError):
        text = [None if v is None or (isinstance(v, float) and v != v) else str(v) for v in col]
        return pa.array(text, pa.string())


def _unify(tables: Sequence[pa.Table]) -> pa.Table:
    """Concatenate tables whose ``input.*`` columns differ (union; missing columns null; a
    column numeric in one and text in another becomes text)."""
    if len(tables) == 1:
        return tables[0]
    types: dict[str, list[pa.DataType]] = {}
    for t in tables:
        for f in t.schema:
            types.setdefault(f.name, []).append(f.type)
    target: dict[str, pa.DataType] = {}
    for name, ts in types.items():
        distinct = {str(t) for t in ts if not pa.types.is_null(t)}
        real = [t for t in ts if not pa.types.is_null(t)]
        if not real:
            target[name] = pa.null()
        elif len(distinct) == 1:
            target[name] = real[0]
        elif all(
            pa.types.is_integer(t) or pa.types.is_floating(t) or pa.types.is_boolean(t)
            for t in real
        ):
            target[name] = pa.float64()
        elif all(pa.types.is_timestamp(t) for t in real):
            target[name] = pa.timestamp("us", tz="UTC")
        else:
            target[name] = pa.string()
    schema = pa.schema([(n, target[n]) for n in types])
    out = []
    for t in tables:
        cols = []
        for f in schema:
            if f.name in t.column_names:
                col = t.column(f.name)
                cols.append(col if col.type == f.type else col.cast(f.type))
            else:
                cols.append(pa.nulls(len(t), f.type))
        out.append(pa.Table.from_arrays(cols, schema=schema))
    return pa.concat_tables(out)


class DecisionWriter:
    """Buffers one writer's decisions and writes them to the store (module docstring).

    ``append`` takes a frame; ``append_records`` takes row dicts (the HTTP path: it only
    buffers, the conversion happens at the flush). The buffer is flushed when it holds
    ``flush_rows`` rows or ``flush_interval_s`` seconds after the first unflushed row; with
    ``background=True`` a daemon thread does both, so ``append*`` never writes on the caller's
    thread (the thread starts with the first append of the process). ``close`` flushes,
    merges this writer's small files and stops the thread.
    """

    def __init__(
        self,
        root: Path,
        *,
        source: str,
        writer_id: str,
        flush_rows: int = 50_000,
        flush_interval_s: float = 10.0,
        file_mode: int = 0o600,
        compression: str = "zstd",
        row_group_rows: int = 1_000_000,
        background: bool = False,
    ) -> None:
        if source not in SOURCES:
            raise ValueError(f"source: {source!r} is not one of {SOURCES}")
        if not writer_id or not re.fullmatch(r"[A-Za-z0-9_.]+[A-Za-z0-9_.-]*", writer_id):
            raise ValueError(f"writer_id: {writer_id!r} must be letters, digits, '_', '.', '-'")
        if flush_rows < 1 or flush_interval_s <= 0:
            raise ValueError("flush_rows must be >= 1 and flush_interval_s > 0")
        self.root = Path(root)
        self.source = source
        self.writer = f"{writer_id}.{secrets.token_hex(3)}"
        self.flush_rows = flush_rows
        self.flush_interval_s = flush_interval_s
        self.file_mode = file_mode
        self.compression = compression
        self.row_group_rows = row_group_rows
        self._lock = threading.Lock()  # the buffer
        self._write_lock = threading.Lock()  # flush/merge (one at a time)
        self._tables: list[pa.Table] = []
        self._records: list[Mapping[str, Any]] = []
        self._rows = 0
        self._first_at: float | None = None
        self._seq = 0
        # partition -> (seq, small?) of this writer's files not merged yet
        self._small: dict[Path, list[tuple[int, bool]]] = {}
        self._touched: set[Path] = set()  # partitions this writer wrote to
        self.rows_written = 0
        self.files_written = 0
        self.write_seconds = 0.0  # spent writing flushes (s), whichever thread wrote them
        self._closed = False
        self._wake = threading.Event()
        self._background = background
        self._thread: threading.Thread | None = None
        self._thread_pid = 0

    # -- buffering
    def append(self, frame: pd.DataFrame) -> None:
        """Buffer decision rows (columns: see ``decision_table``, checked and converted to
        Arrow here: a bad frame raises ValueError and nothing of it is kept); flushes when
        due unless a background thread does it. ``frame`` is not modified."""
        if frame.empty:
            return
        self._add(len(frame), table=decision_table(frame, self.source))

    def append_table(self, table: pa.Table) -> None:
        """Buffer decision rows already in the store's Arrow layout (what ``decision_table``
        returns: the fixed columns with their types, optional ``tier``/``latency_ms``,
        ``input.*`` columns), as the batch path builds them without pandas. Raises
        ValueError naming a column that is missing, of another type or not a store column,
        or rows of another source; nothing of a bad table is kept."""
        if table.num_rows == 0:
            return
        names = set(table.column_names)
        missing = [c for c in FIXED_COLUMNS if c not in names]
        if missing:
            raise ValueError(f"decision rows: column(s) missing: {', '.join(missing)}")
        expected = {f.name: f.type for f in [*FIXED_SCHEMA, *OPTIONAL_SCHEMA]}
        for fld in table.schema:
            if fld.name in expected and fld.type != expected[fld.name]:
                raise ValueError(
                    f"{fld.name}: decision rows of type {fld.type}, expected {expected[fld.name]}"
                )
            if fld.name not in expected and not fld.name.startswith(INPUT_PREFIX):
                raise ValueError(
                    f"decision rows: unknown column {fld.name!r}; inputs go in "
                    f"'{INPUT_PREFIX}<feature>' columns"
                )
        source = table.column("source")
        if source.null_count or not pc.all(pc.equal(source, self.source)).as_py():
            raise ValueError(f"source: rows of another source than this writer's {self.source!r}")
        self._add(table.num_rows, table=table)

    def append_records(self, records: Sequence[Mapping[str, Any]]) -> None:
        """Buffer decision rows given as dicts (same keys as ``append``'s columns)."""
        if records:
            self._add(len(records), records=records)

    def _add(
        self,
        n: int,
        *,
        table: pa.Table | None = None,
        records: Sequence[Mapping[str, Any]] | None = None,
    ) -> None:
        if self._closed:
            raise RuntimeError("decision writer is closed")
        if self._background and self._thread_pid != os.getpid():
            self._start_thread()
        with self._lock:
            if table is not None:
                self._tables.append(table)
            if records is not None:
                self._records.extend(records)
            self._rows += n
            if self._first_at is None:
                self._first_at = time.monotonic()
            due = self._due()
        if due:
            if self._background and self._rows < BACKLOG_FLUSHES * self.flush_rows:
                self._wake.set()
            else:
                self.flush()

    def _due(self) -> bool:
        return self._rows >= self.flush_rows or (
            self._first_at is not None
            and time.monotonic() - self._first_at >= self.flush_interval_s
        )

    def _start_thread(self) -> None:
        """The flush thread, started by the first append in this process (a writer made
        before a fork gets its own thread in the child)."""
        with self._lock:
            if self._thread_pid == os.getpid():
                return
            self._thread_pid = os.getpid()
            self._thread = threading.Thread(
                target=self._run, name=f"decisions-{self.source}", daemon=True
            )
            self._thread.start()

    def _run(self) -> None:
        while not self._closed:
            self._wake.wait(timeout=min(self.flush_interval_s, 1.0))
            self._wake.clear()
            try:
                with self._lock:
                    due = self._due()
                if due:
                    self.flush()
                self._merge_closed_hours()
            except Exception:  # keep serving: the next flush retries
                log.exception("decision store flush failed (%s)", self.root)

    # -- writing
    def flush(self) -> int:
        """Write the buffered rows (one file per hour they fall in, all renamed into place
        after all are written); returns the rows written. On a write error (disk) the rows
        stay buffered for the next flush and the error is raised; buffered records that are
        not valid decision rows are dropped (logged) and the ValueError raised."""
        with self._write_lock:
            with self._lock:
                tables, records = self._tables, self._records
                self._tables, self._records, self._rows, self._first_at = [], [], 0, None
            if not tables and not records:
                return 0
            if records:
                try:
                    frame = pd.DataFrame.from_records(records)
                    tables = [*tables, decision_table(frame, self.source)]
                except ValueError:
                    log.exception("decision store: %d invalid records dropped", len(records))
                    with self._lock:
                        self._tables[:0] = tables
                        self._rows += sum(t.num_rows for t in tables)
                        self._first_at = self._first_at or time.monotonic()
                    raise
            started = time.perf_counter()
            try:
                written = self._write_table(_unify(tables))
            except Exception:
                with self._lock:  # keep them for the next try
                    self._tables[:0] = tables
                    self._rows += sum(t.num_rows for t in tables)
                    self._first_at = self._first_at or time.monotonic()
                raise
            self.rows_written += written
            self.write_seconds += time.perf_counter() - started
            return written

    def _write_table(self, table: pa.Table) -> int:
        ts = table.column("time").cast(pa.int64()).to_numpy()
        hours = ts // US_PER_HOUR
        lo, hi = int(hours.min()), int(hours.max())
        if lo == hi:
            pieces = [(lo, table)]
        else:
            order = np.argsort(hours, kind="stable")
            cuts = np.flatnonzero(np.diff(hours[order])) + 1
            pieces = [
                (int(hours[idx[0]]), table.take(pa.array(idx))) for idx in np.split(order, cuts)
            ]
        staged: list[tuple[Path, Path]] = []
        try:
            for hour, piece in pieces:
                part = partition_dir(self.root, datetime.fromtimestamp(hour * 3600, UTC))
                part.mkdir(parents=True, exist_ok=True)
                seq = self._seq + len(staged) + 1
                path = part / f"{self.source}-{self.writer}-{seq}.parquet"
                staged.append((self._write_tmp(path, piece), path))
        except BaseException:
            for tmp, _ in staged:
                tmp.unlink(missing_ok=True)
            raise
        for (tmp, path), (_, piece) in zip(staged, pieces, strict=True):
            os.rename(tmp, path)
            self._touched.add(path.parent)
            self._seq += 1
            self._small.setdefault(path.parent, []).append(
                (self._seq, piece.num_rows < self.flush_rows)
            )
            self.files_written += 1
        return table.num_rows

    def _write_file(self, path: Path, table: pa.Table) -> None:
        os.rename(self._write_tmp(path, table), path)

    def _write_tmp(self, path: Path, table: pa.Table) -> Path:
        """``table`` written and fsync'd to a hidden temp file beside ``path``; returns it."""
        tmp = path.with_name(f"{TMP_PREFIX}{path.name}.{os.getpid()}.tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, self.file_mode)
        try:
            if os.fstat(fd).st_mode & 0o777 != self.file_mode:
                os.fchmod(fd, self.file_mode)  # whatever the umask says
            with os.fdopen(fd, "wb", closefd=False) as fh:
                pq.write_table(
                    table,
                    fh,
                    compression=self.compression,
                    row_group_size=self.row_group_rows,
                )
                fh.flush()
            os.fsync(fd)
        except BaseException:
            os.close(fd)
            tmp.unlink(missing_ok=True)
            raise
        os.close(fd)
        return tmp

    def _merge_closed_hours(self, *, all_hours: bool = False) -> None:
        """Merge this writer's small files of each partition it has left (all at close)."""
        current = partition_dir(
            self.root, datetime.fromtimestamp(_now_us() // US_PER_HOUR * 3600, UTC)
        )
        with self._write_lock:
            for part in list(self._small):
                if part == current and not all_hours:
                    continue
                files = self._small.pop(part)
                small = [s for s, is_small in files if is_small]
                if len(small) < 2:
                    continue
                # every file of this writer in the merged range (a merged a_b file hides
                # all of this writer's a..b files from readers)
                seqs = [s for s, _ in files if min(small) <= s <= max(small)]
                paths = [part / f"{self.source}-{self.writer}-{s}.parquet" for s in seqs]
                try:
                    table = _unify([pq.read_table(p) for p in paths])
                    self._seq += 1  # the merged file's own number keeps later seqs distinct
                    merged = part / f"{self.source}-{self.writer}-{min(seqs)}_{max(seqs)}.parquet"
                    self._write_file(merged, table)
                except Exception:
                    log.exception("merging %d decision files in %s failed", len(paths), part)
                    continue
                for p in paths:
                    p.unlink(missing_ok=True)

    def written_files(self) -> list[Path]:
        """The decision files of this writer that are in the store now (after ``close``:
        its final files, merged ones included)."""
        with self._write_lock:
            return sorted(
                p
                for part in self._touched
                for p in part.glob(f"{self.source}-{self.writer}-*.parquet")
            )

    def abort(self) -> list[Path]:
        """Drop the buffer and delete every file this writer wrote (a batch run that failed:
        its decisions must not stay without its output); returns them."""
        with self._write_lock:
            with self._lock:
                self._tables, self._records, self._rows, self._first_at = [], [], 0, None
            removed = []
            for part in self._touched:
                for p in part.glob(f"{self.source}-{self.writer}-*.parquet"):
                    p.unlink(missing_ok=True)
                    removed.append(p)
            self._small.clear()
            return removed

    def close(self) -> None:
        """Flush the rest, merge this writer's small files, stop the background thread."""
        if self._closed:
            return
        self._closed = True
        if self._thread is not None and self._thread_pid == os.getpid():
            self._wake.set()
            self._thread.join(timeout=30)
        self.flush()
        self._merge_closed_hours(all_hours=True)

    def __enter__(self) -> DecisionWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


# ------------------------------------------------------------------------------ reading
def _window_files(
    root: Path,
    since: datetime | None,
    until: datetime | None,
    sources: Sequence[str] | None,
) -> list[_StoredFile]:
    out: list[_StoredFile] = []
    for start, hour_dir in _partitions(Path(root)):
        if since is not None and start + timedelta(hours=1) <= since:
            continue
        if until is not None and start >= until:
            continue
        live, _ = _live_files(hour_dir)
        out.extend(f for f in live if sources is None or f.source in sources)
    return out


def _skip(path: Path, exc: Exception) -> None:
    """A file that cannot be read as Parquet (never written by a writer: those appear by
    rename, complete) is skipped with a warning rather than failing the whole read."""
    log.warning("decision store: skipping unreadable %s (%s)", path, exc)


def _physical(columns: Sequence[str] | None, names: Sequence[str]) -> list[str] | None:
    """Stored column names for requested output names (a feature name maps to its
    ``input.`` column)."""
    if columns is None:
        return None
    have = set(names)
    out = []
    for c in columns:
        if c in have:
            out.append(c)
        elif INPUT_PREFIX + c in have:
            out.append(INPUT_PREFIX + c)
    return out


def _time_mask(table: pa.Table, since: datetime | None, until: datetime | None) -> pa.Array | None:
    if since is None and until is None:
        return None
    t = table.column("time")
    mask = None
    if since is not None:
        mask = pc.greater_equal(t, pa.scalar(since, pa.timestamp("us", tz="UTC")))
    if until is not None:
        m2 = pc.less(t, pa.scalar(until, pa.timestamp("us", tz="UTC")))
        mask = m2 if mask is None else pc.and_(mask, m2)
    return mask


def _to_frame(table: pa.Table, columns: Sequence[str] | None) -> pd.DataFrame:
    """Pandas frame with ``input.`` stripped (unless that would collide with a fixed column)
    and, if ``columns`` was given, exactly those columns (missing ones all-null)."""
    df = table.to_pandas()
    fixed = set(FIXED_COLUMNS) | set(OPTIONAL_SCHEMA.names)
    rename = {
        c: c[len(INPUT_PREFIX) :]
        for c in df.columns
        if c.startswith(INPUT_PREFIX) and c[len(INPUT_PREFIX) :] not in fixed
    }
    df = df.rename(columns=rename)
    if columns is not None:
        df = df.reindex(columns=list(columns))
    return df


def _window_tables(
    root: Path,
    lo: datetime | None,
    hi: datetime | None,
    sources: Sequence[str] | None,
    columns: Sequence[str] | None,
    batch_rows: int | None,
) -> Iterator[tuple[pa.Table, list[str] | None]]:
    """Arrow tables of the window's rows (``time`` always read, to filter on), with the
    physical columns asked for: one per row-group batch of at most ``batch_rows`` rows, or
    one per file when ``batch_rows`` is None. A file expired or merged meanwhile is passed
    over; an unreadable one is logged and skipped."""
    for f in _window_files(Path(root), lo, hi, sources):
        try:
            pf = pq.ParquetFile(f.path)
            phys = _physical(columns, pf.schema_arrow.names)
            read_cols = None if phys is None else list(dict.fromkeys([*phys, "time"]))
            parts: Iterable[pa.RecordBatch | pa.Table] = (
                [pf.read(columns=read_cols)]
                if batch_rows is None
                else pf.iter_batches(batch_size=batch_rows, columns=read_cols)
            )
            for part in parts:
                table = part if isinstance(part, pa.Table) else pa.Table.from_batches([part])
                mask = _time_mask(table, lo, hi)
                if mask is not None:
                    table = table.filter(mask)
                if table.num_rows:
                    yield table, phys
        except FileNotFoundError:  # expired or merged meanwhile
            continue
        except (pa.ArrowInvalid, OSError) as exc:
            _skip(f.path, exc)
            continue


def iter_decisions(
    root: Path,
    *,
    since: datetime | str | None = None,
    until: datetime | str | None = None,
    sources: Sequence[str] | None = None,
    columns: Sequence[str] | None = None,
    batch_rows: int = 262_144,
) -> Iterator[pd.DataFrame]:
    """Decisions with ``since <= time < until`` (UTC; naive times are UTC), as frames of at
    most ``batch_rows`` rows, reading one row group at a time (memory flat in the window's
    size). ``columns``: output names to read (fixed columns or feature names; pruned at the
    file), every frame then has exactly them; default all (frames of files with other
    inputs then differ in their columns). Input columns come without the ``input.`` prefix."""
    lo, hi = parse_time(since), parse_time(until)
    for table, phys in _window_tables(root, lo, hi, sources, columns, batch_rows):
        if phys is not None and "time" not in phys:
            table = table.drop_columns(["time"])
        yield _to_frame(table, columns)


def read_decisions(
    root: Path,
    *,
    since: datetime | str | None = None,
    until: datetime | str | None = None,
    sources: Sequence[str] | None = None,
    columns: Sequence[str] | None = None,
) -> pd.DataFrame:
    """All decisions of the window as one frame, oldest first (see ``iter_decisions``; inputs
    of files with different features are united, missing values null). Empty frame when
    there are none."""
    lo, hi = parse_time(since), parse_time(until)
    tables = [t for t, _ in _window_tables(root, lo, hi, sources, columns, None)]
    if not tables:
        return pd.DataFrame(columns=list(columns) if columns is not None else [])
    table = _unify(tables)
    table = table.sort_by("time") if table.num_rows > 1 else table
    if (
        columns is not None
        and "time" not in columns
        and "time" not in (INPUT_PREFIX + c for c in columns)
    ):
        table = table.drop_columns(["time"])
    return _to_frame(table, columns)


def stored_columns(
    root: Path,
    *,
    since: datetime | str | None = None,
    until: datetime | str | None = None,
    sources: Sequence[str] | None = None,
) -> set[str]:
    """Output names of the columns any file of the window has (reads only file footers):
    which inputs were logged at all."""
    lo, hi = parse_time(since), parse_time(until)
    fixed = set(FIXED_COLUMNS) | set(OPTIONAL_SCHEMA.names)
    out: set[str] = set()
    for f in _window_files(Path(root), lo, hi, sources):
        try:
            names = pq.read_schema(f.path).names
        except FileNotFoundError:
            continue
        except (pa.ArrowInvalid, OSError) as exc:
            _skip(f.path, exc)
            continue
        for n in names:
            plain = n[len(INPUT_PREFIX) :] if n.startswith(INPUT_PREFIX) else n
            out.add(n if plain in fixed and n != plain else plain)
    return out


def count_decisions(
    root: Path,
    *,
    since: datetime | str | None = None,
    until: datetime | str | None = None,
    sources: Sequence[str] | None = None,
) -> dict[str, int]:
    """Rows per source in the window (reads only the time column)."""
    counts: dict[str, int] = {}
    lo, hi = parse_time(since), parse_time(until)
    for f in _window_files(Path(root), lo, hi, sources):
        try:
            table = pq.read_table(f.path, columns=["time"])
        except FileNotFoundError:
            continue
        except (pa.ArrowInvalid, OSError) as exc:
            _skip(f.path, exc)
            continue
        mask = _time_mask(table, lo, hi)
        n = table.num_rows if mask is None else int(pc.sum(mask).as_py() or 0)
        counts[f.source] = counts.get(f.source, 0) + n
    return counts


# ------------------------------------------------------------------------------ retention
def expire_decisions(root: Path, *, max_age_days: float, now: datetime | None = None) -> list[Path]:
    """Delete the hour partitions that ended more than ``max_age_days`` (days) before ``now``
    (default: the current time); returns them, oldest first. Also removes, in the partitions
    kept, parts a merged file already covers and temp files of writers dead for over an
    hour (neither is ever read)."""
    if max_age_days <= 0:
        raise ValueError(f"max_age_days: must be > 0, got {max_age_days}")
    now_dt = parse_time(now) or datetime.now(UTC)
    cutoff = now_dt - timedelta(days=max_age_days)
    removed = []
    root = Path(root)
    for start, hour_dir in _partitions(root):
        if start + timedelta(hours=1) <= cutoff:
            shutil.rmtree(hour_dir, ignore_errors=True)
            removed.append(hour_dir)
            with contextlib.suppress(OSError):
                hour_dir.parent.rmdir()  # the day, once empty
            continue
        _, dead = _live_files(hour_dir)
        for f in dead:
            f.path.unlink(missing_ok=True)
        with contextlib.suppress(FileNotFoundError):
            for name in os.listdir(hour_dir):
                if name.startswith(TMP_PREFIX) and name.endswith(".tmp"):
                    p = hour_dir / name
                    with contextlib.suppress(FileNotFoundError):
                        if time.time() - p.stat().st_mtime > STALE_TMP_S:
                            p.unlink()
    return removed
