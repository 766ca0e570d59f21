"""Against a real Prefect server: deploy from prefect.yaml, a process worker, and
`prefect deployment run` (all on 127.0.0.1, temp PREFECT_HOME, everything stopped at the end)."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import yaml

from configs.paths import REPO_ROOT
from tasks.gates import GATE_IDS
from tasks.records import RecordStore

from ..conftest import small_layers

pytestmark = [pytest.mark.server, pytest.mark.slow]
PREFECT = str(Path(sys.executable).with_name("prefect"))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _start(cmd: list[str], env: dict[str, str], log: Path, cwd: Path) -> subprocess.Popen:
    return subprocess.Popen(
        cmd,
        env=env,
        cwd=cwd,
        stdout=open(log, "w"),  # noqa: SIM115
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )


def _stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(5)


@pytest.fixture
def prefect_server(tmp_path: Path) -> Iterator[dict[str, str]]:
    port = _free_port()
    env = {
        **os.environ,
        "PREFECT_HOME": str(tmp_path / "prefect-home"),
        "PREFECT_API_URL": f"http://127.0.0.1:{port}/api",
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "BAYESPILOT_REPO": str(REPO_ROOT),
        "PREFECT_LOGGING_TO_API_WHEN_MISSING_FLOW": "ignore",
    }
    server = _start(
        [PREFECT, "server", "start", "--host", "127.0.0.1", "--port", str(port)],
        env,
        tmp_path / "server.log",
        tmp_path,
    )
    try:
        deadline = time.time() + 90
        while time.time() < deadline:
            try:
                if httpx.get(f"http://127.0.0.1:{port}/api/health", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert server.poll() is None, (tmp_path / "server.log").read_text()[-2000:]
            time.sleep(0.5)
        else:
            pytest.fail("prefect server did not become healthy")
        yield env
    finally:
        _stop(server)


def _run(cmd: list[str], env: dict[str, str], cwd: Path, timeout: float = 120) -> str:
    proc = subprocess.run(cmd, env=env, cwd=cwd, capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc.stdout


def test_deployment_run_on_real_server(prefect_server: dict[str, str], tmp_path: Path) -> None:
    env = prefect_server
    ws = tmp_path / "ws"
    config = tmp_path / "config.yaml"
    config.write_text(yaml.safe_dump(small_layers(ws, rows=8000)))
    _run([PREFECT, "work-pool", "create", "local", "--type", "process"], env, REPO_ROOT)
    _run([PREFECT, "--no-prompt", "deploy", "--all"], env, REPO_ROOT)
    worker = _start(
        [PREFECT, "worker", "start", "--pool", "local"], env, tmp_path / "worker.log", tmp_path
    )
    try:
        _run(
            [
                PREFECT,
                "deployment",
                "run",
                "churn-promotion/adhoc",
                "--param",
                f"config_path={config}",
                "--watch",
                "--watch-timeout",
                "400",
            ],
            env,
            tmp_path,
            timeout=420,
        )
    finally:
        _stop(worker)

    head = RecordStore(ws / "promotions").head()
    assert head is not None and head["decision"] in ("promoted", "rejected")
    flow_run_id = head["flow_run_id"]
    assert flow_run_id

    async def inspect() -> tuple[str, set[str], str]:
        from prefect.client.orchestration import PrefectClient
        from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId

        async with PrefectClient(api=env["PREFECT_API_URL"]) as client:
            run = await client.read_flow_run(flow_run_id)
            arts = await client.read_artifacts(
                artifact_filter=ArtifactFilter(flow_run_id=ArtifactFilterFlowRunId(any_=[run.id]))
            )
            deployment = await client.read_deployment(run.deployment_id)  # type: ignore[arg-type]
            return (
                str(run.state_type.value if run.state_type else ""),
                {a.key for a in arts if a.key},
                deployment.name,
            )

    state, keys, deployment_name = asyncio.run(inspect())
    assert state == "COMPLETED"
    assert deployment_name == "adhoc"
    assert {f"gate-{g}" for g in GATE_IDS} | {"promotion-decision"} <= keys
