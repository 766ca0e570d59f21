"""Service latency with a shadow challenger vs without (target: p99 added <= 10 %).

Usage: ``.venv/bin/python benchmarks/bench_shadow.py [--pairs 12] [--window 5]
[--concurrency 8] [--sidecar-set KEY=VALUE ...]``

Promote a champion and register a challenger (``bayespilot run --as-challenger``) in a temp
workspace, then start ONE real ``bayespilot serve --no-shadow`` (default workers, 127.0.0.1)
and alternate load windows with and without the shadow sidecar (``bayespilot shadow``, the
same process ``serve`` starts by default) in ABBA order, so machine drift and order favour
neither. The workers, their caches and the workspace are the same in both arms: the only
difference is the sidecar. (Restarting a server per measurement, as an earlier version did,
moved p99 by +-30 % between identical configurations on this 2-core machine, more than the
effect being measured.)

Each window: single-record POST /v1/score at ``--concurrency`` keep-alive connections for
``--window`` seconds (wrk when installed). Before a with-window the sidecar runs and has
scored everything logged so far; after it, the bench records the sidecar's CPU seconds in
the window, the customers it scored during the load, and the seconds it took after the load
to score every logged request (catch-up). Figures: median p99 (ms) per arm, the median of
the per-pair p99 ratios, throughput (req/s).

``--sidecar-set serving.shadow_max_defer_s=0`` measures the sustained-peak case (a peak
longer than the sidecar waits for a quiet machine), where it scores during the load.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench_serving as bs  # noqa: E402

from configs.paths import Workspace  # noqa: E402  (bench_serving put the repo on the path)


@dataclass(frozen=True)
class Window:
    """One load window. Latencies in ms, throughput in req/s; sidecar figures in customers,
    CPU seconds and seconds (None without a sidecar, or not caught up within the wait)."""

    pair: int
    shadow: bool
    result: bs.LoadResult
    scored_during_load: int | None = None
    sidecar_cpu_s: float | None = None
    catch_up_s: float | None = None


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


class Sidecar:
    """``bayespilot shadow`` on the workspace, started and stopped between windows."""

    def __init__(self, ws: Path, env: dict[str, str], overrides: list[str]) -> None:
        self.ws, self.env, self.overrides = ws, env, overrides
        self.proc: subprocess.Popen[bytes] | None = None
        paths = Workspace(ws)
        self.predictions, self.shadow_log = paths.prediction_log, paths.shadow_log
        self.status_path = paths.shadow_status

    def status(self) -> dict[str, object]:
        """The sidecar's last status file ({} before the first one)."""
        try:
            return dict(json.loads(self.status_path.read_text()))
        except (OSError, ValueError):
            return {}

    def start(self) -> None:
        if self.proc is not None:
            return
        cmd = [str(bs.VENV_BIN / "bayespilot"), "shadow", "--set", f"paths.workspace={self.ws}"]
        for o in self.overrides:
            cmd += ["--set", o]
        env = {**self.env, "OMP_NUM_THREADS": "1"}
        with open(self.ws / "sidecar.log", "ab") as fh:
            self.proc = subprocess.Popen(cmd, env=env, stdout=fh, stderr=subprocess.STDOUT,
                                         start_new_session=True, cwd=bs.REPO_ROOT)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            status = self.status()
            if status.get("pid") == self.proc.pid and status.get("running"):
                if not status.get("challenger_version"):
                    raise RuntimeError(f"the sidecar sees no challenger: {status}")
                return
            if self.proc.poll() is not None:
                raise RuntimeError(f"sidecar exited:\n{bs.tail(self.ws / 'sidecar.log')}")
            time.sleep(0.1)
        raise RuntimeError("the sidecar did not report")

    def caught_up(self) -> bool:
        """The sidecar's recorded position is the end of the current prediction log."""
        position = self.status().get("position")
        try:
            st = self.predictions.stat()
        except OSError:
            return False
        return position == [st.st_ino, st.st_size]

    def wait_caught_up(self, timeout_s: float) -> float | None:
        """Seconds until every logged request is scored (None: not within ``timeout_s``)."""
        t0 = time.monotonic()
        while time.monotonic() - t0 < timeout_s:
            if self.caught_up():
                return time.monotonic() - t0
            time.sleep(0.05)
        return None

    def stop(self) -> None:
        if self.proc is not None:
            bs.stop_process(self.proc)
            self.proc = None


def window(i: int, shadow: bool, sidecar: Sidecar, target: bs.Target, pgid: int,
           args: argparse.Namespace, tmp: Path) -> Window:
    if not shadow:
        sidecar.stop()
        r = bs.measure(target, 1, pgid, concurrency=args.concurrency, warmup_s=0,
                       duration_s=args.window, limit=0, tmp=tmp)
        return Window(i, False, r)
    sidecar.start()
    if sidecar.wait_caught_up(args.catch_up_wait) is None:
        raise RuntimeError("the sidecar did not catch up before the window")
    assert sidecar.proc is not None
    pid = sidecar.proc.pid
    cpu0, scored0 = proc_cpu_s(pid), count_lines(sidecar.shadow_log)
    r = bs.measure(target, 1, pgid, concurrency=args.concurrency, warmup_s=0,
                   duration_s=args.window, limit=0, tmp=tmp)
    during = count_lines(sidecar.shadow_log) - scored0
    cpu = proc_cpu_s(pid) - cpu0
    return Window(i, True, r, during, cpu, sidecar.wait_caught_up(args.catch_up_wait))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--pairs", type=int, default=12, help="with/without window pairs")
    parser.add_argument("--window", type=float, default=5.0, help="seconds per load window")
    parser.add_argument("--warmup", type=float, default=5.0, help="seconds, discarded")
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--catch-up-wait", type=float, default=120.0,
                        help="seconds to wait for the sidecar to score everything logged")
    parser.add_argument("--sidecar-set", action="append", default=[], metavar="KEY=VALUE",
                        help="config override for the sidecar, e.g. "
                        "serving.shadow_max_defer_s=0 (it never waits for a quiet machine)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-shadow-") as tmp_s:
        tmp = Path(tmp_s)
        ws = tmp / "ws"
        ws.mkdir()
        env = bs.base_env(tmp)
        bs.promote(ws, env)
        out = subprocess.run([str(bs.VENV_BIN / "bayespilot"), "run", "--no-prefect",
                              "--as-challenger", "--set", f"paths.workspace={ws}",
                              "--set", "candidates.seed=8"],
                             env=env, cwd=bs.REPO_ROOT, capture_output=True, text=True)
        if "decision: CHALLENGER" not in out.stdout:
            raise SystemExit(f"challenger not registered:\n{out.stdout[-2000:]}")
        port = bs.free_port()
        base = f"http://{bs.HOST}:{port}"
        cmd = [str(bs.VENV_BIN / "bayespilot"), "serve", "--no-shadow", "--set",
               f"paths.workspace={ws}", "--host", bs.HOST, "--port", str(port)]
        target = bs.Target("score", f"{base}/v1/score", json.dumps(bs.CUSTOMER))
        sidecar = Sidecar(ws, env, args.sidecar_set)
        windows: list[Window] = []
        with bs.running_server("serve", cmd, env, f"{base}/readyz", tmp / "serve.log") as proc:
            try:
                sidecar.start()  # from here on every logged request is shadowed eventually
                bs.run_wrk(target, concurrency=args.concurrency, duration_s=args.warmup,
                           limit=0, script=tmp / "warmup.lua")
                for i in range(args.pairs):
                    arms = (False, True) if i % 2 == 0 else (True, False)  # ABBA
                    for shadow in arms:
                        windows.append(window(i, shadow, sidecar, target, proc.pid, args, tmp))
                        bs.log(f"pair {i} {'with' if shadow else 'without'}: "
                               f"p99 {windows[-1].result.p99_ms:.2f} ms")
                sidecar.start()
                final_catch_up = sidecar.wait_caught_up(args.catch_up_wait)
            finally:
                sidecar.stop()
        logged, shadowed = count_lines(sidecar.predictions), count_lines(sidecar.shadow_log)
    report(windows, args, logged, shadowed, final_catch_up)
    return 0


def report(windows: list[Window], args: argparse.Namespace, logged: int, shadowed: int,
           final_catch_up: float | None) -> None:
    without = [w for w in windows if not w.shadow]
    with_ = [w for w in windows if w.shadow]
    print(f"\nsingle-record POST /v1/score, concurrency {args.concurrency}, one `bayespilot "
          f"serve` ({os.cpu_count()} cores, default workers), {args.pairs} ABBA pairs of "
          f"{args.window:.0f} s windows ({windows[0].result.tool}); sidecar overrides "
          f"{args.sidecar_set or 'none'}; {bs.machine_state()}")
    print(f"{'pair':>4} {'p99 without':>12} {'p99 with':>9} {'ratio':>6} {'req/s without':>14} "
          f"{'req/s with':>11} {'scored in load':>15} {'sidecar CPU s':>14} {'catch-up s':>11}")
    ratios = []
    for a, b in zip(without, with_, strict=True):
        ratios.append(b.result.p99_ms / a.result.p99_ms)
        catch = f"{b.catch_up_s:.1f}" if b.catch_up_s is not None else "not done"
        print(f"{a.pair:>4} {a.result.p99_ms:>12.2f} {b.result.p99_ms:>9.2f} {ratios[-1]:>6.2f} "
              f"{a.result.rps:>14.0f} {b.result.rps:>11.0f} {b.scored_during_load:>15} "
              f"{b.sidecar_cpu_s:>14.2f} {catch:>11}")
    p99_a = statistics.median(w.result.p99_ms for w in without)
    p99_b = statistics.median(w.result.p99_ms for w in with_)
    p50_a = statistics.median(w.result.p50_ms for w in without)
    p50_b = statistics.median(w.result.p50_ms for w in with_)
    rps_a = statistics.median(w.result.rps for w in without)
    rps_b = statistics.median(w.result.rps for w in with_)
    errors = sum(w.result.errors for w in windows)
    added = statistics.median(ratios) - 1
    print(f"\nmedian p50: {p50_a:.2f} ms without, {p50_b:.2f} ms with the shadow")
    print(f"median p99: {p99_a:.2f} ms without, {p99_b:.2f} ms with the shadow "
          f"({p99_b / p99_a - 1:+.1%})")
    print(f"p99 added by the shadow challenger (median of per-pair ratios): {added:+.1%} "
          f"(target <= +10 %: {'met' if added <= 0.10 else 'NOT met'})")
    print(f"throughput: {rps_b / rps_a - 1:+.1%} with the shadow; errors {errors}")
    done = f"{final_catch_up:.1f} s" if final_catch_up is not None else "not within the wait"
    print(f"shadow coverage: {shadowed} of {logged} logged customers scored by the challenger "
          f"(all caught up after the last window: {done})")


if __name__ == "__main__":
    raise SystemExit(main())
