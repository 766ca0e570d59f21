"""Check: the default 20k run's decision and figures, dumped to JSON and diffed against a
saved baseline ("nothing changes for small data", issue 16).

Usage (from the repository root)::

    .venv/bin/python benchmarks/check_small_run.py --save BASELINE.json   # on main
    .venv/bin/python benchmarks/check_small_run.py --against BASELINE.json  # on a branch

Runs the promotion flow with direct calls (``flows.promotion.run_direct``) on
``configs/default.yaml`` (or ``--config``) in a temporary workspace, and keeps from the
record what must not change: the decision, candidate, policy and its id, data and split
hashes, the data plan, every candidate figure, every gate value, interval, reason and
evidence, the explanation and the monitoring reference. Removed, because they vary from run to
run by nature: ids, timestamps, signatures, fit seconds and the technical gate's latency/CPU
measurements (its checks are kept). Exit code 1 and the differing paths when the dumps differ.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import tempfile
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parent.parent
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

VOLATILE_KEYS = {
    "record_id",
    "run_id",
    "flow_run_id",
    "mlflow_run_id",
    "started_at",
    "finished_at",
    "signature",
    "git_commit",
    "git_dirty",
    "packages",
    "fit_seconds",
    "previous_record_id",
    "model_version",
}
TECHNICAL_VOLATILE = {
    "value",
    "reason",
    "single_row_cpu_ms",
    "single_row_latency_ms",
    "cpu_ms_per_batch",
    "load_seconds",
    "artifact_bytes",
    "size_mb",
}


def _strip(obj: Any, drop: set[str]) -> Any:
    if isinstance(obj, dict):
        return {k: _strip(v, drop) for k, v in obj.items() if k not in drop}
    if isinstance(obj, list):
        return [_strip(v, drop) for v in obj]
    return obj


def comparable(record: dict[str, Any]) -> dict[str, Any]:
    """The parts of a promotion record that must not change, volatile fields removed."""
    keep = (
        "decision",
        "candidate",
        "calibration",
        "candidates",
        "baselines",
        "policy",
        "policy_id",
        "data",
        "features",
        "schema",
        "reasons",
        "notes",
        "explanation",
        "reference",
    )
    out = {k: _strip(record.get(k), VOLATILE_KEYS) for k in keep}
    out["reference"] = _strip(out["reference"], {"path"})  # models/<run id>/reference.json
    gates = []
    for g in record["gates"]:
        g = _strip(g, VOLATILE_KEYS)
        if g["gate"] == "technical":
            g = _strip(g, TECHNICAL_VOLATILE)
        gates.append(g)
    out["gates"] = gates
    # reasons carry the technical gate's measured CPU ms: drop that one reason's figures
    out["reasons"] = [r for r in out["reasons"] or [] if not str(r).startswith("technical:")]
    return out


def diff(a: Any, b: Any, path: str = "") -> list[str]:
    """Paths where two JSON values differ (exactly)."""
    if isinstance(a, dict) and isinstance(b, dict):
        out = []
        for k in sorted(set(a) | set(b)):
            if k not in a or k not in b:
                out.append(f"{path}/{k}: only in {'baseline' if k in a else 'this run'}")
            else:
                out.extend(diff(a[k], b[k], f"{path}/{k}"))
        return out
    if isinstance(a, list) and isinstance(b, list):
        if len(a) != len(b):
            return [f"{path}: length {len(a)} != {len(b)}"]
        return [
            d for i, (x, y) in enumerate(zip(a, b, strict=True)) for d in diff(x, y, f"{path}[{i}]")
        ]
    return [] if a == b else [f"{path}: {a!r} != {b!r}"]


def run(config_path: str, overrides: list[str]) -> dict[str, Any]:
    from configs.settings import load_config
    from flows.promotion import run_direct

    with tempfile.TemporaryDirectory(prefix="check-small-") as tmp:
        config = load_config(config_path, overrides=[f"paths.workspace={tmp}", *overrides])
        result = run_direct(config)
        return comparable(result.outcome.record)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default=str(REPO_ROOT / "configs" / "default.yaml"))
    parser.add_argument("--set", action="append", default=[], help="config override k=v")
    group = parser.add_mutually_exclusive_group(required=True)
    group.add_argument("--save", help="write this run's dump here (the baseline)")
    group.add_argument("--against", help="diff this run's dump against this baseline")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(name)s %(message)s")
    dump = json.loads(json.dumps(run(args.config, args.set), default=str))
    if args.save:
        Path(args.save).write_text(json.dumps(dump, indent=1, sort_keys=True))
        print(f"saved {args.save}")
        return 0
    base = json.loads(Path(args.against).read_text())
    problems = diff(base, dump)
    for p in problems:
        print(p)
    print("identical" if not problems else f"{len(problems)} differences")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
