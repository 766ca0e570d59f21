"""Batch scoring: CSV or Parquet in and out, the same verified champion and policy as the
service. Rows that fail validation go to a rejects file with the reason; nothing is dropped
silently. Outputs are written to temp files and renamed when complete."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pandera.pandas as pa

from schemas.churn import build_scoring_schema
from serving.experiment import Experiment
from serving.loader import Champion
from serving.scoring import RESULT_COLUMNS, score_frame
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
            f"{self.output}" + (f" (rejects: {self.rejects})" if self.rejects else "")
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


def validate_chunk(frame: pd.DataFrame, champion: Champion) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Split a chunk into rows to score (clean types) and rejected rows with a reason."""
    roles = _roles(champion)
    missing = [c for c in roles.required if c not in frame.columns]
    if missing:
        raise DataError(f"input lacks required column(s) {missing} (the champion's features)")
    work = frame.reset_index(drop=True).copy()
    for col in (*roles.numeric, *([roles.value_column] if roles.value_column else [])):
        if not pd.api.types.is_numeric_dtype(work[col]):
            mask = work[col].astype("string").str.match(BLANK).fillna(False).to_numpy(bool)
            work[col] = work[col].where(~mask, np.nan)
    reasons: list[str] = [""] * len(work)
    try:
        build_scoring_schema(roles).validate(work, lazy=True)
    except pa.errors.SchemaErrors as exc:
        fc = exc.failure_cases
        fc = fc[fc["index"].notna()]
        for (col, check), grp in fc.groupby(["column", "check"], sort=False):
            if str(check).startswith("dtype("):
                continue
            for i, case in zip(grp["index"].astype(int), grp["failure_case"], strict=True):
                reasons[i] += f"{col}: {check} (got {case!r}); "
    bad = np.array([r != "" for r in reasons], dtype=bool)
    rejects = frame.reset_index(drop=True)[bad].assign(
        reject_reason=[r.rstrip("; ") for r in reasons if r]
    )
    good = work[~bad].copy()
    for col in roles.numeric:
        good[col] = pd.to_numeric(good[col], errors="coerce").astype(float)
    if roles.value_column:
        good[roles.value_column] = pd.to_numeric(good[roles.value_column]).astype(float)
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


def score_file(
    champion: Champion,
    input_path: Path,
    output_path: Path,
    *,
    rejects_path: Path | None = None,
    chunk_rows: int = 200_000,
    progress: Callable[[int], None] | None = None,
    experiment: Experiment | None = None,
) -> BatchSummary:
    """Score ``input_path`` into ``output_path`` chunk by chunk, with the randomized holdout
    of ``experiment`` applied exactly as the service does (same hash of the experiment id and
    the customer id; a table without ids uses each row's position in the file as its id)."""
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
        ok = True
    finally:
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
    )
