"""Prometheus metrics of one worker process (its own registry)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

LATENCY_BUCKETS_S = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "bayespilot_requests_total",
            "HTTP requests",
            ["route", "status"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "bayespilot_request_latency_seconds",
            "HTTP request latency (seconds)",
            ["route", "status"],
            buckets=LATENCY_BUCKETS_S,
            registry=self.registry,
        )
        self.predictions = Counter(
            "bayespilot_predictions_total",
            "Scored customers by action",
            ["action"],
            registry=self.registry,
        )
        self.model_info = Gauge(
            "bayespilot_model_info",
            "Model serving (1) by version",
            ["model_name", "model_version", "policy_id", "record_id"],
            registry=self.registry,
        )
        self.ready = Gauge(
            "bayespilot_ready", "1 when a verified champion is loaded", registry=self.registry
        )

    def set_model(self, name: str, version: str, policy_id: str, record_id: str) -> None:
        self.model_info.clear()
        self.model_info.labels(name, version, policy_id[:12], record_id[:12]).set(1)
        self.ready.set(1)
