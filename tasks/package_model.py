"""The served artifact: the calibrated pipeline serialized with joblib, its SHA-256, and a
measurement of the real file in a fresh Python process (the technical gate's evidence).

Run as ``python -m tasks.package_model ARTIFACT ROWS.pkl OUT.npy LATENCY_ROWS REPEATS``: the
probe loads the artifact, predicts ``ROWS`` in one batch into ``OUT.npy`` and times ``REPEATS``
batches of ``LATENCY_ROWS`` single-row predictions, in CPU time (what the technical gate judges:
the minimum batch mean, which a busy machine does not move) and wall time (recorded only),
printing a JSON line.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import joblib
import numpy as np
import pandas as pd

from configs.settings import TechnicalGateConfig
from serving.fast_scorer import ExactnessCheck, UnsupportedPipeline, compile_scorer
from tasks.evidence import TechnicalEvidence
from tasks.select_policy import Policy, decide


def file_sha256(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def atomic_write_bytes(path: Path, data: bytes, *, durable: bool = True) -> None:
    """Write to a temp file in the same folder, fsync (``durable``), then rename over
    ``path``. Readers see the old or the new content, never a part. Without ``durable`` a
    crash may lose the update (not corrupt it) and no journal commit is forced, which
    matters for a file rewritten several times a second beside a busy service."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            if durable:
                os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def save_artifact(estimator: object, path: Path) -> str:
    """Serialize ``estimator`` atomically; return the file's SHA-256."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        joblib.dump(estimator, tmp)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return file_sha256(path)


def measure_artifact(
    path: Path,
    estimator: object,
    X: pd.DataFrame,  # noqa: N803
    *,
    reload_rows: int,
    latency_rows: int,
    latency_repeats: int = 1,
    timeout_s: float = 300.0,
) -> TechnicalEvidence:
    """Load ``path`` in a fresh interpreter, compare its predictions with ``estimator``'s on
    the first ``reload_rows`` of ``X`` and time single-row predictions (CPU and wall ms)."""
    sample = X.head(reload_rows).reset_index(drop=True)
    expected = estimator.predict_proba(sample)[:, 1]  # type: ignore[attr-defined]
    with tempfile.TemporaryDirectory(prefix="bayespilot-probe-") as tmp:
        rows_path, out_path = Path(tmp) / "rows.pkl", Path(tmp) / "out.npy"
        sample.to_pickle(rows_path)
        env = {
            **os.environ,
            "OMP_NUM_THREADS": "1",
            "OPENBLAS_NUM_THREADS": "1",
            "MKL_NUM_THREADS": "1",
        }
        proc = subprocess.run(
            [
                sys.executable,
                "-m",
                "tasks.package_model",
                str(path),
                str(rows_path),
                str(out_path),
                str(latency_rows),
                str(latency_repeats),
            ],
            capture_output=True,
            text=True,
            timeout=timeout_s,
            env=env,
            cwd=Path(__file__).resolve().parent.parent,
        )
        if proc.returncode != 0:
            return TechnicalEvidence(
                artifact_bytes=path.stat().st_size,
                loaded_in_fresh_process=False,
                max_abs_diff_after_reload=None,
                rows_compared=0,
                single_row_latency_ms={},
                error=proc.stderr.strip().splitlines()[-1:][0]
                if proc.stderr.strip()
                else f"exit {proc.returncode}",
            )
        probe = json.loads(proc.stdout.strip().splitlines()[-1])
        got = np.load(out_path)
    return TechnicalEvidence(
        artifact_bytes=path.stat().st_size,
        loaded_in_fresh_process=True,
        max_abs_diff_after_reload=float(np.max(np.abs(got - expected))) if len(got) else 0.0,
        rows_compared=len(got),
        single_row_latency_ms=probe["latency_ms"],
        single_row_cpu_ms=probe["cpu_ms_per_row"],
        extra={"load_seconds": probe["load_seconds"], "cpu_ms_per_batch": probe["cpu_ms_batches"]},
    )


def _probe(artifact: str, rows: str, out: str, latency_rows: int, repeats: int) -> dict[str, Any]:
    start = time.perf_counter()
    model = joblib.load(artifact)
    load_s = time.perf_counter() - start
    frame = pd.read_pickle(rows)
    np.save(out, model.predict_proba(frame)[:, 1])
    singles = [frame.iloc[[i]] for i in range(min(latency_rows, len(frame)))]
    wall: list[float] = []
    cpu_batches: list[float] = []
    for _ in range(max(repeats, 1)):
        cpu_start = time.process_time()
        for row in singles:
            t = time.perf_counter()
            model.predict_proba(row)
            wall.append((time.perf_counter() - t) * 1000)
        if singles:
            cpu_batches.append((time.process_time() - cpu_start) * 1000 / len(singles))
    arr = np.asarray(wall) if wall else np.asarray([np.inf])
    return {
        "load_seconds": round(load_s, 4),
        "cpu_ms_per_row": min(cpu_batches) if cpu_batches else None,
        "cpu_ms_batches": [round(c, 4) for c in cpu_batches],
        "latency_ms": {
            "p50": float(np.percentile(arr, 50)),
            "p95": float(np.percentile(arr, 95)),
            "p99": float(np.percentile(arr, 99)),
            "n": len(wall),
        },
    }


if __name__ == "__main__":
    a, r, o, n, k = sys.argv[1:6]
    print(json.dumps(_probe(a, r, o, int(n), int(k))))


def check_fast_scorer(
    estimator: object,
    policy: Policy,
    X: pd.DataFrame,  # noqa: N803
    values: np.ndarray,
    *,
    tolerance: float,
    latency_rows: int,
    reference: np.ndarray | None = None,
) -> dict[str, Any]:
    """Compile the serving fast path and compare it with the sklearn pipeline on every row of
    ``X``: max |dp| and identical actions under ``policy``; also its single-row latency (ms).
    ``reference``: the pipeline's probabilities on ``X`` when already computed."""
    try:
        scorer = compile_scorer(estimator)
    except UnsupportedPipeline as exc:
        return {"compiled": False, "error": str(exc), "checks": {"fast scorer compiles": False}}
    ref = (
        estimator.predict_proba(X)[:, 1]  # type: ignore[attr-defined]
        if reference is None
        else reference
    )
    fast = scorer.score_frame(X).probability
    diff = float(np.max(np.abs(fast - ref))) if len(ref) else 0.0
    same_actions = bool(
        np.array_equal(
            decide(ref, values, policy.document).contact,
            decide(fast, values, policy.document).contact,
        )
    )
    check = ExactnessCheck(len(ref), diff, same_actions, tolerance)
    times = []
    for i in range(min(latency_rows, len(X))):
        row = {c: [X[c].iat[i]] for c in scorer.features}
        t = time.perf_counter()
        scorer.score(row)
        times.append((time.perf_counter() - t) * 1000)
    return {
        "compiled": True,
        "rows": check.rows,
        "max_abs_diff": diff,
        "actions_identical": same_actions,
        "tolerance": tolerance,
        "single_row_latency_ms": {
            "p50": float(np.percentile(times, 50)),
            "p95": float(np.percentile(times, 95)),
        }
        if times
        else {},
        "checks": {
            f"fast scorer max |dp| <= {tolerance:g}": diff <= tolerance,
            "fast scorer actions identical": same_actions,
        },
        "passed": check.passed,
    }


@dataclass(frozen=True)
class PackagedModel:
    """Paths (absolute) and SHA-256 of the served model and policy, plus the technical probe."""

    artifact_path: Path
    artifact_sha256: str
    policy_path: Path
    policy_sha256: str
    technical: TechnicalEvidence


def package_model(
    estimator: object,
    policy: Policy,
    X_test: pd.DataFrame,  # noqa: N803
    values_test: np.ndarray,
    *,
    directory: Path,
    config: TechnicalGateConfig,
    p_test: np.ndarray | None = None,
) -> PackagedModel:
    """Write ``model.joblib`` and ``policy.json`` into ``directory`` (atomically), measure the
    written artifact in a fresh process, and check the fast scorer on every test row
    (``p_test``: the estimator's probabilities on ``X_test`` when already computed)."""
    artifact = directory / "model.joblib"
    sha = save_artifact(estimator, artifact)
    policy_path = directory / "policy.json"
    atomic_write_bytes(policy_path, policy.to_json().encode())
    # the fresh-process probe runs (its own process, CPU time measured there) while this
    # process checks the fast scorer: the two do not share any state
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="probe") as pool:
        probe = pool.submit(
            measure_artifact,
            artifact,
            estimator,
            X_test,
            reload_rows=config.reload_rows,
            latency_rows=config.latency_rows,
            latency_repeats=config.latency_repeats,
        )
        fast = check_fast_scorer(
            estimator,
            policy,
            X_test,
            values_test,
            tolerance=config.fast_scorer_tolerance,
            latency_rows=config.latency_rows,
            reference=p_test,
        )
        technical = probe.result()
    extra = {**technical.extra, "fast_scorer": fast, "checks": fast["checks"]}
    technical = replace(technical, extra=extra)
    return PackagedModel(artifact, sha, policy_path, file_sha256(policy_path), technical)
