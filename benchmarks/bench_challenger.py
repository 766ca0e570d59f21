"""Service latency with a challenger registered vs without one (target: p99 within 5 %).

Usage: ``.venv/bin/python benchmarks/bench_challenger.py [--rounds 6] [--window 10]
[--concurrency 8]``

The challenger is scored in batch on the stored decisions (``bayespilot challenger-score``,
or first thing in each monitoring run), not beside the workers, so registering one should
cost the service nothing. This measures it: two temp workspaces are promoted the same way
(same data, same seed); in the second a challenger is then registered
(``bayespilot run --as-challenger``). Both are served at once by a real ``bayespilot serve``
each (default workers, 127.0.0.1), started once and kept running, and load windows alternate
between them in ABAB order (without, with, without, with, ...), so machine drift favours
neither arm; the idle server waits while the other is measured.

Each window: single-record POST /v1/score at ``--concurrency`` keep-alive connections for
``--window`` seconds (wrk when installed, else the asyncio/httpx generator of
bench_serving.py). Printed: p50/p99 (ms) and throughput per round, the median of each arm,
and the ratio of the medians (with / without). After the last window the challenger is
scored in batch over everything the with-server stored (``bayespilot challenger-score``),
outside the measured windows, and its summary is printed.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench_serving as bs  # noqa: E402

TARGET_RATIO = 1.05  # p99 with a challenger / p99 without one, at most


@dataclass(frozen=True)
class Round:
    """One load window on one server; latencies in ms, throughput in req/s."""

    index: int
    challenger: bool
    result: bs.LoadResult


def register_challenger(ws: Path, env: dict[str, str]) -> None:
    cmd = [str(bs.VENV_BIN / "bayespilot"), "run", "--no-prefect", "--as-challenger",
           "--set", f"paths.workspace={ws}", "--set", "candidates.seed=8"]
    bs.log(f"registering a challenger: {' '.join(cmd)}")
    out = subprocess.run(cmd, env=env, cwd=bs.REPO_ROOT, capture_output=True, text=True,
                         timeout=3600)
    if "decision: CHALLENGER" not in out.stdout:
        raise SystemExit(f"challenger not registered:\n{out.stdout[-2000:]}\n{out.stderr[-2000:]}")


def serve_cmd(ws: Path, port: int) -> list[str]:
    return [str(bs.VENV_BIN / "bayespilot"), "serve", "--set", f"paths.workspace={ws}",
            "--host", bs.HOST, "--port", str(port)]


def challenger_score(ws: Path, env: dict[str, str]) -> str:
    cmd = [str(bs.VENV_BIN / "bayespilot"), "challenger-score", "--set",
           f"paths.workspace={ws}"]
    out = subprocess.run(cmd, env=env, cwd=bs.REPO_ROOT, capture_output=True, text=True,
                         timeout=3600)
    return (out.stdout.strip() or out.stderr.strip()[-500:]) + f" (exit {out.returncode})"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rounds", type=int, default=6,
                        help="windows per arm (at least 4), alternated ABAB")
    parser.add_argument("--window", type=float, default=10.0, help="seconds per load window")
    parser.add_argument("--warmup", type=float, default=5.0, help="seconds per server, discarded")
    parser.add_argument("--concurrency", type=int, default=8)
    args = parser.parse_args()
    if args.rounds < 4:
        parser.error("--rounds must be at least 4")
    with tempfile.TemporaryDirectory(prefix="bench-challenger-") as tmp_s:
        tmp = Path(tmp_s)
        env = bs.base_env(tmp)
        without_ws, with_ws = tmp / "without", tmp / "with"
        for ws in (without_ws, with_ws):
            ws.mkdir()
            bs.promote(ws, env)
        register_challenger(with_ws, env)
        rounds: list[Round] = []
        with ExitStack() as stack:
            targets: dict[bool, tuple[bs.Target, int]] = {}
            for challenger, ws in ((False, without_ws), (True, with_ws)):
                port = bs.free_port()
                base = f"http://{bs.HOST}:{port}"
                name = "serve-with" if challenger else "serve-without"
                proc = stack.enter_context(bs.running_server(
                    name, serve_cmd(ws, port), env, f"{base}/readyz", tmp / f"{name}.log"))
                target = bs.Target(name, f"{base}/v1/score", json.dumps(bs.CUSTOMER))
                targets[challenger] = (target, proc.pid)
                bs.measure(target, 0, proc.pid, concurrency=args.concurrency,
                           warmup_s=args.warmup, duration_s=1, limit=0, tmp=tmp)
            for i in range(2 * args.rounds):
                challenger = i % 2 == 1  # ABAB: without, with, without, with, ...
                target, pgid = targets[challenger]
                r = bs.measure(target, 0, pgid, concurrency=args.concurrency, warmup_s=0,
                               duration_s=args.window, limit=0, tmp=tmp)
                rounds.append(Round(i // 2, challenger, r))
                bs.log(f"round {i // 2} {'with' if challenger else 'without'}: "
                       f"p50 {r.p50_ms:.2f} ms, p99 {r.p99_ms:.2f} ms, {r.rps:.0f} req/s")
        scored = challenger_score(with_ws, env)
    report(rounds, args, scored)
    return 0


def report(rounds: list[Round], args: argparse.Namespace, scored: str) -> None:
    without = [r for r in rounds if not r.challenger]
    with_ = [r for r in rounds if r.challenger]
    print(f"\nsingle-record POST /v1/score, concurrency {args.concurrency}, two `bayespilot "
          f"serve` ({os.cpu_count()} cores, default workers each), {args.rounds} ABAB rounds "
          f"of {args.window:.0f} s per arm ({rounds[0].result.tool}); {bs.machine_state()}")
    print(f"{'round':>5} {'arm':>8} {'p50 ms':>8} {'p99 ms':>8} {'req/s':>7} {'errors':>7}")
    for r in rounds:
        arm = "with" if r.challenger else "without"
        print(f"{r.index:>5} {arm:>8} {r.result.p50_ms:>8.2f} {r.result.p99_ms:>8.2f} "
              f"{r.result.rps:>7.0f} {r.result.errors:>7}")
    p50_a = statistics.median(r.result.p50_ms for r in without)
    p50_b = statistics.median(r.result.p50_ms for r in with_)
    p99_a = statistics.median(r.result.p99_ms for r in without)
    p99_b = statistics.median(r.result.p99_ms for r in with_)
    rps_a = statistics.median(r.result.rps for r in without)
    rps_b = statistics.median(r.result.rps for r in with_)
    ratio = p99_b / p99_a
    print(f"\nmedian p50: {p50_a:.2f} ms without, {p50_b:.2f} ms with a challenger "
          f"(ratio {p50_b / p50_a:.3f})")
    print(f"median p99: {p99_a:.2f} ms without, {p99_b:.2f} ms with a challenger "
          f"(ratio of medians {ratio:.3f}; target <= {TARGET_RATIO:.2f}: "
          f"{'met' if ratio <= TARGET_RATIO else 'NOT met'})")
    print(f"median throughput: {rps_a:.0f} req/s without, {rps_b:.0f} req/s with")
    print(f"errors: {sum(r.result.errors for r in rounds)}")
    print(f"challenger scored in batch afterwards, off the request path: {scored}")


if __name__ == "__main__":
    raise SystemExit(main())
