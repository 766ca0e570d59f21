"""Fault injection (issue 13): SIGKILL a promotion and a rollback at their failpoints
(``tasks/failpoints.py``) and check after every kill that

* ``bayespilot verify`` exits 0 (a lagging alias is a note, not a problem);
* a freshly started service is ready with the old or the new champion (the new one only when
  its record was written), and says so when the registry alias lags;
* no process of the killed run is left (the embedded Prefect API server included);
* the next run reconciles: its log (and, for the final run, its record notes) names every
  leftover of the kill before it, which is gone afterwards.

The runs are the real CLI (``flows.cli.main``) and the real rollback, each in its own process,
forked from one pre-imported helper process (``_forkserver``) so that a kill costs the run,
not 20 s of imports. Each killed run is also the "next run" of the kill before it (its
start-of-run reconciliation runs before it is killed); one successful run ends each series.

``BAYESPILOT_CRASH_ALL=1`` kills at every stage boundary of the flow. By default the stage
boundaries are represented by one kill early in the run (under Prefect, to show its API
server dies too); the kill after the registration stands for the later ones (artifact
packaged, nothing recorded, plus a registered version): every boundary before the promotion
leaves one of these states on disk, and each full run costs about 35 s of CPU here.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
MARK_ENV = "BAYESPILOT_CRASH_TEST_MARK"  # inherited by every process a run starts
ALL_STAGES = (
    "load-data",
    "validate-data",
    "split-data",
    "train-baselines",
    "plan-cross-fit",
    "cross-fit-fold",
    "train-candidate",
    "calibrate",
    "select-policy",
    "package-model",
    "stability-folds",
    "stability-fold",
    "score-champion",
    "robustness",
    "run-gates",
)
SOME_STAGES = ("split-data",)
PROMOTE_POINTS = (
    "promote:after-register",
    "record:temp-written",
    "record:linked",
    "promote:after-record",
    "promote:between-aliases",
    "promote:after-alias",
)
ROLLBACK_POINTS = (
    "record:temp-written",
    "record:linked",
    "rollback:after-record",
    "rollback:between-aliases",
    "rollback:after-alias",
)
PREFECT_POINT = "after-stage:split-data"  # this kill runs under Prefect (its API server)


def _forkserver() -> None:
    """Import the heavy modules once, then for each JSON line on stdin fork a child that runs
    one command (``argv`` for the CLI, or ``rollback`` with a config path) with ``env`` set
    and stdout/stderr to ``log``; answer with its exit code or signal."""
    import configs.settings  # noqa: F401
    import flows.cli
    import flows.policy_update  # noqa: F401
    import flows.promotion  # noqa: F401
    import serving.admin  # noqa: F401

    for line in sys.stdin:
        job = json.loads(line)
        pid = os.fork()
        if pid == 0:
            os.environ.update(job["env"])
            fd = os.open(job["log"], os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
            os.dup2(fd, 1)
            os.dup2(fd, 2)
            # as in a fresh `bayespilot` process: INFO to stderr (Prefect, imported above,
            # configured the root logger before the CLI could)
            logging.root.handlers = [logging.StreamHandler(sys.stderr)]
            logging.root.setLevel(logging.INFO)
            code = 1
            try:
                if "rollback" in job:
                    from configs.settings import load_config
                    from serving.admin import rollback
                    from serving.settings import ServingSettings

                    settings = ServingSettings.from_config(load_config(job["rollback"]))
                    rollback(settings, reason="crash test", requested_by="pytest")
                    code = 0
                else:
                    code = flows.cli.main(job["argv"])
            finally:
                sys.stdout.flush()
                sys.stderr.flush()
                os._exit(code)
        _, status = os.waitpid(pid, 0)
        answer = {"pid": pid, "rc": os.waitstatus_to_exitcode(status)}
        sys.stdout.write(json.dumps(answer) + "\n")
        sys.stdout.flush()


class ForkServer:
    def __init__(self, mark: str) -> None:
        env = {**os.environ, MARK_ENV: mark, "PYTHONPATH": str(REPO)}
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-c",
                "from tests.flows.test_crash_consistency import _forkserver; _forkserver()",
            ],
            cwd=REPO,
            env=env,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )

    def run(self, job: dict[str, Any], timeout_s: float = 900.0) -> int:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write(json.dumps(job) + "\n")
        self.proc.stdin.flush()
        line = self.proc.stdout.readline()
        assert line, f"fork server died (exit {self.proc.poll()})"
        return int(json.loads(line)["rc"])

    def close(self) -> None:
        if self.proc.stdin:
            self.proc.stdin.close()
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


@dataclass(frozen=True)
class Leftovers:
    temp_files: frozenset[str]
    versions: frozenset[tuple[str, str | None]]  # (version, run_id tag) no record names
    folders: frozenset[str]

    def names(self) -> list[str]:
        return sorted(self.temp_files) + sorted(self.folders) + [f"v{v}" for v, _ in self.versions]


class Workspace:
    """The test's workspace, config and the views of it the assertions need."""

    def __init__(self, root: Path, config: Path) -> None:
        from configs.settings import load_config

        self.root = root
        self.config_path = config
        self.config = load_config(config)

    def records(self) -> list[dict[str, Any]]:
        from tasks.records import RecordStore

        report, records = RecordStore.for_config(self.config).verified_records()
        assert report.ok, report.problems
        return records

    def registry(self) -> Any:
        from tasks.reconcile import MlflowRegistry

        return MlflowRegistry(self.config.mlflow_uri())

    def chain_champion(self) -> str | None:
        records = self.records()
        champ = records[-1].get("champion") if records else None
        return str(champ["model_version"]) if champ else None

    def leftovers(self) -> Leftovers:
        from tasks.reconcile import _named_folders, _named_versions

        records = self.records()
        name = self.config.promotion.model_name
        promotions = self.root / "promotions"
        temp = (
            frozenset(p.name for p in promotions.glob(".*.tmp"))
            if promotions.is_dir()
            else frozenset()
        )
        named = _named_versions(records, name)
        versions = frozenset(
            (mv.version, mv.run_id)
            for mv in self.registry().versions(name)
            if mv.version not in named
        )
        models = self.root / "models"
        folders = (
            frozenset(
                p.name
                for p in models.iterdir()
                if p.is_dir() and p.name not in _named_folders(records)
            )
            if models.is_dir()
            else frozenset()
        )
        return Leftovers(temp, versions, folders)


def _verify(ws: Workspace, capsys: pytest.CaptureFixture[str]) -> str:
    from flows.cli import main

    capsys.readouterr()
    rc = main(["verify", "--config", str(ws.config_path)])
    out = capsys.readouterr()
    assert rc == 0, out.out + out.err
    return out.out


def _fresh_service(ws: Workspace) -> dict[str, Any]:
    from fastapi.testclient import TestClient

    from serving.main import create_app
    from serving.settings import ServingSettings

    app = create_app(ServingSettings.from_config(ws.config), follow=False)
    with TestClient(app) as client:
        resp = client.get("/readyz")
    body: dict[str, Any] = resp.json()
    assert resp.status_code == 200, body
    return body


def _orphans(mark: str, exclude: set[int]) -> list[str]:
    """Processes (other than ``exclude``) whose environment carries the test's mark."""
    found = []
    needle = f"{MARK_ENV}={mark}".encode()
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit() or int(proc.name) in exclude:
            continue
        try:
            environ = (proc / "environ").read_bytes()
            if needle in environ.split(b"\0"):
                cmd = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode()
                found.append(f"{proc.name}: {cmd[:200]}")
        except OSError:
            continue
    return found


def _no_orphans(mark: str, exclude: set[int], wait_s: float = 60.0) -> None:
    """Children of a killed run get SIGTERM from the kernel (PR_SET_PDEATHSIG); give them
    time to exit on a busy machine, then none may remain."""
    deadline = time.monotonic() + wait_s
    left = _orphans(mark, exclude)
    while left and time.monotonic() < deadline:
        time.sleep(0.5)
        left = _orphans(mark, exclude)
    assert not left, f"processes outlived the killed run: {left}"


def _assert_cleaned(before: Leftovers, now: Leftovers, log: str) -> None:
    """Every leftover of the previous kill is gone now and named in the next run's log."""
    assert not (before.temp_files & now.temp_files), (before, now)
    assert not (before.versions & now.versions), (before, now)
    assert not (before.folders & now.folders), (before, now)
    for name in before.names():
        assert name in log, f"next run's reconcile report does not name {name}:\n{log[-3000:]}"


@pytest.mark.slow
def test_crash_consistency_sigkill_at_every_failpoint_leaves_a_served_verified_champion(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from tests.conftest import small_layers  # not at module level: the fork server imports
    # this module, and importing conftest there would give it other key and state dirs

    root = tmp_path / "ws"
    layers = small_layers(
        root,
        rows=3000,
        candidates={"random_forest": {"enabled": False}, "gradient_boosting": {"enabled": False}},
        explain={"enabled": False},
        bootstrap={"resamples": 100},
        policy={"bootstrap_resamples": 50},
        gates={
            "calibration": {"simulations": 100},
            "threshold": {"resamples": 30},
            "stability": {"n_splits": 2, "n_repeats": 1},
            "technical": {"latency_rows": 20, "latency_repeats": 1, "reload_rows": 100},
        },
    )
    cfg_path = tmp_path / "config.yaml"
    cfg_path.write_text(yaml.safe_dump(layers))
    mark = str(tmp_path)
    stages = ALL_STAGES if os.environ.get("BAYESPILOT_CRASH_ALL") == "1" else SOME_STAGES
    server = ForkServer(mark)
    exclude = {os.getpid(), server.proc.pid}
    logs = tmp_path / "logs"
    logs.mkdir()

    def job(
        point: str | None, n: int, *, prefect: bool = False, rollback: bool = False
    ) -> tuple[int, str]:
        log = logs / f"{n:02d}.log"
        spec: dict[str, Any] = {"env": {"BAYESPILOT_FAILPOINT": point or ""}, "log": str(log)}
        if rollback:
            spec["rollback"] = str(cfg_path)
        else:
            spec["argv"] = ["run", "--config", str(cfg_path)] + (
                [] if prefect else ["--no-prefect"]
            )
        if prefect:  # a fresh interpreter: Prefect reads its settings at import
            env = {**os.environ, MARK_ENV: mark, "BAYESPILOT_FAILPOINT": point or ""}
            with open(log, "w") as fh:
                rc = subprocess.run(
                    [sys.executable, "-m", "flows.cli", *spec["argv"]],
                    cwd=REPO,
                    env=env,
                    stdout=fh,
                    stderr=subprocess.STDOUT,
                    timeout=900,
                ).returncode
        else:
            rc = server.run(spec)
        return rc, log.read_text()

    try:
        ws = Workspace(root, cfg_path)
        rc, log = job(None, 0)
        assert rc == 0 and ws.chain_champion() == "1", log[-3000:]

        n = 0
        previous = ws.leftovers()
        points = [f"after-stage:{s}" for s in stages] + list(PROMOTE_POINTS)
        for point in points:
            n += 1
            old = ws.chain_champion()
            seq_before = len(ws.records())
            rc, log = job(point, n, prefect=point == PREFECT_POINT)
            assert rc == -signal.SIGKILL, f"{point}: run was not killed (exit {rc}):\n{log[-3000:]}"
            leftovers = ws.leftovers()
            _assert_cleaned(previous, leftovers, log)
            _no_orphans(mark, exclude)
            out = _verify(ws, capsys)
            records = ws.records()
            wrote = len(records) > seq_before
            assert wrote == (
                point
                in (
                    "record:linked",
                    "promote:after-record",
                    "promote:between-aliases",
                    "promote:after-alias",
                )
            ), point
            new = ws.chain_champion()
            assert new == (str(records[-1]["model_version"]) if wrote else old), point
            ready = _fresh_service(ws)
            assert ready["model_version"] == new, (point, ready)
            lags = point in ("promote:after-record", "promote:between-aliases", "record:linked")
            assert (ready.get("note") is not None) == lags, (point, ready)
            assert ("lags the record chain" in out) == lags, (point, out)
            previous = leftovers

        n += 1
        rc, log = job(None, n)
        assert rc == 0, log[-3000:]
        final = ws.records()[-1]
        assert final["decision"] == "promoted", final["reasons"]
        _assert_cleaned(previous, ws.leftovers(), "\n".join(final.get("notes", [])))
        assert ws.leftovers() == Leftovers(frozenset(), frozenset(), frozenset())
        _verify(ws, capsys)

        previous = ws.leftovers()
        for point in ROLLBACK_POINTS:
            n += 1
            old = ws.chain_champion()
            seq_before = len(ws.records())
            rc, log = job(point, n, rollback=True)
            assert rc == -signal.SIGKILL, (
                f"rollback {point}: not killed (exit {rc}):\n{log[-3000:]}"
            )
            leftovers = ws.leftovers()
            _assert_cleaned(previous, leftovers, log)
            _no_orphans(mark, exclude)
            out = _verify(ws, capsys)
            records = ws.records()
            wrote = len(records) > seq_before
            assert wrote == (point != "record:temp-written"), point
            new = ws.chain_champion()
            if wrote:
                assert records[-1]["kind"] == "rollback" and new != old, point
            else:
                assert new == old, point
            ready = _fresh_service(ws)
            assert ready["model_version"] == new, (point, ready)
            lags = point != "record:temp-written" and point != "rollback:after-alias"
            assert (ready.get("note") is not None) == lags, (point, ready)
            assert ("lags the record chain" in out) == lags, (point, out)
            previous = leftovers

        n += 1
        rc, log = job(None, n, rollback=True)
        assert rc == 0, log[-3000:]
        final = ws.records()[-1]
        assert final["kind"] == "rollback"
        _assert_cleaned(previous, ws.leftovers(), "\n".join(final.get("notes", [])))
        _verify(ws, capsys)
        assert _fresh_service(ws)["note"] is None
    finally:
        server.close()
    _no_orphans(mark, set(), wait_s=30)
