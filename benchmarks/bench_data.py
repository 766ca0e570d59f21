"""Benchmark: synthetic data generation, validation and splitting at scale.

Usage (from the repository root)::

    .venv/bin/python benchmarks/bench_data.py [--rows 100000 1000000] [--seed 7]

Each size runs in a fresh child process (this script with a hidden ``--child`` flag) so that
its peak resident set size is its own. Per size it times, in seconds of wall clock:

- ``generate_data(rows=, seed=)`` (``tasks.generate_data``);
- ``validate_table(frame, config=)`` (``tasks.validate_data``) on the frame exactly as
  ``load_data`` hands it to the flow (the truth column dropped);
- ``split_data(clean, roles=, config=)`` (``tasks.split_data``) on the validated frame.

Peak memory is ``resource.getrusage(RUSAGE_SELF).ru_maxrss`` of the child (MiB; Linux reports
KiB). Target: 1M rows generated + validated in under 60 s on 2 cores.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import resource
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_CONFIG = REPO_ROOT / "configs" / "default.yaml"
TARGET_ROWS = 1_000_000
TARGET_SECONDS = 60.0

log = logging.getLogger("bench_data")


@dataclass(frozen=True)
class DataTimings:
    """Figures for one table size. Times in seconds (wall clock), memory in MiB."""

    rows: int
    generate_s: float
    validate_s: float
    split_s: float
    passed: bool
    features: int
    rss_after_imports_mib: float
    peak_rss_mib: float

    @property
    def generate_validate_s(self) -> float:
        """Generation plus validation (the target's measure), seconds."""
        return self.generate_s + self.validate_s

    @property
    def rows_per_s(self) -> float:
        """Rows generated and validated per second."""
        return self.rows / self.generate_validate_s if self.generate_validate_s > 0 else 0.0


def peak_rss_mib(who: int = resource.RUSAGE_SELF) -> float:
    """Peak resident set size (MiB) of this process or of its waited-for children."""
    return resource.getrusage(who).ru_maxrss / 1024.0  # Linux: KiB


def measure(rows: int, seed: int, config_path: Path) -> DataTimings:
    """Time generation, validation and splitting of ``rows`` customers (in this process)."""
    from configs.settings import load_config
    from tasks.generate_data import TRUTH_COLUMN, generate_data
    from tasks.split_data import split_data
    from tasks.validate_data import validate_table

    # Nothing is written to the workspace here; point it at a fresh temp dir all the same.
    with tempfile.TemporaryDirectory(prefix="bench-data-") as workspace:
        config = load_config(config_path, overrides=[f"paths.workspace={workspace}",
                                                     f"synthetic.rows={rows}",
                                                     f"synthetic.seed={seed}"])
    rss_imports = peak_rss_mib()

    start = time.perf_counter()
    frame = generate_data(rows=rows, seed=seed)
    generate_s = time.perf_counter() - start
    frame = frame.drop(columns=[TRUTH_COLUMN])  # what load_data hands to validation

    start = time.perf_counter()
    table = validate_table(frame, config=config)
    validate_s = time.perf_counter() - start
    report = table.validated.report
    if not report.passed or table.validated.frame is None:
        log.error("validation failed at %d rows:\n%s", rows, report.summary())
        split_s = float("nan")
    else:
        start = time.perf_counter()
        splits = split_data(table.validated.frame, roles=table.roles, config=config.split)
        split_s = time.perf_counter() - start
        log.info("split rows: %s", splits.rows)
    return DataTimings(
        rows=rows, generate_s=generate_s, validate_s=validate_s, split_s=split_s,
        passed=report.passed, features=len(table.roles.features),
        rss_after_imports_mib=rss_imports, peak_rss_mib=peak_rss_mib(),
    )


def run_child(rows: int, seed: int, config_path: Path) -> DataTimings:
    """Run :func:`measure` in a fresh interpreter and read back its JSON line."""
    cmd = [sys.executable, str(Path(__file__).resolve()), "--child", "--rows", str(rows),
           "--seed", str(seed), "--config", str(config_path)]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(
        p for p in (str(REPO_ROOT), os.environ.get("PYTHONPATH", "")) if p)}
    proc = subprocess.run(cmd, cwd=REPO_ROOT, env=env, stdout=subprocess.PIPE, text=True,
                          check=False)  # the child's log goes straight to our stderr
    if proc.returncode != 0:
        raise RuntimeError(f"child for {rows} rows exited with {proc.returncode}")
    line = proc.stdout.strip().splitlines()[-1]
    return DataTimings(**json.loads(line))


def print_table(results: list[DataTimings]) -> None:
    """The figure table (stdout)."""
    head = (f"{'rows':>10} | {'generate s':>10} | {'validate s':>10} | {'gen+val s':>9} | "
            f"{'split s':>8} | {'rows/s (g+v)':>12} | {'valid':>5} | {'feat':>4} | "
            f"{'RSS@import MiB':>14} | {'peak RSS MiB':>12}")
    print()
    print("bench_data: generation / validation / split (wall-clock seconds, one child per size)")
    print(head)
    print("-" * len(head))
    for r in results:
        print(f"{r.rows:>10,} | {r.generate_s:>10.2f} | {r.validate_s:>10.2f} | "
              f"{r.generate_validate_s:>9.2f} | {r.split_s:>8.2f} | {r.rows_per_s:>12,.0f} | "
              f"{'yes' if r.passed else 'NO':>5} | {r.features:>4} | "
              f"{r.rss_after_imports_mib:>14.0f} | {r.peak_rss_mib:>12.0f}")
    target = [r for r in results if r.rows == TARGET_ROWS]
    print()
    if target:
        t = target[0]
        verdict = "MET" if t.passed and t.generate_validate_s < TARGET_SECONDS else "NOT MET"
        print(f"target: {TARGET_ROWS:,} rows generated + validated < {TARGET_SECONDS:.0f} s "
              f"-> {t.generate_validate_s:.2f} s: {verdict}")
    else:
        print(f"target: not assessed ({TARGET_ROWS:,} rows not among --rows)")
    print(f"host: {os.cpu_count()} CPUs, python {sys.version.split()[0]}, "
          f"OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS')}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, nargs="+", default=[100_000, 1_000_000],
                        help="table sizes (rows) to benchmark")
    parser.add_argument("--seed", type=int, default=7, help="generator seed")
    parser.add_argument("--config", type=Path, default=DEFAULT_CONFIG, help="config YAML")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    os.environ.setdefault("OMP_NUM_THREADS", "1")  # as the Makefile and the CLI do
    logging.basicConfig(level=logging.INFO, stream=sys.stderr,
                        format="%(asctime)s %(name)s %(levelname)s %(message)s")

    if args.child:
        print(json.dumps(asdict(measure(args.rows[0], args.seed, args.config))))
        return 0

    results = []
    for rows in args.rows:
        log.info("measuring %d rows in a child process", rows)
        results.append(run_child(rows, args.seed, args.config))
        log.info("%d rows: %s", rows, results[-1])
    print_table(results)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
