"""Benchmark: BayesPilot's scoring service against ``mlflow models serve``, the in-process
scoring floor, and batch scoring throughput.

Usage (from the repository root)::

    .venv/bin/python benchmarks/bench_serving.py [--requests 4000] [--duration 20] [--warmup 3]
        [--concurrency 8] [--floor-iterations 2000] [--batch-rows 1000000] [--keep]

One invocation, in a fresh temporary workspace (removed at the end unless ``--keep``):

1. ``bayespilot run --no-prefect`` promotes a model (default config, 20k synthetic rows); any
   decision other than PROMOTED aborts the benchmark.
2. Each server runs alone (started, measured, stopped before the next one) on 127.0.0.1:
   ``bayespilot serve`` (ready: GET /readyz == 200) and ``mlflow models serve -m
   models:/churn-risk@champion --env-manager local`` (ready: GET /ping == 200), first with each
   one's default workers (both default to 1), then both with ``--equal-workers`` (2).
3. Load: one customer per request, ``--concurrency`` keep-alive connections, a warm-up of
   ``--warmup`` seconds (discarded), then ``--requests`` requests or ``--duration`` seconds,
   whichever comes first. wrk (one thread, Lua script) when installed, else an asyncio httpx
   client. Latency in milliseconds (ms), throughput in requests per second (req/s); errors are
   non-200 responses plus socket errors / exceptions.
4. In-process floor: ``champion.scorer.score({col: [value]})`` plus the policy decision
   (``Policy.values`` + ``decide``) for one record, no HTTP; p50/p99 in ms.
5. Batch: ``--batch-rows`` generated rows (seed 99, label and truth dropped) written as CSV and
   Parquet; ``serving.batch.score_file`` timed CSV->CSV and Parquet->Parquet in this process
   (rows/s, model loading excluded), plus the wall time (s) of the ``bayespilot score`` CLI on
   the CSV (process start and model loading included).

Every measured window also records CPU use: the server's processes (100 % = one core; which
workers did the work), and all other processes as a share of the machine, so a busy machine is
reported, not hidden. Child processes cache bytecode under the temp dir (PYTHONPYCACHEPREFIX).

Targets: BayesPilot p99 <= 10 ms at concurrency 8; BayesPilot throughput >= 5x MLflow's;
batch >= 100k rows/s CSV->CSV.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import resource
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parent.parent
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))
VENV_BIN = REPO_ROOT / ".venv" / "bin"
HOST = "127.0.0.1"
MODEL_URI = "models:/churn-risk@champion"
CLK_TCK = os.sysconf("SC_CLK_TCK")
NCPU = os.cpu_count() or 1
BUSY_OTHER_PCT = 10.0  # other processes above this share of the machine: figures distorted

# The example customer of tests/serving/conftest.py (copied: tests/ is not a library).
# Numbers are floats, as the service's request model validates them.
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

# wrk Lua script: POST one fixed body; per-thread response limit (script argument); span from
# thread start to the limit-th response (CLOCK_MONOTONIC via LuaJIT ffi, microseconds). wrk's
# main thread sleeps the full -d even when every thread has stopped, so a thread that reaches
# its limit sends SIGINT to wrk, which ends the run and reports (as on Ctrl-C).
WRK_LUA = r"""
local ffi = require("ffi")
ffi.cdef[[
struct bench_timespec { long tv_sec; long tv_nsec; };
int clock_gettime(int clk_id, struct bench_timespec *tp);
int getpid(void);
int kill(int pid, int sig);
]]
local ts = ffi.new("struct bench_timespec")
local function now_us()
  ffi.C.clock_gettime(1, ts)
  return tonumber(ts.tv_sec) * 1000000 + tonumber(ts.tv_nsec) / 1000
end

wrk.method = "POST"
wrk.body = [==[__BODY__]==]
wrk.headers["Content-Type"] = "application/json"

local threads = {}
function setup(thread) table.insert(threads, thread) end

function init(args)
  limit = tonumber(args[1]) or 0
  responses = 0
  non200 = 0
  t_start = now_us()
  t_limit = 0
end

function response(status, headers, body)
  responses = responses + 1
  if status ~= 200 then non200 = non200 + 1 end
  if limit > 0 and responses >= limit then
    if t_limit == 0 then
      t_limit = now_us()
      ffi.C.kill(ffi.C.getpid(), 2)
    end
    wrk.thread:stop()
  end
end

function done(summary, latency, requests)
  local n, bad, span, all_limited = 0, 0, 0, true
  for _, t in ipairs(threads) do
    n = n + t:get("responses")
    bad = bad + t:get("non200")
    local a, b = t:get("t_start"), t:get("t_limit")
    if b == 0 then all_limited = false elseif b - a > span then span = b - a end
  end
  if not all_limited then span = summary.duration end
  local e = summary.errors
  io.write(string.format(
    'BENCH_JSON {"responses": %d, "non200": %d, "span_us": %.0f, "socket_errors": %d, ' ..
    '"p50_us": %.0f, "p99_us": %.0f, "max_us": %.0f}\n',
    n, bad, span, e.connect + e.read + e.write + e.timeout,
    latency:percentile(50), latency:percentile(99), latency.max))
end
"""


@dataclass(frozen=True)
class CpuUse:
    """CPU used during a window. ``server_pct``: the server's process group, 100 = one core;
    ``per_process_s``: its processes' CPU seconds; ``other_pct``: every process except the
    server, this script and its waited-for children (the load generator, the CLI), as a share
    of all cores (0 on an otherwise idle machine)."""

    wall_s: float
    server_pct: float
    other_pct: float
    per_process_s: tuple[float, ...] = ()

    @property
    def active(self) -> int:
        """Server processes that did >= 10 % of the server's work: with few keep-alive
        connections opened at once, one uvicorn worker may accept them all."""
        total = sum(self.per_process_s)
        return sum(1 for c in self.per_process_s if total > 0 and c >= 0.1 * total)


@dataclass(frozen=True)
class LoadResult:
    """One measured load run. Latencies in ms, throughput in req/s, duration in s."""

    server: str
    workers: int
    requests: int
    errors: int
    p50_ms: float
    p99_ms: float
    rps: float
    duration_s: float
    tool: str
    cpu: CpuUse = field(default_factory=lambda: CpuUse(0.0, 0.0, 0.0))


@dataclass(frozen=True)
class Target:
    """An HTTP scoring endpoint and the one-record body it is sent."""

    name: str
    url: str
    body: str


def log(msg: str) -> None:
    print(f"[bench_serving {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((HOST, 0))
        return int(s.getsockname()[1])


def base_env(tmp: Path) -> dict[str, str]:
    """Environment of every child process. Bytecode is cached under the temp dir (not in the
    repository or venv): with PYTHONDONTWRITEBYTECODE=1 every process start would compile
    ~1,400 modules from source (about 3 s), which no deployment pays."""
    env = dict(os.environ)
    env.update(
        PREFECT_HOME=str(tmp / "prefect"),
        PREFECT_SERVER_ANALYTICS_ENABLED="false",
        PATH=f"{VENV_BIN}{os.pathsep}{env.get('PATH', '')}",
        PYTHONPYCACHEPREFIX=str(tmp / "pycache"),
    )
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    env.pop("BAYESPILOT_HOME", None)
    return env


def http(
    method: str, url: str, body: str | None = None, timeout_s: float = 10.0
) -> tuple[int, str]:
    """One request with the standard library; returns (status, text); status 0 when refused."""
    data = body.encode() if body is not None else None
    req = urllib.request.Request(url, data=data, method=method)
    if data is not None:
        req.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(req, timeout=timeout_s) as resp:
            return int(resp.status), resp.read().decode()
    except urllib.error.HTTPError as exc:
        return int(exc.code), exc.read().decode(errors="replace")
    except (OSError, urllib.error.URLError):
        return 0, ""


def ancestors() -> set[int]:
    """This process and its parents (a shell or `timeout` that started this benchmark)."""
    out, pid = set(), os.getpid()
    while pid > 1 and pid not in out:
        out.add(pid)
        try:
            stat = Path(f"/proc/{pid}/stat").read_text()
        except OSError:
            break
        pid = int(stat[stat.rfind(")") + 2 :].split()[1])
    return out


def machine_state() -> str:
    """1-minute load average and any other benchmark process running (they distort figures)."""
    listing = subprocess.run(["pgrep", "-af", r"bench_[a-z_]+\.py"], capture_output=True,
                             text=True).stdout.splitlines()
    mine = ancestors()
    others = [ln.split(maxsplit=1)[0] for ln in listing
              if "bench_serving.py" not in ln and int(ln.split(maxsplit=1)[0]) not in mine]
    busy = f", OTHER BENCHMARK RUNNING (pids {' '.join(others)})" if others else ""
    return f"load average {os.getloadavg()[0]:.2f}{busy}"


# ------------------------------------------------------------------ CPU accounting
def group_cpu_s(pgid: int) -> dict[int, float]:
    """CPU seconds (user + system) of each live process in process group ``pgid``."""
    out: dict[int, float] = {}
    for d in Path("/proc").iterdir():
        if not d.name.isdigit():
            continue
        try:
            raw = (d / "stat").read_text()
        except OSError:
            continue
        rest = raw[raw.rfind(")") + 2 :].split()  # fields from 3 (state) on
        if int(rest[2]) == pgid:
            out[int(d.name)] = (int(rest[11]) + int(rest[12])) / CLK_TCK
    return out


def machine_busy_s() -> float:
    """Non-idle CPU seconds of all cores since boot (/proc/stat)."""
    f = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:9]]
    user, nice, system, _idle, _iowait, irq, softirq, steal = f
    return (user + nice + system + irq + softirq + steal) / CLK_TCK


def own_cpu_s() -> float:
    """CPU seconds of this process plus its waited-for children."""
    total = 0.0
    for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN):
        ru = resource.getrusage(who)
        total += ru.ru_utime + ru.ru_stime
    return total


@contextlib.contextmanager
def cpu_window(pgid: int | None) -> Iterator[list[CpuUse]]:
    """Measure CPU use over the ``with`` block; the result is appended to the yielded list."""
    box: list[CpuUse] = []
    g0 = group_cpu_s(pgid) if pgid else {}
    busy0, own0, t0 = machine_busy_s(), own_cpu_s(), time.perf_counter()
    yield box
    wall = time.perf_counter() - t0
    busy, own = machine_busy_s() - busy0, own_cpu_s() - own0
    g1 = group_cpu_s(pgid) if pgid else {}
    per = tuple(g1[p] - g0.get(p, 0.0) for p in sorted(g1))
    server = sum(per)
    other = max(0.0, busy - server - own)
    box.append(CpuUse(wall, 100 * server / wall, 100 * other / (wall * NCPU), per))


# ------------------------------------------------------------------ processes
def tail(path: Path, lines: int = 30) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


def stop_process(proc: subprocess.Popen[bytes], grace_s: float = 15.0) -> None:
    """SIGTERM the process group started for ``proc``, then SIGKILL it if still alive."""
    pgid = proc.pid  # started with start_new_session=True: its own process group
    for sig, wait_s in ((signal.SIGTERM, grace_s), (signal.SIGKILL, 5.0)):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pgid, sig)
        try:
            proc.wait(timeout=wait_s)
        except subprocess.TimeoutExpired:
            continue
        # the leader is gone; make sure no worker of its group survives
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pgid, 0)
            time.sleep(0.5)
            os.killpg(pgid, signal.SIGKILL)
        return


@contextlib.contextmanager
def running_server(
    name: str, cmd: list[str], env: dict[str, str], ready_url: str, log_path: Path,
    timeout_s: float = 180.0,
) -> Iterator[subprocess.Popen[bytes]]:
    """Start ``cmd`` in its own process group, wait for ``ready_url`` to answer 200, yield;
    always stop the whole group on exit."""
    log(f"starting {name}: {' '.join(cmd)}")
    with open(log_path, "wb") as fh:
        proc = subprocess.Popen(cmd, env=env, stdout=fh, stderr=subprocess.STDOUT,
                                start_new_session=True, cwd=REPO_ROOT)
    try:
        started = time.monotonic()
        deadline = started + timeout_s
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"{name} exited with {proc.returncode}:\n{tail(log_path)}")
            status, _ = http("GET", ready_url, timeout_s=2.0)
            if status == 200:
                break
            if time.monotonic() > deadline:
                raise RuntimeError(f"{name} not ready after {timeout_s:.0f} s:\n{tail(log_path)}")
            time.sleep(0.25)
        log(f"{name} ready after {time.monotonic() - started:.1f} s ({ready_url})")
        yield proc
    finally:
        stop_process(proc)
        log(f"{name} stopped")


# ------------------------------------------------------------------ load generation
def run_wrk(target: Target, *, concurrency: int, duration_s: float, limit: int,
            script: Path) -> dict[str, Any]:
    """One wrk run (one thread, ``concurrency`` connections); the script's JSON summary."""
    script.write_text(WRK_LUA.replace("__BODY__", target.body))
    cmd = ["wrk", "-t1", f"-c{concurrency}", f"-d{max(1, round(duration_s))}s", "--latency",
           "--timeout", "10s", "-s", str(script), target.url, "--", str(limit)]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=duration_s + 60)
    line = next((ln for ln in out.stdout.splitlines() if ln.startswith("BENCH_JSON ")), None)
    if out.returncode != 0 or line is None:
        raise RuntimeError(f"wrk failed ({out.returncode}):\n{out.stdout}\n{out.stderr}")
    return dict(json.loads(line.removeprefix("BENCH_JSON ")))


async def _httpx_load(target: Target, concurrency: int, duration_s: float,
                      limit: int) -> tuple[list[float], int, float]:
    """asyncio + httpx fallback: latencies (s), errors, span (s)."""
    import httpx

    latencies: list[float] = []
    errors = 0
    sent = 0
    headers = {"Content-Type": "application/json"}
    body = target.body.encode()
    start = time.perf_counter()
    stop_at = start + duration_s

    async def worker(client: httpx.AsyncClient) -> None:
        nonlocal errors, sent
        while time.perf_counter() < stop_at and (limit <= 0 or sent < limit):
            sent += 1
            t0 = time.perf_counter()
            try:
                resp = await client.post(target.url, content=body, headers=headers)
                if resp.status_code != 200:
                    errors += 1
            except httpx.HTTPError:
                errors += 1
            latencies.append(time.perf_counter() - t0)

    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(limits=limits, timeout=10.0) as client:
        await asyncio.gather(*(worker(client) for _ in range(concurrency)))
    return latencies, errors, time.perf_counter() - start


def measure(target: Target, workers: int, pgid: int, *, concurrency: int, warmup_s: float,
            duration_s: float, limit: int, tmp: Path) -> LoadResult:
    """Warm up (discarded), then one bounded measured run (CPU use of the server's process
    group ``pgid`` and of everything else recorded over it)."""
    script = tmp / f"wrk-{target.name}.lua"
    if shutil.which("wrk"):
        if warmup_s > 0:
            run_wrk(target, concurrency=concurrency, duration_s=warmup_s, limit=0, script=script)
        with cpu_window(pgid) as cpu:
            r = run_wrk(target, concurrency=concurrency, duration_s=duration_s, limit=limit,
                        script=script)
        span_s = r["span_us"] / 1e6
        n = int(r["responses"])
        return LoadResult(target.name, workers, n, int(r["non200"]) + int(r["socket_errors"]),
                          r["p50_us"] / 1000, r["p99_us"] / 1000, n / span_s, span_s, "wrk",
                          cpu[0])
    if warmup_s > 0:
        asyncio.run(_httpx_load(target, concurrency, warmup_s, 0))
    with cpu_window(pgid) as cpu:
        lat, errors, span_s = asyncio.run(_httpx_load(target, concurrency, duration_s, limit))
    q = statistics.quantiles(lat, n=100, method="inclusive")
    return LoadResult(target.name, workers, len(lat), errors, q[49] * 1000, q[98] * 1000,
                      len(lat) / span_s, span_s, "httpx", cpu[0])


# ------------------------------------------------------------------ phases
def promote(tmp: Path, env: dict[str, str]) -> None:
    cmd = [str(VENV_BIN / "bayespilot"), "run", "--no-prefect", "--set",
           f"paths.workspace={tmp}"]
    log(f"promoting: {' '.join(cmd)}")
    t0 = time.perf_counter()
    out = subprocess.run(cmd, env=env, cwd=REPO_ROOT, capture_output=True, text=True,
                         timeout=3600)
    (tmp / "promote.log").write_text(out.stdout + "\n" + out.stderr)
    decision = next((ln for ln in out.stdout.splitlines() if ln.startswith("decision:")), "")
    if out.returncode != 0 or not decision.startswith("decision: PROMOTED"):
        raise SystemExit(
            f"promotion did not end PROMOTED (exit {out.returncode}): {decision or '-'}\n"
            f"{out.stdout[-3000:]}\n{out.stderr[-3000:]}"
        )
    log(f"{decision} ({time.perf_counter() - t0:.0f} s)")


def mlflow_body(tmp: Path) -> tuple[str, list[str]]:
    """The /invocations body for CUSTOMER, with the logged signature's input columns."""
    import mlflow
    from mlflow.models import get_model_info

    mlflow.set_tracking_uri(f"sqlite:///{tmp}/mlflow.db")
    info = get_model_info(MODEL_URI)
    if info.signature is None or info.signature.inputs is None:
        raise SystemExit(f"{MODEL_URI} has no input signature")
    columns = list(info.signature.inputs.input_names())
    missing = [c for c in columns if c not in CUSTOMER]
    if missing:
        raise SystemExit(f"the example customer lacks signature column(s) {missing}")
    body = {"dataframe_split": {"columns": columns, "data": [[CUSTOMER[c] for c in columns]]}}
    return json.dumps(body), columns


def bench_server(kind: str, workers: int | None, *, tmp: Path, env: dict[str, str],
                 mlflow_json: str, args: argparse.Namespace) -> tuple[LoadResult, float]:
    """Start one server, sanity-check one request, measure, stop. Returns the result and the
    churn probability the server returned for CUSTOMER."""
    port = free_port()
    base = f"http://{HOST}:{port}"
    n_workers = workers or ((os.cpu_count() or 1) if kind == "BayesPilot" else 1)
    if kind == "BayesPilot":
        cmd = [str(VENV_BIN / "bayespilot"), "serve", "--set", f"paths.workspace={tmp}",
               "--host", HOST, "--port", str(port)]
        if workers:
            cmd += ["--workers", str(workers)]
        ready, target = f"{base}/readyz", Target(kind, f"{base}/v1/score", json.dumps(CUSTOMER))
        server_env = env
    else:
        cmd = [str(VENV_BIN / "mlflow"), "models", "serve", "-m", MODEL_URI, "--env-manager",
               "local", "-h", HOST, "-p", str(port)]
        if workers:
            cmd += ["-w", str(workers)]
        ready, target = f"{base}/ping", Target(kind, f"{base}/invocations", mlflow_json)
        server_env = {**env, "MLFLOW_TRACKING_URI": f"sqlite:///{tmp}/mlflow.db",
                      "MLFLOW_ALLOW_PICKLE_DESERIALIZATION": "true"}
        if args.mlflow_threads:
            for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
                server_env[var] = str(args.mlflow_threads)
    tag = f"{kind.lower()}-w{workers or 'default'}"
    with running_server(f"{kind} (workers {workers or 'default'})", cmd, server_env, ready,
                        tmp / f"{tag}.log") as proc:
        status, text = http("POST", target.url, target.body)
        if status != 200:
            raise RuntimeError(f"{kind} sanity request failed: {status} {text[:500]}")
        payload = json.loads(text)
        if kind == "BayesPilot":
            prob = float(payload["churn_probability"])
        else:
            first = payload["predictions"][0]
            prob = float(first[1] if isinstance(first, list) else first)
        result = measure(target, n_workers, proc.pid, concurrency=args.concurrency,
                         warmup_s=args.warmup, duration_s=args.duration, limit=args.requests,
                         tmp=tmp)
    log(f"{tag}: {result.requests} requests, {result.errors} errors, p50 {result.p50_ms:.2f} ms, "
        f"p99 {result.p99_ms:.2f} ms, {result.rps:.0f} req/s ({result.tool}); server CPU "
        f"{result.cpu.server_pct:.0f} % (per process, s: "
        f"{', '.join(f'{c:.1f}' for c in result.cpu.per_process_s)}), other CPU "
        f"{result.cpu.other_pct:.0f} % of {NCPU} cores")
    return result, prob


def in_process_floor(champion: Any, iterations: int) -> tuple[float, float, float]:
    """p50 and p99 (ms) of scorer.score + the policy decision for CUSTOMER, no HTTP; and the
    other processes' CPU share (%) meanwhile."""
    import numpy as np

    from tasks.select_policy import decide

    cols = list(champion.scorer.features)
    if champion.value_column and champion.value_column not in cols:
        cols.append(champion.value_column)
    columns = {c: [CUSTOMER.get(c)] for c in cols}
    policy = champion.policy

    def once() -> None:
        out = champion.scorer.score(columns)
        raw = columns[champion.value_column] if champion.value_column else None
        values = policy.values(None if raw is None else np.asarray(raw, dtype=float), 1)
        decide(out.probability, values, policy.document)

    for _ in range(min(200, iterations)):
        once()
    times: list[float] = []
    with cpu_window(None) as cpu:
        for _ in range(iterations):
            t0 = time.perf_counter()
            once()
            times.append(time.perf_counter() - t0)
    q = statistics.quantiles(times, n=100, method="inclusive")
    return q[49] * 1000, q[98] * 1000, cpu[0].other_pct


def batch(champion: Any, tmp: Path, env: dict[str, str], rows: int,
          chunk_rows: int) -> dict[str, float]:
    """Rows/s of score_file CSV->CSV and Parquet->Parquet, and the CLI wall time (s)."""
    from serving.batch import score_file
    from tasks.generate_data import generate_data

    log(f"generating {rows:,} rows")
    frame = generate_data(rows=rows, seed=99).drop(columns=["churned", "true_churn_probability"])
    csv_in, pq_in = tmp / "batch_in.csv", tmp / "batch_in.parquet"
    frame.to_csv(csv_in, index=False)
    frame.to_parquet(pq_in, index=False)
    del frame
    out: dict[str, float] = {}
    for label, src, dst in (("csv", csv_in, tmp / "batch_out.csv"),
                            ("parquet", pq_in, tmp / "batch_out.parquet")):
        with cpu_window(None) as cpu:
            t0 = time.perf_counter()
            summary = score_file(champion, src, dst, chunk_rows=chunk_rows)
            elapsed = time.perf_counter() - t0
        out[f"{label}_other_pct"] = cpu[0].other_pct
        if summary.rows != rows or summary.rejected:
            raise RuntimeError(f"batch {label}: {summary.text()}")
        out[f"{label}_s"] = elapsed
        out[f"{label}_rows_per_s"] = rows / elapsed
        log(f"batch {label}: {rows:,} rows in {elapsed:.2f} s = {rows / elapsed:,.0f} rows/s "
            f"(other CPU {cpu[0].other_pct:.0f} %)")
    cmd = [str(VENV_BIN / "bayespilot"), "score", "--set", f"paths.workspace={tmp}",
           "--input", str(csv_in), "--output", str(tmp / "batch_cli_out.csv")]
    with cpu_window(None) as cpu:
        t0 = time.perf_counter()
        res = subprocess.run(cmd, env=env, cwd=REPO_ROOT, capture_output=True, text=True,
                             timeout=3600)
        out["cli_csv_s"] = time.perf_counter() - t0
    out["cli_other_pct"] = cpu[0].other_pct
    if res.returncode != 0:
        raise RuntimeError(f"bayespilot score failed ({res.returncode}): {res.stderr[-2000:]}")
    log(f"bayespilot score CLI (CSV): {out['cli_csv_s']:.2f} s wall "
        f"(other CPU {out['cli_other_pct']:.0f} %)")
    return out


# ------------------------------------------------------------------ report
def met(ok: bool) -> str:
    return "MET" if ok else "NOT MET"


def report(results: list[LoadResult], probs: dict[str, float],
           floor: tuple[float, float, float],
           batch_out: dict[str, float], args: argparse.Namespace, load_before: str) -> None:
    print()
    print(f"Serving, one record per request, concurrency {args.concurrency}, up to "
          f"{args.requests} requests or {args.duration:.0f} s after {args.warmup:.0f} s warm-up "
          f"({results[0].tool})")
    print(f"machine before the servers: {load_before}")
    header = f"{'server':<12} {'workers':>7} {'requests':>9} {'errors':>7} {'p50 ms':>8} " \
             f"{'p99 ms':>8} {'req/s':>9} {'srv CPU%':>9} {'active':>6} {'other CPU%':>11}"
    print(header)
    print("-" * len(header))
    for r in results:
        print(f"{r.server:<12} {r.workers:>7} {r.requests:>9} {r.errors:>7} {r.p50_ms:>8.2f} "
              f"{r.p99_ms:>8.2f} {r.rps:>9.0f} {r.cpu.server_pct:>9.0f} {r.cpu.active:>6} "
              f"{r.cpu.other_pct:>11.1f}")
    print(f"(srv CPU%: the server's processes, 100 = one core; active: server processes that "
          f"did >= 10 % of its work; other CPU%: all processes but the server, the load "
          f"generator and this script, share of {NCPU} cores)")
    for r in results:
        if r.workers > 1 and r.cpu.active < r.workers:
            print(f"note: {r.server} with {r.workers} workers: the {args.concurrency} keep-alive "
                  f"connections landed on {r.cpu.active} worker(s), so this row measures "
                  f"{r.cpu.active} worker(s)")
    bp_default, ml_default, bp_equal, ml_equal = results
    ratio_default = bp_default.rps / ml_default.rps
    ratio_equal = bp_equal.rps / ml_equal.rps
    print()
    print(f"throughput ratio BayesPilot / MLflow: default workers "
          f"({bp_default.workers} vs {ml_default.workers}) {ratio_default:.1f}x; equal workers "
          f"({bp_equal.workers} each) {ratio_equal:.1f}x")
    diff = abs(probs["BayesPilot"] - probs["MLflow"])
    print(f"same customer, churn probability: BayesPilot {probs['BayesPilot']:.6f}, MLflow "
          f"{probs['MLflow']:.6f} (|diff| {diff:.2e})")
    print(f"in-process floor (scorer.score + policy decision, 1 record, "
          f"{args.floor_iterations} iterations): p50 {floor[0]:.3f} ms, p99 {floor[1]:.3f} ms "
          f"(other CPU {floor[2]:.1f} %)")
    rows = args.batch_rows
    print(f"batch score_file, {rows:,} rows: CSV->CSV {batch_out['csv_rows_per_s']:,.0f} rows/s "
          f"({batch_out['csv_s']:.2f} s); Parquet->Parquet "
          f"{batch_out['parquet_rows_per_s']:,.0f} rows/s ({batch_out['parquet_s']:.2f} s); "
          f"`bayespilot score` CLI CSV wall {batch_out['cli_csv_s']:.2f} s "
          f"({rows / batch_out['cli_csv_s']:,.0f} rows/s end to end); other CPU "
          f"{batch_out['csv_other_pct']:.1f} / {batch_out['parquet_other_pct']:.1f} / "
          f"{batch_out['cli_other_pct']:.1f} %")
    busy = [f"{r.server} w{r.workers}" for r in results if r.cpu.other_pct > BUSY_OTHER_PCT]
    busy += [name for name, key in (("floor", None), ("batch CSV", "csv_other_pct"),
                                    ("batch Parquet", "parquet_other_pct"),
                                    ("CLI", "cli_other_pct"))
             if (floor[2] if key is None else batch_out[key]) > BUSY_OTHER_PCT]
    print("machine: " + (f"BUSY (other processes > {BUSY_OTHER_PCT:.0f} % of the CPUs) during "
                         f"{', '.join(busy)}: those figures are distorted" if busy else
                         f"quiet (other processes <= {BUSY_OTHER_PCT:.0f} % of the CPUs "
                         "throughout)"))
    print()
    worst_p99 = max(bp_default.p99_ms, bp_equal.p99_ms)
    bp_errors = bp_default.errors + bp_equal.errors
    print("targets:")
    print(f"  BayesPilot p99 <= 10 ms at concurrency {args.concurrency}: {met(worst_p99 <= 10)} "
          f"(worst {worst_p99:.2f} ms; {bp_errors} errors)")
    print(f"  BayesPilot throughput >= 5x MLflow: default {met(ratio_default >= 5)} "
          f"({ratio_default:.1f}x), equal workers {met(ratio_equal >= 5)} ({ratio_equal:.1f}x)")
    print(f"  batch >= 100k rows/s CSV->CSV: {met(batch_out['csv_rows_per_s'] >= 100_000)} "
          f"({batch_out['csv_rows_per_s']:,.0f} rows/s)")


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--requests", type=int, default=4000, help="measured requests per server")
    p.add_argument("--duration", type=float, default=20.0, help="max measured seconds/server")
    p.add_argument("--warmup", type=float, default=3.0, help="warm-up seconds (discarded)")
    p.add_argument("--concurrency", type=int, default=8, help="concurrent connections")
    p.add_argument("--equal-workers", type=int, default=2, help="workers for the equal run")
    p.add_argument("--mlflow-threads", type=int, default=1,
                   help="OMP/BLAS threads for MLflow's workers, as `bayespilot serve` sets for "
                        "its own (0: leave MLflow's environment alone)")
    p.add_argument("--floor-iterations", type=int, default=2000, help="in-process iterations")
    p.add_argument("--batch-rows", type=int, default=1_000_000, help="rows for batch scoring")
    p.add_argument("--keep", action="store_true", help="keep the temporary workspace")
    return p.parse_args()


def main() -> int:
    args = parse_args()
    # SIGTERM -> SystemExit, so every `finally` (server shutdown) runs
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    tmp = Path(tempfile.mkdtemp(prefix="bench-serving-"))
    log(f"workspace {tmp}")
    env = base_env(tmp)
    try:
        promote(tmp, env)
        mlflow_json, columns = mlflow_body(tmp)
        log(f"MLflow signature inputs ({len(columns)}): {', '.join(columns)}")
        load_before = machine_state()
        log(f"before the servers: {load_before}")
        results: list[LoadResult] = []
        probs: dict[str, float] = {}
        for workers in (None, args.equal_workers):
            for kind in ("BayesPilot", "MLflow"):
                r, probs[kind] = bench_server(kind, workers, tmp=tmp, env=env,
                                              mlflow_json=mlflow_json, args=args)
                results.append(r)

        from configs.settings import build_config
        from serving.loader import load_champion
        from serving.settings import ServingSettings

        config = build_config({"paths": {"workspace": str(tmp)}})
        champion = load_champion(ServingSettings.from_config(config))
        floor = in_process_floor(champion, args.floor_iterations)
        log(f"in-process floor: p50 {floor[0]:.3f} ms, p99 {floor[1]:.3f} ms")
        batch_out = batch(champion, tmp, env, args.batch_rows, config.serving.batch_chunk_rows)
        report(results, probs, floor, batch_out, args, load_before)
    finally:
        if args.keep:
            log(f"kept {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
