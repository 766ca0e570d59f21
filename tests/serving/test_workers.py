"""`bayespilot serve` with 2 real workers on 127.0.0.1: they follow a rollback and a forced
reload together, a killed worker is restarted, /metrics aggregates the workers, and a process
crashing in a loop makes the supervisor give up. Timeouts are generous: the speed of the
switch is measured by benchmarks/bench_reload.py, not asserted here."""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from serving.launcher import CrashLoop, Supervision, Supervisor, _Slot

from ..conftest import free_port
from .conftest import customer, start_serve

TOKEN = "w0rkers"
WAIT_S = 300.0  # generous: a worker starts in ~2 min on a busy 2-core machine


@dataclass(frozen=True)
class Served:
    """What one /v1/score response names (from its headers)."""

    model: str  # "<name>@v<version>;record=<id12>"
    worker: str
    pid: int
    generation: int

    @property
    def version(self) -> str:
        return self.model.split("@v", 1)[1].split(";", 1)[0]


def served_by(resp: httpx.Response) -> Served:
    worker, pid, gen = resp.headers["x-bayespilot-worker"].split(";")
    return Served(
        resp.headers["x-bayespilot-model"],
        worker,
        int(pid.removeprefix("pid=")),
        int(gen.removeprefix("generation=")),
    )


@dataclass
class Server:
    base: str
    proc: subprocess.Popen[bytes]

    def score(self) -> Served:
        """One request on a new connection (SO_REUSEPORT spreads those over the workers);
        a connection refused or reset by a worker that just died is retried."""
        deadline = time.time() + WAIT_S
        while True:
            try:
                r = httpx.post(f"{self.base}/v1/score", json=customer(), timeout=10)
            except httpx.TransportError:
                if time.time() > deadline:
                    raise
                time.sleep(0.1)
                continue
            assert r.status_code == 200, r.text
            return served_by(r)

    def until_every_worker(self, want: Callable[[Served], bool], workers: int = 2) -> int:
        """Score until each worker slot has answered with a response ``want`` accepts;
        returns how many requests were sent."""
        seen: set[str] = set()
        sent, deadline = 0, time.time() + WAIT_S
        while len(seen) < workers:
            assert time.time() < deadline, f"only workers {seen} satisfied within {WAIT_S} s"
            assert self.proc.poll() is None, "the launcher exited"
            s = self.score()
            sent += 1
            if want(s):
                seen.add(s.worker)
        return sent

    def admin(self, path: str, **body: str) -> httpx.Response:
        return httpx.post(
            f"{self.base}{path}",
            json=body or None,
            headers={"authorization": f"Bearer {TOKEN}"},
            timeout=60,
        )


@pytest.fixture(scope="module")
def server(promoted_workspace: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    root = tmp_path_factory.mktemp("workers")
    ws = root / "ws"
    shutil.copytree(promoted_workspace, ws)
    cfg = root / "c.yaml"
    cfg.write_text(
        f"paths: {{workspace: {ws}}}\n"
        "serving: {reload_interval_s: 5.0, watch_interval_s: 0.2, restart_backoff_s: 0.2}\n"
    )
    port = free_port()
    env = {**os.environ, "BAYESPILOT_ADMIN_TOKEN": TOKEN}
    proc = start_serve(cfg, port, "--workers", "2", env=env)
    srv = Server(f"http://127.0.0.1:{port}", proc)
    try:
        deadline = time.time() + WAIT_S
        while True:
            try:
                if httpx.get(f"{srv.base}/readyz", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert proc.poll() is None, proc.stdout.read().decode()  # type: ignore[union-attr]
            assert time.time() < deadline, "service not ready"
            time.sleep(0.3)
        srv.until_every_worker(lambda s: s.version == "2")
        yield srv
    finally:
        proc.terminate()
        out = proc.communicate(timeout=30)[0].decode()
        print(out)  # shown by pytest when a test fails
    assert proc.returncode == 0
    metrics_dir = re.search(r"metrics of every worker in (\S+)", out)
    assert metrics_dir and not Path(metrics_dir[1]).exists()  # removed at the end


def _sample_sum(text: str, name: str, **labels: str) -> tuple[float, set[str]]:
    """Sum of a metric's samples matching ``labels`` and the worker labels seen."""
    total, workers = 0.0, set()
    for line in text.splitlines():
        m = re.match(rf"{name}(?:\{{(.*)\}})? (\S+)$", line)
        if not m:
            continue
        got = dict(re.findall(r'(\w+)="([^"]*)"', m[1] or ""))
        if all(got.get(k) == v for k, v in labels.items()):
            total += float(m[2])
            workers.add(got.get("worker", ""))
    return total, workers


def _scrape(srv: Server) -> str:
    r = httpx.get(f"{srv.base}/metrics", timeout=10)
    assert r.status_code == 200
    return r.text


@pytest.mark.server
def test_metrics_aggregate_every_worker_with_worker_label(server: Server) -> None:
    score = {"name": "bayespilot_requests_total", "route": "/v1/score", "status": "200"}
    before, _ = _sample_sum(_scrape(server), **score)
    sent = server.until_every_worker(lambda s: True) + 10
    for _ in range(10):
        server.score()
    scrapes = [_scrape(server) for _ in range(4)]  # new connections: both workers answer
    totals = [_sample_sum(text, **score) for text in scrapes]
    for total, workers in totals:
        assert total - before == sent
        assert workers == {"0", "1"}
    ready, _ = _sample_sum(scrapes[0], "bayespilot_workers_ready")
    info = [line for line in scrapes[0].splitlines() if line.startswith("bayespilot_model_info{")]
    assert ready == 2
    assert {re.search(r'worker="(\d)"', line)[1] for line in info if line.endswith(" 1.0")} == {  # type: ignore[index]
        "0",
        "1",
    }


@pytest.mark.server
def test_rollback_and_reload_reach_every_worker(server: Server) -> None:
    r = server.admin("/v1/admin/rollback", reason="worker test", requested_by="pytest")
    assert r.status_code == 200, r.text
    assert r.json()["model_version"] == "1"
    server.until_every_worker(lambda s: s.version == "1")

    r = server.admin("/v1/admin/reload")
    assert r.status_code == 200, r.text
    generation = r.json()["generation"]
    assert generation >= 1
    server.until_every_worker(lambda s: s.generation >= generation and s.version == "1")


@pytest.mark.server
def test_killed_worker_is_restarted_and_scoring_continues(server: Server) -> None:
    first = server.score()
    os.kill(first.pid, signal.SIGKILL)
    # the other worker keeps answering; the killed slot comes back under a new pid
    server.until_every_worker(lambda s: s.worker != first.worker or s.pid != first.pid, workers=2)
    pids = {server.score().pid for _ in range(20)}
    assert first.pid not in pids


@pytest.mark.server
def test_supervisor_gives_up_on_a_crash_loop(tmp_path: Path) -> None:
    slot = _Slot("worker 0", sys.exit, (3,))
    policy = Supervision(
        restart_backoff_s=0.05, restart_backoff_max_s=0.1, crash_loop_restarts=2, crash_window_s=60
    )
    with pytest.raises(CrashLoop, match=r"worker 0 exited 3 times within 60 s .*exit code 3"):
        Supervisor([slot], policy, str(tmp_path)).run()
