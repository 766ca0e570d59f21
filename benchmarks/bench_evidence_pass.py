"""The evidence pass over the whole test split: its cost on each engine, and equal figures.

Usage (from the repository root)::

    nice -n 10 .venv/bin/python benchmarks/bench_evidence_pass.py --data FILE.parquet \\
        [--judge-max-rows 100000] [--candidate logistic_regression] [--dask-workers 2] \\
        [--dask-memory-limit 2GiB]

Loads, validates and splits the Parquet file with the local engine (``scale.judge_max_rows``
set so that the test split is sampled), fits one candidate on the train sample with its
calibration and selects its policy on the selection sample (the promotion's own functions),
then times ``flows.promotion.full_test_pass`` twice: over the local frame in chunks of
``scale.chunk_rows``, and on a ``LocalCluster`` (the table loaded, validated and split on
partitions first, as the Dask engine does). Prints wall and this process's CPU seconds for
each pass, the figures, whether the two engines' figures are equal, and the 1-minute load
average (the machine may be shared: wall times then run above CPU times).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import tempfile
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", required=True, help="a Parquet churn table")
    parser.add_argument("--judge-max-rows", type=int, default=100_000)
    parser.add_argument("--candidate", default="logistic_regression")
    parser.add_argument("--dask-workers", type=int, default=2)
    parser.add_argument("--dask-memory-limit", default="2GiB")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    logging.getLogger("distributed").setLevel(logging.WARNING)

    from distributed import LocalCluster

    from configs.settings import build_config
    from flows import distributed
    from flows.promotion import full_test_pass
    from tasks.calibrate import calibrate
    from tasks.evidence import score_split
    from tasks.load_data import load_data
    from tasks.select_policy import select_policy
    from tasks.split_data import split_data
    from tasks.train_candidates import train_candidate
    from tasks.validate_data import validate_table

    workspace = tempfile.mkdtemp(prefix="bench-evidence-")
    layers = {
        "paths": {"workspace": workspace},
        "data": {
            "source": "file",
            "path": str(Path(args.data).resolve()),
            "segment_columns": ["region", "contract"],
        },
        "economics": {"customer_value": {"column": "monthly_charges_usd", "multiplier": 3.0}},
        "scale": {"judge_max_rows": args.judge_max_rows},
    }
    cfg = build_config(layers)
    t0 = time.perf_counter()
    table = validate_table(load_data(cfg).frame, config=cfg)
    assert table.validated.frame is not None, table.validated.report.summary()
    splits = split_data(table.validated.frame, roles=table.roles, config=cfg.split, scale=cfg.scale)
    if not splits.plan["test"]["sampled"]:
        print("the test split is not sampled: lower --judge-max-rows")
        return 2
    trained = train_candidate(splits, name=args.candidate, config=cfg.candidates)
    chosen = calibrate(
        trained,
        splits,
        config=cfg.calibration,
        max_rows=cfg.scale.calibration_max_rows,
        seed=cfg.scale.seed,
    )
    sel_p = chosen.predict(splits.X("selection"))
    policy = select_policy(
        sel_p,
        splits.y("selection"),
        splits.selection,
        economics=cfg.economics,
        policy=cfg.policy,
        bootstrap=cfg.bootstrap,
        calibration_method=chosen.method,
        population_rows=splits.table_rows,
    ).policy
    test_p = chosen.predict(splits.X("test"))
    print(
        f"prepared in {time.perf_counter() - t0:.1f} s: {splits.table_rows:,} rows, test "
        f"{splits.plan['test']['rows_available']:,} rows (judged {splits.rows['test']:,}), "
        f"{args.candidate} + {chosen.method}"
    )

    def timed(label: str, fn: object, *a: object, **kw: object) -> object:
        w, c = time.perf_counter(), time.process_time()
        out = fn(*a, **kw)  # type: ignore[operator]
        print(
            f"{label}: wall {time.perf_counter() - w:.2f} s, this process's CPU "
            f"{time.process_time() - c:.2f} s"
        )
        return out

    # the business gate's value: the mean realised profit on the judged test sample
    sample_profit = float(
        score_split(test_p, splits.test, splits.y("test"), policy, config=cfg).profit.mean()
    )
    kw = {"sample_p": test_p, "sample_profit_usd": sample_profit, "config": cfg}
    local = timed("local pass", full_test_pass, splits, None, chosen, policy, **kw)
    del splits, table

    cluster = LocalCluster(
        n_workers=args.dask_workers,
        threads_per_worker=1,
        processes=True,
        memory_limit=args.dask_memory_limit,
        dashboard_address=None,
        host="127.0.0.1",
    )
    try:
        dask_cfg = build_config(
            {
                **layers,
                "scaleout": {"engine": "dask", "dask_address": str(cluster.scheduler_address)},
            }
        )
        with distributed.data_client(dask_cfg) as client:
            load = distributed.load_partitioned(dask_cfg, client)
            checked = distributed.validate_partitioned(load, dask_cfg, client)
            part_splits = distributed.split_partitioned(checked, dask_cfg, client)
        kw["config"] = dask_cfg
        on_dask = timed(
            f"dask pass ({args.dask_workers} workers x {args.dask_memory_limit})",
            full_test_pass,
            part_splits,
            checked,
            chosen,
            policy,
            **kw,
        )
    finally:
        cluster.close()
    a, b = local.as_dict(), on_dask.as_dict()  # type: ignore[attr-defined]
    print(json.dumps(a, indent=1))
    print(f"engines equal: {a == b}")
    print(f"load average (1 min): {os.getloadavg()[0]:.2f}")
    return 0 if a == b else 1


if __name__ == "__main__":
    raise SystemExit(main())
