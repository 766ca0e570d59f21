"""HTTP routes: scoring, model card, health, readiness, metrics, admin."""

from __future__ import annotations

import json
import logging
import time
import uuid
from datetime import UTC, datetime
from typing import Annotated, Any

from fastapi import APIRouter, Depends, HTTPException, Request, Response
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST
from pydantic import BaseModel, Field, ValidationError
from starlette.requests import ClientDisconnect

from serving.admin import RollbackError, rollback
from serving.deps import Loaded, ServingState, get_state, require_admin, require_loaded
from serving.scoring import reasons_for, result_dicts, score_customers
from serving.shadow import read_status

log = logging.getLogger(__name__)
router = APIRouter()
StateDep = Annotated[ServingState, Depends(get_state)]
LoadedDep = Annotated[Loaded, Depends(require_loaded)]
INLINE_ROWS = 64  # larger batches are scored off the event loop

_EXPECTED = {
    "float_parsing": "number",
    "float_type": "number",
    "string_type": "text",
    "missing": "a value",
    "extra_forbidden": "no such field",
    "greater_than_equal": "a number >= 0",
    "int_type": "integer",
}


def _field_errors(exc: ValidationError, prefix: str) -> list[dict[str, Any]]:
    out = []
    for e in exc.errors():
        loc = ".".join(str(p) for p in e["loc"])
        out.append(
            {
                "field": f"{prefix}{loc}",
                "message": e["msg"],
                "expected": _EXPECTED.get(e["type"], e["type"]),
                "got": e.get("input") if e["type"] != "missing" else None,
            }
        )
    return out


def _error(status: int, errors: list[dict[str, Any]]) -> JSONResponse:
    return JSONResponse(status_code=status, content={"detail": errors})


@router.post("/v1/score")
async def score(request: Request, state: StateDep, explain: bool = False) -> Response:
    """Score one customer (an object) or a batch (``{"customers": [...]}``). With
    ``?explain=true`` each result carries the features that moved its probability most."""
    start = time.perf_counter()
    limit = state.settings.max_body_bytes
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        return _error(413, [{"field": "body", "message": f"body larger than {limit} bytes"}])
    try:
        body = await request.body()
    except ClientDisconnect:  # the client went away; nothing to answer, not a server error
        return Response(status_code=499)
    if len(body) > limit:
        return _error(413, [{"field": "body", "message": f"body larger than {limit} bytes"}])
    loaded: Loaded = require_loaded(request)
    try:
        payload = json.loads(body)
    except (ValueError, UnicodeDecodeError) as exc:
        return _error(
            422, [{"field": "body", "message": f"invalid JSON: {exc}", "expected": "a JSON object"}]
        )
    batch = isinstance(payload, dict) and "customers" in payload
    items = payload.get("customers") if batch else [payload]
    if batch and (not isinstance(items, list) or set(payload) != {"customers"}):
        return _error(
            422,
            [
                {
                    "field": "customers",
                    "message": "expected a list of customers and no other key",
                    "expected": "array",
                }
            ],
        )
    if not isinstance(items, list) or not items:
        return _error(
            422,
            [
                {
                    "field": "body",
                    "message": "no customer to score",
                    "expected": 'an object or {"customers": [...]}',
                }
            ],
        )
    if len(items) > state.settings.max_batch_customers:
        limit_n = state.settings.max_batch_customers
        return _error(
            413, [{"field": "customers", "message": f"{len(items)} customers > limit {limit_n}"}]
        )
    rows, errors = [], []
    for i, item in enumerate(items):
        prefix = f"customers[{i}]." if batch else ""
        if not isinstance(item, dict):
            errors.append(
                {
                    "field": prefix.rstrip(".") or "body",
                    "message": "expected an object",
                    "expected": "object",
                }
            )
            continue
        try:
            rows.append(loaded.adapter.validate_python(item).model_dump(by_alias=True))
        except ValidationError as exc:
            errors.extend(_field_errors(exc, prefix))
    if errors:
        return _error(422, errors)
    champ = loaded.champion
    if len(rows) > INLINE_ROWS:
        scored = await run_in_threadpool(score_customers, champ, rows)
    else:
        scored = score_customers(champ, rows)
    results = result_dicts(champ, scored)
    if explain:
        for res, row in zip(results, rows, strict=True):
            res["reasons"] = reasons_for(champ, row)
    request_id = request.headers.get("x-request-id") or uuid.uuid4().hex
    latency_ms = (time.perf_counter() - start) * 1000
    now = datetime.now(UTC).isoformat(timespec="milliseconds")
    state.predictions.write(
        {
            "request_id": request_id,
            "time": now,
            "model_version": champ.model_version,
            "policy_id": champ.policy_id,
            "inputs": row,
            "probability": res["churn_probability"],
            "action": res["action"],
            "tier": res["tier"],
            "latency_ms": round(latency_ms, 3),
        }
        for row, res in zip(rows, results, strict=True)
    )
    contacts = int(scored.contact.sum())
    state.metrics.count_predictions(contacts, len(results) - contacts)
    content: Any = {"request_id": request_id, "results": results} if batch else results[0]
    return JSONResponse(content, headers={"x-request-id": request_id, **served_by(state, loaded)})


def served_by(state: ServingState, loaded: Loaded) -> dict[str, str]:
    """Response headers naming what served: the model and the record that introduced it,
    and the worker (slot, pid) with the serving generation whose reload it has done."""
    c = loaded.champion
    model = f"{c.model_name}@v{c.model_version}"
    return {
        "x-bayespilot-model": f"{model};record={c.record.record_id[:12]}",
        "x-bayespilot-worker": f"{state.worker};pid={state.pid};generation={state.generation}",
    }


@router.get("/v1/model")
def model_card(loaded: LoadedDep) -> dict[str, Any]:
    """What is serving and why."""
    return {
        **loaded.champion.info,
        "loaded_at": datetime.fromtimestamp(loaded.loaded_at, UTC).isoformat(),
    }


@router.get("/healthz")
def healthz() -> dict[str, str]:
    return {"status": "alive"}


@router.get("/readyz")
def readyz(state: StateDep) -> JSONResponse:
    cur = state.current
    detail: dict[str, Any] = {
        "ready": cur is not None,
        "last_error": state.last_error,
        "worker": state.worker,
        "pid": state.pid,
        "generation": state.generation,
    }
    if cur is not None:
        c = cur.champion
        detail.update(
            {
                "model_name": c.model_name,
                "model_version": c.model_version,
                "policy_id": c.policy_id,
                "record_id": c.record.record_id,
                "head_record_id": c.head_record_id,
                "note": c.info.get("alias_note"),  # a lagging registry alias (reconcilable)
            }
        )
    # the shadow sidecar (a separate process) scores the challenger from the prediction log
    detail["shadow"] = read_status(state.settings)
    return JSONResponse(detail, status_code=200 if cur is not None else 503)


@router.get("/metrics")
def metrics(state: StateDep) -> Response:
    """Prometheus text: under `bayespilot serve`, every worker's values (``worker`` label)."""
    return Response(state.metrics.exposition(), media_type=CONTENT_TYPE_LATEST)


@router.post("/v1/admin/reload", dependencies=[Depends(require_admin)])
async def admin_reload(state: StateDep) -> JSONResponse:
    """Forced re-verification on every worker: bumps the shared serving generation (the
    other workers follow within ``watch_interval_s``), then checks this one."""
    swapped = await run_in_threadpool(state.reload_generation)
    return readyz_with(state, {"swapped": swapped, "generation": state.generation})


def readyz_with(state: ServingState, extra: dict[str, Any]) -> JSONResponse:
    resp = readyz(state)
    body = json.loads(bytes(resp.body))
    return JSONResponse({**body, **extra}, status_code=resp.status_code)


class RollbackRequest(BaseModel):
    reason: str = Field(min_length=3, description="Why the champion is rolled back.")
    requested_by: str = Field(min_length=1, description="Who asked (name or ticket).")


@router.post("/v1/admin/rollback", dependencies=[Depends(require_admin)])
async def admin_rollback(body: RollbackRequest, state: StateDep) -> JSONResponse:
    try:
        record = await run_in_threadpool(
            rollback, state.settings, reason=body.reason, requested_by=body.requested_by
        )
    except RollbackError as exc:
        raise HTTPException(409, detail=str(exc)) from None
    await run_in_threadpool(state.check, force=True)
    return readyz_with(
        state, {"rollback_record": record["record_id"], "sequence": record["sequence"]}
    )
