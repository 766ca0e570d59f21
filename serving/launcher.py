"""Run the service on N worker processes, each with its own SO_REUSEPORT listening socket.

uvicorn's own multi-worker mode shares one listening socket, and whichever worker is awake
accepts: a client that opens its keep-alive connections at once can land all of them on one
worker (seen here: 8 connections, 1 busy worker, p99 doubled). With one socket per worker and
SO_REUSEPORT the kernel spreads new connections across the workers by their address hash.
Beside the workers runs one shadow sidecar (``serving.shadow``) at idle CPU priority.
"""

from __future__ import annotations

import logging
import multiprocessing as mp
import signal
import socket
import sys
from types import FrameType

log = logging.getLogger(__name__)


def _listen(host: str, port: int) -> socket.socket:
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.bind((host, port))
    sock.listen(2048)
    sock.setblocking(False)
    return sock


def _worker(host: str, port: int, log_level: str) -> None:
    import uvicorn

    config = uvicorn.Config(
        "serving.main:app_from_env", factory=True, log_level=log_level, access_log=False
    )
    uvicorn.Server(config).run(sockets=[_listen(host, port)])


def _sidecar() -> None:
    from serving.main import sidecar_from_env

    sidecar_from_env()


def serve(
    host: str, port: int, workers: int, log_level: str = "info", *, shadow: bool = True
) -> None:
    """Serve until SIGINT/SIGTERM; each worker loads and verifies the champion itself.
    ``shadow``: also run the shadow sidecar process (see ``serving.shadow``)."""
    if workers <= 1 and not shadow:
        _worker(host, port, log_level)
        return
    ctx = mp.get_context("spawn")
    procs = [
        ctx.Process(target=_worker, args=(host, port, log_level), daemon=False)
        for _ in range(workers)
    ]
    if shadow:
        procs.append(ctx.Process(target=_sidecar, name="shadow-sidecar", daemon=False))
    for p in procs:
        p.start()
    log.info(
        "serving on http://%s:%d with %d workers (SO_REUSEPORT)%s",
        host,
        port,
        workers,
        " and the shadow sidecar" if shadow else "",
    )

    def stop(signum: int, _frame: FrameType | None) -> None:
        for p in procs:
            if p.is_alive():
                p.terminate()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    for p in procs:
        p.join()
    codes = [p.exitcode for p in procs]
    if any(c not in (0, -signal.SIGTERM) for c in codes):
        sys.exit(1)
