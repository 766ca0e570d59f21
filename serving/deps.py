"""Per-worker state: the verified champion (swapped atomically), its request schema, the
decision writer, metrics, and the loop that keeps every worker on what the chain says.

Every worker of `bayespilot serve` follows two shared files (``stat`` only, every
``watch_interval_s``): the signed chain head marker ``promotions/HEAD``, rewritten by every
append (promotion, rollback, policy update, monitoring), and the serving generation file
(``Workspace.serving_generation``), rewritten by ``/v1/admin/reload``. A change of either
makes the worker re-check at once, so a promotion, rollback or forced reload is in force on
all workers within about one watch interval plus the load time, not just on the worker that
got the request. Every ``reload_interval_s`` the full check runs anyway (chain, MLflow alias,
artifact and policy hashes), so a hand-moved alias or a file changed on disk is seen; the
verified model keeps serving and ``/readyz`` says why.
"""

from __future__ import annotations

import asyncio
import fcntl
import logging
import os
import secrets
import tempfile
import threading
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from fastapi import HTTPException, Request
from pydantic import BaseModel, TypeAdapter

from serving.loader import (
    Champion,
    NotReady,
    follow_head,
    head_marker,
    load,
    resolve_champion,
    store_for,
)
from serving.metrics import Metrics
from serving.scoring import example_customer, request_model, result_dicts, score_customers
from serving.settings import ServingSettings
from tasks.decision_store import expire_decisions

log = logging.getLogger(__name__)
RETENTION_INTERVAL_S = 3600.0  # how often each worker applies the decision retention (s)
Fingerprint = tuple[int, int, int] | None  # (inode, mtime ns, size) of a watched file


def fingerprint(path: Path) -> Fingerprint:
    """What a ``stat`` says about ``path`` (None when it does not exist): an atomic rewrite
    (temp file + rename) always changes the inode."""
    try:
        st = path.stat()
    except FileNotFoundError:
        return None
    return (st.st_ino, st.st_mtime_ns, st.st_size)


def read_generation(path: Path) -> int:
    """The serving generation in ``path`` (0 when there is none yet or it is unreadable)."""
    try:
        return int(path.read_text().split()[0])
    except (FileNotFoundError, IndexError, ValueError):
        return 0


def bump_generation(path: Path) -> int:
    """Write generation + 1 atomically (temp file + rename, under a lock file so two
    concurrent reloads never write the same number); returns the new generation."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path.with_name(path.name + ".lock"), "a+") as lock:
        fcntl.flock(lock.fileno(), fcntl.LOCK_EX)
        try:
            generation = read_generation(path) + 1
            fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".generation-", suffix=".tmp")
            try:
                with os.fdopen(fd, "w") as fh:
                    fh.write(f"{generation} {time.time():.6f}\n")
                    fh.flush()
                    os.fsync(fh.fileno())
                os.replace(tmp, path)
            finally:
                Path(tmp).unlink(missing_ok=True)
        finally:
            fcntl.flock(lock.fileno(), fcntl.LOCK_UN)
    return generation


@dataclass(frozen=True)
class Loaded:
    """What one reference swap replaces: champion plus the schema generated from it, and an
    example customer with the response the champion gave it (for the OpenAPI document)."""

    champion: Champion
    customer: type[BaseModel]
    adapter: TypeAdapter[Any]
    loaded_at: float
    example: dict[str, Any]
    example_result: dict[str, Any]


class ServingState:
    def __init__(self, settings: ServingSettings) -> None:
        self.settings = settings
        self.metrics = Metrics()
        self.worker = self.metrics.worker
        self.pid = os.getpid()
        # every HTTP decision goes to the decision store (one writer, one file per flush)
        self.decisions = settings.decision_writer(f"w{self.worker}-{self.pid}")
        self.expire_decisions()
        self.inputs = settings.input_policy()
        self.current: Loaded | None = None
        self.last_error: str | None = None
        self.last_check_marker: str | None = None
        self._reload_lock = threading.Lock()
        ws = settings.workspace_paths
        self.generation_path = ws.serving_generation
        self.head_path = store_for(settings).head_marker_path
        # the generation whose forced check this worker has completed (named in responses)
        self.seen_generation = fingerprint(self.generation_path)
        self.generation = read_generation(self.generation_path)
        self.seen_head: Fingerprint = None  # the head marker as the last check began

    def expire_decisions(self) -> list[Path]:
        """Delete the decision store's hour partitions older than the retention (at start and
        hourly; several workers doing it at once is harmless)."""
        try:
            return expire_decisions(
                self.settings.workspace_paths.decisions,
                max_age_days=self.settings.decisions_retention_days,
            )
        except OSError:
            log.exception("decision store retention failed")
            return []

    async def keep_decisions(self) -> None:
        """Background loop: age retention of the decision store every hour."""
        while True:
            await asyncio.sleep(RETENTION_INTERVAL_S)
            await asyncio.to_thread(self.expire_decisions)

    def check(self, *, force: bool = False) -> bool:
        """Reload when the chain head changed (or ``force``). Returns True if a new champion
        was swapped in. A head naming the same champion (a monitoring record, a challenger)
        only moves the head, without unpickling. A failing head leaves the verified champion
        serving."""
        with self._reload_lock:
            self.seen_head = fingerprint(self.head_path)  # a later rewrite triggers a check
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
                    self.metrics.set_ready(False)
                log.warning("champion not (re)loaded: %s", exc)
                return False
            except Exception as exc:  # a broken artifact must not take the worker down
                self.last_error = f"{type(exc).__name__}: {exc}"
                log.exception("champion load failed")
                return False
            self.last_error = None
            model = request_model(champ, max_abs=self.settings.max_abs_feature_value)
            example = example_customer(champ)
            example_result = result_dicts(champ, score_customers(champ, [example]))[0]
            self.current = Loaded(
                champ, model, TypeAdapter(model), time.time(), example, example_result
            )
            self.metrics.set_model(
                champ.model_name, champ.model_version, champ.policy_id, champ.record.record_id
            )
            log.info(
                "serving %s v%s, policy %s",
                champ.model_name,
                champ.model_version,
                champ.policy_id[:12],
            )
            return True

    def reload_generation(self, generation: int | None = None) -> bool:
        """The forced check of a serving generation: ``generation`` None bumps the shared
        generation file first (``/v1/admin/reload``: every other worker follows), else it is
        the generation another worker wrote. Returns True if a new champion was swapped in."""
        if generation is None:
            generation = bump_generation(self.generation_path)
        swapped = self.check(force=True)
        self.generation = max(self.generation, generation)
        return swapped

    async def follow_head(self) -> None:
        """Background loop: ``stat`` the head marker and the generation file every
        ``watch_interval_s``; re-check when one changed since it was last seen, and run the
        full check every ``reload_interval_s`` regardless."""
        s = self.settings
        last_full = time.monotonic()
        while True:
            await asyncio.sleep(s.watch_interval_s)
            try:
                gen = fingerprint(self.generation_path)
                if gen != self.seen_generation:
                    self.seen_generation = gen
                    generation = read_generation(self.generation_path)
                    if generation > self.generation:
                        await asyncio.to_thread(self.reload_generation, generation)
                        last_full = time.monotonic()
                        continue
                if fingerprint(self.head_path) != self.seen_head:
                    await asyncio.to_thread(self.check)
                elif time.monotonic() - last_full >= s.reload_interval_s:
                    await asyncio.to_thread(self.check, force=True)
                    last_full = time.monotonic()
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
    # constant time: how much of a guess matched must not show in the response time
    if not secrets.compare_digest(header.encode(), f"Bearer {token}".encode()):
        raise HTTPException(
            401, detail="missing or wrong bearer token", headers={"WWW-Authenticate": "Bearer"}
        )
    return "admin"
