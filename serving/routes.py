"""HTTP routes: scoring, model card, health, readiness, metrics, admin."""

from __future__ import annotations

import json
import logging
import math
import time
import uuid
from datetime import UTC, datetime
from typing import Annotated, Any, Literal

import numpy as np
from fastapi import APIRouter, Depends, HTTPException, Request, Response
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST
from pydantic import BaseModel, Field, ValidationError
from starlette.requests import ClientDisconnect

from serving.admin import RollbackError, rollback
from serving.deps import Loaded, ServingState, get_state, require_admin, require_loaded
from serving.loader import Champion
from serving.predlog import decision_records
from serving.scoring import Text, reasons_for, result_dicts, score_customers

log = logging.getLogger(__name__)
router = APIRouter()
StateDep = Annotated[ServingState, Depends(get_state)]
LoadedDep = Annotated[Loaded, Depends(require_loaded)]
INLINE_ROWS = 64  # larger batches are scored off the event loop


class FieldProblem(BaseModel):
    field: str = Field(description="Dotted path of the field, e.g. customers[2].tenure_months.")
    problem: str
    expected: str | None = None
    got: Any = Field(None, description="What was sent (scalars only, text cut short).")


class ErrorDetail(BaseModel):
    code: str = Field(description="Stable machine-readable code, e.g. invalid_customer.")
    message: str
    fields: list[FieldProblem] = Field(default_factory=list)


class ErrorBody(BaseModel):
    """The one shape of every error the service returns."""

    error: ErrorDetail


class Reason(BaseModel):
    feature: str
    value: Any = None
    effect_on_probability: float


class ScoreResult(BaseModel):
    customer_id: str | int
    churn_probability: float = Field(ge=0, le=1)
    expected_value_usd: float = Field(description="Expected value of contacting (USD).")
    action: Literal["contact", "no_contact"] = Field(
        description="What is done: no_contact for a customer in the randomized holdout."
    )
    tier: str = Field(description="The policy's tier; `holdout` for a holdout customer.")
    model_name: str
    model_version: str
    policy_id: str
    would_contact: bool = Field(
        description="What the policy decided, before the holdout (== action == contact when "
        "the customer is not held out)."
    )
    holdout: bool = Field(description="The customer is in the randomized holdout.")
    experiment_id: str | None = Field(
        description="The holdout experiment (GET /v1/model describes it); null when none runs."
    )
    warnings: list[str]
    reasons: list[Reason] | None = Field(None, description="Only with ?explain=true.")
    uplift_effect: float | None = Field(
        None,
        description="Only under an uplift policy: the churn probability a contact removes "
        "(0-1; negative: a contact pushes the customer out). churn_probability is then the "
        "churn probability without contact and expected_value_usd the incremental value.",
    )


class BatchResult(BaseModel):
    request_id: str
    results: list[ScoreResult]


ERRORS: dict[int | str, dict[str, Any]] = {
    code: {"model": ErrorBody, "description": text}
    for code, text in [
        (400, "Unparseable body: invalid JSON or UTF-8, or nested too deeply"),
        (413, "Body or batch larger than the configured limit"),
        (415, "Not JSON (Content-Type must be application/json)"),
        (422, "A customer refused: named fields malformed, out of range or too many missing"),
        (503, "No verified champion loaded"),
    ]
}
ADMIN_ERRORS: dict[int | str, dict[str, Any]] = {
    code: {"model": ErrorBody, "description": text}
    for code, text in [
        (401, "Missing or wrong bearer token"),
        (403, "Admin routes disabled (no token configured)"),
        (409, "Rollback not possible"),
        (422, "Invalid request"),
    ]
}

_EXPECTED = {
    "float_parsing": "number",
    "float_type": "number",
    "finite_number": "a finite number",
    "string_type": "text",
    "missing": "a value",
    "extra_forbidden": "no such field",
    "greater_than_equal": "a number >= 0",
    "int_type": "integer",
}
JSON_MEDIA_TYPES = ("application/json",)


class NonFinite:
    """A number JSON cannot carry, kept from parsing so validation names its field:
    ``NaN``/``Infinity``/``-Infinity`` literals, or a number beyond float range (1e309)."""

    def __init__(self, text: str) -> None:
        self.text = text

    def __repr__(self) -> str:
        return self.text


def _parse_float(text: str) -> float | NonFinite:
    value = float(text)
    return value if math.isfinite(value) else NonFinite(text)


def parse_json(body: bytes) -> Any:
    """The request body as JSON. Raises ``BadRequest`` (400) for invalid UTF-8, invalid JSON
    or nesting deeper than the parser allows (the C parser raises RecursionError at about
    Python's recursion limit; that is our depth limit, reached long before any
    customer's real depth of 3). Non-finite numbers parse to ``NonFinite``."""
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise BadRequest("invalid_json", f"body is not UTF-8 text: {exc.reason}") from None
    try:
        return json.loads(text, parse_constant=NonFinite, parse_float=_parse_float)
    except RecursionError:
        raise BadRequest("too_deep", "JSON nested too deeply") from None
    except ValueError as exc:  # JSONDecodeError, or an integer of more than 4300 digits
        raise BadRequest("invalid_json", f"invalid JSON: {exc}") from None


class BadRequest(Exception):
    """A body that cannot be parsed (400, our error shape)."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


def echo_value(value: Any) -> Any:
    """What the client sent, safe to echo: scalars (text cut to 80 characters, lone
    surrogates escaped), the literal of a non-finite number, else the JSON type's name."""
    if value is None or isinstance(value, bool):
        return value
    if isinstance(value, NonFinite):
        return value.text
    if isinstance(value, float):
        return value if math.isfinite(value) else repr(value)
    if isinstance(value, int):
        return value if abs(value) < 10**15 else f"{str(value)[:20]}... ({len(str(value))} digits)"
    if isinstance(value, str):
        return value[:80].encode("utf-8", "backslashreplace").decode("utf-8")
    return "object" if isinstance(value, dict) else "array" if isinstance(value, list) else None


def field_errors(exc: ValidationError, prefix: str) -> list[dict[str, Any]]:
    """One entry per field (customers are flat: a union's member tags are dropped)."""
    out: dict[str, dict[str, Any]] = {}
    for e in exc.errors():
        name = str(e["loc"][0]) if e["loc"] else "body"
        field = f"{prefix}{name}"
        if field in out:
            continue
        raw = e.get("input")
        kind = "finite_number" if isinstance(raw, NonFinite) else e["type"]
        problem = (
            f"{raw.text} is not a finite number (JSON has no NaN or Infinity; "
            "a number beyond +-1.8e308 overflows to infinity)"
            if isinstance(raw, NonFinite)
            else e["msg"]
        )
        entry = {"field": field, "problem": problem, "expected": _EXPECTED.get(kind, kind)}
        if e["type"] != "missing":
            entry["got"] = echo_value(raw)
        out[field] = entry
    return list(out.values())


def error_response(
    status: int,
    code: str,
    message: str,
    fields: list[dict[str, Any]] | None = None,
    headers: dict[str, str] | None = None,
) -> JSONResponse:
    """Every error of the service, in one shape (``ErrorBody``)."""
    body = {"error": {"code": code, "message": message, "fields": fields or []}}
    return JSONResponse(status_code=status, content=body, headers=headers)


def is_json(content_type: str | None) -> bool:
    """``application/json`` (any parameters, e.g. charset=utf-8) or ``application/*+json``."""
    media = (content_type or "").split(";")[0].strip().lower()
    return media in JSON_MEDIA_TYPES or (
        media.startswith("application/") and media.endswith("+json")
    )


def missing_features(champion: Champion, row: dict[str, Any]) -> list[str]:
    """The model's features a validated customer leaves out or null."""
    return [c for c in champion.scorer.features if row.get(c) is None]


@router.post("/v1/score", responses={200: {"model": ScoreResult | BatchResult}, **ERRORS})
async def score(request: Request, state: StateDep, explain: bool = False) -> Response:
    """Score one customer (an object) or a batch (``{"customers": [...]}``). With
    ``?explain=true`` each result carries the features that moved its probability most.
    Every refusal is one ``ErrorBody``; nothing refused is written to the prediction log."""
    start = time.perf_counter()
    limit = state.settings.max_body_bytes
    declared = request.headers.get("content-length")
    too_big = f"body larger than {limit} bytes"
    if declared is not None and declared.isdigit() and int(declared) > limit:
        return error_response(
            413, "body_too_large", too_big, [{"field": "body", "problem": too_big}]
        )
    try:
        body = await request.body()  # read even when refused below: the connection stays usable
    except ClientDisconnect:  # the client went away; nothing to answer, not a server error
        return Response(status_code=499)
    if len(body) > limit:
        return error_response(
            413, "body_too_large", too_big, [{"field": "body", "problem": too_big}]
        )
    content_type = request.headers.get("content-type")
    if not is_json(content_type):
        msg = f"send JSON (Content-Type: application/json), not {content_type or 'no type'}"
        return error_response(415, "unsupported_media_type", msg)
    loaded: Loaded = require_loaded(request)
    try:
        payload = parse_json(body)
    except BadRequest as exc:
        return error_response(
            400, exc.code, exc.message, [{"field": "body", "problem": exc.message}]
        )
    batch = isinstance(payload, dict) and "customers" in payload
    items = payload.get("customers") if batch else [payload]
    if batch and (not isinstance(items, list) or set(payload) != {"customers"}):
        problem = "expected a list of customers and no other key"
        return error_response(
            422,
            "invalid_batch",
            problem,
            [{"field": "customers", "problem": problem, "expected": "array"}],
        )
    if not isinstance(items, list) or not items:
        problem = "no customer to score"
        return error_response(
            422,
            "empty_batch",
            problem,
            [
                {
                    "field": "customers",
                    "problem": problem,
                    "expected": 'an object or {"customers": [...]}',
                }
            ],
        )
    if len(items) > state.settings.max_batch_customers:
        limit_n = state.settings.max_batch_customers
        problem = f"{len(items)} customers > limit {limit_n}"
        return error_response(
            413, "batch_too_large", problem, [{"field": "customers", "problem": problem}]
        )
    champ = loaded.champion
    rows, errors = [], []
    invalid = False  # some customer is malformed (not only too sparse)
    share = state.settings.max_imputed_share
    n_features = len(champ.scorer.features)
    for i, item in enumerate(items):
        prefix = f"customers[{i}]." if batch else ""
        if not isinstance(item, dict):
            invalid = True
            errors.append(
                {
                    "field": prefix.rstrip(".") or "body",
                    "problem": "expected an object",
                    "expected": "object",
                    "got": echo_value(item),
                }
            )
            continue
        try:
            row = loaded.adapter.validate_python(item).model_dump(by_alias=True)
        except ValidationError as exc:
            errors.extend(field_errors(exc, prefix))
            invalid = True
            continue
        missing = missing_features(champ, row)
        if n_features and len(missing) / n_features > share:
            errors.extend(
                {
                    "field": f"{prefix}{col}",
                    "problem": f"missing: {len(missing)} of {n_features} features are missing, "
                    f"more than the {share:.0%} that may be imputed",
                    "expected": "a value",
                }
                for col in missing
            )
            continue
        rows.append(row)
    if errors:
        code = "too_many_missing" if not invalid else "invalid_customer"
        return error_response(
            422, code, f"{len(errors)} field(s) refused; nothing was scored", errors
        )
    experiment = state.settings.experiment
    if len(rows) > INLINE_ROWS:
        scored = await run_in_threadpool(score_customers, champ, rows, experiment)
    else:
        scored = score_customers(champ, rows, experiment)
    bad = ~(np.isfinite(scored.probability) & np.isfinite(scored.expected_value))
    if bad.any():  # values within range that still overflow the model's arithmetic
        fields = [
            {"field": f"customers[{i}]" if batch else "body", "problem": "not scorable"}
            for i in np.nonzero(bad)[0]
        ]
        msg = "the model gives no finite score for these values; nothing was scored"
        return error_response(422, "not_scorable", msg, fields)
    results = result_dicts(champ, scored)
    if explain:
        for res, row in zip(results, rows, strict=True):
            res["reasons"] = reasons_for(champ, row)
    request_id = request.headers.get("x-request-id") or uuid.uuid4().hex
    latency_ms = (time.perf_counter() - start) * 1000
    state.decisions.append_records(
        decision_records(
            state.inputs,
            rows=rows,
            results=results,
            id_column=champ.id_column,
            value_column=champ.value_column,
            request_id=request_id,
            at=datetime.now(UTC),
            latency_ms=round(latency_ms, 3),
        )
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


@router.get("/v1/model", responses={503: ERRORS[503]})
def model_card(loaded: LoadedDep, state: StateDep) -> dict[str, Any]:
    """What is serving and why, and the randomized holdout experiment in force (``null``
    when none: serving.experiment_id unset)."""
    experiment = state.settings.experiment
    return {
        **loaded.champion.info,
        "loaded_at": datetime.fromtimestamp(loaded.loaded_at, UTC).isoformat(),
        "experiment": None if experiment is None else experiment.describe(),
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
    return JSONResponse(detail, status_code=200 if cur is not None else 503)


@router.get("/metrics")
def metrics(state: StateDep) -> Response:
    """Prometheus text: under `bayespilot serve`, every worker's values (``worker`` label)."""
    return Response(state.metrics.exposition(), media_type=CONTENT_TYPE_LATEST)


@router.post("/v1/admin/reload", dependencies=[Depends(require_admin)], responses=ADMIN_ERRORS)
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
    reason: Text = Field(min_length=3, description="Why the champion is rolled back.")
    requested_by: Text = Field(min_length=1, description="Who asked (name or ticket).")


@router.post("/v1/admin/rollback", dependencies=[Depends(require_admin)], responses=ADMIN_ERRORS)
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
