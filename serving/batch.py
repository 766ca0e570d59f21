"""Batch scoring: CSV or Parquet in and out, the same verified champion and policy as the
service. Rows that fail validation go to a rejects file with the reason; nothing is dropped
silently. Outputs are written to temp files and renamed when complete."""

from __future__ import annotations

import os
import tempfile
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from serving.experiment import Experiment
from serving.loader import Champion
from serving.predlog import InputPolicy, frame_inputs
from serving.scoring import RESULT_COLUMNS, score_frame
from tasks.decision_store import DecisionWriter
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


def _kind(path: Path) -> str:
    suffix = path.suffix.lower()
    if suffix in (".parquet", ".pq"):
        return "parquet"
    if suffix == ".csv":
        return "csv"
    raise DataError(f"{path}: expected a .csv or .parquet file")


def count_rows(path: Path) -> int | None:
    """Rows in the input (Parquet metadata; CSV newlines minus the header)."""
    if _kind(path) == "parquet":
        import pyarrow.parquet as pq

        return int(pq.ParquetFile(path).metadata.num_rows)
    newlines, last = 0, b"\n"
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 22), b""):
            newlines += block.count(b"\n")
            last = block[-1:]
    return max(0, newlines + (last != b"\n") - 1)


def read_chunks(path: Path, chunk_rows: int) -> Iterator[pd.DataFrame]:
    if not path.is_file():
        raise DataError(f"--input: file not found: {path}")
    if _kind(path) == "parquet":
        import pyarrow.parquet as pq

        for batch in pq.ParquetFile(path).iter_batches(batch_size=chunk_rows):
            yield batch.to_pandas()
        return
    yield from pd.read_csv(path, chunksize=chunk_rows, low_memory=False)


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
        self.kind = _kind(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        os.close(fd)
        self.tmp = Path(tmp)
        self.rows = 0
        self._pq: Any = None

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
    them."""
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
) -> BatchSummary:
    """Score ``input_path`` into ``output_path`` chunk by chunk (``chunk_rows`` rows: memory
    flat in the file's size), with the randomized holdout of ``experiment`` applied exactly as
    the service does (same hash of the experiment id and the customer id; a table without ids
    uses each row's position in the file as its id); given ``decisions`` (a
    ``source="batch"`` writer), every decision goes to the decision store with ``request_id``
    ``run_id`` and the inputs ``inputs`` keeps (default full). Outputs appear complete (temp +
    rename); when scoring fails, the run's decision files are removed too
    (``DecisionWriter.abort``)."""
    run_id = run_id or uuid.uuid4().hex
    policy = inputs or InputPolicy("full")
    rejects_path = rejects_path or output_path.with_name(
        f"{output_path.stem}.rejects{output_path.suffix}"
    )
    out, rej = _Writer(output_path, arrow_csv=True), _Writer(rejects_path)
    rows = contacts = holdout = held_back = 0
    profit = 0.0
    ok = False
    try:
        for chunk in read_chunks(input_path, chunk_rows):
            good, bad = validate_chunk(with_row_positions(chunk, champion, rows), champion)
            if len(good):
                scored = score_frame(champion, good, experiment)
                out.write(scored)
                if decisions is not None:
                    decisions.append(
                        batch_decisions(champion, good, scored, inputs=policy, run_id=run_id)
                    )
                contacted = scored["action"].to_numpy() == "contact"
                contacts += int(contacted.sum())
                held = scored["holdout"].to_numpy(bool)
                holdout += int(held.sum())
                held_back += int((held & scored["would_contact"].to_numpy(bool)).sum())
                profit += float(scored["expected_value_usd"].to_numpy()[contacted].sum())
            if len(bad):
                rej.write(bad)
            rows += len(chunk)
            if progress:
                progress(rows)
        if decisions is not None:
            decisions.flush()
        ok = True
    finally:
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
    )
