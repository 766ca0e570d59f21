"""Batch scoring: CSV or Parquet in and out, the same verified champion and policy as the
service. Rows that fail validation go to a rejects file with the reason; nothing is dropped
silently. Outputs are written to temp files and renamed when complete."""

from __future__ import annotations

import os
import tempfile
import time
import uuid
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from serving.experiment import Experiment
from serving.fast_scorer import pin_threads
from serving.loader import Champion
from serving.predlog import InputPolicy, frame_inputs
from serving.scoring import RESULT_COLUMNS, Decided, decide_columns, score_frame
from tasks.decision_store import FIXED_SCHEMA, DecisionWriter, input_array
from tasks.load_data import ColumnRoles, DataError

BLANK = r"^\s*$"


@dataclass(frozen=True)
class BatchSummary:
    rows: int
    scored: int
    rejected: int
    contacts: int
    expected_profit_usd: float
    output: Path
    rejects: Path | None
    holdout: int = 0  # scored customers in the randomized holdout
    held_back: int = 0  # holdout customers the policy would have contacted
    experiment_id: str | None = None
    decisions: int = 0  # rows written to the decision store
    run_id: str | None = None  # the decisions' request_id
    # seconds per step, summed over chunks (scoring threads overlap: the sum can exceed
    # the wall time)
    step_seconds: dict[str, float] = field(default_factory=dict, compare=False)
    partitions: int = 0  # the dask engine: partitions scored on the workers
    decision_files: tuple[str, ...] = ()  # the dask engine: the decision files written

    def text(self) -> str:
        held = (
            f", holdout {self.holdout} of experiment {self.experiment_id} "
            f"({self.held_back} the policy would have contacted)"
            if self.experiment_id
            else ""
        )
        return (
            f"rows {self.rows}, scored {self.scored}, rejected {self.rejected}, contacts "
            f"{self.contacts}{held}, expected profit {self.expected_profit_usd:,.2f} USD -> "
            f"{self.output}"
            + (f" (rejects: {self.rejects})" if self.rejects else "")
            + (f"; {self.decisions} decisions stored (run {self.run_id})" if self.run_id else "")
        )


def input_kind(path: Path) -> str:
    """``"parquet"`` or ``"csv"`` by the file's suffix; DataError for anything else."""
    suffix = path.suffix.lower()
    if suffix in (".parquet", ".pq"):
        return "parquet"
    if suffix == ".csv":
        return "csv"
    raise DataError(f"{path}: expected a .csv or .parquet file")


def count_rows(path: Path) -> int | None:
    """Rows in the input (Parquet metadata; CSV newlines minus the header)."""
    if input_kind(path) == "parquet":
        import pyarrow.parquet as pq

        return int(pq.ParquetFile(path).metadata.num_rows)
    newlines, last = 0, b"\n"
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 22), b""):
            newlines += block.count(b"\n")
            last = block[-1:]
    return max(0, newlines + (last != b"\n") - 1)


def _roles(champion: Champion) -> ColumnRoles:
    return ColumnRoles(
        champion.id_column,
        "",
        champion.numeric,
        champion.categorical,
        (),
        (),
        champion.value_column,
    )


def with_row_positions(frame: pd.DataFrame, champion: Champion, start: int) -> pd.DataFrame:
    """A chunk of a file without ids, scored by a champion trained on a table without ids:
    a copy numbered like the training table was, by row position in the file (``start`` is
    the position of the chunk's first row). Any other chunk is returned as it is."""
    if not champion.id_generated or champion.id_column in frame.columns:
        return frame
    out = frame.reset_index(drop=True)
    out.insert(0, champion.id_column, np.arange(start, start + len(out), dtype=np.int64))
    return out


def _as_float(values: pd.Series) -> tuple[np.ndarray, np.ndarray]:
    """(float64 values, mask of values that are not numbers) of one column: what coercing
    it to float64 gives, element by element (``float(v)``), as the scoring schema did."""
    if pd.api.types.is_numeric_dtype(values) or pd.api.types.is_bool_dtype(values):
        return values.to_numpy(dtype="float64", na_value=np.nan), np.zeros(len(values), bool)
    try:
        return values.astype("float64").to_numpy(), np.zeros(len(values), bool)
    except (ValueError, TypeError):
        pass
    out = pd.to_numeric(values, errors="coerce").to_numpy(dtype="float64", na_value=np.nan)
    failed = np.zeros(len(values), bool)
    notna = values.notna().to_numpy()
    for i in np.flatnonzero(np.isnan(out) & notna):  # a text the fast path did not parse
        try:
            out[i] = float(values.iloc[i])
        except (ValueError, TypeError):
            failed[i] = True
    return out, failed


def _case(value: Any) -> str:
    """A failing value as the reject reason shows it (Python repr)."""
    if isinstance(value, np.generic):
        value = value.item()
    return repr(value)


def validate_chunk(frame: pd.DataFrame, champion: Champion) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Split a chunk into rows to score (clean types) and rejected rows with a reason.

    The checks of the scoring schema (``schemas.churn.build_scoring_schema``), vectorised:
    the id may not be missing; numeric features must be numbers (blank text counts as
    missing) and the customer value column a number >= 0, not missing. A row's reason lists
    its failures as ``<column>: <check> (got <value>)`` joined by ``; ``, failed conversions
    first, then the columns in the schema's order."""
    roles = _roles(champion)
    missing = [c for c in roles.required if c not in frame.columns]
    if missing:
        raise DataError(f"input lacks required column(s) {missing} (the champion's features)")
    work = frame.reset_index(drop=True)  # a new frame: columns are replaced, never mutated
    value = roles.value_column
    floats = list(dict.fromkeys([*roles.numeric, *([value] if value else [])]))
    order = list(dict.fromkeys([roles.id_column, *roles.numeric, *roles.categorical, *floats]))
    failures: list[tuple[int, int, int, int, str]] = []  # stage, column, check, row, text
    coerced: dict[str, np.ndarray] = {}
    unconverted: dict[str, pd.Series] = {}
    for col in floats:
        s = work[col]
        if not pd.api.types.is_numeric_dtype(s):
            blank = s.astype("string").str.match(BLANK).fillna(False).to_numpy(bool)
            if blank.any():
                s = s.where(~blank, np.nan)
        values, failed = _as_float(s)
        coerced[col] = values
        for i in np.flatnonzero(failed):
            text = f"{col}: coerce_dtype('float64') (got {_case(s.iloc[i])})"
            failures.append((0, order.index(col), 0, int(i), text))
        if failed.any():  # a missing value is then shown as it was, not converted
            unconverted[col] = s
    ids = work[roles.id_column]
    for i in np.flatnonzero(ids.isna().to_numpy()):
        text = f"{roles.id_column}: not_nullable (got {_case(ids.iloc[i])})"
        failures.append((1, order.index(roles.id_column), 0, int(i), text))
    if value:
        v = coerced[value]
        ok_number = ~np.isnan(v)
        for i in np.flatnonzero(~ok_number):
            if value in unconverted:
                if any(f[3] == i and f[1] == order.index(value) for f in failures):
                    continue  # a text that is not a number: its conversion failure says so
                shown = unconverted[value].iloc[i]
            else:
                shown = v[i]
            text = f"{value}: not_nullable (got {_case(shown)})"
            failures.append((1, order.index(value), 0, int(i), text))
        for i in np.flatnonzero(ok_number & (v < 0)):
            text = f"{value}: greater_than_or_equal_to(0) (got {_case(v[i])})"
            failures.append((1, order.index(value), 1, int(i), text))
    reasons: dict[int, list[str]] = {}
    for *_, row, text in sorted(failures, key=lambda f: f[:3]):
        reasons.setdefault(row, []).append(text)
    bad = np.zeros(len(work), dtype=bool)
    bad[list(reasons)] = True
    rejects = work[bad].assign(reject_reason=["; ".join(reasons[i]) for i in sorted(reasons)])
    if not bad.any():
        good = work.assign(**{c: coerced[c] for c in floats})
    else:
        keep = ~bad
        good = work[keep].assign(**{c: coerced[c][keep] for c in floats})
    return good, rejects


class _Writer:
    """Writes chunks to a temp file beside ``path`` and renames it into place at the end."""

    def __init__(self, path: Path, *, arrow_csv: bool = False) -> None:
        self.path = path
        self.arrow_csv = arrow_csv  # typed frames (scores) go through Arrow's fast CSV writer
        self.kind = input_kind(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        os.close(fd)
        self.tmp = Path(tmp)
        self.rows = 0
        self._pq: Any = None

    def write_table(self, table: pa.Table) -> None:
        """Append an Arrow table (typed rows: CSV through Arrow's writer)."""
        if self.kind == "csv":
            import pyarrow.csv as pcsv

            with open(self.tmp, "ab") as fh:
                pcsv.write_csv(
                    table, fh, write_options=pcsv.WriteOptions(include_header=self.rows == 0)
                )
        else:
            import pyarrow.parquet as pq

            if self._pq is None:
                self._pq = pq.ParquetWriter(self.tmp, table.schema)
            self._pq.write_table(table)
        self.rows += table.num_rows

    def write(self, frame: pd.DataFrame) -> None:
        if self.kind == "csv" and not self.arrow_csv:
            frame.to_csv(self.tmp, mode="a", header=self.rows == 0, index=False)
        elif self.kind == "csv":
            import pyarrow as pa_
            import pyarrow.csv as pcsv

            table = pa_.Table.from_pandas(frame, preserve_index=False)
            with open(self.tmp, "ab") as fh:
                pcsv.write_csv(
                    table, fh, write_options=pcsv.WriteOptions(include_header=self.rows == 0)
                )
        else:
            import pyarrow as pa_
            import pyarrow.parquet as pq

            table = pa_.Table.from_pandas(frame, preserve_index=False)
            if self._pq is None:
                self._pq = pq.ParquetWriter(self.tmp, table.schema)
            self._pq.write_table(table)
        self.rows += len(frame)

    def close(self, keep: bool) -> None:
        if self._pq is not None:
            self._pq.close()
        if keep:
            os.replace(self.tmp, self.path)
        else:
            self.tmp.unlink(missing_ok=True)


DECISION_EXTRA_COLUMNS = ("would_contact", "holdout", "experiment_id")  # when scored has them


def batch_decisions(
    champion: Champion,
    good: pd.DataFrame,
    scored: pd.DataFrame,
    *,
    inputs: InputPolicy,
    run_id: str,
) -> pd.DataFrame:
    """The decision-store rows of one scored chunk (``tasks.decision_store`` columns):
    ``request_id`` is the batch run's id, inputs as ``inputs`` (``serving.log_inputs``) keeps
    them. ``good`` may carry any index (a chunk with rejected rows has gaps): rows are
    matched by position."""
    good = good.reset_index(drop=True)
    kept = frame_inputs(
        inputs,
        good,
        id_column=champion.id_column,
        columns=[*champion.scorer.features, *filter(None, [champion.value_column])],
        value_column=champion.value_column,
    )
    columns: dict[str, Any] = {
        "request_id": run_id,
        "model_version": champion.model_version,
        "policy_id": champion.policy_id,
        "customer_id": kept.pop("customer_id"),
        "probability": scored["churn_probability"].to_numpy(),
        "action": scored["action"].to_numpy(),
        "expected_value_usd": scored["expected_value_usd"].to_numpy(),
        "tier": scored["tier"].to_numpy(),
    }
    columns.update((c, scored[c].to_numpy()) for c in DECISION_EXTRA_COLUMNS if c in scored)
    columns.update((c, np.asarray(v)) for c, v in kept.items())
    return pd.DataFrame(columns, index=pd.RangeIndex(len(good)))


@dataclass(frozen=True)
class ChunkResult:
    """One scored chunk: ``output`` (the output file's rows, Arrow), ``decisions`` (the
    decision-store rows, Arrow; None without a store), ``rejects`` (rows that failed
    validation, with ``reject_reason``), counts, and the seconds each step took."""

    rows: int
    output: pa.Table | None
    decisions: pa.Table | None
    rejects: pd.DataFrame
    contacts: int
    holdout: int
    held_back: int
    profit_usd: float
    seconds: dict[str, float]


def _constant(value: str | None, n: int) -> pa.Array:
    """``n`` copies of one text (or nulls) as an Arrow string array, without Python objects."""
    nulls = pa.nulls(n, pa.string())
    return nulls if value is None else pc.fill_null(nulls, pa.scalar(value, pa.string()))


def _text(values: np.ndarray) -> pa.Array:
    return pa.array(values, pa.string())


def _id_text(ids: pd.Series) -> pa.Array:
    """The ``customer_id`` column of the store from an id column, as ``decision_table``
    writes it: text stays text; anything else becomes ``str(value)``."""
    if ids.dtype == object or isinstance(ids.dtype, pd.StringDtype):
        return pa.array(ids, type=pa.string(), from_pandas=True)
    return pa.array(ids.astype(str).where(ids.notna(), None), type=pa.string(), from_pandas=True)


@dataclass(frozen=True)
class ChunkScorer:
    """Scores chunks of a file (``__call__``: validate, score, build the output and decision
    rows as Arrow arrays); thread-safe, so chunks can be scored on several threads.
    ``decisions``: whether to build decision-store rows (``request_id`` ``run_id``, the
    inputs ``inputs`` keeps)."""

    champion: Champion
    experiment: Experiment | None = None
    inputs: InputPolicy = InputPolicy("full")
    run_id: str = ""
    decisions: bool = False

    def __call__(self, chunk: pd.DataFrame | pa.RecordBatch, start: int) -> ChunkResult:
        """Score ``chunk``, whose first row is row ``start`` of the file (0-based)."""
        champion = self.champion
        t0 = time.perf_counter()
        frame = chunk.to_pandas() if isinstance(chunk, pa.RecordBatch) else chunk
        t1 = time.perf_counter()
        good, bad = validate_chunk(with_row_positions(frame, champion, start), champion)
        t2 = time.perf_counter()
        seconds = {"read": t1 - t0, "validate": t2 - t1, "score": 0.0, "arrow": 0.0}
        if not len(good):
            return ChunkResult(len(frame), None, None, bad, 0, 0, 0, 0.0, seconds)
        n = len(good)
        id_col = champion.id_column
        columns = {c: good[c] for c in champion.scorer.features}
        if champion.value_column:
            columns[champion.value_column] = good[champion.value_column]
        ids = good[id_col].tolist() if self.experiment is not None else None
        d = decide_columns(champion, columns, n, ids=ids, experiment=self.experiment)
        t3 = time.perf_counter()
        output = self._output(good, d)
        decisions = self._decisions(good, d) if self.decisions else None
        t4 = time.perf_counter()
        seconds.update(score=t3 - t2, arrow=t4 - t3)
        contact = d.contact
        return ChunkResult(
            len(frame),
            output,
            decisions,
            bad,
            int(contact.sum()),
            int(d.holdout.sum()),
            int((d.holdout & d.would_contact).sum()),
            float(d.expected_value[contact].sum()),
            seconds,
        )

    def _output(self, good: pd.DataFrame, d: Decided) -> pa.Table:
        """The output rows as ``score_frame`` gives them (same columns, types and pandas
        metadata: the schema is taken from ``score_frame`` of the chunk's first row)."""
        champion = self.champion
        n = len(good)
        schema = pa.Schema.from_pandas(
            score_frame(champion, good.iloc[:1], self.experiment), preserve_index=False
        )
        action = pc.if_else(pa.array(d.contact), "contact", "no_contact")
        arrays: dict[str, Any] = {
            champion.id_column: pa.array(good[champion.id_column], from_pandas=True),
            "churn_probability": pa.array(d.probability, pa.float64()),
            "expected_value_usd": pa.array(np.round(d.expected_value, 4), pa.float64()),
            "action": action,
            "tier": _text(d.tier),
            "model_version": _constant(champion.model_version, n),
            "policy_id": _constant(champion.policy_id, n),
            "would_contact": pa.array(d.would_contact, pa.bool_()),
            "holdout": pa.array(d.holdout, pa.bool_()),
            "experiment_id": _constant(d.experiment_id, n),
        }
        if d.effect is not None:
            arrays["uplift_effect"] = pa.array(d.effect, pa.float64())
        cols = [arrays[f.name].cast(f.type) for f in schema]
        return pa.Table.from_arrays(cols, schema=schema)

    def _decisions(self, good: pd.DataFrame, d: Decided) -> pa.Table:
        """The decision-store rows of the chunk, the same as ``decision_table`` of
        ``batch_decisions`` (the pandas reference), built as Arrow arrays."""
        champion = self.champion
        n = len(good)
        kept = frame_inputs(
            self.inputs,
            good,
            id_column=champion.id_column,
            columns=[*champion.scorer.features, *filter(None, [champion.value_column])],
            value_column=champion.value_column,
        )
        cid = kept.pop("customer_id")
        now = np.full(n, time.time_ns() // 1000, dtype="datetime64[us]")
        arrays: dict[str, pa.Array] = {
            "time": pa.array(now).cast(FIXED_SCHEMA.field("time").type),
            "source": _constant("batch", n),
            "request_id": _constant(self.run_id, n),
            "model_version": _constant(champion.model_version, n),
            "policy_id": _constant(champion.policy_id, n),
            "customer_id": (
                _id_text(cid) if isinstance(cid, pd.Series) else pa.array(cid, pa.string())
            ),
            "probability": pa.array(d.probability, pa.float64()),
            "action": pc.if_else(pa.array(d.contact), "contact", "no_contact"),
            "expected_value_usd": pa.array(np.round(d.expected_value, 4), pa.float64()),
            "would_contact": pa.array(d.would_contact, pa.bool_()),
            "holdout": pa.array(d.holdout, pa.bool_()),
            "experiment_id": _constant(d.experiment_id, n),
            "champion_action": _constant(None, n),
            "tier": _text(d.tier),
        }
        for c, v in kept.items():
            arrays[c] = input_array(v if isinstance(v, pd.Series) else pd.Series(v))
        return pa.table(arrays)


def read_chunks(path: Path, chunk_rows: int) -> Iterator[pd.DataFrame | pa.RecordBatch]:
    """The file's chunks: Arrow record batches of a Parquet file (converted to pandas on
    the scoring thread), pandas frames of a CSV file. Parquet chunks never span two
    partitions of ``plan_partitions(path, chunk_rows)``, so a file is cut into the same chunks
    here as by the dask engine's workers (a row's score is then the same to the last bit:
    the estimator's arithmetic may round differently in chunks of another composition)."""
    if not path.is_file():
        raise DataError(f"--input: file not found: {path}")
    if input_kind(path) == "parquet":
        import pyarrow.parquet as pq

        pf = pq.ParquetFile(path)
        for part in plan_partitions(path, chunk_rows):
            yield from pf.iter_batches(batch_size=chunk_rows, row_groups=list(part.row_groups))
        return
    yield from pd.read_csv(path, chunksize=chunk_rows, low_memory=False)


def score_file(
    champion: Champion,
    input_path: Path,
    output_path: Path,
    *,
    rejects_path: Path | None = None,
    chunk_rows: int = 200_000,
    progress: Callable[[int], None] | None = None,
    experiment: Experiment | None = None,
    decisions: DecisionWriter | None = None,
    inputs: InputPolicy | None = None,
    run_id: str | None = None,
    threads: int = 1,
) -> BatchSummary:
    """Score ``input_path`` into ``output_path`` chunk by chunk (``chunk_rows`` rows: memory
    flat in the file's size), with the randomized holdout of ``experiment`` applied exactly as
    the service does (same hash of the experiment id and the customer id; a table without ids
    uses each row's position in the file as its id); given ``decisions`` (a
    ``source="batch"`` writer), every decision goes to the decision store with ``request_id``
    ``run_id`` and the inputs ``inputs`` keeps (default full). Outputs appear complete (temp +
    rename); when scoring fails, the run's decision files are removed too
    (``DecisionWriter.abort``).

    ``threads`` chunks are scored at the same time on a thread pool while this thread reads
    the next chunk and writes finished ones in input order (the output keeps the input's
    order); at most ``threads + 1`` chunks are in flight, so memory stays flat."""
    run_id = run_id or uuid.uuid4().hex
    scorer = ChunkScorer(
        champion,
        experiment,
        inputs or InputPolicy("full"),
        run_id,
        decisions is not None,
    )
    rejects_path = rejects_path or output_path.with_name(
        f"{output_path.stem}.rejects{output_path.suffix}"
    )
    out, rej = _Writer(output_path, arrow_csv=True), _Writer(rejects_path)
    rows = contacts = holdout = held_back = 0
    profit = 0.0
    steps: dict[str, float] = {}
    ok = False
    pool = ThreadPoolExecutor(max(1, threads), initializer=pin_threads)  # BLAS: 1 thread each
    pending: deque[Future[ChunkResult]] = deque()

    def finish(result: ChunkResult) -> None:
        nonlocal rows, contacts, holdout, held_back, profit
        for k, v in result.seconds.items():
            steps[k] = steps.get(k, 0.0) + v
        t0 = time.perf_counter()
        if result.output is not None:
            out.write_table(result.output)
        t1 = time.perf_counter()
        if decisions is not None and result.decisions is not None:
            decisions.append_table(result.decisions)
        t2 = time.perf_counter()
        if len(result.rejects):
            rej.write(result.rejects)
        steps["write_output"] = steps.get("write_output", 0.0) + t1 - t0
        steps["append_decisions"] = steps.get("append_decisions", 0.0) + t2 - t1
        contacts += result.contacts
        holdout += result.holdout
        held_back += result.held_back
        profit += result.profit_usd
        rows += result.rows
        if progress:
            progress(rows)

    try:
        start = 0
        reader = read_chunks(input_path, chunk_rows)
        while True:
            t0 = time.perf_counter()
            chunk = next(reader, None)
            steps["read_file"] = steps.get("read_file", 0.0) + time.perf_counter() - t0
            if chunk is None:
                break
            pending.append(pool.submit(scorer, chunk, start))
            start += len(chunk)
            while len(pending) > max(1, threads) or (pending and pending[0].done()):
                finish(pending.popleft().result())
        while pending:
            finish(pending.popleft().result())
        if decisions is not None:
            decisions.flush()
        ok = True
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
        if decisions is not None and not ok:
            decisions.abort()
        if ok and out.rows == 0:
            out.write(pd.DataFrame(columns=[champion.id_column, *RESULT_COLUMNS]))
        out.close(keep=ok)
        rej.close(keep=ok and rej.rows > 0)
    return BatchSummary(
        rows,
        out.rows,
        rej.rows,
        contacts,
        profit,
        output_path,
        rejects_path if rej.rows else None,
        holdout,
        held_back,
        None if experiment is None else experiment.experiment_id,
        decisions=0 if decisions is None else decisions.rows_written,
        run_id=None if decisions is None else run_id,
        step_seconds=steps,
    )


# ------------------------------------------------------------------ partitions (dask engine)
@dataclass(frozen=True)
class Partition:
    """Whole row groups ``row_groups`` of the Parquet file ``input``, whose first row is row
    ``first_row`` of the file (0-based); ``index`` numbers the output part."""

    index: int
    input: str
    row_groups: tuple[int, ...]
    first_row: int
    rows: int


@dataclass(frozen=True)
class PartitionSummary:
    """What a worker reports of one partition: counts, the part files it wrote and the
    decision files its writer wrote (paths as text)."""

    index: int
    rows: int
    scored: int
    rejected: int
    contacts: int
    holdout: int
    held_back: int
    expected_profit_usd: float
    output: str | None
    rejects: str | None
    decisions: int
    decision_files: tuple[str, ...]
    step_seconds: dict[str, float]


def plan_partitions(path: Path, min_rows: int) -> list[Partition]:
    """Partitions of a Parquet file: consecutive whole row groups of at least ``min_rows``
    rows each (the last may be smaller). A file of one row group is one partition. Raises
    DataError for a file that is not Parquet."""
    if input_kind(path) != "parquet":
        raise DataError(
            f"{path}: the dask engine reads Parquet row groups; convert the CSV to Parquet "
            "or score it with --engine local"
        )
    if not path.is_file():
        raise DataError(f"--input: file not found: {path}")
    import pyarrow.parquet as pq

    meta = pq.ParquetFile(path).metadata
    parts: list[Partition] = []
    groups: list[int] = []
    first = rows = 0
    for g in range(meta.num_row_groups):
        groups.append(g)
        rows += meta.row_group(g).num_rows
        if rows >= min_rows or g == meta.num_row_groups - 1:
            parts.append(Partition(len(parts), str(path), tuple(groups), first, rows))
            first += rows
            groups, rows = [], 0
    return parts


def stage_csv_chunks(path: Path, out_dir: Path, chunk_rows: int) -> list[Partition]:
    """A CSV input for the dask engine: the chunks :func:`read_chunks` reads (pandas' own
    parser and per-chunk types, ``chunk_rows`` rows), each written to ``out_dir`` as a
    Parquet file of one row group, one partition each. A worker then scores a partition
    exactly as ``score_file`` scores that chunk. Raises DataError naming the column when a
    chunk's cells cannot be stored (whole numbers beyond 64 bits)."""
    import pyarrow.parquet as pq

    parts: list[Partition] = []
    first = 0
    for i, chunk in enumerate(read_chunks(path, chunk_rows)):
        assert isinstance(chunk, pd.DataFrame)
        target = out_dir / f"chunk-{i:05d}.parquet"
        try:
            table = pa.Table.from_pandas(chunk, preserve_index=False)
        except (pa.ArrowInvalid, pa.ArrowTypeError, OverflowError) as exc:
            column = next((c for c in chunk.columns if str(c) in str(exc)), None)
            where = f"column {column!r} " if column is not None else ""
            raise DataError(
                f"{path}: {where}in rows {first + 1}-{first + len(chunk)} cannot be read as "
                f"one type ({' '.join(str(exc).split())}); expected numbers within 64 bits or "
                "text: score it with --engine local or convert it to Parquet",
            ) from None
        pq.write_table(table, target)
        parts.append(Partition(i, str(target), (0,), first, len(chunk)))
        first += len(chunk)
    return parts


def part_name(index: int) -> str:
    return f"part-{index:05d}.parquet"


class BatchAborted(RuntimeError):
    """A partition stopped before its end because its run failed elsewhere."""


def score_partition(
    champion: Champion,
    part: Partition,
    output_dir: Path,
    rejects_dir: Path,
    *,
    chunk_rows: int,
    experiment: Experiment | None = None,
    decisions: DecisionWriter | None = None,
    inputs: InputPolicy | None = None,
    run_id: str,
    abort: Callable[[], bool] | None = None,
) -> PartitionSummary:
    """Score one partition chunk by chunk (``chunk_rows`` rows) into
    ``output_dir/part-<index>.parquet`` (rejected rows into ``rejects_dir``, only if any), the
    decisions through ``decisions`` (flushed here; on failure its files are removed: a
    ``DecisionWriter.abort``). The scores, actions and decisions are those of ``score_file``
    for the same rows: rows are numbered by their position in the whole file. ``abort``, asked
    before each chunk, stops the partition (``BatchAborted``, its decisions removed)."""
    import pyarrow.parquet as pq

    scorer = ChunkScorer(
        champion, experiment, inputs or InputPolicy("full"), run_id, decisions is not None
    )
    out = _Writer(output_dir / part_name(part.index), arrow_csv=True)
    rej = _Writer(rejects_dir / part_name(part.index))
    steps: dict[str, float] = {}
    rows = contacts = holdout = held_back = 0
    profit = 0.0
    ok = False
    try:
        reader = pq.ParquetFile(part.input).iter_batches(
            batch_size=chunk_rows, row_groups=list(part.row_groups)
        )
        for batch in reader:
            if abort is not None and abort():
                raise BatchAborted(f"partition {part.index}: the run was stopped")
            result = scorer(batch, part.first_row + rows)
            for k, v in result.seconds.items():
                steps[k] = steps.get(k, 0.0) + v
            t0 = time.perf_counter()
            if result.output is not None:
                out.write_table(result.output)
            if decisions is not None and result.decisions is not None:
                decisions.append_table(result.decisions)
            if len(result.rejects):
                rej.write(result.rejects)
            steps["write"] = steps.get("write", 0.0) + time.perf_counter() - t0
            rows += result.rows
            contacts += result.contacts
            holdout += result.holdout
            held_back += result.held_back
            profit += result.profit_usd
        if rows != part.rows:
            raise DataError(
                f"{part.input}: read {rows} rows of partition {part.index}, "
                f"expected {part.rows} (the file changed while scoring)"
            )
        if decisions is not None:
            decisions.flush()
        ok = True
    finally:
        if decisions is not None and not ok:
            decisions.abort()
        out.close(keep=ok and out.rows > 0)  # no part for a partition without scored rows
        rej.close(keep=ok and rej.rows > 0)
    return PartitionSummary(
        part.index,
        rows,
        out.rows,
        rej.rows,
        contacts,
        holdout,
        held_back,
        profit,
        str(out.path) if out.rows else None,
        str(rej.path) if rej.rows else None,
        0 if decisions is None else decisions.rows_written,
        (),
        steps,
    )
