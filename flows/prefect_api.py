"""The embedded Prefect API server of a ``bayespilot`` command, started so that it dies with
the command.

Without ``PREFECT_API_URL`` Prefect starts its own ephemeral API server (``uvicorn
prefect.server.api.server:create_app``, ``SubprocessASGIServer``) and stops it from an
``atexit`` hook; a SIGKILL of the command skips that hook and leaves the server orphaned
(PPID 1). Here the CLI starts the very same server itself, on a free loopback port, with
``PR_SET_PDEATHSIG`` (Linux ``prctl``) set in the child: the kernel sends it SIGTERM when the
command dies, however it dies. ``PREFECT_API_URL`` then points Prefect at it. On other
systems the server is still stopped at a normal exit.
"""

from __future__ import annotations

import atexit
import ctypes
import importlib.util
import logging
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger(__name__)
PR_SET_PDEATHSIG = 1  # <linux/prctl.h>


class PrefectApiError(RuntimeError):
    """The embedded Prefect API server did not start; the message says why, in one line."""


def _die_with_parent(parent_pid: int) -> None:
    """``preexec_fn``: ask the kernel for SIGTERM when the parent dies (Linux), and exit at
    once if the parent is already gone (it may die between fork and prctl)."""
    if sys.platform.startswith("linux"):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)
    if os.getppid() != parent_pid:
        os._exit(1)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class PrefectApi:
    """A running embedded server: ``url`` is the value for ``PREFECT_API_URL``."""

    process: subprocess.Popen[bytes]
    url: str

    def stop(self, timeout_s: float = 10.0) -> None:
        """SIGTERM, then SIGKILL after ``timeout_s`` seconds."""
        if self.process.poll() is not None:
            return
        self.process.terminate()
        try:
            self.process.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


def _healthy(url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/health", timeout=2) as resp:
            return bool(resp.status == 200)
    except (urllib.error.URLError, OSError):
        return False


def start_prefect_api(timeout_s: float) -> PrefectApi:
    """Start Prefect's API server (the command Prefect's ephemeral mode runs, UI off) as a
    child that dies with this process; wait up to ``timeout_s`` seconds for ``/api/health``.
    Raises ``PrefectApiError`` (with the server's last stderr line) if it does not come up.
    The server inherits the environment: ``PREFECT_HOME`` or
    ``PREFECT_API_DATABASE_CONNECTION_URL`` say where its database is."""
    spec = importlib.util.find_spec("prefect")  # not imported: settings are read at import
    if spec is None or spec.origin is None:
        raise PrefectApiError("Prefect is not installed")
    port = _free_port()
    url = f"http://127.0.0.1:{port}/api"
    env = {
        **os.environ,
        "PREFECT_UI_ENABLED": "0",
        "PREFECT__SERVER_EPHEMERAL": "1",
        "PREFECT__SERVER_FINAL": "1",
    }
    env.pop("PREFECT_API_URL", None)
    stderr = tempfile.TemporaryFile()  # noqa: SIM115 (written by the server for its life)
    parent = os.getpid()
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "uvicorn",
            "--app-dir",
            str(Path(spec.origin).resolve().parent.parent),  # as Prefect does
            "--factory",
            "prefect.server.api.server:create_app",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--log-level",
            "error",
            "--lifespan",
            "on",
        ],
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=stderr,
        preexec_fn=lambda: _die_with_parent(parent),  # noqa: PLW0108
    )
    api = PrefectApi(process, url)
    atexit.register(api.stop)
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            break
        if _healthy(url):
            log.debug("Prefect API server (pid %d) up at %s", process.pid, url)
            return api
        time.sleep(0.2)
    exited = process.poll()
    api.stop()
    stderr.seek(0)
    lines = [ln for ln in stderr.read().decode(errors="replace").splitlines() if ln.strip()]
    stderr.close()
    why = f"exited with code {exited}" if exited is not None else f"no answer in {timeout_s:g} s"
    last = f"; last output: {lines[-1].strip()}" if lines else ""
    raise PrefectApiError(
        f"the embedded Prefect API server did not start ({why}; raise "
        f"backends.prefect_startup_timeout_s on a busy machine, or set PREFECT_API_URL to a "
        f"running server){last}"
    )


def ensure_prefect_api(timeout_s: float) -> PrefectApi | None:
    """Start the embedded server and set ``PREFECT_API_URL``, unless Prefect already has an
    API (``PREFECT_API_URL`` in the environment) or is already imported (it read its settings
    at import, e.g. under a test harness: it keeps managing its own API). Returns the server
    it started, or None."""
    if os.environ.get("PREFECT_API_URL") or "prefect" in sys.modules:
        return None
    api = start_prefect_api(timeout_s)
    os.environ["PREFECT_API_URL"] = api.url
    return api
