"""Benchmark: the full churn-promotion flow, direct and under Prefect, plus decision quality.

Usage (from the repository root)::

    .venv/bin/python benchmarks/bench_flow.py [--rows 100000] [--rows-large 1000000]
                                              [--skip-large] [--repeats 1] [--keep]

(a) Wall time (seconds) of the flow at ``--rows`` customers, run with ``run_direct`` and with
    ``run_prefect`` in this process, each in a fresh temporary workspace. Before timing, the
    pipeline code is warmed up by a small direct run (imports, first MLflow use) and Prefect's
    ephemeral API server is started by a trivial flow; both are timed and reported separately,
    not counted. Prefect overhead = (prefect - direct) / direct, in percent.
    Targets: flow <= 120 s; overhead <= 10 %.
(b) The flow (Prefect by default, ``--large-runner``) at ``--rows-large`` customers in a child
    process (this script with a hidden flag). Peak memory is the largest ``ru_maxrss`` (MiB)
    of the child and its waited-for descendants (the technical gate's probe process, Prefect's
    ephemeral server), read with ``getrusage(RUSAGE_CHILDREN)``.
    Targets: <= 1200 s, peak RSS <= 8 GiB.
(c) Decision quality on the generator's truth: a fresh holdout (``--holdout-rows``, seed
    ``--holdout-seed``) is scored by the chosen calibrated model and decided by several
    policies; each policy's EXPECTED profit per customer (USD) uses the true churn probability:
    ``mean(contact * (p_true * save_rate * value - contact_cost))``. Reported in USD/customer
    and as a share of the oracle policy's (contact iff the true expected value is > 0).
    Target: promoted policy >= 0.97 of the oracle. The policy is the record's ``policy``
    document, which the record carries whether the decision was promoted or rejected.

Every workspace (MLflow db, models, records) and ``PREFECT_HOME`` live under one temporary
directory, removed at the end unless ``--keep``.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import numpy as np
    import pandas as pd

    from configs.settings import BayesPilotConfig
    from flows.promotion import RunResult

REPO_ROOT = Path(__file__).resolve().parent.parent
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))
DEFAULT_CONFIG = REPO_ROOT / "configs" / "default.yaml"

TARGET_FLOW_S = 120.0  # flow at --rows (seconds)
TARGET_OVERHEAD_PCT = 10.0  # Prefect overhead against the direct run (percent)
TARGET_LARGE_S = 1200.0  # flow at --rows-large (seconds)
TARGET_LARGE_RSS_MIB = 8 * 1024.0  # peak RSS at --rows-large (MiB)
TARGET_ORACLE_SHARE = 0.97  # promoted policy's expected profit over the oracle's
ORACLE = "oracle (true p, EV > 0)"
RECORD_POLICY = "record policy, calibrated p"
WARMUP_ROWS = 5_000

log = logging.getLogger("bench_flow")


# --------------------------------------------------------------------------- environment
def prepare_environment(prefect_home: Path) -> None:
    """Process-local settings that must be in place before Prefect is imported."""
    if os.environ.pop("PREFECT_API_URL", None):
        log.warning("PREFECT_API_URL unset for the benchmark: it measures the ephemeral server")
    os.environ["PREFECT_HOME"] = str(prefect_home)
    os.environ["PREFECT_SERVER_ANALYTICS_ENABLED"] = "false"
    os.environ["PREFECT_LOGGING_TO_API_WHEN_MISSING_FLOW"] = "ignore"
    os.environ.setdefault("OMP_NUM_THREADS", "1")  # as the Makefile and the CLI do
    os.environ["GIT_OPTIONAL_LOCKS"] = "0"  # the record's `git status` must not touch .git
    os.environ.setdefault("GIT_PYTHON_REFRESH", "quiet")


def peak_rss_mib(who: int = resource.RUSAGE_SELF) -> float:
    """Peak resident set size (MiB) of this process or of its largest waited-for child."""
    return resource.getrusage(who).ru_maxrss / 1024.0  # Linux reports KiB


def make_config(config_path: Path, workspace: Path, rows: int) -> BayesPilotConfig:
    """The YAML config with the workspace pointed at ``workspace`` and ``rows`` customers."""
    from configs.settings import load_config

    return load_config(config_path, overrides=[f"paths.workspace={workspace}",
                                               f"synthetic.rows={rows}"])


def cpu_seconds() -> float:
    """CPU seconds (user + system) used so far by this process, its waited-for children (the
    technical gate's probe) and its live descendants (Prefect's ephemeral API server)."""
    import psutil

    own, waited = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(
        resource.RUSAGE_CHILDREN)
    total = own.ru_utime + own.ru_stime + waited.ru_utime + waited.ru_stime
    for proc in psutil.Process().children(recursive=True):
        try:
            t = proc.cpu_times()
        except psutil.Error:  # exited meanwhile: counted under RUSAGE_CHILDREN once waited
            continue
        total += t.user + t.system
    return total


def timed(fn: Callable[[], Any]) -> tuple[Any, float]:
    """Call ``fn`` and return its result and its wall time (seconds)."""
    start = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - start


# --------------------------------------------------------------------------- Prefect
def prefect_warmup() -> tuple[float, float]:
    """Start Prefect's ephemeral API server with a trivial flow (one call, one submitted
    task). Returns the first run's wall time (server start-up) and a second, warm run's
    (per-flow fixed cost), both in seconds."""
    from prefect import flow, task

    @task(persist_result=False)
    def _noop(x: int) -> int:
        return x

    @flow(name="bench-warmup", persist_result=False)
    def _warmup() -> int:
        return int(_noop(1)) + int(_noop.submit(1).result())

    _, startup_s = timed(_warmup)
    _, warm_s = timed(_warmup)
    return startup_s, warm_s


def prefect_task_durations(flow_run_id: str | None) -> list[tuple[str, float, float]]:
    """(task run name, start offset from the flow run's start, duration), seconds."""
    if not flow_run_id:
        return []
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

    try:
        with get_client(sync_client=True) as client:
            fr = client.read_flow_run(flow_run_id)  # type: ignore[arg-type]
            runs = client.read_task_runs(
                flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[fr.id])))
    except Exception:  # diagnostics only; never fail the benchmark on them
        log.exception("could not read task runs of flow run %s", flow_run_id)
        return []
    origin = fr.start_time
    out = []
    for tr in runs:
        if tr.start_time is None or tr.end_time is None or origin is None:
            continue
        out.append((tr.name, (tr.start_time - origin).total_seconds(),
                    (tr.end_time - tr.start_time).total_seconds()))
    return sorted(out, key=lambda r: r[1])


# --------------------------------------------------------------------------- decision quality
@dataclass(frozen=True)
class Holdout:
    """A fresh generated table: features cleaned like the flow's, truth kept apart."""

    frame: pd.DataFrame  # validated (clean) copy: floats, text categoricals, label 0/1
    p_true: np.ndarray
    rows: int
    seed: int


def make_holdout(config: BayesPilotConfig, rows: int, seed: int) -> Holdout:
    """Generate ``rows`` customers with ``seed`` and clean them as the flow does."""
    from tasks.generate_data import TRUTH_COLUMN, generate_data
    from tasks.validate_data import validate_table

    raw = generate_data(rows=rows, seed=seed)
    p_true = raw[TRUTH_COLUMN].to_numpy(dtype=float)
    table = validate_table(raw.drop(columns=[TRUTH_COLUMN]), config=config)
    if table.validated.frame is None:
        raise RuntimeError(f"holdout failed validation: {table.validated.report.summary()}")
    return Holdout(table.validated.frame, p_true, rows, seed)


def decision_quality(result: RunResult, config: BayesPilotConfig,
                     holdout: Holdout) -> dict[str, tuple[float, float]]:
    """Per policy: expected profit per customer (USD) on the holdout under the true churn
    probability, and the share of customers contacted (0-1)."""
    import numpy as np

    from tasks.evaluate import customer_values, expected_value
    from tasks.select_policy import Policy, apply_policy

    econ = config.economics
    frame = holdout.frame
    X = frame[list(result.splits.roles.features)]  # noqa: N806 - sklearn convention
    p_cal = result.chosen.predict(X)
    p_raw = result.chosen.raw.predict(X)
    values = customer_values(frame, economics=econ)
    true_ev = expected_value(holdout.p_true, values, economics=econ)  # USD per contact
    policy = Policy(result.outcome.record["policy"])

    def profit(contact: np.ndarray) -> tuple[float, float]:
        return float(np.mean(contact.astype(float) * true_ev)), float(np.mean(contact))

    n = len(frame)
    return {
        ORACLE: profit(true_ev > 0),
        RECORD_POLICY: profit(apply_policy(p_cal, frame, policy).contact),
        "uncalibrated p, same EV rule": profit(apply_policy(p_raw, frame, policy).contact),
        "calibrated p >= 0.3": profit(p_cal >= 0.3),
        "calibrated p >= 0.5": profit(p_cal >= 0.5),
        "contact all": profit(np.ones(n, dtype=bool)),
        "contact none": profit(np.zeros(n, dtype=bool)),
    }


# --------------------------------------------------------------------------- one run
@dataclass
class RunSummary:
    """One flow run's figures. Times in seconds, memory in MiB, profits in USD/customer."""

    label: str
    runner: str
    rows: int
    wall_s: float
    decision: str
    candidate: str
    calibration: str
    gates: list[tuple[str, bool]]
    failed_reasons: list[str]
    peak_rss_mib: float
    cpu_s: float = 0.0
    load_1m: float = 0.0  # host's 1-minute load average when the run ended (2 cores here)
    quality: dict[str, tuple[float, float]] = field(default_factory=dict)
    stages: list[tuple[str, float, float]] = field(default_factory=list)
    extra: dict[str, float] = field(default_factory=dict)


def summarise(label: str, runner: str, rows: int, wall_s: float, result: RunResult,
              peak_mib: float) -> RunSummary:
    """The record's decision, chosen candidate, calibration method and gate results."""
    rec = result.outcome.record
    gates = [(str(g["gate"]), bool(g["passed"])) for g in rec["gates"]]
    failed = [f"{g['gate']}: {g['reason']}" for g in rec["gates"] if not g["passed"]]
    return RunSummary(label, runner, rows, wall_s, str(rec["decision"]), str(rec["candidate"]),
                      str(rec["calibration"]["method"]), gates, failed, peak_mib)


def run_flow(runner: str, config: BayesPilotConfig) -> tuple[RunResult, float, float]:
    """Run the flow with ``runner`` (``direct`` or ``prefect``); the result, its wall
    seconds and the CPU seconds it used (see :func:`cpu_seconds`)."""
    from flows.promotion import run_direct, run_prefect

    fn = run_direct if runner == "direct" else run_prefect
    cpu_before = cpu_seconds()
    result, wall = timed(lambda: fn(config))
    return result, wall, cpu_seconds() - cpu_before


# --------------------------------------------------------------------------- child (large)
def child_large(args: argparse.Namespace) -> int:
    """Hidden entry point: one flow run at ``--rows-large`` in this (child) process; writes
    its summary as JSON to ``--out``."""
    root = Path(args.child_root)
    prepare_environment(root / "prefect-home")
    import flows.promotion  # noqa: F401 - import cost outside the timed region

    extra: dict[str, float] = {}
    if args.large_runner == "prefect":
        extra["server_startup_s"], extra["warm_trivial_flow_s"] = prefect_warmup()
    config = make_config(args.config, root / "workspace", args.rows_large)
    result, wall, cpu = run_flow(args.large_runner, config)
    summary = summarise("large", args.large_runner, args.rows_large, wall, result,
                        peak_rss_mib())
    summary.cpu_s, summary.load_1m = cpu, os.getloadavg()[0]
    summary.extra = extra
    if args.large_runner == "prefect":
        summary.stages = prefect_task_durations(result.outcome.record.get("flow_run_id"))
    holdout = make_holdout(config, args.holdout_rows, args.holdout_seed)
    summary.quality = decision_quality(result, config, holdout)
    summary.extra["child_self_peak_rss_mib"] = peak_rss_mib()
    summary.extra["child_descendants_peak_rss_mib"] = peak_rss_mib(resource.RUSAGE_CHILDREN)
    Path(args.out).write_text(json.dumps(asdict(summary)))
    return 0


def run_large(args: argparse.Namespace, root: Path) -> RunSummary:
    """Run :func:`child_large` in a child process; add its wall time and peak memory."""
    child_root = root / "large"
    child_root.mkdir(parents=True)
    out = child_root / "summary.json"
    cmd = [sys.executable, str(Path(__file__).resolve()), "--child-large",
           "--child-root", str(child_root), "--out", str(out),
           "--rows-large", str(args.rows_large), "--large-runner", args.large_runner,
           "--config", str(args.config), "--holdout-rows", str(args.holdout_rows),
           "--holdout-seed", str(args.holdout_seed)]
    log_path = child_root / "child.log"
    log.info("large run (%d rows, %s) in a child process; log: %s", args.rows_large,
             args.large_runner, log_path)
    with open(log_path, "wb") as fh:
        proc, wall = timed(lambda: subprocess.run(cmd, cwd=REPO_ROOT, stdout=fh,
                                                  stderr=subprocess.STDOUT, check=False))
    children_peak = peak_rss_mib(resource.RUSAGE_CHILDREN)
    if proc.returncode != 0:
        tail = log_path.read_text(errors="replace").splitlines()[-30:]
        raise RuntimeError(f"large child exited {proc.returncode}:\n" + "\n".join(tail))
    data = json.loads(out.read_text())
    data["gates"] = [tuple(g) for g in data["gates"]]
    data["stages"] = [tuple(s) for s in data["stages"]]
    data["quality"] = {k: tuple(v) for k, v in data["quality"].items()}
    summary = RunSummary(**data)
    summary.extra["child_process_wall_s"] = wall
    summary.extra["rusage_children_peak_rss_mib"] = children_peak
    summary.peak_rss_mib = max(children_peak, summary.extra["child_self_peak_rss_mib"],
                               summary.extra["child_descendants_peak_rss_mib"])
    return summary


# --------------------------------------------------------------------------- output
def verdict(ok: bool) -> str:
    return "MET" if ok else "NOT MET"


def print_report(rows: int, small: list[RunSummary], warm: dict[str, float],
                 large: RunSummary | None, args: argparse.Namespace) -> None:
    """Every figure table (stdout)."""
    print()
    print(f"bench_flow: churn-promotion flow (host: {os.cpu_count()} CPUs, "
          f"OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS')})")
    print()
    print("Warm-up (not counted in any flow time)")
    for k, v in warm.items():
        print(f"  {k:<54} {v:8.2f} s")

    runs = small + ([large] if large else [])
    print()
    print("Flow runs (wall-clock and CPU seconds; peak RSS in MiB)")
    head = (f"  {'run':<10} {'runner':<8} {'rows':>10} {'wall s':>8} {'CPU s':>7} "
            f"{'load':>5} {'peak RSS':>9}  {'decision':<9} {'candidate':<20} "
            f"{'calibration':<11}")
    print(head)
    print("  " + "-" * (len(head) - 2))
    for r in runs:
        print(f"  {r.label:<10} {r.runner:<8} {r.rows:>10,} {r.wall_s:>8.1f} {r.cpu_s:>7.1f} "
              f"{r.load_1m:>5.2f} {r.peak_rss_mib:>9.0f}  {r.decision:<9} {r.candidate:<20} "
              f"{r.calibration:<11}")
    print("  (load: the host's 1-minute load average as the run ended)")
    print()
    print("Gates (PASS/FAIL per run)")
    for r in runs:
        gates = " ".join(f"{g}:{'PASS' if ok else 'FAIL'}" for g, ok in r.gates)
        print(f"  {r.label:<10} {r.runner:<8} {gates}")
        for reason in r.failed_reasons:
            print(f"      - {reason[:160]}")

    direct = [r.wall_s for r in small if r.runner == "direct"]
    prefect = [r.wall_s for r in small if r.runner == "prefect"]
    d_med, p_med = statistics.median(direct), statistics.median(prefect)
    overhead = 100.0 * (p_med - d_med) / d_med
    print()
    d_cpu = statistics.median(r.cpu_s for r in small if r.runner == "direct")
    p_cpu = statistics.median(r.cpu_s for r in small if r.runner == "prefect")
    print(f"Prefect overhead at {rows:,} rows (median of {len(direct)} pair(s)): "
          f"wall: direct {d_med:.1f} s, prefect {p_med:.1f} s -> {overhead:+.1f} %; "
          f"CPU: direct {d_cpu:.1f} s, prefect {p_cpu:.1f} s -> "
          f"{100.0 * (p_cpu - d_cpu) / d_cpu:+.1f} %")
    print("  (CPU includes the probe process and the ephemeral API server; it is less "
          "sensitive than wall time to other load on the host)")

    stage_runs = [r for r in runs if r.stages]
    if stage_runs:
        print()
        print("Prefect task runs (start offset from flow start, duration; seconds)")
        for r in stage_runs:
            print(f"  {r.label} ({r.rows:,} rows):")
            for name, start, dur in r.stages:
                print(f"    {name:<36} start {start:7.1f}   {dur:7.1f}")

    print()
    print(f"Decision quality on a fresh holdout ({args.holdout_rows:,} rows, seed "
          f"{args.holdout_seed}): expected profit under the true churn probability")
    print("  per run: USD/customer | share of oracle | share contacted")
    quality_runs = [r for r in runs if r.quality]
    names = list(quality_runs[0].quality) if quality_runs else []
    head = f"  {'policy':<30}" + "".join(
        f" | {r.label + '/' + r.runner:^22}" for r in quality_runs)
    print(head)
    print("  " + "-" * (len(head) - 2))
    for name in names:
        cells = ""
        for r in quality_runs:
            oracle = r.quality[ORACLE][0]
            value, contacted = r.quality[name]
            share = value / oracle if oracle else float("nan")
            cells += f" | {value:>7.3f} {share:>6.3f} {contacted:>7.3f}"
        print(f"  {name:<30}{cells}")

    print()
    print("Targets")
    worst_small = max(r.wall_s for r in small)
    print(f"  flow at {rows:,} rows <= {TARGET_FLOW_S:.0f} s: slowest run {worst_small:.1f} s "
          f"-> {verdict(worst_small <= TARGET_FLOW_S)}")
    print(f"  Prefect overhead <= {TARGET_OVERHEAD_PCT:.0f} %: {overhead:+.1f} % "
          f"-> {verdict(overhead <= TARGET_OVERHEAD_PCT)}")
    if large is not None:
        print(f"  flow at {large.rows:,} rows <= {TARGET_LARGE_S:.0f} s: {large.wall_s:.1f} s "
              f"(child process total {large.extra['child_process_wall_s']:.1f} s) "
              f"-> {verdict(large.wall_s <= TARGET_LARGE_S)}")
        print(f"  peak RSS at {large.rows:,} rows <= {TARGET_LARGE_RSS_MIB:.0f} MiB: "
              f"{large.peak_rss_mib:.0f} MiB (child {large.extra['child_self_peak_rss_mib']:.0f}"
              f", its descendants {large.extra['child_descendants_peak_rss_mib']:.0f}) "
              f"-> {verdict(large.peak_rss_mib <= TARGET_LARGE_RSS_MIB)}")
        print("    (Linux: a fork+exec'd process's ru_maxrss starts at its parent's high-water "
              "mark, so a descendants figure equal to the child's means the child is the peak)")
    else:
        print("  large run: skipped (--skip-large)")
    for r in quality_runs:
        share = r.quality[RECORD_POLICY][0] / r.quality[ORACLE][0]
        print(f"  record policy >= {TARGET_ORACLE_SHARE:.2f} of oracle ({r.label}/{r.runner}, "
              f"decision {r.decision}): {share:.3f} -> {verdict(share >= TARGET_ORACLE_SHARE)}")


# --------------------------------------------------------------------------- main
def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=100_000,
                        help="customers for the direct-vs-Prefect comparison")
    parser.add_argument("--rows-large", type=int, default=1_000_000,
                        help="customers for the large run (child process)")
    parser.add_argument("--skip-large", action="store_true", help="skip the large run")
    parser.add_argument("--large-runner", choices=("prefect", "direct"), default="prefect",
                        help="how the large run executes the flow")
    parser.add_argument("--repeats", type=int, default=1,
                        help="direct/Prefect pairs at --rows (order alternates)")
    parser.add_argument("--holdout-rows", type=int, default=200_000,
                        help="rows of the fresh truth holdout")
    parser.add_argument("--holdout-seed", type=int, default=12345, help="holdout seed")
    parser.add_argument("--config", type=Path, default=DEFAULT_CONFIG, help="config YAML")
    parser.add_argument("--keep", action="store_true", help="keep the temporary workspaces")
    parser.add_argument("--child-large", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--child-root", help=argparse.SUPPRESS)
    parser.add_argument("--out", help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, stream=sys.stderr,
                        format="%(asctime)s %(name)s %(levelname)s %(message)s")
    if args.child_large:
        return child_large(args)

    root = Path(tempfile.mkdtemp(prefix="bench-flow-"))
    log.info("temporary root: %s", root)
    try:
        prepare_environment(root / "prefect-home")
        _, import_s = timed(lambda: __import__("flows.promotion"))
        warm: dict[str, float] = {"import flows.promotion (Prefect, sklearn, ...)": import_s}
        _, warm[f"pipeline warm-up: direct run at {WARMUP_ROWS:,} rows"] = timed(
            lambda: run_flow("direct", make_config(args.config, root / "warmup", WARMUP_ROWS)))
        startup_s, warm_flow_s = prefect_warmup()
        warm["Prefect ephemeral server start-up (1st trivial flow)"] = startup_s
        warm["Prefect trivial flow, warm (fixed cost per flow)"] = warm_flow_s

        config_base = make_config(args.config, root / "unused", args.rows)
        holdout, warm["holdout generation + validation"] = timed(
            lambda: make_holdout(config_base, args.holdout_rows, args.holdout_seed))

        small: list[RunSummary] = []
        for i in range(args.repeats):
            order = ("direct", "prefect") if i % 2 == 0 else ("prefect", "direct")
            for runner in order:
                config = make_config(args.config, root / f"{runner}-{i}", args.rows)
                log.info("run %d: %s at %d rows", i, runner, args.rows)
                result, wall, cpu = run_flow(runner, config)
                s = summarise(f"{args.rows // 1000}k#{i}", runner, args.rows, wall, result,
                              peak_rss_mib())
                s.cpu_s, s.load_1m = cpu, os.getloadavg()[0]
                if runner == "prefect":
                    s.stages = prefect_task_durations(result.outcome.record.get("flow_run_id"))
                s.quality = decision_quality(result, config, holdout)
                log.info("%s: %.1f s, %s", runner, wall, s.decision)
                small.append(s)
                del result

        large = None if args.skip_large else run_large(args, root)
        print_report(args.rows, small, warm, large, args)
    finally:
        if args.keep:
            log.info("kept %s", root)
        else:
            shutil.rmtree(root, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
