"""App factory: ``create_app(settings)``; ``app_from_env()`` for uvicorn workers."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from fastapi import FastAPI, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html
from fastapi.openapi.utils import get_openapi
from fastapi.responses import HTMLResponse
from fastapi.staticfiles import StaticFiles
from pydantic import ValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException

from serving.deps import Loaded, ServingState
from serving.fast_scorer import pin_threads
from serving.routes import echo_value, error_response, field_errors, router
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
        keep = asyncio.create_task(state.keep_decisions())
        try:
            yield
        finally:
            for t in (task, keep):
                if t is not None:
                    t.cancel()
                    with contextlib.suppress(asyncio.CancelledError):
                        await t
            # the buffered decisions, written before the worker exits
            try:
                await asyncio.to_thread(state.decisions.close)
            except Exception:  # logged; the worker still shuts down
                log.exception("writing the buffered decisions at shutdown failed")

    app = FastAPI(
        title="BayesPilot scoring",
        version="1",
        lifespan=lifespan,
        docs_url=None,  # served below from local files: no CDN, works offline
        redoc_url=None,
        description=API_DESCRIPTION,
    )
    app.state.serving = state
    app.include_router(router)
    add_error_handlers(app)
    add_offline_docs(app)
    app.openapi = lambda: openapi_document(app, state)  # type: ignore[method-assign]
    app.add_middleware(MetricsMiddleware, state=state)
    return app


API_DESCRIPTION = (
    "Scores customers with the champion the signed promotion chain names. The request body "
    "schema is generated from that champion's features and changes when it changes. Every "
    'error is `{"error": {"code", "message", "fields": [{"field", "problem", ...}]}}`.'
)
ERROR_CODES = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    409: "conflict",
    413: "too_large",
    415: "unsupported_media_type",
    422: "invalid_request",
    503: "not_ready",
}


def add_error_handlers(app: FastAPI) -> None:
    """Framework errors (404, 405, auth, not ready, a bad admin body) in our error shape."""

    async def http_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, StarletteHTTPException)
        detail = exc.detail
        if isinstance(detail, dict) and "reason" in detail:
            message = f"no verified champion is serving: {detail['reason']}"
        else:
            message = str(detail)
        code = ERROR_CODES.get(exc.status_code, f"http_{exc.status_code}")
        return error_response(
            exc.status_code, code, message, headers=dict(exc.headers) if exc.headers else None
        )

    async def validation_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, RequestValidationError)
        fields = [
            {
                "field": ".".join(str(p) for p in e["loc"]),
                "problem": e["msg"],
                "expected": e["type"],
                "got": echo_value(e.get("input")) if e["type"] != "missing" else None,
            }
            for e in exc.errors()
        ]
        return error_response(422, "invalid_request", "invalid request", fields)

    async def too_deep(request: Request, exc: Exception) -> Response:
        # a body FastAPI parses itself (the admin rollback) nested past the parser's limit
        return error_response(400, "too_deep", "JSON nested too deeply")

    async def server_error(request: Request, exc: Exception) -> Response:
        log.exception("unhandled error on %s", request.url.path, exc_info=exc)
        return error_response(500, "internal_error", "internal error (logged by the service)")

    app.add_exception_handler(StarletteHTTPException, http_error)
    app.add_exception_handler(RequestValidationError, validation_error)
    app.add_exception_handler(RecursionError, too_deep)
    app.add_exception_handler(Exception, server_error)


def add_offline_docs(app: FastAPI) -> None:
    """``/docs`` (Swagger UI) and ``/redoc`` from the files the ``fastapi-offline`` package
    ships, mounted under ``/docs-assets``: the pages work with no internet."""
    import fastapi_offline

    assets = Path(fastapi_offline.__file__).parent / "static"
    app.mount(DOCS_ASSETS, StaticFiles(directory=assets), name="docs-assets")

    @app.get("/docs", include_in_schema=False)
    def swagger() -> HTMLResponse:
        return get_swagger_ui_html(
            openapi_url=app.openapi_url or "/openapi.json",
            title=f"{app.title} - docs",
            swagger_js_url=f"{DOCS_ASSETS}/swagger-ui-bundle.js",
            swagger_css_url=f"{DOCS_ASSETS}/swagger-ui.css",
            swagger_favicon_url=f"{DOCS_ASSETS}/favicon.png",
            swagger_ui_parameters={"tryItOutEnabled": True, "displayRequestDuration": True},
        )

    @app.get("/redoc", include_in_schema=False)
    def redoc() -> HTMLResponse:
        return get_redoc_html(
            openapi_url=app.openapi_url or "/openapi.json",
            title=f"{app.title} - ReDoc",
            redoc_js_url=f"{DOCS_ASSETS}/redoc.standalone.js",
            redoc_favicon_url=f"{DOCS_ASSETS}/favicon.png",
            with_google_fonts=False,
        )


DOCS_ASSETS = "/docs-assets"
CUSTOMER_REF = "#/components/schemas/Customer"


def openapi_document(app: FastAPI, state: ServingState) -> dict[str, Any]:
    """The OpenAPI document, with ``/v1/score``'s body schema generated from the loaded
    champion (``Customer``: its features, types, ranges, known categories) and examples: a
    typical customer, the champion's real answer to it, and a real refusal in our shape.
    Cached per loaded champion: a reload (new champion) regenerates it."""
    loaded = state.current
    key = id(loaded)
    if app.openapi_schema is not None and getattr(app.state, "openapi_for", None) == key:
        return app.openapi_schema
    doc = get_openapi(
        title=app.title,
        version=app.version,
        description=app.description,
        routes=app.routes,
    )
    schemas = doc.setdefault("components", {}).setdefault("schemas", {})
    if loaded is not None:
        customer = loaded.customer.model_json_schema(
            by_alias=True, ref_template="#/components/schemas/{model}"
        )
        schemas.update(customer.pop("$defs", {}))
        customer["title"] = "Customer"
        customer["example"] = loaded.example
    else:
        customer = {
            "type": "object",
            "description": "No champion loaded yet: the schema appears once one is verified.",
        }
    schemas["Customer"] = customer
    limit = state.settings.max_batch_customers
    schemas["Batch"] = {
        "type": "object",
        "title": "Batch",
        "properties": {
            "customers": {
                "type": "array",
                "items": {"$ref": CUSTOMER_REF},
                "minItems": 1,
                "maxItems": limit,
            }
        },
        "required": ["customers"],
        "additionalProperties": False,
    }
    op = doc["paths"]["/v1/score"]["post"]
    body: dict[str, Any] = {
        "schema": {"anyOf": [{"$ref": CUSTOMER_REF}, {"$ref": "#/components/schemas/Batch"}]}
    }
    if loaded is not None:
        body["examples"] = {
            "customer": {"summary": "One customer", "value": loaded.example},
            "batch": {
                "summary": "A batch",
                "value": {"customers": [loaded.example, {**loaded.example, **_second(loaded)}]},
            },
        }
        ok = op["responses"]["200"]["content"]["application/json"]
        ok["example"] = loaded.example_result
        bad = op["responses"]["422"]["content"]["application/json"]
        bad["example"] = refusal_example(loaded)
    over = f"{limit + 1} customers > limit {limit}"
    too_many = _example_error("batch_too_large", over, "customers")
    examples = {**STATIC_ERROR_EXAMPLES, "413": too_many}
    for status, example in examples.items():
        op["responses"][status]["content"]["application/json"]["example"] = example
    op["requestBody"] = {"required": True, "content": {"application/json": body}}
    app.openapi_schema = doc
    app.state.openapi_for = key
    return doc


def _example_error(code: str, message: str, field: str | None = None) -> dict[str, Any]:
    fields = [] if field is None else [{"field": field, "problem": message}]
    return {"error": {"code": code, "message": message, "fields": fields}}


STATIC_ERROR_EXAMPLES = {
    "400": _example_error("too_deep", "JSON nested too deeply", "body"),
    "415": _example_error(
        "unsupported_media_type", "send JSON (Content-Type: application/json), not text/plain"
    ),
    "503": _example_error("not_ready", "no verified champion is serving: no promoted record"),
}


def _second(loaded: Loaded) -> dict[str, Any]:
    return {loaded.champion.id_column: "C-0002"}


def refusal_example(loaded: Loaded) -> dict[str, Any]:
    """What the service answers (422) to the example customer with its first numeric
    feature sent as text and another field it does not know."""
    champ = loaded.champion
    bad = dict(loaded.example)
    numeric = [c for c in champ.numeric if c != champ.value_column]
    if numeric:
        bad[numeric[0]] = "lots"
    bad["favourite_colour"] = "green"
    try:
        loaded.adapter.validate_python(bad)
    except ValidationError as exc:
        fields = field_errors(exc, "")
    else:  # pragma: no cover - the example above always fails
        fields = []
    resp = error_response(
        422, "invalid_customer", f"{len(fields)} field(s) refused; nothing was scored", fields
    )
    body: dict[str, Any] = json.loads(bytes(resp.body))
    return body


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
