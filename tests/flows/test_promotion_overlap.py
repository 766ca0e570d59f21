"""The promotion runs its independent stages at the same time (``flows/runner.py``
``submit``), and that changes nothing in the record: an overlapped run and a sequential run of
the same config (each in its own workspace) give the same decision, figures and gate values."""

from __future__ import annotations

import importlib.util
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import pytest

from configs.settings import build_config
from flows.promotion import promotion_pipeline
from flows.runner import DirectRunner, InFlight

from ..conftest import small_layers

pytestmark = pytest.mark.slow
T = TypeVar("T")
REPO = Path(__file__).resolve().parents[2]


def _comparable() -> Callable[[dict[str, Any]], dict[str, Any]]:
    """``benchmarks/check_small_run.py``'s definition of what must not change in a record."""
    spec = importlib.util.spec_from_file_location(
        "check_small_run", REPO / "benchmarks" / "check_small_run.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    comparable: Callable[[dict[str, Any]], dict[str, Any]] = module.comparable
    return comparable


class RecordingRunner(DirectRunner):
    """A DirectRunner that records each stage's interval (its calls' first start and last
    end, ``time.perf_counter`` seconds)."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.spans: dict[str, tuple[float, float]] = {}
        self._spans_lock = threading.Lock()

    def _timed(self, name: str, fn: Callable[..., T]) -> Callable[..., T]:
        def timed(*args: Any, **kwargs: Any) -> T:
            start = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                end = time.perf_counter()
                with self._spans_lock:
                    lo, hi = self.spans.get(name, (start, end))
                    self.spans[name] = (min(lo, start), max(hi, end))

        return timed

    def call(self, name: str, fn: Callable[..., T], /, *args: Any, **kwargs: Any) -> T:
        return super().call(name, self._timed(name, fn), *args, **kwargs)

    def concurrent(self, name, fn, calls, labels):  # type: ignore[no-untyped-def]
        return super().concurrent(name, self._timed(name, fn), calls, labels)

    def concurrent_then(  # type: ignore[no-untyped-def]
        self, name, fn, calls, labels, then_name, then_fn, then_call
    ):
        return super().concurrent_then(
            name,
            self._timed(name, fn),
            calls,
            labels,
            then_name,
            self._timed(then_name, then_fn),
            then_call,
        )

    def submit(self, name: str, fn: Callable[..., T], /, *args: Any, **kwargs: Any) -> InFlight[T]:
        return super().submit(name, self._timed(name, fn), *args, **kwargs)

    def submit_concurrent(self, name, fn, calls, labels):  # type: ignore[no-untyped-def]
        return super().submit_concurrent(name, self._timed(name, fn), calls, labels)

    def overlapping(self) -> set[frozenset[str]]:
        """Pairs of stages whose intervals overlapped."""
        items = list(self.spans.items())
        return {
            frozenset((a, b))
            for i, (a, (a0, a1)) in enumerate(items)
            for b, (b0, b1) in items[i + 1 :]
            if a0 < b1 and b0 < a1
        }


def test_promotion_overlapped_stages_give_the_sequential_record(tmp_path: Path) -> None:
    comparable = _comparable()
    records = {}
    runners = {
        "overlapped": RecordingRunner(),
        "sequential": RecordingRunner(max_workers=1, sequential=True),
    }
    for kind, runner in runners.items():
        workspace = tmp_path / kind
        workspace.mkdir()
        config = build_config(small_layers(workspace))
        records[kind] = promotion_pipeline(config, runner=runner).outcome.record

    overlapped, sequential = runners["overlapped"], runners["sequential"]
    # the evidence stages ran at the same time: the robustness perturbations started before
    # the stability folds had ended, the baselines beside the candidates
    stability_end = overlapped.spans["stability-fold"][1]
    assert overlapped.spans["robustness"][0] < stability_end
    assert frozenset(("robustness", "stability-fold")) in overlapped.overlapping()
    assert overlapped.spans["train-baselines"][0] < overlapped.spans["train-candidate"][1]
    # the calibration cross-fit folds fitted beside the candidates (they need no fitted one)
    assert overlapped.spans["cross-fit-fold"][0] < overlapped.spans["train-candidate"][1]
    assert frozenset(("cross-fit-fold", "train-candidate")) in overlapped.overlapping()
    # the gates started after every stage they read had ended
    gates_start = overlapped.spans["run-gates"][0]
    for stage in ("score-chosen", "package-model", "stability-fold", "robustness"):
        assert overlapped.spans[stage][1] <= gates_start, stage
    # the reference run: nothing overlapped
    assert sequential.overlapping() == set()
    assert set(sequential.spans) == set(overlapped.spans)

    assert records["overlapped"]["decision"] == records["sequential"]["decision"]
    assert comparable(records["overlapped"]) == comparable(records["sequential"])
