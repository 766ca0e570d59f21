"""Shadow scoring off the request path, in batches.

A request only enqueues its validated rows and the champion's results (microseconds); one
background thread per worker drains the queue every ``interval_s`` seconds and scores all
queued customers with the challenger in one vectorised call, so the shadow's cost per
customer is a small share of a single-row call. When the queue is full new rows are dropped
and counted (``bayespilot_shadow_dropped_total``): the shadow never slows the response beyond
one non-blocking queue put.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from datetime import UTC, datetime
from typing import Any

from serving.loader import Champion
from serving.metrics import Metrics
from serving.predlog import PredictionLog
from serving.scoring import result_dicts, score_customers

log = logging.getLogger(__name__)
Item = tuple[Champion, list[dict[str, Any]], list[dict[str, Any]], str]


class ShadowScorer:
    def __init__(
        self,
        predictions: PredictionLog,
        metrics: Metrics,
        *,
        interval_s: float = 0.1,
        max_queued_requests: int = 20_000,
        slice_requests: int = 32,
    ) -> None:
        self.predictions = predictions
        self.slice_requests = slice_requests
        self.metrics = metrics
        self.interval_s = interval_s
        self._queue: queue.Queue[Item] = queue.Queue(maxsize=max_queued_requests)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="shadow-scorer", daemon=True)
        self._thread.start()

    def submit(
        self,
        challenger: Champion,
        rows: list[dict[str, Any]],
        champion_results: list[dict[str, Any]],
        request_id: str,
    ) -> None:
        try:
            self._queue.put_nowait((challenger, rows, champion_results, request_id))
        except queue.Full:
            self.metrics.shadow_dropped.inc(len(rows))

    def flush(self) -> int:
        """Score everything queued now (also used by tests); returns customers scored."""
        items: list[Item] = []
        while True:
            try:
                items.append(self._queue.get_nowait())
            except queue.Empty:
                break
        done = 0
        by_model: dict[int, list[Item]] = {}
        for item in items:
            by_model.setdefault(id(item[0]), []).append(item)
        for group in by_model.values():
            # small slices with a yield between: request threads get the GIL back quickly
            for start in range(0, len(group), self.slice_requests):
                done += self._score(group[start : start + self.slice_requests])
                time.sleep(0.0005)
        return done

    def _score(self, items: list[Item]) -> int:
        challenger = items[0][0]
        rows = [r for it in items for r in it[1]]
        champ = [r for it in items for r in it[2]]
        ids = [it[3] for it in items for _ in it[1]]
        start = time.perf_counter()
        try:
            results = result_dicts(challenger, score_customers(challenger, rows))
        except Exception:  # a shadow failure must never affect serving
            log.exception("shadow scoring failed")
            return 0
        ms = (time.perf_counter() - start) * 1000 / max(len(rows), 1)
        now = datetime.now(UTC).isoformat(timespec="milliseconds")
        self.predictions.write(
            {
                "request_id": rid,
                "time": now,
                "role": "challenger",
                "model_version": challenger.model_version,
                "policy_id": challenger.policy_id,
                "inputs": row,
                "probability": res["churn_probability"],
                "action": res["action"],
                "tier": res["tier"],
                "champion_action": c["action"],
                "latency_ms_per_customer": round(ms, 4),
            }
            for row, res, c, rid in zip(rows, results, champ, ids, strict=True)
        )
        return len(rows)

    def _loop(self) -> None:
        while not self._stop.wait(self.interval_s):
            try:
                self.flush()
            except Exception:  # keep shadowing alive whatever one batch did
                log.exception("shadow flush failed")

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        self.flush()
