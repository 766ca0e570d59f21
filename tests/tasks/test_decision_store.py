"""The decision store by plain calls: hourly partitions, window reads, retention, inputs of
different champions, concurrent writer processes, files that must never be read."""

from __future__ import annotations

import multiprocessing as mp
import os
import stat
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest

from tasks.decision_store import (
    FIXED_COLUMNS,
    DecisionWriter,
    count_decisions,
    expire_decisions,
    iter_decisions,
    read_decisions,
)

DAY = datetime(2026, 3, 1, tzinfo=UTC)


def _rows(
    n: int,
    start: datetime,
    step_s: float,
    *,
    model: str = "1",
    offset: int = 0,
    inputs: dict[str, Any] | None = None,
) -> pd.DataFrame:
    times = pd.to_datetime([start + timedelta(seconds=i * step_s) for i in range(n)], utc=True)
    p = np.linspace(0.05, 0.95, n) if n > 1 else np.array([0.5])
    frame = pd.DataFrame(
        {
            "time": times,
            "request_id": [f"r{offset + i}" for i in range(n)],
            "model_version": model,
            "policy_id": "pol",
            "customer_id": [f"c{offset + i}" for i in range(n)],
            "probability": p,
            "action": np.where(p > 0.5, "contact", "no_contact"),
            "expected_value_usd": p * 10 - 3,
        }
    )
    for name, values in (inputs or {"input.tenure": np.arange(n) + offset}).items():
        frame[name] = values
    return frame


def _files(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*.parquet"))


def test_decision_writer_partitions_rows_by_hour(tmp_path: Path) -> None:
    root = tmp_path / "decisions"
    with DecisionWriter(root, source="batch", writer_id="t1", flush_rows=10_000) as w:
        w.append(_rows(6, DAY + timedelta(minutes=50), 10 * 60))  # 00:50 .. 01:40
    parts = sorted({p.parent.relative_to(root).as_posix() for p in _files(root)})
    assert parts == ["date=2026-03-01/hour=00", "date=2026-03-01/hour=01"]
    hour0 = pq.read_table(next((root / parts[0]).glob("*.parquet")))
    assert hour0.num_rows == 1
    assert hour0.schema.field("time").type.tz == "UTC"
    assert hour0.column("source").to_pylist() == ["batch"]
    out = read_decisions(root)
    assert len(out) == 6
    assert list(out["request_id"]) == [f"r{i}" for i in range(6)]  # oldest first
    # defaults: would_contact from the action, no holdout/experiment
    assert (out["would_contact"] == (out["action"] == "contact")).all()
    assert not out["holdout"].any()
    assert out["experiment_id"].isna().all()
    assert set(FIXED_COLUMNS) <= set(out.columns)
    assert "tenure" in out.columns and "input.tenure" not in out.columns


def test_read_decisions_window_is_half_open_and_filters_sources(tmp_path: Path) -> None:
    root = tmp_path / "decisions"
    with DecisionWriter(root, source="http", writer_id="w0", flush_rows=3) as w:
        w.append(_rows(24, DAY, 3600))  # one per hour of the day
    with DecisionWriter(root, source="batch", writer_id="b", flush_rows=100) as b:
        b.append(_rows(5, DAY + timedelta(hours=2), 1, offset=100))
    got = read_decisions(root, since="2026-03-01T02:00:00Z", until="2026-03-01T04:00:00")
    assert sorted(got["request_id"]) == ["r100", "r101", "r102", "r103", "r104", "r2", "r3"]
    http = read_decisions(
        root, since=DAY + timedelta(hours=2), until=DAY + timedelta(hours=4), sources=["http"]
    )
    assert list(http["request_id"]) == ["r2", "r3"]
    assert count_decisions(root, since=DAY, until=DAY + timedelta(days=1)) == {
        "http": 24,
        "batch": 5,
    }
    # column pruning: only what was asked, a feature by its plain name
    pruned = read_decisions(root, columns=["customer_id", "tenure"], sources=["batch"])
    assert list(pruned.columns) == ["customer_id", "tenure"]
    assert list(pruned["tenure"]) == [100, 101, 102, 103, 104]
    assert read_decisions(root, since="2026-03-02").empty


def test_iter_decisions_streams_in_bounded_frames(tmp_path: Path) -> None:
    root = tmp_path / "decisions"
    with DecisionWriter(root, source="batch", writer_id="b", flush_rows=1000) as w:
        w.append(_rows(2500, DAY, 1))
    sizes = []
    total = 0.0
    for frame in iter_decisions(root, columns=["probability", "action"], batch_rows=300):
        assert list(frame.columns) == ["probability", "action"]
        sizes.append(len(frame))
        total += frame["probability"].sum()
    assert sum(sizes) == 2500 and max(sizes) <= 300
    assert total == pytest.approx(read_decisions(root)["probability"].sum())
    windowed = sum(len(f) for f in iter_decisions(root, since=DAY + timedelta(seconds=2000)))
    assert windowed == 500


def test_expire_decisions_removes_whole_old_hours(tmp_path: Path) -> None:
    root = tmp_path / "decisions"
    with DecisionWriter(root, source="http", writer_id="w", flush_rows=10) as w:
        w.append(_rows(48, DAY, 3600))  # two days, one row an hour
    now = DAY + timedelta(days=2)  # 2026-03-03 00:00
    removed = expire_decisions(root, max_age_days=1.5, now=now)
    # hours ending at or before 2026-03-01 12:00 go: 00..11 of day one
    assert [p.name for p in removed] == [f"hour={h:02d}" for h in range(12)]
    left = read_decisions(root)
    assert len(left) == 36
    assert left["time"].min() == pd.Timestamp(DAY + timedelta(hours=12))
    expire_decisions(root, max_age_days=0.5, now=now)
    assert not (root / "date=2026-03-01").exists()  # empty day folder gone too
    with pytest.raises(ValueError, match="max_age_days"):
        expire_decisions(root, max_age_days=0)


def test_read_decisions_unites_inputs_of_two_champions(tmp_path: Path) -> None:
    root = tmp_path / "decisions"
    with DecisionWriter(root, source="http", writer_id="w", flush_rows=100) as w:
        w.append(
            _rows(
                3,
                DAY,
                1,
                model="1",
                inputs={"input.tenure": [1, 2, 3], "input.plan": ["a", "b", "a"]},
            )
        )
        w.flush()
        w.append(
            _rows(
                2,
                DAY + timedelta(seconds=10),
                1,
                model="2",
                offset=3,
                inputs={
                    "input.tenure": [4.5, 5.5],
                    "input.region": ["n", "s"],
                    "input.action": ["x", "y"],
                },
            )
        )
    out = read_decisions(root)
    assert list(out["model_version"]) == ["1", "1", "1", "2", "2"]
    assert list(out["tenure"]) == [1.0, 2.0, 3.0, 4.5, 5.5]  # int and float united as float
    assert out["plan"].tolist()[:3] == ["a", "b", "a"] and out["plan"][3:].isna().all()
    assert out["region"][:3].isna().all() and out["region"].tolist()[3:] == ["n", "s"]
    # a feature named like a fixed column keeps its prefix rather than hiding the decision
    assert out["action"].isin(["contact", "no_contact"]).all()
    assert out["input.action"].tolist()[3:] == ["x", "y"]


def _write_process(root: str, writer: str, n: int) -> None:
    w = DecisionWriter(Path(root), source="http", writer_id=writer, flush_rows=7)
    for i in range(n):
        w.append_records(
            [
                {
                    "time": DAY + timedelta(seconds=i),
                    "request_id": f"{writer}-{i}",
                    "model_version": "1",
                    "policy_id": "pol",
                    "customer_id": f"{writer}-{i}",
                    "probability": 0.4,
                    "action": "no_contact",
                    "input.tenure": i,
                }
            ]
        )
    w.close()


def test_decision_writers_in_several_processes_write_without_locks(tmp_path: Path) -> None:
    root = tmp_path / "decisions"
    ctx = mp.get_context("spawn")
    procs = [ctx.Process(target=_write_process, args=(str(root), f"w{k}", 50)) for k in range(3)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout=120)
        assert p.exitcode == 0
    out = read_decisions(root)
    assert len(out) == 150
    assert out["request_id"].is_unique
    assert sorted(out["request_id"].str.split("-").str[0].unique()) == ["w0", "w1", "w2"]


def test_read_decisions_ignores_temp_and_truncated_files(tmp_path: Path, caplog) -> None:
    root = tmp_path / "decisions"
    with DecisionWriter(root, source="batch", writer_id="b", flush_rows=100) as w:
        w.append(_rows(4, DAY, 1))
    good = _files(root)[0]
    data = good.read_bytes()
    part = good.parent
    (part / f".batch-dead.x-1.parquet.{os.getpid()}.tmp").write_bytes(data[:20])  # mid-write
    (part / "batch-crashed.x-9.parquet").write_bytes(data[: len(data) // 2])  # truncated
    (part / "notes.txt").write_text("not a decision file")
    out = read_decisions(root)
    assert len(out) == 4
    assert sum(len(f) for f in iter_decisions(root)) == 4
    assert "skipping unreadable" in caplog.text


def test_decision_writer_merges_small_flushes_and_readers_skip_merged_parts(
    tmp_path: Path,
) -> None:
    root = tmp_path / "decisions"
    w = DecisionWriter(root, source="http", writer_id="w", flush_rows=1000, file_mode=0o640)
    for k in range(4):
        w.append(_rows(2, DAY + timedelta(seconds=10 * k), 1, offset=2 * k))
        w.flush()
    parts = _files(root)
    assert len(parts) == 4
    w.close()
    merged = _files(root)
    assert len(merged) == 1 and "_" in merged[0].name
    assert stat.S_IMODE(merged[0].stat().st_mode) == 0o640
    assert len(read_decisions(root)) == 8
    # a crash between the merged file's rename and the parts' deletion: nothing doubles
    for p in parts[:2]:
        p.write_bytes(b"")  # stand-ins for leftovers (never read: covered by the merge)
    assert len(read_decisions(root)) == 8
    expire_decisions(root, max_age_days=10_000, now=DAY)
    assert _files(root) == merged  # leftovers tidied


def test_decision_writer_file_mode_and_flush_bounds(tmp_path: Path) -> None:
    root = tmp_path / "decisions"
    w = DecisionWriter(root, source="http", writer_id="w", flush_rows=5, flush_interval_s=60)
    w.append(_rows(4, DAY, 1))
    assert _files(root) == []  # below flush_rows and the interval: still buffered
    w.append(_rows(1, DAY + timedelta(seconds=5), 1, offset=4))
    files = _files(root)
    assert len(files) == 1  # flush_rows reached
    assert stat.S_IMODE(files[0].stat().st_mode) == 0o600
    w.close()


def test_decision_writer_background_thread_flushes_on_interval(tmp_path: Path) -> None:
    root = tmp_path / "decisions"
    w = DecisionWriter(
        root,
        source="http",
        writer_id="w",
        flush_rows=10_000,
        flush_interval_s=0.2,
        background=True,
    )
    w.append(_rows(3, datetime.now(UTC), 1))
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and not _files(root):
        time.sleep(0.05)
    assert len(read_decisions(root)) == 3
    w.close()
    assert len(read_decisions(root)) == 3


def test_decision_writer_refuses_bad_rows(tmp_path: Path) -> None:
    root = tmp_path / "decisions"
    w = DecisionWriter(root, source="batch", writer_id="b")
    with pytest.raises(ValueError, match="customer_id"):
        w.append(_rows(2, DAY, 1).drop(columns=["customer_id"]))
    with pytest.raises(ValueError, match="unknown column.*tenure"):
        w.append(_rows(2, DAY, 1).rename(columns={"input.tenure": "tenure"}))
    bad_time = _rows(2, DAY, 1).assign(time=["yesterday", "x"])
    with pytest.raises(ValueError, match="time: 2 values are not timestamps"):
        w.append(bad_time)
    assert w.flush() == 0  # nothing of a refused frame was kept
    with pytest.raises(ValueError, match="source"):
        DecisionWriter(root, source="shadow", writer_id="b")
    with pytest.raises(ValueError, match="writer_id"):
        DecisionWriter(root, source="batch", writer_id="a/b")


def test_decision_writer_keeps_inputs_of_mixed_kinds_as_text(tmp_path: Path) -> None:
    root = tmp_path / "decisions"
    with DecisionWriter(root, source="http", writer_id="w") as w:
        rows = _rows(3, DAY, 1, inputs={"input.region": ["east", 5, None]})
        w.append_records([{str(k): v for k, v in r.items()} for r in rows.to_dict("records")])
    got = read_decisions(root)["region"]
    assert got.tolist()[:2] == ["east", "5"] and got.isna().tolist() == [False, False, True]
