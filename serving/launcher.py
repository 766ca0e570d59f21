"""Run the service on N supervised worker processes, each with its own SO_REUSEPORT socket.

Sockets: uvicorn's own multi-worker mode shares one listening socket, and whichever worker is
awake accepts: a client that opens its keep-alive connections at once can land all of them on
one worker (seen here: 8 connections, 1 busy worker, p99 doubled). With one socket per worker
and SO_REUSEPORT the kernel spreads new connections across the workers by their address hash.
Nothing else runs beside them: a registered challenger is scored in batch on the stored
decisions, off the request path (``serving.challenger_scoring``).

Supervision: a worker that exits while the service runs is restarted in the
same slot after ``restart_backoff_s``, doubled for each further crash within
``crash_window_s`` (up to ``restart_backoff_max_s``), with a log line naming the slot, pid and
exit code. A slot that crashes more than ``crash_loop_restarts`` times within
``crash_window_s`` is a crash loop: every process is stopped and ``serve`` exits 1 with the
reason. All workers follow the chain together through shared files (see ``serving.deps``).

Metrics: a fresh ``PROMETHEUS_MULTIPROC_DIR`` (temp dir) is made per serve before any process
starts and removed at the end; a dead process's live gauges are dropped
(``mark_process_dead``) before its slot restarts (see ``serving.metrics``).

Why not gunicorn (26.2, the version in the lock) with uvicorn workers: its ``reuse_port``
does keep per-worker sockets (with it the master binds nothing and each worker creates its own
SO_REUSEPORT socket after the fork, ``Arbiter.spawn_worker``), so the spreading would fit. It
does not fit the rest: it respawns a crashed worker at once, with no backoff and no crash-loop
limit (only a worker failing to boot halts it); and uvicorn's ``UvicornWorker`` is deprecated
in favour of a separate ``uvicorn-worker`` package (one more dependency). The supervisor below
is small, and the tests kill workers to check it (tests/serving/test_workers.py).
"""

from __future__ import annotations

import logging
import multiprocessing as mp
import os
import shutil
import signal
import socket
import sys
import tempfile
import time
from collections import deque
from dataclasses import dataclass, field
from multiprocessing.connection import wait
from multiprocessing.process import BaseProcess
from types import FrameType
from typing import Any

log = logging.getLogger(__name__)
POLL_S = 0.5  # longest wait between supervision passes (seconds); exits wake it at once


def _bind(host: str, port: int) -> socket.socket:
    """This worker's SO_REUSEPORT socket, bound but not listening: uvicorn (asyncio's
    ``create_server``) listens only after the app's start-up has loaded the champion, so a
    (re)starting worker joins the kernel's spreading only when it can answer; until then new
    connections go to the other workers instead of waiting in its queue."""
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.bind((host, port))
    sock.setblocking(False)
    return sock


def _worker(slot: int, host: str, port: int, log_level: str) -> None:
    from serving.metrics import WORKER_ENV

    os.environ[WORKER_ENV] = str(slot)
    import uvicorn

    config = uvicorn.Config(
        "serving.main:app_from_env", factory=True, log_level=log_level, access_log=False
    )
    uvicorn.Server(config).run(sockets=[_bind(host, port)])


@dataclass(frozen=True)
class Supervision:
    """Restart policy (seconds, counts); see ``ServingConfig`` for each field."""

    restart_backoff_s: float = 0.5
    restart_backoff_max_s: float = 10.0
    crash_loop_restarts: int = 5
    crash_window_s: float = 60.0

    @classmethod
    def from_env(cls) -> Supervision:
        """From the config `bayespilot serve` passed in the environment."""
        from serving.main import config_from_env

        s = config_from_env().serving
        return cls(
            s.restart_backoff_s, s.restart_backoff_max_s, s.crash_loop_restarts, s.crash_window_s
        )


class CrashLoop(RuntimeError):
    """A supervised process kept crashing; the message names it."""


@dataclass
class _Slot:
    name: str
    target: Any
    args: tuple[Any, ...]
    proc: BaseProcess | None = None
    crashes: deque[float] = field(default_factory=deque)  # monotonic times within the window
    restart_at: float | None = None


class Supervisor:
    """Starts the slots' processes, restarts those that exit, stops them all on request."""

    def __init__(self, slots: list[_Slot], policy: Supervision, metrics_dir: str) -> None:
        self.slots = slots
        self.policy = policy
        self.metrics_dir = metrics_dir
        self.ctx = mp.get_context("spawn")
        self.stopping = False

    def _start(self, slot: _Slot) -> None:
        slot.proc = self.ctx.Process(
            target=slot.target, args=slot.args, name=slot.name, daemon=False
        )
        slot.proc.start()
        slot.restart_at = None

    def _exited(self, slot: _Slot, now: float) -> None:
        from prometheus_client.multiprocess import mark_process_dead

        proc = slot.proc
        assert proc is not None and proc.pid is not None
        proc.join()
        mark_process_dead(proc.pid, self.metrics_dir)
        slot.proc = None
        if self.stopping:
            return
        p = self.policy
        while slot.crashes and now - slot.crashes[0] > p.crash_window_s:
            slot.crashes.popleft()
        slot.crashes.append(now)
        if len(slot.crashes) > p.crash_loop_restarts:
            raise CrashLoop(
                f"{slot.name} exited {len(slot.crashes)} times within {p.crash_window_s:g} s "
                f"(last: pid {proc.pid}, exit code {proc.exitcode}); giving up"
            )
        delay = min(p.restart_backoff_s * 2 ** (len(slot.crashes) - 1), p.restart_backoff_max_s)
        slot.restart_at = now + delay
        log.warning(
            "%s (pid %d) exited with code %s; restarting in %.1f s (%d crash(es) in the last %g s)",
            slot.name,
            proc.pid,
            proc.exitcode,
            delay,
            len(slot.crashes),
            p.crash_window_s,
        )

    def run(self) -> None:
        """Supervise until ``stop()``; raises ``CrashLoop`` (after stopping everything)."""
        for slot in self.slots:
            self._start(slot)
        try:
            while not self.stopping:
                now = time.monotonic()
                due = [s.restart_at for s in self.slots if s.restart_at is not None]
                timeout = min([POLL_S, *(max(0.0, t - now) for t in due)])
                running = {s.proc.sentinel: s for s in self.slots if s.proc is not None}
                ready = wait(list(running), timeout)
                now = time.monotonic()
                for sentinel in ready:
                    self._exited(running[sentinel], now)  # type: ignore[index]
                for slot in self.slots:
                    if not self.stopping and slot.restart_at is not None and now >= slot.restart_at:
                        self._start(slot)
                        log.info("%s restarted (pid %s)", slot.name, slot.proc and slot.proc.pid)
        finally:
            self.stopping = True
            self._terminate_all()

    def stop(self) -> None:
        self.stopping = True

    def _terminate_all(self, grace_s: float = 20.0) -> None:
        live = [s.proc for s in self.slots if s.proc is not None]
        for p in live:
            if p.is_alive():
                p.terminate()
        deadline = time.monotonic() + grace_s
        for p in live:
            p.join(max(0.0, deadline - time.monotonic()))
            if p.is_alive():
                log.warning(
                    "%s (pid %s) ignored SIGTERM for %g s; killing it", p.name, p.pid, grace_s
                )
                p.kill()
                p.join()


def serve(
    host: str,
    port: int,
    workers: int,
    log_level: str = "info",
    *,
    supervision: Supervision | None = None,
) -> None:
    """Serve until SIGINT/SIGTERM; each worker loads and verifies the champion itself.
    ``supervision``: restart policy (None: from the config in the environment). Exits 1 on a
    crash loop."""
    from serving.metrics import MULTIPROC_ENV

    policy = supervision or Supervision.from_env()
    metrics_dir = tempfile.mkdtemp(prefix="bayespilot-metrics-")
    os.environ[MULTIPROC_ENV] = metrics_dir  # inherited by every process started below
    slots = [
        _Slot(f"worker {i}", _worker, (i, host, port, log_level)) for i in range(max(workers, 1))
    ]
    supervisor = Supervisor(slots, policy, metrics_dir)

    def stop(signum: int, _frame: FrameType | None) -> None:
        supervisor.stop()

    previous = {sig: signal.signal(sig, stop) for sig in (signal.SIGTERM, signal.SIGINT)}
    log.info(
        "serving on http://%s:%d with %d supervised workers (SO_REUSEPORT); metrics of "
        "every worker in %s",
        host,
        port,
        len(slots),
        metrics_dir,
    )
    try:
        supervisor.run()
    except CrashLoop as exc:
        log.error("stopping the service: %s", exc)
        sys.exit(1)
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        shutil.rmtree(metrics_dir, ignore_errors=True)
        os.environ.pop(MULTIPROC_ENV, None)
