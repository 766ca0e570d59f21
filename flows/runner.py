"""How stages run: as Prefect task runs inside a flow, or as direct calls (for benchmarks and
for measuring Prefect's overhead against the very same functions).

A stage runs now (``call``, ``concurrent``, ``concurrent_then``: the flow waits for its
result) or is started and
collected later (``submit``, ``submit_concurrent``: an :class:`InFlight` whose ``result()``
waits), so that stages that do not depend on each other run at the same time. A submitted stage
runs where ``call`` would run it (in the flow process, in its own thread, with a copy of the
flow's context variables: under Prefect it is the same named task run, retried the same way);
a submitted concurrent stage fans out like ``concurrent`` (Prefect's task runner: threads, or
Dask workers with ``scaleout.engine: dask``). What a stage computes does not depend on what
else runs meanwhile.

Every stage boundary is a failpoint ``after-stage:<name>`` (``tasks/failpoints.py``): the
crash-consistency test kills a run there. For a submitted stage the boundary is when the flow
collects its result."""

from __future__ import annotations

import contextvars
import functools
import logging
import os
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor, wait
from dataclasses import dataclass
from typing import Any, Generic, Protocol, TypeVar

from tasks.failpoints import failpoint

log = logging.getLogger(__name__)
T = TypeVar("T")
U = TypeVar("U")


class InFlight(Generic[T]):
    """A started stage. ``result()`` waits for it, then (the first time) checks the value with
    the runner's ``collect`` (e.g. re-raises a carried input error) and passes the stage's
    failpoint; an exception of the stage is raised by every ``result()``."""

    def __init__(
        self,
        name: str,
        future: Future[Any],
        collect: Callable[[Any], T],
        *,
        boundary: bool = True,
    ) -> None:
        self.name = name
        self._future = future
        self._collect = collect
        self._boundary = boundary
        self._collected = False
        self._value: T | None = None

    def result(self) -> T:
        raw = self._future.result()
        if not self._collected:
            self._value = self._collect(raw)
            self._collected = True
            if self._boundary:
                failpoint(f"after-stage:{self.name}")
        return self._value  # type: ignore[return-value]

    def done(self) -> bool:
        return self._future.done()

    def wait(self) -> None:
        """Wait until the stage has ended, whether it succeeded or failed (nothing raised)."""
        wait([self._future])


def _identity(value: T) -> T:
    return value


def _chain(
    first: Callable[[], T],
    then_fn: Callable[..., U],
    then_call: Callable[[T], dict[str, Any] | None],
) -> tuple[T, tuple[U] | None]:
    """``first()``, then ``then_fn(**then_call(its result))`` unless ``then_call`` says None."""
    result = first()
    then_kwargs = then_call(result)
    return result, None if then_kwargs is None else (then_fn(**then_kwargs),)


def _in_thread(name: str, body: Callable[[], Any]) -> Future[Any]:
    """Run ``body`` in a new thread with a copy of the calling thread's context variables."""
    future: Future[Any] = Future()
    context = contextvars.copy_context()

    def run() -> None:
        if not future.set_running_or_notify_cancel():
            return
        try:
            future.set_result(context.run(body))
        except BaseException as exc:  # carried to result(), raised there
            future.set_exception(exc)

    threading.Thread(target=run, name=name).start()
    return future


def in_background(name: str, fn: Callable[..., T], /, *args: Any, **kwargs: Any) -> InFlight[T]:
    """Flow wiring that is not a stage (no task run, no failpoint), e.g. starting the MLflow
    client, in its own thread while the stages run; ``result()`` waits for it."""
    future = _in_thread(name, functools.partial(fn, *args, **kwargs))
    return InFlight(name, future, _identity, boundary=False)


def _exit_with_parent(parent_pid: int, interval_s: float = 0.5) -> None:
    """Worker initializer: a daemon thread ends the worker as soon as the process that started
    it is gone (a killed flow leaves no worker behind; its helper processes then see their
    pipes close and end too)."""

    def watch() -> None:
        while os.getppid() == parent_pid:
            time.sleep(interval_s)
        os._exit(1)

    if os.getppid() != parent_pid:
        os._exit(1)
    threading.Thread(target=watch, name="exit-with-parent", daemon=True).start()


def _process_pool(workers: int) -> Any:
    from joblib.externals.loky import get_reusable_executor

    # reused across stages and runs of this process (started on first use, ended when idle)
    return get_reusable_executor(
        max_workers=workers,
        timeout=600,
        initializer=_exit_with_parent,
        initargs=(os.getpid(),),
    )


def in_processes(fn: Callable[..., T], workers: int) -> Callable[..., T]:
    """``fn`` run in one of ``workers`` worker processes (loky's reusable executor) while the
    calling thread waits: its arguments are pickled to the worker and its result back, so
    ``fn`` must be a module-level function of picklable arguments. For stages whose work is a
    Python-heavy model fit: in a thread of the flow process their interpreter time queues on
    one lock with every other stage's; in a worker it does not. The result does not depend on
    where it ran. Workers inherit the environment (``OMP_NUM_THREADS``)."""

    @functools.wraps(fn)
    def run(*args: Any, **kwargs: Any) -> T:
        result: T = _process_pool(workers).submit(fn, *args, **kwargs).result()
        return result

    return run


class _Starter:
    """Starts stage bodies in their own threads of the flow process, each with a copy of the
    context variables of the thread that starts it (under Prefect: the flow run's context),
    and keeps them until ``settle()``."""

    def __init__(self) -> None:
        self._started: list[InFlight[Any]] = []
        self._lock = threading.Lock()

    def _start(
        self, name: str, body: Callable[[], Any], collect: Callable[[Any], T]
    ) -> InFlight[T]:
        handle = InFlight(name, _in_thread(f"stage-{name}", body), collect)
        with self._lock:
            self._started.append(handle)
        return handle

    def settle(self) -> None:
        """Wait until every started stage has ended (a run that stops on an error does not
        leave stages running behind it); raises nothing."""
        with self._lock:
            started, self._started = self._started, []
        for handle in started:
            handle.wait()


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

    def concurrent_then(
        self,
        name: str,
        fn: Callable[..., T],
        calls: Sequence[dict[str, Any]],
        labels: Sequence[str],
        then_name: str,
        then_fn: Callable[..., U],
        then_call: Callable[[T], dict[str, Any] | None],
    ) -> tuple[list[T], list[U]]:
        """Two concurrent stages pipelined per label: each call of ``fn`` is followed, as
        soon as it has ended, by ``then_fn(**then_call(its result))`` (none when
        ``then_call`` returns None). Returns ``fn``'s results and ``then_fn``'s, in the order of
        ``calls``; both stages' failpoints pass once every call has ended."""
        ...

    def submit(
        self, name: str, fn: Callable[..., T], /, *args: Any, **kwargs: Any
    ) -> InFlight[T]: ...

    def submit_concurrent(
        self,
        name: str,
        fn: Callable[..., T],
        calls: Sequence[dict[str, Any]],
        labels: Sequence[str],
    ) -> InFlight[list[T]]: ...

    def settle(self) -> None: ...

    def table(self, key: str, rows: list[dict[str, Any]], description: str) -> None: ...

    def markdown(self, key: str, text: str, description: str) -> None: ...


class DirectRunner(_Starter):
    """Plain calls; concurrent stages on a thread pool of the same width Prefect uses.
    ``sequential``: ``submit``/``submit_concurrent`` run the stage at once in the calling
    thread (nothing overlaps: the reference the overlapped run is compared with)."""

    flow_run_id: str | None = None

    def __init__(self, max_workers: int = 3, *, sequential: bool = False) -> None:
        super().__init__()
        self.max_workers = max_workers
        self.sequential = sequential

    def call(self, name: str, fn: Callable[..., T], /, *args: Any, **kwargs: Any) -> T:
        result = fn(*args, **kwargs)
        failpoint(f"after-stage:{name}")
        return result

    def _fan_out(self, fn: Callable[..., T], calls: Sequence[dict[str, Any]]) -> list[T]:
        with ThreadPoolExecutor(max_workers=self.max_workers) as pool:
            futures = [pool.submit(fn, **kw) for kw in calls]
            return [f.result() for f in futures]

    def concurrent(
        self,
        name: str,
        fn: Callable[..., T],
        calls: Sequence[dict[str, Any]],
        labels: Sequence[str],
    ) -> list[T]:
        results = self._fan_out(fn, calls)
        failpoint(f"after-stage:{name}")
        return results

    def concurrent_then(
        self,
        name: str,
        fn: Callable[..., T],
        calls: Sequence[dict[str, Any]],
        labels: Sequence[str],
        then_name: str,
        then_fn: Callable[..., U],
        then_call: Callable[[T], dict[str, Any] | None],
    ) -> tuple[list[T], list[U]]:
        if self.sequential:
            firsts = [fn(**kw) for kw in calls]
            nexts = [then_call(r) for r in firsts]
            seconds = [then_fn(**kw) for kw in nexts if kw is not None]
        else:
            with ThreadPoolExecutor(max_workers=self.max_workers) as pool:
                futures = [
                    pool.submit(_chain, functools.partial(fn, **kw), then_fn, then_call)
                    for kw in calls
                ]
                pairs = [f.result() for f in futures]
            firsts = [a for a, _ in pairs]
            seconds = [b[0] for _, b in pairs if b is not None]
        failpoint(f"after-stage:{name}")
        failpoint(f"after-stage:{then_name}")
        return firsts, seconds

    def _now(self, name: str, body: Callable[[], T]) -> InFlight[T]:
        future: Future[T] = Future()
        try:
            future.set_result(body())
        except Exception as exc:
            future.set_exception(exc)
        return InFlight(name, future, _identity)

    def submit(self, name: str, fn: Callable[..., T], /, *args: Any, **kwargs: Any) -> InFlight[T]:
        body = functools.partial(fn, *args, **kwargs)
        if self.sequential:
            return self._now(name, body)
        return self._start(name, body, _identity)

    def submit_concurrent(
        self,
        name: str,
        fn: Callable[..., T],
        calls: Sequence[dict[str, Any]],
        labels: Sequence[str],
    ) -> InFlight[list[T]]:
        body = functools.partial(self._fan_out, fn, calls)
        if self.sequential:
            return self._now(name, body)
        return self._start(name, body, _identity)

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


def _checked(result: T) -> T:
    _raise_input_problem(result)
    return result


def _raise_input_problems(results: list[T]) -> list[T]:
    for r in results:
        _raise_input_problem(r)
    return results


class PrefectRunner(_Starter):
    """Each stage a named Prefect task run. Results that carry frames or models are not
    persisted (no result storage, no cache keys computed over frames).

    ``submit``: the stage's task is called in its own thread of the flow process with a copy
    of the flow run's context (how Prefect's own thread-pool task runner starts a task run), so
    it runs where ``call`` runs it even when the flow's task runner is Dask (no frames shipped
    to a worker). ``submit_concurrent``: ``concurrent``'s task submissions, made from such a
    thread.

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
        self._tasks_lock = threading.Lock()
        super().__init__()

    def _task(self, name: str, fn: Callable[..., Any]) -> Any:
        with self._tasks_lock:
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

    def _fan_out(
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
        return [f.result() for f in futures]

    def concurrent(
        self,
        name: str,
        fn: Callable[..., T],
        calls: Sequence[dict[str, Any]],
        labels: Sequence[str],
    ) -> list[T]:
        results = _raise_input_problems(self._fan_out(name, fn, calls, labels))
        failpoint(f"after-stage:{name}")
        return results

    def concurrent_then(
        self,
        name: str,
        fn: Callable[..., T],
        calls: Sequence[dict[str, Any]],
        labels: Sequence[str],
        then_name: str,
        then_fn: Callable[..., U],
        then_call: Callable[[T], dict[str, Any] | None],
    ) -> tuple[list[T], list[U]]:
        first_task, then_task = self._task(name, fn), self._task(then_name, then_fn)

        def run(task: Any, stage: str, label: str, /, **kw: Any) -> Any:
            future = task.with_options(task_run_name=f"{stage}-{label}").submit(**kw)
            return _checked(future.result())

        # one thread per label in the flow process: it submits the label's first task run,
        # waits for it, then submits the next (the task runs go to the flow's task runner,
        # as with ``concurrent``)
        chains = [
            _in_thread(
                f"stage-{name}-{label}",
                functools.partial(
                    _chain,
                    functools.partial(run, first_task, name, label, **kw),
                    functools.partial(run, then_task, then_name, label),
                    then_call,
                ),
            )
            for kw, label in zip(calls, labels, strict=True)
        ]
        wait(chains)
        pairs = [c.result() for c in chains]
        failpoint(f"after-stage:{name}")
        failpoint(f"after-stage:{then_name}")
        return [a for a, _ in pairs], [b[0] for _, b in pairs if b is not None]

    def submit(self, name: str, fn: Callable[..., T], /, *args: Any, **kwargs: Any) -> InFlight[T]:
        task = self._task(name, fn)
        return self._start(name, functools.partial(task, *args, **kwargs), _checked)

    def submit_concurrent(
        self,
        name: str,
        fn: Callable[..., T],
        calls: Sequence[dict[str, Any]],
        labels: Sequence[str],
    ) -> InFlight[list[T]]:
        body = functools.partial(self._fan_out, name, fn, calls, labels)
        return self._start(name, body, _raise_input_problems)

    def table(self, key: str, rows: list[dict[str, Any]], description: str) -> None:
        from prefect.artifacts import create_table_artifact

        create_table_artifact(table=rows, key=key, description=description)

    def markdown(self, key: str, text: str, description: str) -> None:
        from prefect.artifacts import create_markdown_artifact

        create_markdown_artifact(markdown=text, key=key, description=description)
