"""Benchmark: the promotion flow on a large Parquet file, per stage wall time and peak RSS.

Usage (from the repository root)::

    .venv/bin/python benchmarks/bench_scale.py --rows 1000000 [--engine local|dask]
        [--block-rows 250000] [--format parquet|csv] [--workdir DIR] [--keep]
        [--config configs/default.yaml]
        [--dask-workers 4] [--dask-memory-limit 2GiB] [--compare-with FILE]
        [--sequential] [--set section.key=value ...]

1. The synthetic generator writes ``--rows`` customers to a Parquet file in seeded blocks of
   ``--block-rows`` (one row group each; memory stays at one block). Timed, peak RSS shown.
   With ``--format csv`` that file is then written out as CSV (the Dask engine stages it as
   Parquet on a worker, inside the load-data stage).
2. A child process (this script with ``--child``) runs the promotion flow on that file
   (``data.source: file``) with direct calls and a timing runner: for every stage it prints
   its interval (start..end) and wall time (seconds), and the CPU seconds and peak RSS (MiB)
   during that interval of the process tree (the flow process and its live descendants: the
   refit worker processes, the technical probe, with the Dask engine the LocalCluster; RSS
   summed), sampled every 20 ms (``/proc``, ``getrusage``, psutil), plus ``ru_maxrss`` as the
   flow process's own peak. ``--sequential`` runs the stages one after another, so that with
   ``--set scale.evidence_threads=1`` each stage's CPU is its own. The flow runs independent
   stages at the same time (``flows/runner.py``), so the CPU and RSS of overlapping stages are
   shared and listed with the stages overlapped; a concurrent stage (candidates, cross-fit
   folds, stability folds) is one row from its first call's start to its last call's end; time when
   no stage ran is listed as ``(between stages)``.
3. The decision: promoted/rejected, the chosen candidate, the policy's contact threshold, and
   what the record says was sampled (``data_plan``).
4. With ``--engine dask``: the child starts the run's one LocalCluster (``--dask-workers``
   processes, ``--dask-memory-limit`` each; the flow loads, validates and splits the file on it,
   ``flows/distributed.py``), and after the run prints each worker's peak RSS and whether any
   worker was killed or restarted (a changed worker pid or address, the scheduler's
   worker-removal events). ``--compare-with FILE``
   (the ``workspace-*.json`` summary of another run, e.g. the local engine's) says whether
   the decision, candidate, policy, data and split hashes and gate values match it.

Targets on the 2-core machine (issue 16): 1M rows <= 120 s; 10M rows <= 1200 s and peak RSS
<= 8 GiB. The figures are printed, not asserted.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any, TypeVar

REPO_ROOT = Path(__file__).resolve().parent.parent
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

T = TypeVar("T")
log = logging.getLogger("bench_scale")
TARGET_S = {1_000_000: 120.0, 10_000_000: 1200.0}
TARGET_RSS_MIB = 8 * 1024.0
SAMPLE_S = 0.02


def rss_mib() -> float:
    """Current resident set size (MiB) of this process, from ``/proc/self/status``."""
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024.0
    return 0.0


def cpu_s() -> float:
    """CPU seconds (user + system, all threads) used by this process so far."""
    ru = resource.getrusage(resource.RUSAGE_SELF)
    return ru.ru_utime + ru.ru_stime


class ProcessTree:
    """This process and its live descendants (the flow's worker processes for model refits,
    the technical gate's probe): their summed RSS (MiB; pages shared between them counted
    once per process, so an upper bound) and CPU seconds (own, waited-for children's and the
    live descendants'). The descendant list is refreshed every ``refresh_s``."""

    def __init__(self, refresh_s: float = 0.25) -> None:
        import psutil

        self._me = psutil.Process()
        self._refresh_s = refresh_s
        self._seen_at = -1.0
        self._children: list[Any] = []
        # descendants seen: last CPU s, and whether this process is their parent
        self._cpu_seen: dict[int, tuple[float, bool]] = {}

    def _descendants(self) -> list[Any]:
        now = time.perf_counter()
        if now - self._seen_at >= self._refresh_s:
            self._children = self._me.children(recursive=True)
            self._seen_at = now
        return self._children

    def sample(self) -> tuple[float, float]:
        """(RSS MiB, CPU s) of the tree now."""
        import psutil

        rss, cpu = rss_mib(), cpu_s()
        waited = resource.getrusage(resource.RUSAGE_CHILDREN)
        cpu += waited.ru_utime + waited.ru_stime
        for proc in self._descendants():
            try:
                rss += proc.memory_info().rss / 2**20
                t = proc.cpu_times()
                self._cpu_seen[proc.pid] = (t.user + t.system, proc.ppid() == self._me.pid)
            except psutil.Error:
                continue
        # a child of this process that has ended and been waited for is in RUSAGE_CHILDREN:
        # its last reading is dropped then; a grandchild that ended keeps its last reading
        for pid, (_, own_child) in list(self._cpu_seen.items()):
            if own_child and not _alive(pid):
                del self._cpu_seen[pid]
        return rss, cpu + sum(c for c, _ in self._cpu_seen.values())


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except OSError:
        return False
    return True


def max_rss_mib(who: int = resource.RUSAGE_SELF) -> float:
    """Peak RSS (MiB) of this process (or its largest waited-for child) so far."""
    return resource.getrusage(who).ru_maxrss / 1024.0


class RssWatcher:
    """A daemon thread sampling the RSS (MiB) and CPU seconds of this process and its worker
    processes (:class:`ProcessTree`) every ``interval_s`` into a time series (seconds since
    start), so that any interval's peak RSS and CPU can be read afterwards, whatever else ran
    during it."""

    def __init__(self, interval_s: float = SAMPLE_S) -> None:
        self.interval_s = interval_s
        self.t0 = time.perf_counter()
        self.samples: list[tuple[float, float, float]] = []  # (t s, RSS MiB, CPU s)
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._tree = ProcessTree()
        self.sample()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def now(self) -> float:
        return time.perf_counter() - self.t0

    def sample(self) -> None:
        rss, cpu = self._tree.sample()
        row = (self.now(), rss, cpu)
        with self._lock:
            self.samples.append(row)

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            self.sample()

    def peak_rss(self, start: float, end: float) -> float:
        """Peak RSS (MiB) sampled in [start, end] (the nearest sample when none fell in it)."""
        with self._lock:
            inside = [r for t, r, _ in self.samples if start <= t <= end]
            if not inside:
                inside = [min(self.samples, key=lambda x: abs(x[0] - end))[1]]
        return max(inside)

    def cpu_at(self, t: float) -> float:
        """Process CPU seconds at time ``t``, interpolated between samples."""
        with self._lock:
            samples = list(self.samples)
        before = [x for x in samples if x[0] <= t]
        after = [x for x in samples if x[0] >= t]
        if not before:
            return after[0][2]
        if not after:
            return before[-1][2]
        (t0, _, c0), (t1, _, c1) = before[-1], after[0]
        return c0 if t1 == t0 else c0 + (c1 - c0) * (t - t0) / (t1 - t0)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()
        self.sample()


class TimedRunner:
    """``flows.runner.DirectRunner`` that records each stage's own interval (start..end, in
    seconds since the watcher started). Stages run at the same time (``submit``), so per stage
    only its wall interval is its own; the CPU seconds and peak RSS of an interval are the
    whole process's while the stage ran (shared with the stages that overlapped it)."""

    def __init__(self, watcher: RssWatcher, *, sequential: bool = False) -> None:
        from flows.runner import DirectRunner

        self.inner = DirectRunner(sequential=sequential)
        self.flow_run_id: str | None = None
        self.watcher = watcher
        self.spans: list[tuple[str, float, float]] = []  # (stage, start s, end s)
        self._lock = threading.Lock()

    def _timed(self, name: str, fn: Callable[..., T]) -> Callable[..., T]:
        """``fn``, recording the interval of each call under ``name``."""

        def timed(*args: Any, **kwargs: Any) -> T:
            start = self.watcher.now()
            try:
                return fn(*args, **kwargs)
            finally:
                end = self.watcher.now()
                with self._lock:
                    self.spans.append((name, start, end))
                log.info("stage %s: %.1f s (from %.1f s)", name, end - start, start)

        return timed

    def call(self, name: str, fn: Callable[..., T], /, *args: Any, **kwargs: Any) -> T:
        return self.inner.call(name, self._timed(name, fn), *args, **kwargs)

    def concurrent(
        self,
        name: str,
        fn: Callable[..., T],
        calls: Sequence[dict[str, Any]],
        labels: Sequence[str],
    ) -> list[T]:
        return self.inner.concurrent(name, self._timed(name, fn), calls, labels)

    def concurrent_then(
        self,
        name: str,
        fn: Callable[..., T],
        calls: Sequence[dict[str, Any]],
        labels: Sequence[str],
        then_name: str,
        then_fn: Callable[..., Any],
        then_call: Callable[[T], dict[str, Any] | None],
    ) -> tuple[list[T], list[Any]]:
        return self.inner.concurrent_then(
            name,
            self._timed(name, fn),
            calls,
            labels,
            then_name,
            self._timed(then_name, then_fn),
            then_call,
        )

    def submit(self, name: str, fn: Callable[..., T], /, *args: Any, **kwargs: Any) -> Any:
        return self.inner.submit(name, self._timed(name, fn), *args, **kwargs)

    def submit_concurrent(
        self,
        name: str,
        fn: Callable[..., T],
        calls: Sequence[dict[str, Any]],
        labels: Sequence[str],
    ) -> Any:
        return self.inner.submit_concurrent(name, self._timed(name, fn), calls, labels)

    def settle(self) -> None:
        self.inner.settle()

    def table(self, key: str, rows: list[dict[str, Any]], description: str) -> None:
        return None

    def markdown(self, key: str, text: str, description: str) -> None:
        return None

    def merged(self, start: float, end: float) -> list[dict[str, Any]]:
        """One row per stage in order of start: its interval (the calls of a concurrent stage
        from the first start to the last end), wall seconds, the process's CPU seconds and
        peak RSS during it, and the stages it overlapped; then ``(between stages)``: the time
        in [start, end] when no stage ran, its CPU and peak RSS."""
        spans: dict[str, tuple[float, float]] = {}
        for name, a, b in self.spans:
            lo, hi = spans.get(name, (a, b))
            spans[name] = (min(lo, a), max(hi, b))
        w = self.watcher
        rows = []
        for name, (a, b) in sorted(spans.items(), key=lambda kv: kv[1][0]):
            rows.append(
                {
                    "stage": name,
                    "start_s": a - start,
                    "end_s": b - start,
                    "wall_s": b - a,
                    "cpu_s": w.cpu_at(b) - w.cpu_at(a),
                    "peak_rss_mib": w.peak_rss(a, b),
                    "overlaps": [o for o, (c, d) in spans.items() if o != name and c < b and d > a],
                }
            )
        # gaps: [start, end] less the union of the stage intervals
        gaps, cursor = [], start
        for a, b in sorted(spans.values()):
            if a > cursor:
                gaps.append((cursor, a))
            cursor = max(cursor, b)
        if end > cursor:
            gaps.append((cursor, end))
        rows.append(
            {
                "stage": "(between stages)",
                "wall_s": sum(b - a for a, b in gaps),
                "cpu_s": sum(w.cpu_at(b) - w.cpu_at(a) for a, b in gaps),
                "peak_rss_mib": max((w.peak_rss(a, b) for a, b in gaps), default=0.0),
                "overlaps": [],
            }
        )
        return rows


def child(args: argparse.Namespace) -> int:
    """Hidden entry point: one promotion run on ``--data`` in this process; prints JSON."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    watcher = RssWatcher()
    from configs.settings import load_config
    from flows.promotion import promotion_pipeline

    overrides = [
        f"paths.workspace={args.workspace}",
        "data.source=file",
        f"data.path={args.data}",
        f"scaleout.engine={'dask' if args.engine == 'dask' else 'threads'}",
        *([f"scaleout.dask_workers={args.dask_workers}"] if args.engine == "dask" else []),
        *(
            [f"scaleout.dask_memory_limit={args.dask_memory_limit}"]
            if args.engine == "dask"
            else []
        ),
        *args.set,
    ]
    config = load_config(args.config, overrides=overrides)
    runner = TimedRunner(watcher, sequential=args.sequential)
    cluster: dict[str, Any] = {}
    with contextlib.ExitStack() as stack:
        if args.engine == "dask":
            from flows.distributed import dask_cluster

            # the run's one cluster, started here so that its workers can be asked about
            # their memory before it closes (the flow uses it: flows.distributed)
            address = stack.enter_context(dask_cluster(config))
            client = stack.enter_context(_client(address))
            cluster["before"] = _worker_pids(client)
        watcher.sample()
        start, t_start = time.perf_counter(), watcher.now()
        start_cpu = watcher.cpu_at(t_start)
        result = promotion_pipeline(config, runner=runner)
        wall = time.perf_counter() - start
        watcher.sample()
        t_end = watcher.now()
        cpu = watcher.cpu_at(t_end) - start_cpu
        if args.engine == "dask":
            cluster.update(_worker_report(client, cluster.pop("before")))
    rec = result.outcome.record
    summary = {
        "rows": args.rows,
        "engine": args.engine,
        "wall_s": wall,
        "cpu_s": cpu,
        "load_average_1m": os.getloadavg()[0],
        # the flow process and its worker processes, summed (sampled), or the flow process's
        # own peak when that is higher (a peak between two samples)
        "peak_rss_mib": max(max_rss_mib(), watcher.peak_rss(t_start, t_end)),
        "peak_rss_flow_mib": max_rss_mib(),
        "peak_rss_children_mib": max_rss_mib(resource.RUSAGE_CHILDREN),
        "stages": [],  # below, once the watcher has its last sample
        "decision": rec["decision"],
        "candidate": rec["candidate"],
        "policy_threshold": {
            k: (rec.get("policy") or {}).get(k)
            for k in ("cutoff_expected_value_usd", "probability_threshold", "calibration_method")
        },
        "failed_gates": [g["gate"] for g in rec["gates"] if not g["passed"]],
        "data_plan": (rec.get("data") or {}).get("plan"),
        "reasons": rec.get("reasons"),
        "policy_id": rec.get("policy_id"),
        "split_hashes": (rec.get("data") or {}).get("split_hashes"),
        "data_sha256": (rec.get("data") or {}).get("sha256"),
        "gate_values": {g["gate"]: g.get("value") for g in rec["gates"]},
        "cluster": cluster or None,
    }
    watcher.stop()
    summary["stages"] = runner.merged(t_start, t_end)
    Path(args.out).write_text(json.dumps(summary, indent=1, default=str))
    return 0


@contextlib.contextmanager
def _client(address: str) -> Iterator[Any]:
    from distributed import Client

    client = Client(address, set_as_default=False)
    try:
        yield client
    finally:
        client.close()


def _worker_pids(client: Any) -> dict[str, int]:
    """Worker address -> process id."""
    return {str(k): int(v) for k, v in client.run(os.getpid).items()}


def _peak_rss_mib() -> float:
    """Peak RSS (MiB) of the calling process (run on each worker)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def _removed_workers(dask_scheduler: Any) -> list[dict[str, Any]]:
    """The scheduler's events of workers leaving (killed, restarted, lost)."""
    out = []
    for _, event in dask_scheduler.get_events("all"):
        if isinstance(event, dict) and event.get("action") in {"remove-worker", "worker-lost"}:
            out.append({k: str(v) for k, v in event.items()})
    return out


def _worker_report(client: Any, before: dict[str, int]) -> dict[str, Any]:
    """Each worker's peak RSS, whether any worker process was replaced (a nanny restart after
    a memory kill gives a new pid or address) and the scheduler's worker-removal events."""
    after = _worker_pids(client)
    peaks = {str(k): float(v) for k, v in client.run(_peak_rss_mib).items()}
    limits = {
        str(k): int(v.get("memory_limit") or 0)
        for k, v in client.scheduler_info()["workers"].items()
    }
    return {
        "workers": len(after),
        "worker_peak_rss_mib": peaks,
        "worker_memory_limit_mib": {k: v / 2**20 for k, v in limits.items()},
        "workers_replaced": sorted(set(before.items()) ^ set(after.items())),
        "removal_events": client.run_on_scheduler(_removed_workers),
    }


def generate(path: Path, rows: int, seed: int, block_rows: int) -> dict[str, float]:
    """The generated table at ``path``: Parquet (row groups of ``block_rows``) or, for a
    ``.csv`` path, that Parquet file written out as CSV by pandas, row group by row group."""
    import pyarrow.parquet as pq

    from tasks.generate_data import write_parquet

    start = time.perf_counter()
    if path.suffix == ".csv":
        source = path.with_suffix(".parquet")
        if not source.exists():
            write_parquet(source, rows=rows, seed=seed, block_rows=block_rows)
        tmp = path.with_name(f".{path.name}.tmp")
        pf = pq.ParquetFile(source)
        for g in range(pf.metadata.num_row_groups):
            frame = pf.read_row_group(g).to_pandas()
            frame.to_csv(tmp, mode="w" if g == 0 else "a", header=g == 0, index=False)
        os.replace(tmp, path)
    else:
        write_parquet(path, rows=rows, seed=seed, block_rows=block_rows)
    return {
        "wall_s": time.perf_counter() - start,
        "peak_rss_mib": max_rss_mib(),
        "file_mib": path.stat().st_size / 2**20,
    }


def report(
    gen: dict[str, float], summary: dict[str, Any], compare: dict[str, Any] | None = None
) -> None:
    rows, wall = summary["rows"], summary["wall_s"]
    print(f"\nbench_scale: {rows:,} rows, engine {summary['engine']}")
    print(
        f"  generate the table: {gen['wall_s']:.1f} s, peak RSS {gen['peak_rss_mib']:.0f} MiB, "
        f"file {gen['file_mib']:.0f} MiB"
    )
    print(
        "  stages run at the same time: each row is the stage's own interval (start..end, "
        "seconds from the\n  start of the run) and wall time; CPU s and peak RSS are the whole "
        "process tree's (the flow and\n  its worker processes) during that interval, shared "
        "with the stages listed as overlapping (the\n  rows do not add up; the total line is "
        "the real wall)"
    )
    print(
        f"  {'stage':<24}{'start s':>9}{'end s':>9}{'wall s':>9}{'CPU s':>9}"
        f"{'peak RSS MiB':>14}  overlaps"
    )
    for s in summary["stages"]:
        span = f"{s['start_s']:>9.1f}{s['end_s']:>9.1f}" if "start_s" in s else f"{'':>9}{'':>9}"
        print(
            f"  {s['stage']:<24}{span}{s['wall_s']:>9.1f}{s.get('cpu_s', float('nan')):>9.1f}"
            f"{s['peak_rss_mib']:>14.0f}  {', '.join(s.get('overlaps') or []) or '-'}"
        )
    print(
        f"  {'promotion total':<24}{'':>9}{'':>9}{wall:>9.1f}{summary['cpu_s']:>9.1f}"
        f"{summary['peak_rss_mib']:>14.0f}  (CPU {summary['cpu_s'] / wall:.2f} cores on average)"
    )
    print(
        f"  load average at the end: {summary['load_average_1m']:.1f} (2 cores: above 2, other "
        "processes competed and wall time overstates the flow's own)"
    )
    print(
        f"  flow process peak RSS: {summary.get('peak_rss_flow_mib', float('nan')):.0f} MiB; "
        f"largest waited-for child process: {summary['peak_rss_children_mib']:.0f} MiB"
    )
    target = TARGET_S.get(rows)
    if target is not None:
        print(
            f"  target: <= {target:.0f} s -> {'met' if wall <= target else 'MISSED'}; "
            f"peak <= {TARGET_RSS_MIB:.0f} MiB -> "
            f"{'met' if summary['peak_rss_mib'] <= TARGET_RSS_MIB else 'MISSED'}"
        )
    print(
        f"  decision: {summary['decision']}, candidate {summary['candidate']}, policy threshold "
        f"{summary['policy_threshold']}, failed gates {summary['failed_gates'] or 'none'}"
    )
    if summary.get("reasons"):
        print(f"  reasons: {summary['reasons']}")
    print(f"  data plan: {json.dumps(summary['data_plan'], default=str)}")
    cluster = summary.get("cluster")
    if cluster:
        print(f"  Dask workers: {cluster['workers']}")
        for worker, peak in sorted(cluster["worker_peak_rss_mib"].items()):
            limit = cluster["worker_memory_limit_mib"].get(worker, 0.0)
            print(f"    {worker}: peak RSS {peak:.0f} MiB of a {limit:.0f} MiB limit")
        replaced, removed = cluster["workers_replaced"], cluster["removal_events"]
        print(
            f"  workers killed or restarted: {'none' if not (replaced or removed) else ''}"
            f"{replaced or ''} {removed or ''}".rstrip()
        )
    if compare is not None:
        keys = ("decision", "candidate", "policy_id", "split_hashes", "data_sha256")
        same = {k: summary.get(k) == compare.get(k) for k in keys if compare.get(k) is not None}
        same["policy_threshold"] = summary["policy_threshold"] == compare.get("policy_threshold")
        gates = {
            g: v
            for g, v in (compare.get("gate_values") or {}).items()
            if g != "technical" and summary.get("gate_values", {}).get(g) != v
        }
        verdict = "matches" if all(same.values()) else "DIFFERS from"
        print(f"  decision {verdict} the compared run's ({compare.get('engine')}): {same}")
        if compare.get("gate_values"):
            print(f"  gate values that differ (technical left out): {gates or 'none'}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--engine", choices=("local", "dask"), default="local")
    parser.add_argument("--block-rows", type=int, default=250_000)
    parser.add_argument(
        "--format",
        choices=("parquet", "csv"),
        default="parquet",
        help="the generated table's file format (csv: the Parquet file written out as CSV; "
        "the dask engine then stages it as Parquet on a worker)",
    )
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--config", default=str(REPO_ROOT / "configs" / "default.yaml"))
    parser.add_argument("--set", action="append", default=[], help="config override k=v")
    parser.add_argument("--workdir", default=None, help="keep data and workspace here")
    parser.add_argument("--keep", action="store_true")
    parser.add_argument(
        "--sequential",
        action="store_true",
        help="run the stages one after another (each stage's CPU s is then its own; with "
        "--set scale.evidence_threads=1 nothing runs at the same time)",
    )
    parser.add_argument("--dask-workers", type=int, default=4)
    parser.add_argument("--dask-memory-limit", default="2GiB")
    parser.add_argument(
        "--compare-with",
        default=None,
        help="summary JSON of another run (the workspace-*.json this script writes) to compare "
        "the decision with",
    )
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--data", help=argparse.SUPPRESS)
    parser.add_argument("--workspace", help=argparse.SUPPRESS)
    parser.add_argument("--out", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        return child(args)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    root = Path(args.workdir or tempfile.mkdtemp(prefix="bench-scale-"))
    root.mkdir(parents=True, exist_ok=True)
    try:
        data = root / f"churn-{args.rows}-{args.seed}-{args.block_rows}.{args.format}"
        if data.exists():
            gen = {"wall_s": 0.0, "peak_rss_mib": 0.0, "file_mib": data.stat().st_size / 2**20}
            log.info("reusing %s", data)
        else:
            gen = generate(data, args.rows, args.seed, args.block_rows)
        workspace = root / f"workspace-{args.engine}-{int(time.time())}"
        out = workspace.with_suffix(".json")
        cmd = [
            sys.executable,
            str(Path(__file__).resolve()),
            "--child",
            "--rows",
            str(args.rows),
            "--engine",
            args.engine,
            "--data",
            str(data),
            "--workspace",
            str(workspace),
            "--out",
            str(out),
            "--config",
            args.config,
            "--dask-workers",
            str(args.dask_workers),
            "--dask-memory-limit",
            args.dask_memory_limit,
            *[x for kv in args.set for x in ("--set", kv)],
            *(["--sequential"] if args.sequential else []),
        ]
        env = {**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")}
        env["PYTHONPATH"] = str(REPO_ROOT)
        proc = subprocess.run(cmd, cwd=REPO_ROOT, env=env)
        if proc.returncode != 0:
            log.error("child exited %d", proc.returncode)
            return proc.returncode
        compare = json.loads(Path(args.compare_with).read_text()) if args.compare_with else None
        report(gen, json.loads(out.read_text()), compare)
    finally:
        if not args.keep and args.workdir is None:
            shutil.rmtree(root, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
