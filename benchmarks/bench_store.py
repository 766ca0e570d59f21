"""Benchmark: one simulated day of decisions in the decision store, and monitoring over it.

Usage (from the repository root)::

    .venv/bin/python benchmarks/bench_store.py [--rows 10000000] [--http-rate 20]
        [--http-requests 2000] [--http-flush-s 10] [--outcomes 1000000] [--workdir DIR]
        [--workspace DIR] [--keep] [--stages promote,data,batch,http,monitor]
        [--engine local|dask] [--threads N] [--dask-workers N] [--dask-memory-limit 2GiB]

Stages, each a child process whose wall time (s) and peak RSS (GiB, ``wait4`` rusage) are
printed:

1. ``promote``: ``bayespilot run --no-prefect`` on the default config (20k synthetic rows)
   in a fresh workspace; anything but PROMOTED aborts. A small model is enough: the store's
   cost is in the rows, not the model.
2. ``data``: ``--rows`` customers from the generator (1M-row chunks, seeds 1000+i, ids
   ``S<row number>``) written to one Parquet file in row groups (label and truth dropped),
   plus ``--outcomes`` labels of the first customers (their generated ``churned``) ingested
   with ``bayespilot outcomes``.
3. ``batch``: ``serving.batch.score_file`` Parquet -> Parquet with a ``source="batch"``
   ``DecisionWriter`` (what ``bayespilot score`` does; ``--threads``, default
   ``serving.batch_threads``): rows/s over the scoring call (model loading excluded),
   decisions included, CPU seconds, the seconds per step summed over chunks and threads, and
   the 1-minute load average at the end. ``--engine dask``: ``serving.batch_dask.
   score_file_dask`` on a LocalCluster of ``--dask-workers`` workers with
   ``--dask-memory-limit`` each (cluster start excluded from rows/s; the workers' CPU seconds
   printed beside the command's; peak RSS is the command's own).
4. ``http``: a real ``bayespilot serve`` on 127.0.0.1 gets ``--http-requests`` single-customer
   requests (8 connections); its workers write them to the store (flushed at shutdown). Then
   HTTP decisions of two simulated workers at ``--http-rate`` requests/s spread over the 24
   hours of the day (scored by the champion, inputs from the generated customers), each worker
   a ``DecisionWriter`` flushed every ``--http-flush-s`` simulated seconds, as a serving worker
   does, its small files merged per hour.
5. ``monitor``: ``bayespilot monitor --no-prefect --since <day> --until <day + 1>``: rows read
   per source (``decisions_read`` of the monitoring record), wall time, peak RSS.

The day is the current UTC date (the batch runs now, inside it). It prints figures; it asserts
nothing. Targets (issue 16): batch scoring of 10M rows from Parquet >= 300k rows/s including the
decision writes; monitoring reads the whole day without holding it (peak RSS flat in rows).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parent.parent
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))
VENV_BIN = Path(sys.executable).parent
CHUNK_ROWS = 1_000_000
STAGES = ("promote", "data", "batch", "http", "monitor")


def log(msg: str) -> None:
    print(f"[bench_store {time.strftime('%H:%M:%S')}] {msg}", flush=True)


def base_env(workspace: Path) -> dict[str, str]:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO_ROOT)}
    env["PREFECT_HOME"] = str(workspace / "prefect-home")
    env["BAYESPILOT_HOME"] = str(workspace)
    return env


def run_child(cmd: list[str], env: dict[str, str], label: str) -> dict[str, Any]:
    """Run ``cmd``; its wall time (s), peak RSS (GiB, its own ``wait4`` rusage) and the JSON
    line it printed last (if any)."""
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        t0 = time.perf_counter()
        proc = subprocess.Popen(cmd, env=env, cwd=REPO_ROOT, stdout=out, stderr=err, text=True)
        _, status, usage = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - t0
        proc.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        err.seek(0)
        stdout, stderr = out.read(), err.read()
    if proc.returncode != 0:
        raise SystemExit(f"{label} failed ({proc.returncode}):\n{stdout[-3000:]}\n{stderr[-3000:]}")
    result: dict[str, Any] = {}
    for line in reversed(stdout.splitlines()):
        if line.startswith("{"):
            result = json.loads(line)
            break
    return {
        "wall_s": wall,
        "cpu_s": usage.ru_utime + usage.ru_stime,
        "peak_rss_gib": usage.ru_maxrss / 2**20,
        "stdout": stdout,
        **result,
    }


def child(stage: str, args: argparse.Namespace) -> list[str]:
    return [
        sys.executable,
        str(Path(__file__).resolve()),
        "--child",
        stage,
        "--workspace",
        str(args.workspace),
        "--rows",
        str(args.rows),
        "--http-rate",
        str(args.http_rate),
        "--http-requests",
        str(args.http_requests),
        "--http-flush-s",
        str(args.http_flush_s),
        "--outcomes",
        str(args.outcomes),
        "--day",
        args.day,
        "--engine",
        args.engine,
        "--threads",
        str(args.threads),
        "--dask-workers",
        str(args.dask_workers),
        "--dask-memory-limit",
        args.dask_memory_limit,
    ]


# ------------------------------------------------------------------ child stages
def _champion(workspace: Path) -> Any:
    from configs.settings import build_config
    from serving.loader import load_champion
    from serving.settings import ServingSettings

    config = build_config({"paths": {"workspace": str(workspace)}})
    return config, load_champion(ServingSettings.from_config(config), pin=False)


def stage_data(args: argparse.Namespace) -> dict[str, Any]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    from tasks.generate_data import TRUTH_COLUMN, generate_data

    path = args.workspace / "customers.parquet"
    outcomes = args.workspace / "outcomes.parquet"
    writer = None
    labels = []
    t0 = time.perf_counter()
    for i, start in enumerate(range(0, args.rows, CHUNK_ROWS)):
        n = min(CHUNK_ROWS, args.rows - start)
        df = generate_data(rows=n, seed=1000 + i)
        df["customer_id"] = [f"S{start + j:09d}" for j in range(n)]
        if start < args.outcomes:
            k = min(n, args.outcomes - start)
            labels.append(df[["customer_id", "churned"]].iloc[:k])
        table = pa.Table.from_pandas(
            df.drop(columns=["churned", TRUTH_COLUMN]), preserve_index=False
        )
        if writer is None:
            writer = pq.ParquetWriter(path, table.schema)
        writer.write_table(table, row_group_size=CHUNK_ROWS)
    assert writer is not None
    writer.close()
    gen_s = time.perf_counter() - t0
    if labels:
        import pandas as pd

        lab = pd.concat(labels, ignore_index=True)
        lab["observed_at"] = args.day + "T23:00:00Z"
        lab.to_parquet(outcomes, index=False)
    return {"rows": args.rows, "generate_s": gen_s, "outcomes": sum(len(x) for x in labels)}


def stage_batch(args: argparse.Namespace) -> dict[str, Any]:
    from serving.settings import ServingSettings
    from tasks.decision_store import BATCH_FLUSH_INTERVAL_S, DecisionWriter

    config, champion = _champion(args.workspace)
    settings = ServingSettings.from_config(config)
    src = args.workspace / "customers.parquet"
    if args.engine == "dask":
        return _batch_dask(args, config, champion, src)
    from serving.batch import score_file

    writer = DecisionWriter(
        settings.workspace_paths.decisions,
        source="batch",
        writer_id="bench",
        flush_rows=config.decisions.batch_flush_rows,
        flush_interval_s=BATCH_FLUSH_INTERVAL_S,
        file_mode=settings.log_file_mode,
        compression=config.decisions.compression,
        background=True,
    )
    t0 = time.perf_counter()
    c0 = time.process_time()
    summary = score_file(
        champion,
        src,
        args.workspace / "scored.parquet",
        chunk_rows=config.serving.batch_chunk_rows,
        decisions=writer,
        inputs=settings.input_policy(),
        threads=args.threads or config.serving.batch_threads,
    )
    writer.close()
    elapsed = time.perf_counter() - t0
    steps = dict(summary.step_seconds)
    steps["write_decisions (writer thread)"] = writer.write_seconds
    return {
        "rows": summary.rows,
        "scored": summary.scored,
        "decisions": summary.decisions,
        "score_s": elapsed,
        "score_cpu_s": time.process_time() - c0,
        "rows_per_s": summary.rows / elapsed,
        "decision_files": writer.files_written,
        "steps_s": steps,
    }


def _peak_rss_gib() -> float:
    """This process's peak RSS (GiB); run on each dask worker."""
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20


def _batch_dask(args: argparse.Namespace, config: Any, champion: Any, src: Path) -> dict[str, Any]:
    """The dask engine: ``--dask-workers`` LocalCluster workers of ``--dask-memory-limit``
    each score the row groups (``serving.batch_dask.score_file_dask``)."""
    from serving.batch_dask import local_cluster, score_file_dask

    out = args.workspace / "scored-dask"
    shutil.rmtree(out, ignore_errors=True)
    with local_cluster(args.dask_workers, args.dask_memory_limit) as client:
        t0 = time.perf_counter()
        c0 = time.process_time()
        summary = score_file_dask(client, config, champion, src, out)
        elapsed = time.perf_counter() - t0
        worker_cpu = sum(float(v) for v in client.run(lambda: time.process_time()).values())
        worker_peak = max(float(v) for v in client.run(_peak_rss_gib).values())
    return {
        "rows": summary.rows,
        "scored": summary.scored,
        "decisions": summary.decisions,
        "score_s": elapsed,
        "score_cpu_s": time.process_time() - c0,
        "worker_cpu_s": worker_cpu,
        "worker_peak_rss_gib": worker_peak,
        "rows_per_s": summary.rows / elapsed,
        "decision_files": len(summary.decision_files),
        "partitions": summary.partitions,
        "steps_s": summary.step_seconds,
    }


def stage_http(args: argparse.Namespace, env: dict[str, str]) -> dict[str, Any]:
    import httpx
    import numpy as np
    import pandas as pd
    import pyarrow.parquet as pq

    from serving.scoring import score_frame
    from tasks.decision_store import DecisionWriter

    config, champion = _champion(args.workspace)
    feats = list(dict.fromkeys([*champion.scorer.features, *filter(None, [champion.value_column])]))
    pf = pq.ParquetFile(args.workspace / "customers.parquet")
    customers = next(pf.iter_batches(batch_size=200_000)).to_pandas()
    # (a) a real server on 127.0.0.1
    port = _free_port()
    cmd = [
        str(VENV_BIN / "bayespilot"),
        "serve",
        "--set",
        f"paths.workspace={args.workspace}",
        "--port",
        str(port),
    ]
    server = subprocess.Popen(
        cmd,
        env=env,
        cwd=REPO_ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    sent = 0
    try:
        base = f"http://127.0.0.1:{port}"
        deadline = time.time() + 180
        while time.time() < deadline:
            try:
                if httpx.get(f"{base}/readyz", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            time.sleep(0.3)
        else:
            raise SystemExit("bayespilot serve did not become ready")
        body = json.loads(
            customers.iloc[: args.http_requests][["customer_id", *feats]].to_json(orient="records")
        )
        t0 = time.perf_counter()
        import concurrent.futures as cf

        with httpx.Client(base_url=base, timeout=30) as http, cf.ThreadPoolExecutor(8) as pool:
            codes = list(pool.map(lambda b: http.post("/v1/score", json=b).status_code, body))
        sent = sum(c == 200 for c in codes)
        real_s = time.perf_counter() - t0
    finally:
        os.killpg(server.pid, signal.SIGTERM)  # graceful: the workers flush their buffers
        server.wait(60)
    # (b) two simulated workers over the 24 hours of the day
    t0 = time.perf_counter()
    day = datetime.fromisoformat(args.day).replace(tzinfo=UTC)
    total = int(args.http_rate * 86_400)
    rng = np.random.default_rng(11)
    writers = [
        DecisionWriter(
            args.workspace / "decisions",
            source="http",
            writer_id=f"sim{w}",
            flush_rows=config.decisions.flush_rows,
            flush_interval_s=1e9,
            compression=config.decisions.compression,
        )
        for w in (0, 1)
    ]
    scored = score_frame(champion, customers)
    slice_rows = max(1, int(args.http_rate * args.http_flush_s / 2))  # per worker and flush
    written = 0
    offset = 0
    while written < total:
        for w in writers:
            n = min(slice_rows, total - written)
            if n <= 0:
                break
            idx = rng.integers(0, len(customers), n)
            at = day + timedelta(seconds=offset * args.http_flush_s)
            times = pd.Timestamp(at) + pd.to_timedelta(
                np.sort(rng.uniform(0, args.http_flush_s, n)), unit="s"
            )
            frame = pd.DataFrame(
                {
                    "time": times,
                    "request_id": [f"sim-{offset}-{i}" for i in range(n)],
                    "model_version": champion.model_version,
                    "policy_id": champion.policy_id,
                    "customer_id": customers["customer_id"].to_numpy()[idx],
                    "probability": scored["churn_probability"].to_numpy()[idx],
                    "action": scored["action"].to_numpy()[idx],
                    "expected_value_usd": scored["expected_value_usd"].to_numpy()[idx],
                    "tier": scored["tier"].to_numpy()[idx],
                    "latency_ms": rng.gamma(4, 0.5, n),
                    **{f"input.{c}": customers[c].to_numpy()[idx] for c in feats},
                }
            )
            w.append(frame)
            w.flush()  # what the worker's interval flush does
            written += n
        offset += 1
    files = sum(w.files_written for w in writers)
    for w in writers:
        w.close()  # merges each worker's small files per hour
    sim_s = time.perf_counter() - t0
    return {
        "real_requests": len(body),
        "real_ok": sent,
        "real_s": real_s,
        "simulated_rows": written,
        "simulated_flushes": files,
        "simulate_s": sim_s,
    }


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def run_stage(stage: str, args: argparse.Namespace) -> None:
    env = base_env(args.workspace)
    if stage == "data":
        out = stage_data(args)
    elif stage == "batch":
        out = stage_batch(args)
    elif stage == "http":
        out = stage_http(args, env)
    else:
        raise SystemExit(f"unknown stage {stage}")
    print(json.dumps(out), flush=True)


# ------------------------------------------------------------------ driver
def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rows", type=int, default=10_000_000, help="customers scored in batch")
    p.add_argument(
        "--http-rate",
        type=float,
        default=20.0,
        help="simulated HTTP decisions per second over the day (req/s)",
    )
    p.add_argument(
        "--http-requests", type=int, default=2000, help="requests sent to a real bayespilot serve"
    )
    p.add_argument(
        "--http-flush-s",
        type=float,
        default=10.0,
        help="simulated seconds between a worker's flushes (decisions.flush_interval_s)",
    )
    p.add_argument("--outcomes", type=int, default=1_000_000, help="labelled customers")
    p.add_argument("--workdir", type=Path, default=None, help="parent of the workspace")
    p.add_argument("--workspace", type=Path, default=None, help="reuse this workspace")
    p.add_argument("--stages", default=",".join(STAGES), help="comma-separated stages to run")
    p.add_argument(
        "--day", default=datetime.now(UTC).strftime("%Y-%m-%d"), help="the simulated day (UTC date)"
    )
    p.add_argument("--keep", action="store_true", help="keep the workspace")
    p.add_argument(
        "--engine",
        choices=("local", "dask"),
        default="local",
        help="batch stage: score in this process (threads) or on a dask LocalCluster",
    )
    p.add_argument(
        "--threads", type=int, default=0, help="local batch: scoring threads (0: config)"
    )
    p.add_argument("--dask-workers", type=int, default=2, help="dask batch: worker processes")
    p.add_argument(
        "--dask-memory-limit", default="2GiB", help="dask batch: memory limit per worker"
    )
    p.add_argument("--child", default=None, help=argparse.SUPPRESS)
    return p.parse_args()


def main() -> int:
    args = parse_args()
    if args.child:
        run_stage(args.child, args)
        return 0
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    made = args.workspace is None
    if made:
        args.workspace = Path(tempfile.mkdtemp(prefix="bench-store-", dir=args.workdir))
    args.workspace = args.workspace.resolve()
    env = base_env(args.workspace)
    stages = [s for s in args.stages.split(",") if s]
    log(f"workspace {args.workspace}; day {args.day}; stages {stages}")
    results: dict[str, dict[str, Any]] = {}
    try:
        if "promote" in stages:
            cmd = [
                str(VENV_BIN / "bayespilot"),
                "run",
                "--no-prefect",
                "--set",
                f"paths.workspace={args.workspace}",
            ]
            r = run_child(cmd, env, "promotion")
            decision = next(
                (ln for ln in r["stdout"].splitlines() if ln.startswith("decision:")), ""
            )
            if not decision.startswith("decision: PROMOTED"):
                raise SystemExit(f"promotion did not end PROMOTED: {decision or '-'}")
            results["promote"] = r
            log(f"promote: {decision} in {r['wall_s']:.0f} s, peak {r['peak_rss_gib']:.2f} GiB")
        if "data" in stages:
            r = run_child(child("data", args), env, "data")
            results["data"] = r
            log(
                f"data: {r['rows']:,} customers in {r['wall_s']:.0f} s, "
                f"peak {r['peak_rss_gib']:.2f} GiB"
            )
            if r.get("outcomes"):
                cmd = [
                    str(VENV_BIN / "bayespilot"),
                    "outcomes",
                    "--set",
                    f"paths.workspace={args.workspace}",
                    "--input",
                    str(args.workspace / "outcomes.parquet"),
                ]
                o = run_child(cmd, env, "outcomes")
                log(f"outcomes: {r['outcomes']:,} labels ingested in {o['wall_s']:.0f} s")
        if "batch" in stages:
            r = run_child(child("batch", args), env, "batch")
            results["batch"] = r
            log(
                f"batch ({args.engine}): {r['rows']:,} rows scored + {r['decisions']:,} "
                f"decisions stored in {r['score_s']:.1f} s = {r['rows_per_s']:,.0f} rows/s "
                f"({r['decision_files']} files); process wall {r['wall_s']:.1f} s, "
                f"CPU {r['cpu_s']:.1f} s"
                + (f" + workers' CPU {r['worker_cpu_s']:.1f} s" if "worker_cpu_s" in r else "")
                + f", peak {r['peak_rss_gib']:.2f} GiB"
                + (
                    f" (largest worker peak {r['worker_peak_rss_gib']:.2f} GiB)"
                    if "worker_peak_rss_gib" in r
                    else ""
                )
                + f"; load average {os.getloadavg()[0]:.2f}"
            )
            for step, sec in r.get("steps_s", {}).items():
                log(f"  batch step {step}: {sec:.2f} s (summed over chunks and threads)")
        if "http" in stages:
            r = run_child(child("http", args), env, "http")
            results["http"] = r
            log(
                f"http: real server {r['real_ok']}/{r['real_requests']} requests in "
                f"{r['real_s']:.1f} s; simulated {r['simulated_rows']:,} decisions "
                f"({args.http_rate:g} req/s over 24 h, {r['simulated_flushes']:,} flushes) in "
                f"{r['simulate_s']:.1f} s; peak {r['peak_rss_gib']:.2f} GiB"
            )
        if "monitor" in stages:
            since = args.day
            until = (datetime.fromisoformat(args.day) + timedelta(days=1)).strftime("%Y-%m-%d")
            cmd = [
                str(VENV_BIN / "bayespilot"),
                "monitor",
                "--no-prefect",
                "--set",
                f"paths.workspace={args.workspace}",
                "--since",
                since,
                "--until",
                until,
            ]
            r = run_child(cmd, env, "monitor")
            reports = sorted(
                (args.workspace / "reports").glob("*/monitoring.json"),
                key=lambda p: p.stat().st_mtime,
            )
            summary = json.loads(reports[-1].read_text()) if reports else {}
            r["decisions_read"] = summary.get("decisions_read")
            r["outcomes_joined"] = summary.get("outcomes", {}).get("rows")
            results["monitor"] = r
            log(
                f"monitor: read {r['decisions_read']} (rows per source) in "
                f"{r['wall_s']:.1f} s, peak {r['peak_rss_gib']:.2f} GiB; "
                f"outcomes joined {r['outcomes_joined']}"
            )
        from tasks.decision_store import count_decisions

        day = datetime.fromisoformat(args.day).replace(tzinfo=UTC)
        counts = count_decisions(
            args.workspace / "decisions", since=day, until=day + timedelta(days=1)
        )
        files = len(list((args.workspace / "decisions").rglob("*.parquet")))
        size = sum(p.stat().st_size for p in (args.workspace / "decisions").rglob("*.parquet"))
        log(f"store: {counts} rows in the day, {files} files, {size / 2**30:.2f} GiB on disk")
        print(
            json.dumps(
                {k: {kk: vv for kk, vv in v.items() if kk != "stdout"} for k, v in results.items()},
                default=str,
            )
        )
    finally:
        if made and not args.keep:
            shutil.rmtree(args.workspace, ignore_errors=True)
        else:
            log(f"kept {args.workspace}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
