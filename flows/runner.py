"""How stages run: as Prefect task runs inside a flow, or as direct calls (for benchmarks and
for measuring Prefect's overhead against the very same functions).

Every stage boundary is a failpoint ``after-stage:<name>`` (``tasks/failpoints.py``): the
crash-consistency test kills a run there."""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

from tasks.failpoints import failpoint

log = logging.getLogger(__name__)
T = TypeVar("T")


class Runner(Protocol):
    flow_run_id: str | None

    def call(self, name: str, fn: Callable[..., T], /, *args: Any, **kwargs: Any) -> T: ...

    def concurrent(
        self,
        name: str,
        fn: Callable[..., T],
        calls: Sequence[dict[str, Any]],
        labels: Sequence[str],
    ) -> list[T]: ...

    def table(self, key: str, rows: list[dict[str, Any]], description: str) -> None: ...

    def markdown(self, key: str, text: str, description: str) -> None: ...


class DirectRunner:
    """Plain calls; concurrent stages on a thread pool of the same width Prefect uses."""

    flow_run_id: str | None = None

    def __init__(self, max_workers: int = 3) -> None:
        self.max_workers = max_workers

    def call(self, name: str, fn: Callable[..., T], /, *args: Any, **kwargs: Any) -> T:
        result = fn(*args, **kwargs)
        failpoint(f"after-stage:{name}")
        return result

    def concurrent(
        self,
        name: str,
        fn: Callable[..., T],
        calls: Sequence[dict[str, Any]],
        labels: Sequence[str],
    ) -> list[T]:
        with ThreadPoolExecutor(max_workers=self.max_workers) as pool:
            futures = [pool.submit(fn, **kw) for kw in calls]
            results = [f.result() for f in futures]
        failpoint(f"after-stage:{name}")
        return results

    def table(self, key: str, rows: list[dict[str, Any]], description: str) -> None:
        return None

    def markdown(self, key: str, text: str, description: str) -> None:
        return None


@dataclass(frozen=True)
class _InputProblem:
    """A deterministic input error, carried out of a task run as its return value."""

    error: Exception


def _returning(fn: Callable[..., T], errors: tuple[type[Exception], ...]) -> Callable[..., Any]:
    @functools.wraps(fn)
    def stage(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except errors as exc:
            return _InputProblem(exc)

    return stage


def _raise_input_problem(result: Any) -> None:
    if isinstance(result, _InputProblem):
        raise result.error


class PrefectRunner:
    """Each stage a named Prefect task run. Results that carry frames or models are not
    persisted (no result storage, no cache keys computed over frames).

    ``input_errors``: exception types that mean bad input (deterministic: a retry cannot fix
    them). A stage raising one ends its task run without a traceback in Prefect's log and
    without a retry, and the error is raised again in the flow, which turns it into a named
    failed state. ``retries`` (per stage name) then only ever retries other errors."""

    def __init__(
        self,
        retries: dict[str, int] | None = None,
        *,
        input_errors: tuple[type[Exception], ...] = (),
    ) -> None:
        from prefect.runtime import flow_run

        self.flow_run_id = str(flow_run.id) if flow_run.id else None
        self.retries = retries or {}
        self.input_errors = input_errors
        self._tasks: dict[str, Any] = {}

    def _task(self, name: str, fn: Callable[..., Any]) -> Any:
        if name not in self._tasks:
            from prefect import task
            from prefect.cache_policies import NO_CACHE

            self._tasks[name] = task(
                name=name,
                persist_result=False,
                cache_policy=NO_CACHE,
                retries=self.retries.get(name, 0),
                retry_delay_seconds=2,
            )(_returning(fn, self.input_errors) if self.input_errors else fn)
        return self._tasks[name]

    def call(self, name: str, fn: Callable[..., T], /, *args: Any, **kwargs: Any) -> T:
        result: T = self._task(name, fn)(*args, **kwargs)
        _raise_input_problem(result)
        failpoint(f"after-stage:{name}")
        return result

    def concurrent(
        self,
        name: str,
        fn: Callable[..., T],
        calls: Sequence[dict[str, Any]],
        labels: Sequence[str],
    ) -> list[T]:
        t = self._task(name, fn)
        futures = [
            t.with_options(task_run_name=f"{name}-{label}").submit(**kw)
            for kw, label in zip(calls, labels, strict=True)
        ]
        results = [f.result() for f in futures]
        for r in results:
            _raise_input_problem(r)
        failpoint(f"after-stage:{name}")
        return results

    def table(self, key: str, rows: list[dict[str, Any]], description: str) -> None:
        from prefect.artifacts import create_table_artifact

        create_table_artifact(table=rows, key=key, description=description)

    def markdown(self, key: str, text: str, description: str) -> None:
        from prefect.artifacts import create_markdown_artifact

        create_markdown_artifact(markdown=text, key=key, description=description)
