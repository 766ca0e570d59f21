"""Load test: every worker of ``bayespilot serve`` follows a promotion, a rollback and a forced
reload together, under load, with no failed request.

Usage (from the repository root)::

    .venv/bin/python benchmarks/bench_reload.py [--concurrency 16] [--workers 2]
        [--rows 10000] [--settle 3] [--max-minutes 30] [--keep] [--reuse DIR]

One invocation, in a fresh temporary workspace (removed at the end unless ``--keep``), on
127.0.0.1 only, bounded by ``--max-minutes`` (the whole run aborts past it; three small
``bayespilot run`` take most of the time: about 1 min each on an idle 2-core machine, 4 min on
a busy one):

1. Two ``bayespilot run --no-prefect`` runs on ``--rows`` generated customers (a small config,
   as the tests use) promote champions v1 and v2. The promotion signing key lives in the temp
   dir (XDG_CONFIG_HOME / XDG_STATE_HOME point there).
2. ``bayespilot serve --workers N`` on a free port; ready when every worker has answered.
3. Load: ``--concurrency`` keep-alive connections (one httpx client each) post one customer
   per request to /v1/score, back to back. Each response names what served it
   (``x-bayespilot-model``: model, version and introducing record; ``x-bayespilot-worker``:
   worker slot, pid and the serving generation it has reloaded).
4. During the load, ``--settle`` seconds apart: a third ``bayespilot run`` that promotes v3;
   ``POST /v1/admin/rollback`` (back to v2); ``POST /v1/admin/reload`` (a new generation).
5. ``bayespilot verify`` on the workspace after the load (must exit 0).

Printed: total responses and non-2xx / transport errors (target 0); whether every response
named a champion the verified chain had introduced by the time the response arrived, and how
many named one superseded for more than 1 s when the request was sent; per event, each
worker's switch time = (arrival of its first response naming the new champion or
generation) - (event time: mtime of the new record file, or of the generation file), and the
slowest worker's (target <= 1 s). Times in seconds (s), wall clock of this machine.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

REPO_ROOT = Path(__file__).resolve().parent.parent
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))
VENV_BIN = REPO_ROOT / ".venv" / "bin"
HOST = "127.0.0.1"
TOKEN = "bench-reload-token"
SWITCH_TARGET_S = 1.0
STALE_GRACE_S = 1.0  # a superseded champion may answer this long after its successor landed

# The example customer of tests/serving/conftest.py (copied: tests/ is not a library).
CUSTOMER: dict[str, Any] = {
    "customer_id": "C-1",
    "region": "north",
    "contract": "month-to-month",
    "plan": "basic",
    "payment_method": "card",
    "acquisition_channel": "online",
    "paperless_billing": "yes",
    "tenure_months": 3.0,
    "monthly_charges_usd": 70.0,
    "total_charges_usd": 210.0,
    "age_years": 30.0,
    "num_products": 1.0,
    "support_calls_90d": 4.0,
    "late_payments_12m": 1.0,
    "usage_gb_30d": 20.0,
    "satisfaction_score": 4.0,
    "discount_pct": 0.0,
}


def small_config(workspace: Path, rows: int) -> dict[str, Any]:
    """The tests' fast config (tests/conftest.py ``small_layers``), on ``rows`` customers."""
    return {
        "paths": {"workspace": str(workspace)},
        "data": {"segment_columns": ["region", "contract"]},
        "synthetic": {"rows": rows, "seed": 7},
        "economics": {"customer_value": {"column": "monthly_charges_usd", "multiplier": 3.0}},
        "bootstrap": {"resamples": 300},
        "policy": {"bootstrap_resamples": 100},
        "candidates": {"random_forest": {"n_estimators": 40}},
        "gates": {
            "calibration": {"simulations": 200},
            "threshold": {"resamples": 60},
            "stability": {"n_splits": 3, "n_repeats": 1},
            "technical": {"latency_rows": 30, "latency_repeats": 2, "reload_rows": 300},
        },
        "serving": {"reload_interval_s": 5.0, "watch_interval_s": 0.2},
    }


def log(msg: str) -> None:
    print(f"[bench_reload {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((HOST, 0))
        return int(s.getsockname()[1])


def base_env(tmp: Path) -> dict[str, str]:
    """Every child's environment: Prefect, the signing key and bytecode under the temp dir."""
    env = dict(os.environ)
    env.update(
        PREFECT_HOME=str(tmp / "prefect"),
        PREFECT_SERVER_ANALYTICS_ENABLED="false",
        XDG_CONFIG_HOME=str(tmp / "xdg-config"),
        XDG_STATE_HOME=str(tmp / "xdg-state"),
        PYTHONPYCACHEPREFIX=str(tmp / "pycache"),
        BAYESPILOT_ADMIN_TOKEN=TOKEN,
        PATH=f"{VENV_BIN}{os.pathsep}{env.get('PATH', '')}",
    )
    for name in [n for n in env if n.startswith("BAYESPILOT__") or n == "BAYESPILOT_HOME"]:
        env.pop(name)
    env.pop("BAYESPILOT_SIGNING_KEY", None)
    env.pop("PREFECT_API_URL", None)
    return env


def promote(config: Path, env: dict[str, str], log_path: Path) -> None:
    """One ``bayespilot run --no-prefect``; anything but PROMOTED aborts the benchmark."""
    cmd = [str(VENV_BIN / "bayespilot"), "run", "--no-prefect", "--config", str(config)]
    t0 = time.perf_counter()
    out = subprocess.run(cmd, env=env, cwd=REPO_ROOT, capture_output=True, text=True, timeout=1800)
    log_path.write_text(out.stdout + "\n" + out.stderr)
    decision = next((ln for ln in out.stdout.splitlines() if ln.startswith("decision:")), "")
    if out.returncode != 0 or not decision.startswith("decision: PROMOTED"):
        raise SystemExit(
            f"run did not end PROMOTED (exit {out.returncode}): {decision or '-'}\n"
            f"{out.stdout[-2000:]}\n{out.stderr[-2000:]}"
        )
    log(f"{decision} ({time.perf_counter() - t0:.0f} s)")


@dataclass(frozen=True)
class Response:
    sent: float  # wall clock (s)
    received: float
    status: int  # 0: transport error
    model: str  # "<name>@v<version>;record=<id12>" ("" on error)
    worker: str
    generation: int

    @property
    def version(self) -> str:
        return self.model.split("@v", 1)[1].split(";", 1)[0] if self.model else ""


def parse(sent: float, r: httpx.Response) -> Response:
    worker, _pid, gen = (r.headers.get("x-bayespilot-worker") or ";;generation=-1").split(";")
    return Response(
        sent,
        time.time(),
        r.status_code,
        r.headers.get("x-bayespilot-model", ""),
        worker,
        int(gen.removeprefix("generation=")),
    )


class Load:
    """``concurrency`` keep-alive clients scoring back to back in a thread's event loop."""

    def __init__(self, url: str, concurrency: int) -> None:
        self.url, self.concurrency = url, concurrency
        self.responses: list[Response] = []
        self.stop = threading.Event()
        self.thread = threading.Thread(target=lambda: asyncio.run(self._run()), daemon=True)

    async def _client(self) -> None:
        body = json.dumps(CUSTOMER).encode()
        headers = {"content-type": "application/json"}
        limits = httpx.Limits(max_connections=1, max_keepalive_connections=1)
        async with httpx.AsyncClient(limits=limits, timeout=30) as client:
            while not self.stop.is_set():
                sent = time.time()
                try:
                    r = await client.post(self.url, content=body, headers=headers)
                    self.responses.append(parse(sent, r))
                except httpx.HTTPError:
                    self.responses.append(Response(sent, time.time(), 0, "", "", -1))

    async def _run(self) -> None:
        await asyncio.gather(*(self._client() for _ in range(self.concurrency)))

    def __enter__(self) -> Load:
        self.thread.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self.stop.set()
        self.thread.join(60)


def wait_ready(base: str, proc: subprocess.Popen[bytes], log_path: Path, workers: int) -> None:
    """Until /readyz answers 200 and every worker slot has scored once."""
    deadline, seen = time.monotonic() + 300, set[str]()
    while len(seen) < workers:
        if proc.poll() is not None:
            raise SystemExit(f"serve exited {proc.returncode}:\n{log_path.read_text()[-3000:]}")
        if time.monotonic() > deadline:
            raise SystemExit(f"serve not ready in 300 s:\n{log_path.read_text()[-3000:]}")
        try:  # a new connection each time: SO_REUSEPORT spreads them over the workers
            r = httpx.post(f"{base}/v1/score", json=CUSTOMER, timeout=5)
            if r.status_code == 200:
                seen.add(parse(0, r).worker)
                continue
        except httpx.HTTPError:
            pass
        time.sleep(0.3)


def stop_group(proc: subprocess.Popen[bytes], grace_s: float = 20.0) -> None:
    """SIGTERM the launcher (it stops its workers), then SIGKILL the group if needed."""
    with contextlib.suppress(ProcessLookupError):
        os.kill(proc.pid, signal.SIGTERM)
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(grace_s)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(10)


@dataclass(frozen=True)
class Event:
    name: str
    at: float  # wall clock (s): when the record or generation file was written
    new: str  # what a switched worker names: a model header, or "generation>=N"


def chain_timeline(workspace: Path) -> list[tuple[float, str]]:
    """(record file mtime, champion header it puts in force) for every record of the chain,
    oldest first, read from the record files (``bayespilot verify`` checks the chain after the
    load); the header as the service writes it: the record that introduced the champion."""
    paths = sorted((workspace / "promotions").glob("[0-9]*.json"))
    records = [json.loads(p.read_text()) for p in paths]
    seating = ("promoted", "policy-updated")
    keys = ("model_version", "policy_id", "artifact_sha256")
    out = []
    for i, (path, rec) in enumerate(zip(paths, records, strict=True)):
        block = rec.get("champion")
        if not block:
            continue
        intro = next(
            r
            for r in reversed(records[: i + 1])
            if r.get("decision") in seating
            and all(str((r.get("champion") or {}).get(k)) == str(block[k]) for k in keys)
        )
        model = f"{block['model_name']}@v{block['model_version']};record={intro['record_id'][:12]}"
        out.append((path.stat().st_mtime, model))
    return out


def switch_times(responses: list[Response], event: Event, workers: set[str]) -> dict[str, float]:
    """Per worker: arrival of its first response naming the new state, minus the event."""
    out: dict[str, float] = {}
    for r in sorted(responses, key=lambda r: r.received):
        if r.worker in out or r.received < event.at or r.status != 200:
            continue
        if event.new.startswith("generation>="):
            hit = r.generation >= int(event.new.removeprefix("generation>="))
        else:
            hit = r.model == event.new
        if hit:
            out[r.worker] = r.received - event.at
    return {w: out.get(w, float("inf")) for w in sorted(workers)}


def judge(responses: list[Response], timeline: list[tuple[float, str]]) -> tuple[int, int]:
    """(responses naming a champion the chain had not introduced by their arrival, responses
    naming one superseded more than ``STALE_GRACE_S`` before the request was sent)."""
    unknown = stale = 0
    for r in responses:
        if r.status != 200:
            continue
        introduced = [t for t, model in timeline if model == r.model and t <= r.received]
        if not introduced:
            unknown += 1
            continue
        # in force at time t: the champion of the newest record written at or before t
        in_force_from = r.sent - STALE_GRACE_S
        window = [m for t, m in timeline if in_force_from < t <= r.received]
        before = [m for t, m in timeline if t <= in_force_from]
        allowed = set(window) | ({before[-1]} if before else set())
        if r.model not in allowed:
            stale += 1
    return unknown, stale


def time_limit(signum: int, _frame: object) -> None:
    raise SystemExit(f"time limit (--max-minutes) reached: signal {signum}")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--concurrency", type=int, default=16)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--rows", type=int, default=10000, help="generated customers per run")
    ap.add_argument("--settle", type=float, default=3.0, help="seconds of load between events")
    ap.add_argument("--max-minutes", type=float, default=30.0, help="abort past this (min)")
    ap.add_argument("--keep", action="store_true", help="keep the temp workspace")
    ap.add_argument(
        "--reuse",
        type=Path,
        default=None,
        help="a temp dir kept (--keep) by an earlier invocation: its workspace (with v1 and v2) "
        "and signing key are copied instead of promoting two champions again",
    )
    args = ap.parse_args()
    signal.signal(signal.SIGALRM, time_limit)
    signal.alarm(int(args.max_minutes * 60))

    tmp = Path(tempfile.mkdtemp(prefix="bench-reload-"))
    if args.reuse is not None:
        for part in ("ws", "xdg-config", "xdg-state"):
            shutil.copytree(args.reuse / part, tmp / part)
    ws = tmp / "ws"
    env = base_env(tmp)
    config = tmp / "bench.yaml"
    config.write_text(json.dumps(small_config(ws, args.rows)))
    proc: subprocess.Popen[bytes] | None = None
    try:
        if args.reuse is None:
            for i in (1, 2):
                promote(config, env, tmp / f"run{i}.log")
        port = free_port()
        base = f"http://{HOST}:{port}"
        serve_log = tmp / "serve.log"
        cmd = [str(VENV_BIN / "bayespilot"), "serve", "--config", str(config)]
        cmd += ["--host", HOST, "--port", str(port), "--workers", str(args.workers)]
        with open(serve_log, "wb") as fh:
            proc = subprocess.Popen(
                cmd,
                env=env,
                cwd=REPO_ROOT,
                stdout=fh,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        t0 = time.monotonic()
        wait_ready(base, proc, serve_log, args.workers)
        log(f"serve ready with {args.workers} workers in {time.monotonic() - t0:.1f} s")

        events: list[Event] = []
        promotions = ws / "promotions"
        admin = {"authorization": f"Bearer {TOKEN}"}
        with Load(f"{base}/v1/score", args.concurrency) as load:
            time.sleep(args.settle)
            before = {p.name for p in promotions.glob("*.json")}
            log("event 1: promotion (bayespilot run)")
            promote(config, env, tmp / "run3.log")
            new = sorted(p for p in promotions.glob("*.json") if p.name not in before)
            record = next(p for p in reversed(new) if "promotion" in p.name)
            timeline = chain_timeline(ws)
            events.append(Event("promotion", record.stat().st_mtime, timeline[-1][1]))
            time.sleep(args.settle)

            log("event 2: rollback (POST /v1/admin/rollback)")
            r = httpx.post(
                f"{base}/v1/admin/rollback",
                json={"reason": "load test rollback", "requested_by": "bench_reload"},
                headers=admin,
                timeout=60,
            )
            if r.status_code != 200:
                raise SystemExit(f"rollback failed: {r.status_code} {r.text}")
            rec = next(
                p for p in promotions.glob("*.json") if r.json()["rollback_record"][:12] in p.name
            )
            events.append(Event("rollback", rec.stat().st_mtime, chain_timeline(ws)[-1][1]))
            time.sleep(args.settle)

            log("event 3: forced reload (POST /v1/admin/reload)")
            r = httpx.post(f"{base}/v1/admin/reload", headers=admin, timeout=60)
            if r.status_code != 200:
                raise SystemExit(f"reload failed: {r.status_code} {r.text}")
            gen_file = ws / "serving" / "generation"
            events.append(
                Event("reload", gen_file.stat().st_mtime, f"generation>={r.json()['generation']}")
            )
            time.sleep(args.settle)
        responses = load.responses
        log("load stopped")
        verify = subprocess.run(
            [str(VENV_BIN / "bayespilot"), "verify", "--config", str(config)],
            env=env,
            cwd=REPO_ROOT,
            capture_output=True,
            text=True,
            timeout=300,
        )
        timeline = chain_timeline(ws)
    finally:
        if proc is not None:
            stop_group(proc)
        if args.keep:
            log(f"kept {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)

    ok = [r for r in responses if 200 <= r.status < 300]
    errors = len(responses) - len(ok)
    transport = sum(1 for r in responses if r.status == 0)
    workers = {r.worker for r in ok}
    span = max(r.received for r in responses) - min(r.sent for r in responses)
    unknown, stale = judge(responses, timeline)
    print(f"load: concurrency {args.concurrency}, {args.workers} workers, {span:.1f} s")
    print(
        f"responses: {len(responses)} ({len(responses) / span:.0f} req/s), workers seen "
        f"{sorted(workers)}"
    )
    print(
        f"non-2xx: {errors} (transport errors {transport})  target 0: "
        f"{'MET' if errors == 0 else 'NOT MET'}"
    )
    print(
        f"every response named a champion the verified chain had introduced: "
        f"{'yes' if unknown == 0 else f'NO ({unknown} did not)'}; named one superseded "
        f"> {STALE_GRACE_S:g} s before the request: {stale}"
    )
    print(
        f"bayespilot verify after the load: exit {verify.returncode} "
        f"({(verify.stdout.strip().splitlines() or ['-'])[0]})"
    )
    slowest_all = 0.0
    for ev in events:
        per = switch_times(responses, ev, workers)
        slowest = max(per.values())
        slowest_all = max(slowest_all, slowest)
        detail = ", ".join(f"worker {w}: {s:.3f} s" for w, s in per.items())
        print(f"{ev.name:9s} -> {ev.new}: slowest worker {slowest:.3f} s ({detail})")
    met = errors == 0 and unknown == 0 and stale == 0 and slowest_all <= SWITCH_TARGET_S
    print(
        f"slowest switch {slowest_all:.3f} s, target <= {SWITCH_TARGET_S:g} s: "
        f"{'MET' if slowest_all <= SWITCH_TARGET_S else 'NOT MET'}"
    )
    return 0 if met and verify.returncode == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
