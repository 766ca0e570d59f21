"""Batch challenger scoring over a window of stored champion decisions (framework-free).

The challenger is scored off the request path: this reads the champion's decisions (HTTP and
batch) of a time window from the decision store, scores those not scored yet by the same
challenger version, and appends the challenger's decisions (``source="challenger"``, the
champion's action in ``champion_action``) to the store, where monitoring's comparison reads
them by window. Idempotent: a row already scored by this challenger version (same request id
and customer id) is skipped, so re-running a window, or overlapping windows, never counts a
customer twice. The scoring itself is passed in (``serving.challenger_scoring``: it needs the
verified challenger that serving's loader loads).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import pandas as pd

from tasks.decision_store import DecisionWriter, iter_decisions, read_decisions

log = logging.getLogger(__name__)
CHAMPION_SOURCES = ("http", "batch")
KEY = ("request_id", "customer_id")
SECONDS_PER_DAY = 86_400.0
HOUR = pd.Timedelta(hours=1)  # the store's partition

# (champion rows) -> (challenger decision rows, rows without raw inputs)
ScoreFrame = Callable[[pd.DataFrame], tuple[pd.DataFrame, int]]


@dataclass(frozen=True)
class ChallengerScoring:
    """What one scoring pass over a window did. Counts are decision rows (customers);
    ``seconds`` is wall time (s)."""

    challenger_version: str
    since: str | None
    until: str | None
    champion_decisions: int  # champion rows in the window (HTTP and batch)
    unscorable: int  # logged without raw inputs (serving.log_inputs hashed/none)
    already_scored: int  # scored by this challenger version in an earlier pass
    scored: int  # challenger decisions written by this pass
    seconds: float

    def text(self) -> str:
        window = f"[{self.since or 'start'}, {self.until or 'now'})"
        return (
            f"challenger v{self.challenger_version} over {window}: {self.scored} scored, "
            f"{self.already_scored} already scored, {self.unscorable} without raw inputs, "
            f"of {self.champion_decisions} champion decisions ({self.seconds:.1f} s)"
        )


def _iso(v: datetime | str | None) -> str | None:
    return v.isoformat() if isinstance(v, datetime) else v


def scored_keys(
    root: Path,
    *,
    challenger_version: str,
    since: datetime | str | None,
    until: datetime | str | None,
) -> set[tuple[str, str]]:
    """(request id, customer id) of the window's rows this challenger version scored."""
    done = read_decisions(
        root, since=since, until=until, sources=["challenger"], columns=["model_version", *KEY]
    )
    if done.empty:
        return set()
    mine = done[done["model_version"].astype(str) == challenger_version]
    return set(zip(mine["request_id"].astype(str), mine["customer_id"].astype(str), strict=True))


def score_window(
    root: Path,
    score: ScoreFrame,
    *,
    challenger_version: str,
    writer_id: str,
    since: datetime | str | None = None,
    until: datetime | str | None = None,
    batch_rows: int = 65_536,
    flush_rows: int = 1_000_000,
    file_mode: int = 0o600,
    compression: str = "zstd",
) -> ChallengerScoring:
    """Score the champion decisions in [since, until) not yet scored by
    ``challenger_version`` (read ``batch_rows`` rows at a time, so memory stays flat in the
    window's size) and append the challenger's decisions to the store at ``root`` (in files
    of at most ``flush_rows`` rows; they are readable once this returns). A challenger
    decision has its champion row's time, so the rows already scored are looked up per hour
    of the rows at hand (only the hours being scored are held in memory)."""
    if batch_rows <= 0:
        raise ValueError(f"batch_rows must be positive, got {batch_rows}")
    t0 = time.perf_counter()
    done_by_hour: dict[pd.Timestamp, set[tuple[str, str]]] = {}

    def done_in(hours: list[pd.Timestamp]) -> set[tuple[str, str]]:
        for h in [h for h in done_by_hour if h not in hours]:
            del done_by_hour[h]  # the store is read hour by hour: earlier hours are done
        for h in hours:
            if h not in done_by_hour:
                done_by_hour[h] = scored_keys(
                    root, challenger_version=challenger_version, since=h, until=h + HOUR
                )
        return set().union(*done_by_hour.values()) if len(hours) > 1 else done_by_hour[hours[0]]

    seen = unscorable = already = scored = 0
    writer = DecisionWriter(
        root,
        source="challenger",
        writer_id=writer_id,
        flush_rows=flush_rows,
        flush_interval_s=SECONDS_PER_DAY,  # one pass: flushed by size and at the end
        file_mode=file_mode,
        compression=compression,
    )
    try:
        for chunk in iter_decisions(
            root, since=since, until=until, sources=list(CHAMPION_SOURCES), batch_rows=batch_rows
        ):
            seen += len(chunk)
            if chunk.empty:
                continue
            hours = sorted(pd.to_datetime(chunk["time"], utc=True).dt.floor("h").unique())
            done = done_in(hours)
            if done:
                keys = pd.Series(
                    list(
                        zip(
                            chunk["request_id"].astype(str),
                            chunk["customer_id"].astype(str),
                            strict=True,
                        )
                    ),
                    index=chunk.index,
                )
                fresh = ~keys.isin(done)
                already += int((~fresh).sum())
                chunk = chunk[fresh]
            if chunk.empty:
                continue
            decisions, skipped = score(chunk)
            unscorable += skipped
            if len(decisions):
                writer.append(decisions)
                scored += len(decisions)
    finally:
        writer.close()
    result = ChallengerScoring(
        challenger_version,
        _iso(since),
        _iso(until),
        seen,
        unscorable,
        already,
        scored,
        time.perf_counter() - t0,
    )
    log.info("%s", result.text())
    return result
