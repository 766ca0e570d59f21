"""Stages started now and collected later (``flows/runner.py`` ``submit``): they run at the
same time, in the flow process, and a stage's failpoint, input error and exception come out
when the flow collects it; under Prefect each is the same named task run as with ``call``."""

from __future__ import annotations

import asyncio
import os
import threading
from typing import Any
from uuid import UUID

import pytest

import flows.runner as runner_module
from flows.runner import DirectRunner, PrefectRunner
from tasks.load_data import DataError


def _meet(own: threading.Event, other: threading.Event) -> int:
    """Set ``own``, wait for ``other`` (only possible when both stages run at once)."""
    own.set()
    if not other.wait(timeout=30):
        raise TimeoutError("the other stage never ran at the same time")
    return os.getpid()


def _bad_input() -> None:
    raise DataError("column 'churned' is missing")


def test_runner_submitted_stages_run_at_once_and_pass_failpoints_when_collected(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    passed: list[str] = []
    monkeypatch.setattr(runner_module, "failpoint", passed.append)
    runner = DirectRunner()
    a, b = threading.Event(), threading.Event()
    first = runner.submit("first", _meet, a, b)
    second = runner.submit_concurrent("second", _meet, [{"own": b, "other": a}], ["0"])
    assert second.result() == [os.getpid()]
    assert passed == ["after-stage:second"]  # the first stage has ended, but is not collected
    assert first.result() == os.getpid()
    assert first.result() == os.getpid()  # collected once: the failpoint passes once
    assert passed == ["after-stage:second", "after-stage:first"]
    failing = runner.submit("failing", _bad_input)
    runner.settle()
    with pytest.raises(DataError, match="churned"):
        failing.result()
    assert "after-stage:failing" not in passed


def test_runner_concurrent_then_starts_each_next_call_when_its_first_ends(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    passed: list[str] = []
    monkeypatch.setattr(runner_module, "failpoint", passed.append)
    fast_calibrated = threading.Event()

    def train(label: str) -> str:
        # the slow candidate trains until the fast one has been calibrated
        if label == "slow" and not fast_calibrated.wait(timeout=30):
            raise TimeoutError("the fast candidate was not calibrated while this one trained")
        return label

    def calibrate(trained: str) -> str:
        if trained == "fast":
            fast_calibrated.set()
        return f"calibrated {trained}"

    trained, calibrated = DirectRunner().concurrent_then(
        "train",
        train,
        [{"label": x} for x in ("slow", "failed", "fast")],
        ["slow", "failed", "fast"],
        "calibrate",
        calibrate,
        lambda t: None if t == "failed" else {"trained": t},
    )
    assert trained == ["slow", "failed", "fast"]
    assert calibrated == ["calibrated slow", "calibrated fast"]  # in the order of the calls
    assert passed == ["after-stage:train", "after-stage:calibrate"]


def test_runner_sequential_runs_submitted_stages_at_once() -> None:
    runner = DirectRunner(max_workers=1, sequential=True)
    seen: list[str] = []
    handle = runner.submit("one", seen.append, "one")
    assert seen == ["one"]  # ran before submit returned
    assert handle.result() is None


def _task_run_names(flow_run_id: str) -> dict[str, str]:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

    async def read() -> dict[str, str]:
        async with get_client() as client:
            runs = await client.read_task_runs(
                flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[UUID(flow_run_id)]))
            )
            return {r.name: str(r.state_type.value if r.state_type else "") for r in runs}

    return asyncio.run(read())


@pytest.mark.slow
def test_runner_prefect_submit_is_a_named_task_run_of_the_flow(prefect_harness: Any) -> None:
    from prefect import flow

    @flow(name="runner-submit", persist_result=False)
    def body() -> dict[str, Any]:
        runner = PrefectRunner(input_errors=(DataError,))
        a, b = threading.Event(), threading.Event()
        first = runner.submit("meet-first", _meet, a, b)
        second = runner.submit_concurrent("meet-second", _meet, [{"own": b, "other": a}], ["x"])
        failing = runner.submit("bad-input", _bad_input)
        out: dict[str, Any] = {"pids": [first.result(), *second.result()]}
        try:
            failing.result()
        except DataError as exc:
            out["error"] = str(exc)
        runner.settle()
        out["flow_run_id"] = runner.flow_run_id
        return out

    out = body()
    assert out["pids"] == [os.getpid(), os.getpid()]  # in the flow's process
    assert "churned" in out["error"]  # the input error, raised again in the flow
    names = _task_run_names(out["flow_run_id"])
    # named as with ``call`` (Prefect suffixes a called task's run name; a fanned-out one is
    # named after its label)
    assert len(names) == 3 and "meet-second-x" in names, names
    assert any(n.startswith("meet-first-") for n in names), names
    assert any(n.startswith("bad-input-") for n in names), names
    # the input error ended its task run without a failure (no retry, no traceback)
    assert set(names.values()) == {"COMPLETED"}


def _worker_pid(fail: bool = False) -> int:
    if fail:
        raise DataError("column 'tenure' is missing")
    return os.getpid()


def test_in_processes_runs_a_stage_body_in_a_worker_process_and_carries_its_error() -> None:
    body = runner_module.in_processes(_worker_pid, 1)
    assert body.__name__ == "_worker_pid"  # the task run keeps the stage function's name
    worker = body()
    assert worker != os.getpid() and body() == worker  # one reused worker
    with pytest.raises(DataError, match="tenure"):
        body(fail=True)
    results = DirectRunner().concurrent("refit", body, [{}, {}], ["0", "1"])
    assert results == [worker, worker]
