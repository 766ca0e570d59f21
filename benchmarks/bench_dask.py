"""Flow wall time: Prefect's thread pool vs a Dask LocalCluster (prefect-dask), same data.

Usage: ``.venv/bin/python benchmarks/bench_dask.py [--rows 1000000] [--dask-workers 2]``

Each engine runs in its own child process (fresh workspace, fresh ephemeral Prefect API) so
neither inherits the other's warm state; the figure is the child's wall time in seconds,
including the Prefect API start-up, which is the same for both. Prints a table and the ratio.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def child(rows: int, engine: str, workers: int, workspace: str) -> None:
    """Run one flow and print a JSON line with its figures (child process)."""
    os.environ["PREFECT_HOME"] = str(Path(workspace) / "prefect-home")
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    os.environ.setdefault("PREFECT_LOGGING_TO_API_WHEN_MISSING_FLOW", "ignore")
    from configs.settings import build_config
    from flows.promotion import run_prefect

    config = build_config({
        "paths": {"workspace": workspace},
        "synthetic": {"rows": rows},
        "data": {"segment_columns": ["region", "contract", "acquisition_channel"]},
        "economics": {"customer_value": {"column": "monthly_charges_usd", "multiplier": 3.0}},
        "scaleout": {"engine": engine, "dask_workers": workers},
    })
    start = time.perf_counter()
    result = run_prefect(config)
    wall = time.perf_counter() - start
    rec = result.outcome.record
    peak_self = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6  # KiB -> GB
    peak_child = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1e6
    print(json.dumps({"engine": engine, "wall_s": round(wall, 1), "decision": rec["decision"],
                      "peak_rss_gb_flow": round(peak_self, 2),
                      "peak_rss_gb_largest_child": round(peak_child, 2),
                      "candidate": rec["candidate"],
                      "failed": [g["gate"] for g in rec["gates"] if not g["passed"]]}))


def run_engine(rows: int, engine: str, workers: int) -> dict[str, object]:
    with tempfile.TemporaryDirectory(prefix=f"bench-{engine}-") as tmp:
        start = time.perf_counter()
        proc = subprocess.run(
            [sys.executable, __file__, "--child", engine, "--rows", str(rows),
             "--dask-workers", str(workers), "--workspace", tmp],
            cwd=REPO, capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"},
        )
        total = time.perf_counter() - start
        if proc.returncode != 0:
            raise RuntimeError(f"{engine} run failed:\n{proc.stderr[-3000:]}")
        figures: dict[str, object] = json.loads(proc.stdout.strip().splitlines()[-1])
        figures["process_wall_s"] = round(total, 1)
        return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--dask-workers", type=int, default=2)
    parser.add_argument("--child", choices=["threads", "dask"])
    parser.add_argument("--workspace")
    args = parser.parse_args()
    if args.child:
        child(args.rows, args.child, args.dask_workers, args.workspace)
        return
    results = [run_engine(args.rows, engine, args.dask_workers) for engine in ("threads", "dask")]
    print(f"\nflow wall time at {args.rows:,} rows, 2 cores (seconds; Prefect API start included)")
    print(f"{'engine':<8} {'flow s':>8} {'process s':>10} {'RSS GB flow':>12} "
          f"{'RSS GB child':>12}  decision / failed")
    for r in results:
        print(f"{r['engine']!s:<8} {r['wall_s']!s:>8} {r['process_wall_s']!s:>10} "
              f"{r['peak_rss_gb_flow']!s:>12} {r['peak_rss_gb_largest_child']!s:>12}  "
              f"{r['decision']} / {r['failed'] or '-'}")
    t, d = results[0]["wall_s"], results[1]["wall_s"]
    assert isinstance(t, float) and isinstance(d, float)
    print(f"dask / threads wall-time ratio: {d / t:.2f}")


if __name__ == "__main__":
    main()
