"""Per-worker state: the verified champion (swapped atomically), its request schema, the
prediction log, metrics, and the follow-the-head reload loop."""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from dataclasses import dataclass, replace
from typing import Any

from fastapi import HTTPException, Request
from pydantic import BaseModel, TypeAdapter

from serving.loader import Champion, NotReady, follow_head, head_marker, load, resolve_champion
from serving.metrics import Metrics
from serving.predlog import PredictionLog
from serving.scoring import request_model
from serving.settings import ServingSettings

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Loaded:
    """What one reference swap replaces: champion plus the schema generated from it."""

    champion: Champion
    customer: type[BaseModel]
    adapter: TypeAdapter[Any]
    loaded_at: float


class ServingState:
    def __init__(self, settings: ServingSettings) -> None:
        self.settings = settings
        self.metrics = Metrics()
        self.predictions = PredictionLog(
            settings.prediction_log,
            max_bytes=settings.prediction_log_max_bytes,
            backups=settings.prediction_log_backups,
        )
        self.current: Loaded | None = None
        self.last_error: str | None = None
        self.last_check_marker: str | None = None
        self._reload_lock = threading.Lock()

    def check(self, *, force: bool = False) -> bool:
        """Reload when the chain head changed (or ``force``). Returns True if a new champion
        was swapped in. A head naming the same champion (a monitoring record, a challenger)
        only moves the head, without unpickling. A failing head leaves the verified champion
        serving."""
        with self._reload_lock:
            marker = head_marker(self.settings)
            if not force and marker == self.last_check_marker:
                return False
            self.last_check_marker = marker
            cur = self.current
            try:
                resolved = resolve_champion(self.settings)
                if resolved.same_model(cur.champion if cur else None):
                    assert cur is not None
                    champ = follow_head(self.settings, cur.champion, resolved)
                    self.current = replace(cur, champion=champ)
                    self.last_error = None
                    return False
                champ = load(self.settings, resolved)
            except NotReady as exc:
                self.last_error = str(exc)
                if self.current is None:
                    self.metrics.ready.set(0)
                log.warning("champion not (re)loaded: %s", exc)
                return False
            except Exception as exc:  # a broken artifact must not take the worker down
                self.last_error = f"{type(exc).__name__}: {exc}"
                log.exception("champion load failed")
                return False
            self.last_error = None
            model = request_model(champ)
            self.current = Loaded(champ, model, TypeAdapter(model), time.time())
            self.metrics.set_model(
                champ.model_name, champ.model_version, champ.policy_id, champ.record["record_id"]
            )
            log.info(
                "serving %s v%s, policy %s",
                champ.model_name,
                champ.model_version,
                champ.policy_id[:12],
            )
            return True

    async def follow_head(self) -> None:
        """Background loop: a cheap head check every ``reload_interval_s`` seconds."""
        while True:
            await asyncio.sleep(self.settings.reload_interval_s)
            try:
                await asyncio.to_thread(self.check)
            except Exception:
                log.exception("head check failed")


def get_state(request: Request) -> ServingState:
    state: ServingState = request.app.state.serving
    return state


def require_loaded(request: Request) -> Loaded:
    state = get_state(request)
    loaded = state.current
    if loaded is None:
        raise HTTPException(503, detail={"ready": False, "reason": state.last_error})
    return loaded


def require_admin(request: Request) -> str:
    """Bearer token from settings; admin routes are disabled without one."""
    token = get_state(request).settings.admin_token
    if not token:
        raise HTTPException(403, detail="admin routes are disabled: no admin token configured")
    header = request.headers.get("authorization", "")
    if header != f"Bearer {token}":
        raise HTTPException(
            401, detail="missing or wrong bearer token", headers={"WWW-Authenticate": "Bearer"}
        )
    return "admin"
