"""App factory: ``create_app(settings)``; ``app_from_env()`` for uvicorn workers."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import time
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any

from fastapi import FastAPI

from serving.deps import ServingState
from serving.fast_scorer import pin_threads
from serving.routes import router
from serving.settings import ServingSettings

if TYPE_CHECKING:
    from configs.settings import BayesPilotConfig

log = logging.getLogger(__name__)
CONFIG_ENV, OVERRIDES_ENV = "BAYESPILOT_SERVE_CONFIG", "BAYESPILOT_SERVE_OVERRIDES"


class MetricsMiddleware:
    """Pure ASGI middleware: request count and latency by route template and status."""

    def __init__(self, app: Any, state: ServingState) -> None:
        self.app = app
        self.state = state

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        status = {"code": 500}
        recorded = False

        def record() -> None:
            nonlocal recorded
            recorded = True
            path = getattr(scope.get("route"), "path", "unmatched")
            self.state.metrics.observe_request(
                path, str(status["code"]), time.perf_counter() - start
            )

        async def send_wrapper(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                status["code"] = message["status"]
            elif message["type"] == "http.response.body" and not message.get("more_body"):
                record()  # before the last byte leaves: whoever got the answer sees it counted
            await send(message)

        try:
            await self.app(scope, receive, send_wrapper)
        finally:
            if not recorded:
                record()


def create_app(settings: ServingSettings, *, follow: bool = True) -> FastAPI:
    """The scoring service. ``follow``: run the background head check every interval."""
    pin_threads()  # and again in every request thread, on its first score
    state = ServingState(settings)

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        await asyncio.to_thread(state.check, force=True)
        task = asyncio.create_task(state.follow_head()) if follow else None
        try:
            yield
        finally:
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task

    app = FastAPI(title="BayesPilot scoring", version="1", lifespan=lifespan)
    app.state.serving = state
    app.include_router(router)
    app.add_middleware(MetricsMiddleware, state=state)
    return app


def config_from_env() -> BayesPilotConfig:
    """The config of `bayespilot serve` (config path and overrides passed in the
    environment to the launcher and its processes)."""
    from configs.settings import load_config

    return load_config(
        os.environ.get(CONFIG_ENV) or None,
        overrides=json.loads(os.environ.get(OVERRIDES_ENV, "[]")),
    )


def settings_from_env() -> ServingSettings:
    """Settings of a process started by ``bayespilot serve``, with logging set up."""
    config = config_from_env()
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    return ServingSettings.from_config(config)


def app_from_env() -> FastAPI:
    """Factory for ``uvicorn serving.main:app_from_env --factory`` (one per worker)."""
    return create_app(settings_from_env())


def sidecar_from_env() -> None:
    """Entry point of the shadow sidecar process started by ``bayespilot serve``."""
    from serving.shadow import run_sidecar

    settings = settings_from_env()
    run_sidecar(settings, priority=settings.shadow_priority)
