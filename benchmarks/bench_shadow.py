"""Service latency with a shadow challenger vs without (target: p99 added <= 10 %).

Usage: ``.venv/bin/python benchmarks/bench_shadow.py [--duration 20] [--concurrency 8]``

Promote a champion, copy the workspace, register a challenger in the copy
(``bayespilot run --as-challenger``); then measure real uvicorn on each (single-record requests
at the given concurrency, 127.0.0.1 only, bounded in time and count), alternating the two
``--rounds`` times so drift of the machine favours neither. Reuses the server/load helpers of
``bench_serving.py``.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench_serving as bs  # noqa: E402


def serve_and_measure(tmp: Path, env: dict[str, str], label: str,
                      args: argparse.Namespace) -> bs.LoadResult:
    port = bs.free_port()
    base = f"http://{bs.HOST}:{port}"
    cmd = [str(bs.VENV_BIN / "bayespilot"), "serve", "--set", f"paths.workspace={tmp}",
           "--host", bs.HOST, "--port", str(port)]
    target = bs.Target(label, f"{base}/v1/score", json.dumps(bs.CUSTOMER))
    with bs.running_server(label, cmd, env, f"{base}/readyz", tmp / f"{label}.log") as proc:
        status, text = bs.http("GET", f"{base}/readyz")
        shadow = json.loads(text).get("challenger_version")
        if (label.startswith("with-") and not shadow) or (label.startswith("without-") and shadow):
            raise RuntimeError(f"{label}: unexpected challenger state {shadow!r}")
        return bs.measure(target, 1, proc.pid, concurrency=args.concurrency,
                          warmup_s=args.warmup, duration_s=args.duration, limit=args.requests,
                          tmp=tmp)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--duration", type=float, default=15.0, help="seconds per measurement")
    parser.add_argument("--warmup", type=float, default=3.0, help="seconds, discarded")
    parser.add_argument("--requests", type=int, default=20000, help="cap per measurement")
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-shadow-") as tmp_s:
        root = Path(tmp_s)
        plain, shadowed = root / "plain", root / "shadowed"
        plain.mkdir()
        env = bs.base_env(root)
        bs.promote(plain, env)
        shutil.copytree(plain, shadowed)  # same champion; only this copy gets a challenger
        out = subprocess.run([str(bs.VENV_BIN / "bayespilot"), "run", "--no-prefect",
                              "--as-challenger", "--set", f"paths.workspace={shadowed}",
                              "--set", "candidates.seed=8"],
                             env=env, cwd=bs.REPO_ROOT, capture_output=True, text=True)
        if "decision: CHALLENGER" not in out.stdout:
            raise SystemExit(f"challenger not registered:\n{out.stdout[-2000:]}")
        without, with_shadow = [], []
        for i in range(args.rounds):  # alternate so machine drift favours neither
            without.append(serve_and_measure(plain, env, f"without-shadow-{i}", args))
            with_shadow.append(serve_and_measure(shadowed, env, f"with-shadow-{i}", args))
    print(f"\nsingle-record POST /v1/score, concurrency {args.concurrency}, default workers, "
          f"{args.duration:.0f} s per run ({without[0].tool})")
    print(f"{'configuration':<18} {'requests':>9} {'errors':>7} {'p50 ms':>8} {'p99 ms':>8} "
          f"{'req/s':>8}")
    for r in without + with_shadow:
        print(f"{r.server:<18} {r.requests:>9} {r.errors:>7} {r.p50_ms:>8.2f} {r.p99_ms:>8.2f} "
              f"{r.rps:>8.0f}")
    base_p99 = statistics.median(r.p99_ms for r in without)
    shadow_p99 = statistics.median(r.p99_ms for r in with_shadow)
    added = shadow_p99 / base_p99 - 1
    print(f"p99 added by the shadow challenger: {added:+.1%} "
          f"(target <= +10 %: {'met' if added <= 0.10 else 'NOT met'})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
