"""Against a real Prefect server: deploy from prefect.yaml, a process worker, and
`prefect deployment run` (all on 127.0.0.1, temp PREFECT_HOME, everything stopped at the end);
a monitoring alert starting the promotion deployment through `run_deployment`."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

import httpx
import pytest
import yaml

from configs.paths import REPO_ROOT
from tasks.gates import GATE_IDS
from tasks.records import RecordStore

from ..conftest import free_port, small_layers
from ..traffic import decayed_outcomes, serve_day, shifted_day

if TYPE_CHECKING:
    from prefect.client.orchestration import PrefectClient
    from prefect.client.schemas.objects import FlowRun

pytestmark = [pytest.mark.server, pytest.mark.slow]
PREFECT = str(Path(sys.executable).with_name("prefect"))


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
    port = free_port()
    env = {
        **os.environ,
        "PREFECT_HOME": str(tmp_path / "prefect-home"),
        "PREFECT_API_URL": f"http://127.0.0.1:{port}/api",
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        # no cron runs of nightly/daily (default config, repo workspace) during a test
        "PREFECT_SERVER_SERVICES_SCHEDULER_ENABLED": "false",
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


@contextmanager
def _deployed_worker(env: dict[str, str], tmp_path: Path) -> Iterator[None]:
    """The `local` process pool, every deployment of prefect.yaml, and a worker (stopped on
    exit; it polls every 2 s instead of 10 s)."""
    _run([PREFECT, "work-pool", "create", "local", "--type", "process"], env, REPO_ROOT)
    _run([PREFECT, "--no-prompt", "deploy", "--all"], env, REPO_ROOT)
    worker = _start(
        [PREFECT, "worker", "start", "--pool", "local"],
        {**env, "PREFECT_WORKER_QUERY_SECONDS": "2"},
        tmp_path / "worker.log",
        tmp_path,
    )
    try:
        yield
    finally:
        _stop(worker)


def _run_deployment(env: dict[str, str], name: str, config: Path, cwd: Path) -> str:
    """`prefect deployment run NAME --param config_path=CONFIG --watch` (fails unless the run
    completes)."""
    cmd = [PREFECT, "deployment", "run", name, "--param", f"config_path={config}"]
    return _run([*cmd, "--watch", "--watch-timeout", "400"], env, cwd, timeout=420)


def _client(env: dict[str, str]) -> PrefectClient:
    from prefect.client.orchestration import PrefectClient

    return PrefectClient(api=env["PREFECT_API_URL"])


def test_deployment_run_on_real_server(prefect_server: dict[str, str], tmp_path: Path) -> None:
    env = prefect_server
    ws = tmp_path / "ws"
    config = tmp_path / "config.yaml"
    config.write_text(yaml.safe_dump(small_layers(ws, rows=8000)))
    with _deployed_worker(env, tmp_path):
        _run_deployment(env, "churn-promotion/adhoc", config, tmp_path)

    head = RecordStore(ws / "promotions").head()
    assert head is not None and head["decision"] in ("promoted", "rejected")
    flow_run_id = head["flow_run_id"]
    assert flow_run_id

    async def inspect() -> tuple[str, set[str], str]:
        from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId

        async with _client(env) as client:
            run = await client.read_flow_run(flow_run_id)
            arts = await client.read_artifacts(
                artifact_filter=ArtifactFilter(flow_run_id=ArtifactFilterFlowRunId(any_=[run.id]))
            )
            assert run.deployment_id is not None
            deployment = await client.read_deployment(run.deployment_id)
            # deployed from the checkout with no extra environment: Prefect recorded it
            pull = [step for step in deployment.pull_steps or [] if step]
            assert pull == [
                {
                    "prefect.deployments.steps.set_working_directory": {
                        "directory": str(REPO_ROOT.resolve())
                    }
                }
            ], pull
            return (
                str(run.state_type.value if run.state_type else ""),
                {a.key for a in arts if a.key},
                deployment.name,
            )

    state, keys, deployment_name = asyncio.run(inspect())
    assert state == "COMPLETED"
    assert deployment_name == "adhoc"
    assert {f"gate-{g}" for g in GATE_IDS} | {"promotion-decision"} <= keys


def _wait_for_child_runs(
    env: dict[str, str], parent_flow_run_id: str, timeout: float
) -> list[tuple[FlowRun, str]]:
    """The flow runs started from inside ``parent_flow_run_id`` (run_deployment links them as
    subflows), once every one is final; with each run's deployment name."""
    from uuid import UUID

    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterParentFlowRunId

    flow_run_filter = FlowRunFilter(
        parent_flow_run_id=FlowRunFilterParentFlowRunId(any_=[UUID(parent_flow_run_id)])
    )

    async def poll() -> list[tuple[FlowRun, str]]:
        async with _client(env) as client:
            deadline = time.monotonic() + timeout
            while True:
                runs = await client.read_flow_runs(flow_run_filter=flow_run_filter)
                if runs and all(r.state is not None and r.state.is_final() for r in runs):
                    out = []
                    for r in runs:
                        assert r.deployment_id is not None, f"{r.id} has no deployment"
                        out.append((r, (await client.read_deployment(r.deployment_id)).name))
                    return out
                if time.monotonic() > deadline:
                    states = [(str(r.id), r.state_name) for r in runs]
                    pytest.fail(f"runs started by {parent_flow_run_id} not final: {states}")
                await asyncio.sleep(2)

    return asyncio.run(poll())


def test_monitoring_deployment_alert_starts_promotion_deployment(
    prefect_server: dict[str, str], tmp_path: Path
) -> None:
    from flows.cli import main

    env = prefect_server
    ws = tmp_path / "ws"
    layers = small_layers(ws, rows=8000, monitoring={"retrain": "deployment", "min_rows": 200})
    config = tmp_path / "config.yaml"
    config.write_text(yaml.safe_dump(layers))
    store = RecordStore(ws / "promotions")
    with _deployed_worker(env, tmp_path):
        _run_deployment(env, "churn-promotion/adhoc", config, tmp_path)
        first = store.head()
        assert first is not None and first["decision"] == "promoted"

        day = shifted_day(600, seed=555)
        serve_day(layers, day)  # the champion scores a shifted day into the prediction log
        labels = tmp_path / "outcomes.csv"
        decayed_outcomes(day).to_csv(labels, index=False)
        assert main(["outcomes", "--config", str(config), "--input", str(labels)]) == 0

        _run_deployment(env, "churn-monitoring/daily", config, tmp_path)
        monitoring = store.head()
        assert monitoring is not None and monitoring["kind"] == "monitoring"
        assert monitoring["decision"] == "alert" and monitoring["retrain"] == "deployment"
        assert monitoring["flow_run_id"]
        # the worker stays up until the promotion run that monitoring started is final
        children = _wait_for_child_runs(env, monitoring["flow_run_id"], timeout=400)

    assert len(children) == 1
    run, deployment_name = children[0]
    assert deployment_name == "adhoc"
    assert run.state_type is not None and run.state_type.value == "COMPLETED"
    # the frozen config reached the run (the deployment's default config_path would write
    # elsewhere), and so did the trigger
    assert run.parameters["config_json"]["paths"]["workspace"] == str(ws)

    records = store.records()
    assert len(records) == 3  # the champion's run, monitoring, the retrain it started
    assert [r["record_id"] for r in records[:2]] == [first["record_id"], monitoring["record_id"]]
    retrain = records[-1]
    assert retrain["kind"] == "promotion" and retrain["flow_run_id"] == str(run.id)
    assert retrain["trigger"] == run.parameters["trigger"]
    assert retrain["trigger"]["monitoring_record"] == monitoring["record_id"]
    reason = retrain["trigger"]["reason"]
    assert "drift in monthly_charges_usd" in reason and "drift in tenure_months" in reason
    assert reason == "; ".join(monitoring["reasons"][:5])
    assert store.verify().ok
