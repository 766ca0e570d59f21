"""A shadow challenger: registered beside the champion, scored by the sidecar from the
prediction log, logged, and compared by the monitoring flow; the log follower underneath."""

from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient

from configs.settings import build_config
from flows.monitoring import run_monitoring
from flows.promotion import run_direct
from serving.main import create_app
from serving.predlog import PredictionLog
from serving.settings import ServingSettings
from serving.shadow import LoadGate, LogFollower, ShadowSidecar, read_status
from tasks.records import RecordStore

from ..conftest import free_port, small_layers
from .conftest import customer, start_serve


def _layers(ws: Path, **extra: Any) -> dict[str, Any]:
    return small_layers(ws, monitoring={"min_rows": 10}, **extra)


def _lines(path: Path) -> list[dict]:
    return [json.loads(x) for x in path.read_text().splitlines()] if path.exists() else []


@pytest.fixture(scope="module")
def shadowed_workspace(tmp_path_factory) -> Path:
    """Champion v1, then v2 registered as challenger (a sidecar started in between saw no
    challenger and read nothing)."""
    ws = tmp_path_factory.mktemp("shadowed") / "ws"
    assert run_direct(build_config(_layers(ws))).outcome.decision == "promoted"
    return ws


@pytest.mark.slow
def test_shadow_sidecar_scores_logs_and_feeds_monitoring(
    shadowed_workspace: Path, tmp_path: Path
) -> None:
    from mlflow import MlflowClient

    ws = tmp_path / "ws"
    shutil.copytree(shadowed_workspace, ws)
    layers = _layers(ws)
    settings = ServingSettings.from_config(build_config(layers), environ={})
    idle = ShadowSidecar(settings)  # no challenger yet: follows nothing, scores nothing
    assert idle.challenger is None and idle.follower is None
    with TestClient(create_app(settings, follow=False)) as c:
        assert c.post("/v1/score", json=customer(customer_id="BEFORE")).status_code == 200
    assert idle.step() == 0

    out = run_direct(
        build_config(_layers(ws, promotion={"register_as": "challenger"}, candidates={"seed": 8}))
    ).outcome
    assert out.decision == "challenger", out.reasons
    head = RecordStore(ws / "promotions").head()
    assert head is not None and head["champion"]["model_version"] == "1"
    assert head["challenger"]["model_version"] == "2"
    client = MlflowClient(tracking_uri=f"sqlite:///{ws / 'mlflow.db'}")
    assert str(client.get_model_version_by_alias("churn-risk", "champion").version) == "1"
    assert str(client.get_model_version_by_alias("churn-risk", "challenger").version) == "2"
    assert idle.step() == 0  # notices the challenger; follows the log from its end on
    assert idle.challenger is not None and idle.challenger.model_version == "2"

    rows = [
        customer(customer_id=f"S{i}", tenure_months=i, monthly_charges_usd=40.0 + i)
        for i in range(40)
    ]
    with TestClient(create_app(settings, follow=False)) as c:
        r = c.post("/v1/score", json={"customers": rows}, headers={"x-request-id": "req-7"})
        assert r.status_code == 200
        assert {x["model_version"] for x in r.json()["results"]} == {"1"}
        # the request path wrote only the champion's lines
        assert not settings.workspace_paths.shadow_log.exists()
        assert idle.step() == 40  # the request before the challenger is not scored
        assert idle.step() == 0
        idle.write_status()
        shadow_status = c.get("/readyz").json()["shadow"]
    assert shadow_status["challenger_version"] == "2" and shadow_status["scored"] == 40
    champion_lines = _lines(settings.prediction_log)
    assert all(x.get("role", "champion") == "champion" for x in champion_lines)
    shadow = _lines(settings.workspace_paths.shadow_log)
    assert [x["inputs"]["customer_id"] for x in shadow] == [f"S{i}" for i in range(40)]
    assert {x["model_version"] for x in shadow} == {"2"}
    assert {x["request_id"] for x in shadow} == {"req-7"}
    by_id = {x["inputs"]["customer_id"]: x for x in champion_lines}
    for x in shadow:  # keyed to the champion's line: same time, the champion's action
        champ = by_id[x["inputs"]["customer_id"]]
        assert x["time"] == champ["time"] and x["champion_action"] == champ["action"]
        assert x["action"] in ("contact", "no_contact") and 0.0 < x["probability"] < 1.0

    # a restarted sidecar goes on from the position in the status the last one wrote
    with TestClient(create_app(settings, follow=False)) as c:
        more = [customer(customer_id=f"S{i}") for i in range(40, 43)]
        assert c.post("/v1/score", json={"customers": more}).status_code == 200
    restarted = ShadowSidecar(settings)
    assert restarted.step() == 3 and restarted.step() == 0
    restarted.write_status(running=False)
    stopped_early = ShadowSidecar(settings)  # stops before it scores anything...
    stopped_early.write_status(running=False)
    with TestClient(create_app(settings, follow=False)) as c:
        more = [customer(customer_id=f"S{i}") for i in range(43, 45)]
        assert c.post("/v1/score", json={"customers": more}).status_code == 200
    assert ShadowSidecar(settings).step() == 2  # ...and loses nothing logged meanwhile
    assert [x["inputs"]["customer_id"] for x in _lines(settings.workspace_paths.shadow_log)][
        -4:
    ] == ["S41", "S42", "S43", "S44"]

    result = run_monitoring(build_config(layers), use_prefect=False)
    comparison = result.record["monitoring"]["challenger"]
    assert comparison["shadow_predictions"] == 45
    assert 0.0 <= comparison["action_flip_rate"] <= 1.0
    idle.step()  # a monitoring head names the same challenger: no reload
    assert idle.challenger is not None and idle.challenger.model_version == "2"

    # outcomes for the shadowed customers, then promotion on the shadow evidence
    import pandas as pd

    from configs.paths import Workspace
    from flows.challenger import promote_challenger
    from flows.monitoring import ingest_outcomes

    labels = pd.DataFrame(
        {
            "customer_id": [f"S{i}" for i in range(45)],
            "churned": ["yes" if i % 3 == 0 else "no" for i in range(45)],
            "observed_at": "2026-12-01T00:00:00Z",
        }
    )
    ingest_outcomes(labels, ws=Workspace(ws), config=build_config(layers))
    again = run_monitoring(build_config(layers), use_prefect=False)
    comp = again.record["monitoring"]["challenger"]
    assert comp["labelled"] == 45 and len(comp["profit_difference_interval"]) == 2
    record = promote_challenger(build_config(layers))
    gate = next(g for g in record["gates"] if g["gate"] == "champion")
    assert gate["metric"] == "shadow profit difference (USD/customer)"
    share = build_config(layers).gates.champion.profit_margin_share
    stake = next(
        g["evidence"]["profit_at_stake_per_customer_usd"]
        for g in record["gates"]
        if g["gate"] == "baseline"
    )
    margin = share * stake
    expect = comp["profit_difference_interval"][0] > -margin
    assert record["decision"] == ("promoted" if expect else "rejected")
    if expect:
        assert record["champion"]["model_version"] == "2"
        assert str(client.get_model_version_by_alias("churn-risk", "champion").version) == "2"
        idle.step()  # the challenger became champion: nothing left to shadow
        assert idle.challenger is None and idle.follower is None
    assert RecordStore(ws / "promotions").verify().ok


@pytest.mark.slow
@pytest.mark.server
def test_shadow_sidecar_process_under_real_serve(shadowed_workspace: Path, tmp_path: Path) -> None:
    """`bayespilot serve` starts the sidecar beside a real uvicorn worker; it scores what the
    worker logged, at idle priority, and reports itself in /readyz."""
    ws = tmp_path / "ws"
    shutil.copytree(shadowed_workspace, ws)
    cfg = build_config(_layers(ws, promotion={"register_as": "challenger"}, candidates={"seed": 8}))
    assert run_direct(cfg).outcome.decision == "challenger"
    port = free_port()
    cfg_file = tmp_path / "c.yaml"
    cfg_file.write_text(
        f"paths: {{workspace: {ws}}}\nserving: {{shadow_interval_s: 0.05, shadow_max_defer_s: 2}}\n"
    )
    proc = start_serve(cfg_file, port, "--workers", "1")
    base = f"http://127.0.0.1:{port}"
    shadow_log = ws / "logs" / "shadow.jsonl"
    try:
        deadline = time.time() + 60
        while time.time() < deadline:
            try:
                ready = httpx.get(f"{base}/readyz", timeout=1).json()
                if ready.get("ready") and (ready.get("shadow") or {}).get("challenger_version"):
                    break
            except httpx.HTTPError:
                pass
            assert proc.poll() is None, proc.stdout.read().decode()  # type: ignore[union-attr]
            time.sleep(0.3)
        else:
            pytest.fail("service or sidecar not ready")
        assert ready["shadow"]["challenger_version"] == "2"
        pid = ready["shadow"]["pid"]
        assert pid != proc.pid and os.sched_getscheduler(pid) == os.SCHED_IDLE
        for i in range(5):
            r = httpx.post(f"{base}/v1/score", json=customer(customer_id=f"R{i}"), timeout=5)
            assert r.status_code == 200 and r.json()["model_version"] == "1"
        deadline = time.time() + 30
        while time.time() < deadline and len(_lines(shadow_log)) < 5:
            time.sleep(0.2)
        shadow = _lines(shadow_log)
        assert sorted(x["inputs"]["customer_id"] for x in shadow) == [f"R{i}" for i in range(5)]
        assert {x["model_version"] for x in shadow} == {"2"}
    finally:
        os.killpg(proc.pid, 15)
        proc.wait(20)
    status = read_status(
        ServingSettings.from_config(build_config({"paths": {"workspace": str(ws)}}), environ={})
    )
    assert status is not None and status["scored"] == 5  # written again on a clean stop


# ---------------------------------------------------------------- the log follower
def _write(log: PredictionLog, start: int, n: int) -> None:
    for i in range(start, start + n):  # one append per line, as requests do
        log.write([{"i": i, "pad": "x" * 40}])


def _ids(lines: list[bytes]) -> list[int]:
    return [json.loads(x)["i"] for x in lines]


def test_log_follower_starts_at_end_and_waits_for_whole_lines(tmp_path: Path) -> None:
    path = tmp_path / "p.jsonl"
    log = PredictionLog(path, max_bytes=10**9, backups=2)
    _write(log, 0, 3)
    follower = LogFollower(path, backups=2)
    assert follower.read() == [] and follower.lag_bytes() == 0
    _write(log, 3, 2)
    with open(path, "ab") as f:  # a writer caught mid-line
        f.write(b'{"i": 5, "pad"')
    assert _ids(follower.read()) == [3, 4]
    assert follower.lag_bytes() == 0
    with open(path, "ab") as f:
        f.write(b': "y"}\n')
    assert _ids(follower.read()) == [5]


def test_log_follower_file_created_later_is_read_from_start(tmp_path: Path) -> None:
    path = tmp_path / "p.jsonl"
    follower = LogFollower(path, backups=2)
    assert follower.read() == []
    _write(PredictionLog(path, max_bytes=10**9, backups=2), 0, 4)
    assert _ids(follower.read()) == [0, 1, 2, 3]


def test_log_follower_follows_rotations_in_order(tmp_path: Path) -> None:
    path = tmp_path / "p.jsonl"
    log = PredictionLog(path, max_bytes=600, backups=5)  # ~10 lines a file
    follower = LogFollower(path, backups=5)
    _write(log, 0, 7)
    got = _ids(follower.read())
    _write(log, 7, 40)  # four rotations before the next read
    assert (tmp_path / "p.jsonl.4").exists()
    while chunk := follower.read(max_bytes=150):  # small chunks: partial lines between reads
        got += _ids(chunk)
    _write(log, 47, 3)
    got += _ids(follower.read())
    assert got == list(range(50)) and follower.skipped_files == 0


def test_log_follower_resumes_at_position_across_rotation(tmp_path: Path) -> None:
    path = tmp_path / "p.jsonl"
    log = PredictionLog(path, max_bytes=600, backups=3)
    follower = LogFollower(path, backups=3, from_end=False)
    _write(log, 0, 4)
    assert _ids(follower.read()) == [0, 1, 2, 3]
    position = follower.position()
    follower.close()
    _write(log, 4, 12)  # the file it stopped in is rotated to p.jsonl.1 meanwhile
    assert position is not None and os.stat(tmp_path / "p.jsonl.1").st_ino == position[0]
    resumed = LogFollower(path, backups=3, resume=position)
    unread = sum(os.stat(p).st_size for p in tmp_path.glob("p.jsonl*")) - position[1]
    assert resumed.lag_bytes() == unread > 0  # the rest of p.jsonl.1 and all of p.jsonl
    got = []
    while chunk := resumed.read():
        got += _ids(chunk)
    assert got == list(range(4, 16)) and resumed.lag_bytes() == 0
    unknown = LogFollower(path, backups=3, resume=(1, 0))  # no such file: from the end
    _write(log, 16, 1)
    assert _ids(unknown.read()) == [16]


def test_log_follower_counts_files_rotated_away_unread(tmp_path: Path) -> None:
    path = tmp_path / "p.jsonl"
    log = PredictionLog(path, max_bytes=600, backups=1)
    follower = LogFollower(path, backups=1)
    _write(log, 0, 2)
    assert _ids(follower.read()) == [0, 1]
    _write(log, 2, 60)  # six rotations with one backup: the middle files are gone
    got = []
    while chunk := follower.read():
        got += _ids(chunk)
    assert follower.skipped_files == 1
    assert got[:8] == list(range(2, 10))  # the rest of the file it held, then the oldest kept
    assert got[-1] == 61 and got == sorted(got) and len(got) < 60


# ---------------------------------------------------------------- the load gate
class _Clock:
    """Fake /proc/stat samples: ``busy`` CPU-seconds of other work per wall second."""

    def __init__(self) -> None:
        self.t, self.machine, self.own = 0.0, 0.0, 0.0

    def advance(self, seconds: float, *, busy_cores: float, own_cores: float = 0.0) -> None:
        self.t += seconds
        self.machine += seconds * (busy_cores + own_cores)
        self.own += seconds * own_cores

    def sample(self) -> tuple[float, float, float]:
        return self.t, self.machine, self.own


def _gate(monkeypatch, clock: _Clock, **kw) -> LoadGate:
    monkeypatch.setattr(LoadGate, "_sample", staticmethod(clock.sample))
    monkeypatch.setattr(time, "monotonic", lambda: clock.t)
    return LoadGate(**kw)


def test_load_gate_defers_while_busy_then_bounded(monkeypatch) -> None:
    clock = _Clock()
    cores = os.cpu_count() or 1
    gate = _gate(monkeypatch, clock, busy_pct=70.0, max_defer_s=10.0)
    clock.advance(1, busy_cores=0.2 * cores)
    assert gate.allow()  # a quiet machine
    clock.advance(1, busy_cores=0.2 * cores, own_cores=0.8 * cores)
    assert gate.allow()  # its own CPU does not count as busy
    clock.advance(1, busy_cores=0.95 * cores)
    assert not gate.allow() and gate.deferrals == 1
    for _ in range(9):
        clock.advance(1, busy_cores=0.95 * cores)
        gate.allow()
    clock.advance(1, busy_cores=0.95 * cores)
    assert gate.allow()  # deferred 10 s: goes ahead although busy...
    clock.advance(1, busy_cores=0.95 * cores)
    assert gate.allow()  # ...until caught up
    gate.caught_up()
    clock.advance(1, busy_cores=0.95 * cores)
    assert not gate.allow()


def test_load_gate_off_never_defers(monkeypatch) -> None:
    clock = _Clock()
    gate = _gate(monkeypatch, clock, busy_pct=None, max_defer_s=10.0)
    clock.advance(1, busy_cores=os.cpu_count() or 1)
    assert gate.allow() and gate.deferrals == 0


def test_load_gate_without_limit_waits_for_quiet(monkeypatch) -> None:
    clock = _Clock()
    cores = os.cpu_count() or 1
    gate = _gate(monkeypatch, clock, busy_pct=50.0, max_defer_s=None)
    for _ in range(100):
        clock.advance(10, busy_cores=0.6 * cores)
        assert not gate.allow()
    clock.advance(1, busy_cores=0.1 * cores)
    assert gate.allow() and gate.deferrals == 100
