"""Technical gate: the real serialized artifact reloads identically in a fresh process, is
cheap enough per row, and is small enough. Cost is CPU time, not wall time, so a busy machine
cannot flip the decision or its replay."""

from __future__ import annotations

import math
from dataclasses import asdict

from configs.settings import TechnicalGateConfig
from tasks.evidence import TechnicalEvidence
from tasks.gates.registry import GateInputs, register
from tasks.gates.result import GateResult, failed_checks, failed_to_compute


def gate_technical(
    evidence: TechnicalEvidence | None, *, config: TechnicalGateConfig
) -> GateResult:
    """Identical predictions after reload, single-row CPU cost (ms, the minimum over repeated
    batches) within ``max_cpu_ms_per_row``, artifact size within ``max_artifact_mb``, and the
    serving fast path's own checks. Wall-clock latency is recorded, not judged."""
    if evidence is None:
        return failed_to_compute("technical", "the artifact was not measured")
    if evidence.error or not evidence.loaded_in_fresh_process:
        return GateResult(
            gate="technical",
            passed=False,
            metric="fresh-process load",
            value=None,
            interval=None,
            threshold=None,
            evidence=asdict(evidence),
            reason=f"artifact did not load in a fresh process: {evidence.error}",
        )
    size_mb = evidence.artifact_bytes / 1e6
    cpu = evidence.single_row_cpu_ms if evidence.single_row_cpu_ms is not None else math.inf
    checks = {
        "identical predictions after reload": evidence.max_abs_diff_after_reload == 0.0,
        f"single-row CPU time <= {config.max_cpu_ms_per_row} ms": cpu <= config.max_cpu_ms_per_row,
        f"size <= {config.max_artifact_mb} MB": size_mb <= config.max_artifact_mb,
    }
    checks.update({k: bool(v) for k, v in evidence.extra.get("checks", {}).items()})
    failed = failed_checks(checks)
    return GateResult(
        gate="technical",
        passed=not failed,
        metric="single-row CPU time (ms, min over batches)",
        value=cpu,
        interval=None,
        threshold=config.max_cpu_ms_per_row,
        evidence={"checks": checks, "size_mb": size_mb, **asdict(evidence)},
        reason=("not met: " + "; ".join(failed))
        if failed
        else f"reloads identically in a fresh process; {cpu:.2f} CPU ms per row; {size_mb:.2f} MB",
    )


@register("technical", order=80)
def _technical(inputs: GateInputs, config: TechnicalGateConfig) -> GateResult:
    return gate_technical(inputs.technical, config=config)
