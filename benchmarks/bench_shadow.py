"""Service latency with a shadow challenger vs without (target: p99 added <= 10 %).

Usage: ``.venv/bin/python benchmarks/bench_shadow.py [--duration 15] [--concurrency 8]
[--rounds 3]``

Promote a champion, copy the workspace, register a challenger in the copy
(``bayespilot run --as-challenger``); then measure real ``bayespilot serve`` on each
(default workers plus the shadow sidecar, which idles where there is no challenger;
single-record requests at the given concurrency, 127.0.0.1 only, bounded in time and count),
alternating the two ``--rounds`` times so drift of the machine favours neither.

For the shadowed runs it also reports what the sidecar did: its CPU seconds during the load
window, the customers it had scored when the load ended (under ``SCHED_IDLE`` it gets only the
CPU the workers leave, and it waits for a quiet machine up to ``serving.shadow_max_defer_s``),
and how long after the load it took to score every logged request (catch-up, seconds).
``--serve-set serving.shadow_max_defer_s=0`` measures the sustained-peak case, where the
sidecar scores during the load. Reuses the server/load helpers of ``bench_serving.py``.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench_serving as bs  # noqa: E402


@dataclass(frozen=True)
class ShadowWork:
    """What the sidecar did in one shadowed run (customers, CPU seconds, seconds)."""

    logged: int
    scored_during_load: int
    cpu_s: float
    catch_up_s: float | None  # None: not caught up within the wait


def count_lines(log: Path) -> int:
    """Lines in a log and its rotated files."""
    return sum(
        f.read_bytes().count(b"\n")
        for f in log.parent.glob(log.name + "*")
        if f.is_file() and not f.name.endswith(".lock")
    )


def proc_cpu_s(pid: int) -> float:
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return 0.0
    rest = raw[raw.rfind(")") + 2 :].split()
    return (int(rest[11]) + int(rest[12])) / bs.CLK_TCK


def serve_and_measure(
    tmp: Path, env: dict[str, str], label: str, args: argparse.Namespace
) -> tuple[bs.LoadResult, ShadowWork | None]:
    port = bs.free_port()
    base = f"http://{bs.HOST}:{port}"
    cmd = [
        str(bs.VENV_BIN / "bayespilot"),
        "serve",
        "--set",
        f"paths.workspace={tmp}",
        "--host",
        bs.HOST,
        "--port",
        str(port),
    ]
    target = bs.Target(label, f"{base}/v1/score", json.dumps(bs.CUSTOMER))
    predictions, shadow_log = tmp / "logs" / "predictions.jsonl", tmp / "logs" / "shadow.jsonl"
    with bs.running_server(label, cmd, env, f"{base}/readyz", tmp / f"{label}.log") as proc:
        expect = label.startswith("with-")
        deadline = time.monotonic() + 60
        while True:  # this server's sidecar reports itself once it has looked at the chain
            shadow = json.loads(bs.http("GET", f"{base}/readyz")[1]).get("shadow") or {}
            if shadow.get("running") and shadow.get("pid") in bs.group_cpu_s(proc.pid):
                break
            if time.monotonic() > deadline:
                raise RuntimeError(f"{label}: the shadow sidecar did not report: {shadow!r}")
            time.sleep(0.25)
        if bool(shadow.get("challenger_version")) != expect:
            raise RuntimeError(f"{label}: unexpected shadow state {shadow!r}")
        logged0, scored0 = count_lines(predictions), count_lines(shadow_log)
        cpu0 = proc_cpu_s(shadow["pid"])
        result = bs.measure(
            target,
            1,
            proc.pid,
            concurrency=args.concurrency,
            warmup_s=args.warmup,
            duration_s=args.duration,
            limit=args.requests,
            tmp=tmp,
        )
        if not expect:
            return result, None
        ended = time.monotonic()
        cpu = proc_cpu_s(shadow["pid"]) - cpu0
        logged = count_lines(predictions) - logged0
        during = count_lines(shadow_log) - scored0
        catch_up = None
        while time.monotonic() - ended < args.catch_up_wait:
            if count_lines(shadow_log) - scored0 >= logged:
                catch_up = time.monotonic() - ended
                break
            time.sleep(0.1)
        return result, ShadowWork(logged, during, cpu, catch_up)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--duration", type=float, default=15.0, help="seconds per measurement")
    parser.add_argument("--warmup", type=float, default=3.0, help="seconds, discarded")
    parser.add_argument("--requests", type=int, default=20000, help="cap per measurement")
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument(
        "--catch-up-wait",
        type=float,
        default=120.0,
        help="seconds to wait after the load for the sidecar to finish",
    )
    parser.add_argument("--serve-set", action="append", default=[], metavar="KEY=VALUE",
                        help="config override for both servers, e.g. "
                        "serving.shadow_max_defer_s=0 (the sidecar never waits for quiet)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-shadow-") as tmp_s:
        root = Path(tmp_s)
        plain, shadowed = root / "plain", root / "shadowed"
        plain.mkdir()
        env = bs.base_env(root)
        bs.promote(plain, env)
        shutil.copytree(plain, shadowed)  # same champion; only this copy gets a challenger
        out = subprocess.run(
            [
                str(bs.VENV_BIN / "bayespilot"),
                "run",
                "--no-prefect",
                "--as-challenger",
                "--set",
                f"paths.workspace={shadowed}",
                "--set",
                "candidates.seed=8",
            ],
            env=env,
            cwd=bs.REPO_ROOT,
            capture_output=True,
            text=True,
        )
        if "decision: CHALLENGER" not in out.stdout:
            raise SystemExit(f"challenger not registered:\n{out.stdout[-2000:]}")
        without, with_shadow, work = [], [], []
        for i in range(args.rounds):  # alternate so machine drift favours neither
            without.append(serve_and_measure(plain, env, f"without-shadow-{i}", args)[0])
            r, w = serve_and_measure(shadowed, env, f"with-shadow-{i}", args)
            with_shadow.append(r)
            assert w is not None
            work.append(w)
    print(
        f"\nsingle-record POST /v1/score, concurrency {args.concurrency}, default workers "
        f"+ shadow sidecar, {args.duration:.0f} s per run ({without[0].tool}); "
        f"{bs.machine_state()}"
    )
    print(
        f"{'configuration':<18} {'requests':>9} {'errors':>7} {'p50 ms':>8} {'p99 ms':>8} "
        f"{'req/s':>8} {'server CPU %':>13}"
    )
    for r in without + with_shadow:
        print(
            f"{r.server:<18} {r.requests:>9} {r.errors:>7} {r.p50_ms:>8.2f} {r.p99_ms:>8.2f} "
            f"{r.rps:>8.0f} {r.cpu.server_pct:>13.0f}"
        )
    print(f"\n{'sidecar':<18} {'logged':>9} {'scored in load':>15} {'CPU s':>7} {'catch-up s':>11}")
    for r, w in zip(with_shadow, work, strict=True):
        catch = f"{w.catch_up_s:.1f}" if w.catch_up_s is not None else "not done"
        print(
            f"{r.server:<18} {w.logged:>9} {w.scored_during_load:>15} {w.cpu_s:>7.2f} {catch:>11}"
        )
    base_p99 = statistics.median(r.p99_ms for r in without)
    shadow_p99 = statistics.median(r.p99_ms for r in with_shadow)
    added = shadow_p99 / base_p99 - 1
    print(f"\nmedian p99: {base_p99:.2f} ms without, {shadow_p99:.2f} ms with the shadow")
    print(
        f"p99 added by the shadow challenger: {added:+.1%} "
        f"(target <= +10 %: {'met' if added <= 0.10 else 'NOT met'})"
    )
    base_rps = statistics.median(r.rps for r in without)
    shadow_rps = statistics.median(r.rps for r in with_shadow)
    print(f"throughput: {shadow_rps / base_rps - 1:+.1%} with the shadow")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
