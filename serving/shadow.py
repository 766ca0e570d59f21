"""Shadow challenger scoring in a sidecar process that follows the prediction log.

The request path does nothing for the shadow: every worker already appends the champion's
result (inputs included) to the prediction log. One sidecar process per service follows that
log, scores each new champion line with the verified challenger in vectorised batches and
appends the challenger's result to its own log (``logs/shadow.jsonl``), keyed by the same
request id and time and carrying the champion's action, for the monitoring flow to compare.

Why a process and not a thread in the worker: a scoring thread in a uvicorn worker holds the
GIL for whole batches, and the event loop waits for it (measured: +20 % to +69 % p99 at
concurrency 8 on 2 cores). The sidecar holds no lock the workers take (it writes its own
file), runs under ``SCHED_IDLE`` (``serving.shadow_priority``) so the response never waits
for it, and does no work while the machine is busy serving (``LoadGate``): it catches up
from the log when load drops. Rotated log files are followed in order by inode, and a
restart resumes at the recorded position.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import threading
import time
from dataclasses import asdict, dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from types import FrameType
from typing import Any

from serving.loader import Champion, NotReady, head_marker, load, resolve_challenger
from serving.scoring import score_customers
from serving.settings import ServingSettings
from tasks.package_model import atomic_write_bytes

log = logging.getLogger(__name__)
READ_CHUNK_BYTES = 1 << 18  # ~400 customers: the load gate is asked between batches


class LogFollower:
    """Complete new lines of a size-rotated log (``name``, ``name.1`` ... ``name.N``), in
    order across rotations. Holding the open file means a rotation never loses lines; only a
    file rotated past the last backup before it was opened is skipped (counted)."""

    def __init__(
        self,
        path: Path,
        *,
        backups: int,
        from_end: bool = True,
        resume: tuple[int, int] | None = None,
    ) -> None:
        """Start at the end of the log (``from_end``), at its beginning, or at ``resume``
        ((inode, offset) from ``position``) when that file is still the log or a backup."""
        self.path = path
        self.backups = backups
        self.skipped_files = 0
        self._fd: int | None = None
        self._partial = b""
        if resume is not None and self._resume(*resume):
            return
        if from_end:
            self._open_current(at_end=True)

    def _resume(self, inode: int, offset: int) -> bool:
        for p in self._rotation_order():
            if self._inode(p) != inode:
                continue
            try:
                fd = os.open(p, os.O_RDONLY)
            except FileNotFoundError:
                return False
            if os.fstat(fd).st_ino != inode or os.fstat(fd).st_size < offset:
                os.close(fd)
                return False
            os.lseek(fd, offset, os.SEEK_SET)
            self._set(fd)
            return True
        return False

    def position(self) -> tuple[int, int] | None:
        """(inode, offset) just past the last complete line returned; None before a file."""
        if self._fd is None:
            return None
        offset = os.lseek(self._fd, 0, os.SEEK_CUR) - len(self._partial)
        return os.fstat(self._fd).st_ino, offset

    def _rotation_order(self) -> list[Path]:
        """Oldest first: name.N ... name.1, name."""
        olds = [self.path.with_name(f"{self.path.name}.{i}") for i in range(self.backups, 0, -1)]
        return [*olds, self.path]

    def _open_current(self, *, at_end: bool) -> None:
        try:
            fd = os.open(self.path, os.O_RDONLY)
        except FileNotFoundError:
            return  # opened at offset 0 once it appears: all of it is new then
        if at_end:
            os.lseek(fd, 0, os.SEEK_END)
        self._set(fd)

    def _set(self, fd: int) -> None:
        if self._fd is not None:
            os.close(self._fd)
        self._fd, self._partial = fd, b""

    @staticmethod
    def _stat(p: Path) -> os.stat_result | None:
        try:
            return os.stat(p)
        except FileNotFoundError:
            return None

    def _inode(self, p: Path) -> int | None:
        st = self._stat(p)
        return st.st_ino if st else None

    def _successor(self) -> bool:
        """After the open file was drained and rotated away: open the next file in rotation
        order (offset 0). Returns False when there is nothing newer yet."""
        assert self._fd is not None
        mine = os.fstat(self._fd).st_ino
        order = self._rotation_order()
        inodes = [self._inode(p) for p in order]
        if inodes[-1] in (None, mine):
            return False
        if mine in inodes:
            nxt = inodes.index(mine) + 1
        else:  # ours was rotated out of the backups; resume at the oldest file still kept
            nxt = next(i for i, ino in enumerate(inodes) if ino is not None)
            self.skipped_files += 1
        for p, ino in zip(order[nxt:], inodes[nxt:], strict=True):
            if ino is None:
                continue
            try:
                fd = os.open(p, os.O_RDONLY)
            except FileNotFoundError:
                return False  # rotated again meanwhile: try on the next call
            if os.fstat(fd).st_ino != ino:
                os.close(fd)
                return False
            self._set(fd)
            return True
        return False

    def read(self, max_bytes: int = READ_CHUNK_BYTES) -> list[bytes]:
        """Up to about ``max_bytes`` of complete lines (without their newline)."""
        if self._fd is None:
            self._open_current(at_end=False)
            if self._fd is None:
                return []
        lines: list[bytes] = []
        budget = max_bytes
        while budget > 0:
            # note whether the file was rotated *before* draining it: nothing is written to a
            # rotated file afterwards, so what is read next is all it will ever hold
            rotated = self._inode(self.path) != os.fstat(self._fd).st_ino
            chunk = os.read(self._fd, budget)
            if chunk:
                budget -= len(chunk)
                data = self._partial + chunk
                cut = data.rfind(b"\n") + 1
                lines.extend(line for line in data[:cut].split(b"\n") if line)
                self._partial = data[cut:]
                continue
            if not rotated or not self._successor():
                break
        return lines

    def lag_bytes(self) -> int:
        """Bytes not read yet: the rest of the open file plus every newer file in rotation
        order (the whole log when no file is open yet)."""
        stats = [self._stat(p) for p in self._rotation_order()]
        if self._fd is None:
            return stats[-1].st_size if stats[-1] else 0
        mine = os.fstat(self._fd)
        rest = max(mine.st_size - os.lseek(self._fd, 0, os.SEEK_CUR), 0)
        inodes = [st.st_ino if st else None for st in stats]
        # newer files: after ours in rotation order, or all kept files if ours left the backups
        start = inodes.index(mine.st_ino) + 1 if mine.st_ino in inodes else 0
        return rest + sum(st.st_size for st in stats[start:] if st)

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


class LoadGate:
    """Defers shadow work while the machine is busy serving. Busy: the share of all cores
    in use over the last window (``/proc/stat``; this process's own CPU left out) at or
    above ``busy_pct``. Scheduling priority alone is not enough: scoring beside busy workers
    cost their p99 +20 % to +160 % here even under ``SCHED_IDLE`` with under 0.2 cores
    (benchmarks/bench_shadow.py). With ``max_defer_s`` set, work deferred that long goes
    ahead until caught up (the shadow is late by a bounded time, at that latency cost);
    without it the shadow waits for a quiet machine, and the backlog stays in the log."""

    def __init__(self, busy_pct: float | None, max_defer_s: float | None) -> None:
        self.busy_pct = busy_pct
        self.max_defer_s = max_defer_s
        self.deferrals = 0
        self._deferred_since: float | None = None
        self._last = self._sample()

    @staticmethod
    def _sample() -> tuple[float, float, float] | None:
        """(wall s, machine busy CPU s, own CPU s); None where /proc/stat is missing."""
        try:
            first = Path("/proc/stat").read_text().split("\n", 1)[0].split()
        except OSError:
            return None
        ticks = [int(v) for v in first[1:9]]
        busy = (sum(ticks) - ticks[3] - ticks[4]) / os.sysconf("SC_CLK_TCK")  # not idle/iowait
        return time.monotonic(), busy, time.process_time()

    def machine_busy_pct(self) -> float | None:
        """Busy share of all cores (%) since the previous call, own CPU excluded."""
        now, last = self._sample(), self._last
        self._last = now
        if now is None or last is None or now[0] - last[0] <= 0:
            return None
        others = (now[1] - last[1]) - (now[2] - last[2])
        return max(0.0, 100 * others / ((now[0] - last[0]) * (os.cpu_count() or 1)))

    def allow(self) -> bool:
        busy = self.machine_busy_pct()
        if self.busy_pct is None or busy is None or busy < self.busy_pct:
            return True
        now = time.monotonic()
        if self._deferred_since is None:
            self._deferred_since = now
        if self.max_defer_s is not None and now - self._deferred_since >= self.max_defer_s:
            return True  # waited long enough: score until caught up
        self.deferrals += 1
        return False

    def caught_up(self) -> None:
        self._deferred_since = None


@dataclass(frozen=True)
class ShadowStatus:
    """What the sidecar last did; written to ``logs/shadow-status.json`` for ``/readyz``.
    ``position``: (inode, offset) of the prediction log scored up to, for a restart."""

    pid: int
    running: bool
    challenger_version: str | None
    challenger_record_id: str | None
    scored: int
    failed: int
    skipped_files: int
    lag_bytes: int
    last_error: str | None
    updated_at: str
    position: tuple[int, int] | None = None
    deferrals: int = 0  # checks that found the machine busy and waited
    # logged without raw inputs (serving.log_inputs hashed/none): cannot be re-scored
    unscorable: int = 0


class ShadowSidecar:
    """Follows the prediction log and scores it with the challenger. ``step()`` does one
    batch (tests call it directly); ``run()`` loops until ``stop`` is set."""

    def __init__(self, settings: ServingSettings, *, batch_bytes: int = READ_CHUNK_BYTES) -> None:
        self.settings = settings
        self.batch_bytes = batch_bytes
        ws = settings.workspace_paths
        self.out = settings.open_log(ws.shadow_log)  # same size/age/mode limits
        self.out.expire_locked()
        self.status_path = ws.shadow_status
        self.inputs = settings.input_policy()
        self.follower: LogFollower | None = None
        self.challenger: Champion | None = None
        self._marker: str | None = None
        previous = read_status(settings)
        self._resume_from = (
            (previous.get("challenger_record_id"), previous.get("position"))
            if previous
            else (None, None)
        )
        self.status = ShadowStatus(os.getpid(), True, None, None, 0, 0, 0, 0, None, _now())
        self.refresh()

    def refresh(self) -> None:
        """Re-resolve the challenger when the chain head changed (unpickled only when it is
        a different one). Follow the log from its end when a challenger appears; stop
        following when it is retired."""
        marker = head_marker(self.settings)
        if marker == self._marker:
            return
        self._marker = marker
        challenger, error = self.challenger, None
        try:
            resolved = resolve_challenger(self.settings)
            if resolved is None:
                challenger = None
            elif not resolved.same_model(challenger):
                challenger = load(self.settings, resolved)
                log.info(
                    "shadowing challenger %s v%s", challenger.model_name, challenger.model_version
                )
        except NotReady as exc:
            challenger, error = None, f"challenger not loaded: {exc}"
            log.warning(error)
        except Exception as exc:  # a broken artifact must not stop the sidecar
            challenger, error = None, f"{type(exc).__name__}: {exc}"
            log.exception("challenger load failed")
        self.challenger = challenger
        if challenger is None and self.follower is not None:
            self.follower.close()
            self.follower = None
        elif challenger is not None and self.follower is None:
            # after a restart, go on where the last sidecar stopped for the same challenger
            # (a last sidecar with no position found no log yet: all of it is new)
            record_id, position = self._resume_from
            self._resume_from = (None, None)
            same = record_id == challenger.record.record_id
            self.follower = LogFollower(
                self.settings.prediction_log,
                backups=self.settings.prediction_log_backups,
                from_end=not same or bool(position),
                resume=(int(position[0]), int(position[1])) if same and position else None,
            )
        self.status = replace(
            self.status,
            position=self.follower.position() if self.follower else None,
            challenger_version=challenger.model_version if challenger else None,
            challenger_record_id=challenger.record.record_id if challenger else None,
            last_error=error,
        )

    def step(self) -> int:
        """Score what is new in the log (one batch); returns customers scored."""
        self.refresh()
        challenger, follower = self.challenger, self.follower
        if challenger is None or follower is None:
            return 0
        champion_lines = []
        for raw in follower.read(self.batch_bytes):
            try:
                entry = json.loads(raw)
            except ValueError:
                log.warning("unreadable prediction-log line skipped")
                continue
            if entry.get("role", "champion") != "champion" or "inputs" not in entry:
                continue
            if entry.get("inputs_mode", "full") == "full":
                champion_lines.append(entry)
            else:
                self.status = replace(
                    self.status,
                    unscorable=self.status.unscorable + 1,
                    last_error=f"logged with serving.log_inputs={entry['inputs_mode']}: no "
                    "raw inputs to score the challenger on (shadow scoring needs full)",
                )
        n = self._score(challenger, champion_lines) if champion_lines else 0
        self.status = replace(
            self.status,
            skipped_files=follower.skipped_files,
            lag_bytes=follower.lag_bytes(),
            position=follower.position(),
        )
        return n

    def _score(self, challenger: Champion, lines: list[dict[str, Any]]) -> int:
        rows = [e["inputs"] for e in lines]
        try:
            s = score_customers(challenger, rows)
        except Exception as exc:  # a shadow failure must never affect serving
            log.exception("shadow scoring failed for %d customer(s)", len(rows))
            self.status = replace(
                self.status,
                failed=self.status.failed + len(rows),
                last_error=f"{type(exc).__name__}: {exc}",
            )
            return 0
        scored_at = _now()
        self.out.write(
            {
                "request_id": e.get("request_id"),
                "time": e.get("time"),
                "scored_at": scored_at,
                "role": "challenger",
                "model_version": challenger.model_version,
                "policy_id": challenger.policy_id,
                "inputs": self.inputs.apply(
                    e["inputs"], challenger.id_column, challenger.value_column
                ),
                "inputs_mode": self.inputs.mode,
                "probability": float(s.probability[i]),
                "action": "contact" if s.contact[i] else "no_contact",
                "tier": str(s.tier[i]),
                "champion_model_version": e.get("model_version"),
                # the champion policy's decision: a holdout customer's logged action is
                # no_contact whatever the policy said (serving/experiment.py)
                "champion_action": _policy_action(e),
            }
            for i, e in enumerate(lines)
        )
        self.status = replace(self.status, scored=self.status.scored + len(rows))
        return len(rows)

    def write_status(self, *, running: bool = True) -> None:
        self.status = replace(self.status, running=running, updated_at=_now())
        data = json.dumps(asdict(self.status), separators=(",", ":")).encode()
        atomic_write_bytes(self.status_path, data, durable=False)

    def run(self, stop: threading.Event, *, status_every_s: float = 2.0) -> None:
        """Loop until ``stop``: a batch whenever there are new lines and the machine is not
        busy serving (see ``LoadGate``), else a short sleep. The status (with the position)
        is written after every scored batch, so a restart re-scores nothing unless the
        process died between a batch and its status."""
        gate = LoadGate(self.settings.shadow_defer_busy_pct, self.settings.shadow_max_defer_s)
        last_status = 0.0
        while not stop.is_set():
            n = 0
            if gate.allow():
                try:
                    n = self.step()
                except Exception:  # keep shadowing alive whatever one batch did
                    log.exception("shadow step failed")
                if n == 0:
                    gate.caught_up()
            if n or time.monotonic() - last_status >= status_every_s:
                self.status = replace(self.status, deferrals=gate.deferrals)
                self.write_status()
                last_status = time.monotonic()
            if n == 0:
                stop.wait(self.settings.shadow_interval_s)
        self.write_status(running=False)
        if self.follower is not None:
            self.follower.close()


def read_status(settings: ServingSettings) -> dict[str, Any] | None:
    """The sidecar's last status, or None when no sidecar has run in this workspace."""
    try:
        status: dict[str, Any] = json.loads(settings.workspace_paths.shadow_status.read_text())
    except (FileNotFoundError, ValueError):
        return None
    return status


def lower_priority(priority: str) -> None:
    """``idle``: SCHED_IDLE (CPU only when nothing else wants it; falls back to nice 19);
    ``low``: nice 19; ``normal``: unchanged."""
    if priority == "idle" and hasattr(os, "sched_setscheduler"):
        try:
            os.sched_setscheduler(0, os.SCHED_IDLE, os.sched_param(0))
            return
        except OSError:
            pass
    if priority in ("idle", "low"):
        os.nice(19)


def run_sidecar(settings: ServingSettings, *, priority: str) -> None:
    """Process entry point: lower the priority, follow the log until SIGTERM/SIGINT."""
    from serving.fast_scorer import pin_threads

    pin_threads()
    lower_priority(priority)
    stop = threading.Event()

    def on_signal(signum: int, _frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    log.info("shadow sidecar following %s (priority %s)", settings.prediction_log, priority)
    ShadowSidecar(settings).run(stop)


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds")


def _policy_action(entry: dict[str, Any]) -> Any:
    """What the champion's policy decided for a logged line (``would_contact`` when the line
    has it, i.e. before the randomized holdout; else the logged action)."""
    would = entry.get("would_contact")
    if would is None:
        return entry.get("action")
    return "contact" if would else "no_contact"
