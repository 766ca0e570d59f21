"""Prometheus metrics of the scoring service, aggregated over the worker processes.

`bayespilot serve` sets ``PROMETHEUS_MULTIPROC_DIR`` (a fresh temp dir per serve) before it
starts the workers, so prometheus_client keeps every worker's values in files there and
``/metrics`` on any worker reports all of them (``MultiProcessCollector``): counters and
histograms are summed over processes (a restarted worker's counts stay), and each carries a
``worker`` label (the worker's slot, 0..N-1, kept across restarts). Gauges: model info per
live process (``liveall``: a ``pid`` label is added), ``bayespilot_ready`` is the minimum over
the live workers, ``bayespilot_workers_ready`` their sum. Without the variable (one process,
``create_app`` in tests) each ``Metrics`` has its own registry and reports only itself,
without a ``worker`` label.
"""

from __future__ import annotations

import os

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.multiprocess import MultiProcessCollector

LATENCY_BUCKETS_S = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)
MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
WORKER_ENV = "BAYESPILOT_WORKER"  # the worker's slot, set by the launcher


def worker_slot() -> str:
    """This process's worker slot ("0" outside `bayespilot serve`)."""
    return os.environ.get(WORKER_ENV, "0")


def multiprocess_dir() -> str | None:
    """The shared metrics directory when running under `bayespilot serve`, else None."""
    path = os.environ.get(MULTIPROC_ENV)
    return path if path and os.path.isdir(path) else None


class Metrics:
    """The service's metrics. ``worker`` (default: this process's slot) labels every series
    when the values are shared over processes; a single process has no ``worker`` label."""

    def __init__(self, worker: str | None = None) -> None:
        self.worker = worker_slot() if worker is None else worker
        self.registry = CollectorRegistry()
        self._model_labels: tuple[str, ...] | None = None
        self._per_worker = multiprocess_dir() is not None
        w: list[str] = ["worker"] if self._per_worker else []
        self.requests = Counter(
            "bayespilot_requests_total",
            "HTTP requests",
            ["route", "status", *w],
            registry=self.registry,
        )
        self.latency = Histogram(
            "bayespilot_request_latency_seconds",
            "HTTP request latency (seconds)",
            ["route", "status", *w],
            buckets=LATENCY_BUCKETS_S,
            registry=self.registry,
        )
        self.predictions = Counter(
            "bayespilot_predictions_total",
            "Scored customers by action",
            ["action", *w],
            registry=self.registry,
        )
        self.model_info = Gauge(
            "bayespilot_model_info",
            "Model serving (1) by version, per worker",
            ["model_name", "model_version", "policy_id", "record_id", *w],
            registry=self.registry,
            multiprocess_mode="liveall",
        )
        self.ready = Gauge(
            "bayespilot_ready",
            "1 when every live worker has a verified champion loaded",
            registry=self.registry,
            multiprocess_mode="livemin",
        )
        self.workers_ready = Gauge(
            "bayespilot_workers_ready",
            "Live workers with a verified champion loaded",
            registry=self.registry,
            multiprocess_mode="livesum",
        )

    def _labels(self, *values: str) -> tuple[str, ...]:
        return (*values, self.worker) if self._per_worker else values

    def observe_request(self, route: str, status: str, seconds: float) -> None:
        self.requests.labels(*self._labels(route, status)).inc()
        self.latency.labels(*self._labels(route, status)).observe(seconds)

    def count_predictions(self, contact: int, no_contact: int) -> None:
        for action, n in (("contact", contact), ("no_contact", no_contact)):
            if n:
                self.predictions.labels(*self._labels(action)).inc(n)

    def set_ready(self, ready: bool) -> None:
        self.ready.set(int(ready))
        self.workers_ready.set(int(ready))

    def set_model(self, name: str, version: str, policy_id: str, record_id: str) -> None:
        labels = self._labels(name, version, policy_id[:12], record_id[:12])
        if self._model_labels is not None and self._model_labels != labels:
            # in multiprocess mode the file keeps a removed child's value: zero it first
            self.model_info.labels(*self._model_labels).set(0)
            self.model_info.remove(*self._model_labels)
        self.model_info.labels(*labels).set(1)
        self._model_labels = labels
        self.set_ready(True)

    def exposition(self) -> bytes:
        """The text exposition: every worker's values under `bayespilot serve`, else this
        process's own."""
        path = multiprocess_dir()
        if path is None:
            return generate_latest(self.registry)
        registry = CollectorRegistry()
        MultiProcessCollector(registry, path=path)
        return generate_latest(registry)
