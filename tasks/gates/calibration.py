"""Calibration gate: the probabilities mean what they say, beyond what sampling noise explains."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict

import numpy as np

from configs.settings import BootstrapConfig, CalibrationGateConfig
from tasks.evaluate import EPS, PairedBootstrap, interval, log_loss, weighted_mean
from tasks.gates.registry import GateInputs, register
from tasks.gates.result import GateResult, failed_checks
from tasks.gates.stats import calibration_check


def gate_calibration(
    y: np.ndarray,
    p: np.ndarray,
    p_raw: np.ndarray,
    segments: Mapping[str, np.ndarray],
    *,
    n_bins: int,
    min_segment_rows: int,
    segment_ece_excess: float,
    config: CalibrationGateConfig,
    bootstrap: BootstrapConfig,
) -> GateResult:
    """Pass when (a) test ECE above the noise floor (the median ECE of a perfectly calibrated
    model at this size; it vanishes on large splits) is at most ``max_ece``, (b) ECE exceeds
    the (1 - alpha') quantile of that perfect model's ECE by at most ``max_ece_excess``, (c)
    every supported segment's ECE exceeds its own quantile by at most ``segment_ece_excess``,
    where alpha' is ``alpha`` divided by the number of these tests (Bonferroni), (d) calibrated
    log loss is not worse than raw beyond the margin with bootstrap confidence (nats)."""
    supported = {k: v for k, v in segments.items() if len(v) >= min_segment_rows}
    tests = 1 + len(supported)
    alpha = config.alpha / tests
    check = lambda yy, pp: calibration_check(  # noqa: E731
        yy, pp, n_bins=n_bins, simulations=config.simulations, alpha=alpha, seed=bootstrap.seed
    )
    overall = check(y, p)
    seg_rows = {}
    for name, idx in supported.items():
        c = check(y[idx], p[idx])
        seg_rows[name] = asdict(c) | {"passed": c.excess <= segment_ece_excess}
    boot = PairedBootstrap(len(y), config=bootstrap, seed_offset=3)
    r = boot.rows
    pc, pr = np.clip(p[r], EPS, 1 - EPS), np.clip(p_raw[r], EPS, 1 - EPS)
    ll_c = -(y[r] * np.log(pc) + (1 - y[r]) * np.log(1 - pc))
    ll_r = -(y[r] * np.log(pr) + (1 - y[r]) * np.log(1 - pr))
    d_ll = boot.run(lambda c: weighted_mean(c, ll_c - ll_r))
    i_ll = interval(
        d_ll,
        float(
            log_loss(y, np.clip(p, EPS, 1 - EPS), labels=[0, 1])
            - log_loss(y, np.clip(p_raw, EPS, 1 - EPS), labels=[0, 1])
        ),
        bootstrap.confidence,
    )
    bad_segments = [k for k, v in seg_rows.items() if not v["passed"]]
    checks = {
        f"ECE above noise floor <= {config.max_ece}": overall.ece - overall.noise_floor
        <= config.max_ece,
        f"ECE within ideal quantile + {config.max_ece_excess}": overall.excess
        <= config.max_ece_excess,
        f"every supported segment within its ideal quantile + {segment_ece_excess}": (
            not bad_segments
        ),
        f"calibrated log loss not worse than raw beyond {config.log_loss_margin}": i_ll.low
        <= config.log_loss_margin,
    }
    failed = failed_checks(checks)
    seg_detail = ", ".join(
        f"{k} (ECE {seg_rows[k]['ece']:.4f} vs ideal quantile "
        f"{seg_rows[k]['ideal_quantile']:.4f}, {seg_rows[k]['rows']} rows)"
        for k in bad_segments
    )
    return GateResult(
        gate="calibration",
        passed=not failed,
        metric="ECE above its noise floor (test)",
        value=overall.ece - overall.noise_floor,
        interval=None,
        threshold=config.max_ece,
        evidence={
            "checks": checks,
            "overall": asdict(overall),
            "segments": seg_rows,
            "failing_segments": bad_segments,
            "tests": tests,
            "alpha_per_test": alpha,
            "log_loss_calibrated_minus_raw": i_ll.point,
            "log_loss_difference_interval": i_ll.as_list(),
            "n_bins": n_bins,
        },
        reason=("not met: " + "; ".join(failed) + (f": {seg_detail}" if seg_detail else ""))
        if failed
        else f"ECE {overall.ece:.4f} (noise floor {overall.noise_floor:.4f}, ideal "
        f"{1 - alpha:.2%} quantile {overall.ideal_quantile:.4f}); "
        f"{len(seg_rows)} segments checked",
    )


@register("calibration", order=30)
def _calibration(inputs: GateInputs, config: CalibrationGateConfig) -> GateResult:
    return gate_calibration(
        inputs.y,
        inputs.candidate.p,
        inputs.p_raw,
        inputs.segments,
        n_bins=inputs.n_bins,
        min_segment_rows=inputs.gates.segments.min_segment_rows,
        segment_ece_excess=inputs.gates.segments.max_ece_excess,
        config=config,
        bootstrap=inputs.bootstrap,
    )
