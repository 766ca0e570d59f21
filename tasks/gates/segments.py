"""Segments gate: no supported segment is served markedly worse than the whole, beyond noise."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
from scipy.stats import norm

from configs.settings import BootstrapConfig, CalibrationGateConfig, SegmentsGateConfig
from tasks.evaluate import EPS, PairedBootstrap, weighted_roc_auc
from tasks.gates.registry import GateInputs, register
from tasks.gates.result import GateResult, failed_to_compute
from tasks.gates.stats import calibration_check, holm


def _why(row: dict[str, Any], config: SegmentsGateConfig) -> str:
    out = []
    if row["auc_below_floor"]:
        out.append(f"ROC-AUC {row['roc_auc']:.3f} significantly below {config.min_roc_auc}")
    if row["recall_below_overall"]:
        out.append(f"recall {row['recall']:.3f} significantly below overall minus margin")
    if not row["ece_ok"]:
        out.append(
            f"ECE {row['ece']:.4f} > ideal quantile {row['ece_ideal_quantile']:.4f} "
            f"+ {config.max_ece_excess}"
        )
    return ", ".join(out)


def _segment_resamples(
    boot: PairedBootstrap, y: np.ndarray, p: np.ndarray, contact: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Bootstrap ROC-AUC, recall, and recall minus the recall ``p`` predicts, per resample."""
    yy, pp, cc = y[boot.rows], p[boot.rows], contact[boot.rows]
    aucs, recs, gaps = [], [], []
    for c in boot.chunks():
        rec = (c @ (cc * yy)) / np.maximum(c @ yy, EPS)
        aucs.append(weighted_roc_auc(c, yy, pp))
        recs.append(rec)
        gaps.append(rec - (c @ (cc * pp)) / np.maximum(c @ pp, EPS))
    return np.concatenate(aucs), np.concatenate(recs), np.concatenate(gaps)


def gate_segments(
    y: np.ndarray,
    p: np.ndarray,
    contact: np.ndarray,
    segments: Mapping[str, np.ndarray],
    *,
    n_bins: int,
    config: SegmentsGateConfig,
    calibration: CalibrationGateConfig,
    bootstrap: BootstrapConfig,
) -> GateResult:
    """Per supported segment: ROC-AUC not significantly below the floor; recall not
    significantly below overall recall minus a margin where the segment's own predicted risk
    does not explain it (one-sided bootstrap z-tests, Holm-corrected over all tests); ECE within
    the per-segment allowance beyond the (1 - alpha/m) quantile of a perfectly calibrated
    model's ECE at the segment's size (calibration gate's alpha, Bonferroni over m segments).
    Segments smaller than ``min_segment_rows`` are listed as insufficient support."""
    if not segments:
        return failed_to_compute("segments", "no segment columns configured (data.segment_columns)")
    pos = y == 1
    overall_recall = float(contact[pos].mean()) if pos.any() else float("nan")
    supported, insufficient, pvals, table = {}, {}, {}, {}
    n_supported = sum(
        len(idx) >= config.min_segment_rows and len(np.unique(y[idx])) == 2
        for idx in segments.values()
    )
    ece_alpha = calibration.alpha / max(n_supported, 1)  # Bonferroni over the segments
    for name, idx in segments.items():
        yy = y[idx]
        if len(idx) < config.min_segment_rows or len(np.unique(yy)) < 2:
            insufficient[name] = int(len(idx))
            continue
        supported[name] = idx
        pp, cc = p[idx], contact[idx].astype(float)
        boot = PairedBootstrap(
            len(idx), config=bootstrap, resamples=min(bootstrap.resamples, 500), seed_offset=6
        )
        aucs, recs, gaps = _segment_resamples(boot, yy, pp, cc)
        auc = float(weighted_roc_auc(np.ones((1, len(idx))), yy, pp)[0])
        rec = float(cc[yy == 1].mean())
        expected_rec = float((cc * pp).sum() / max(pp.sum(), EPS))
        floor_rec = overall_recall - config.recall_margin
        se_auc, se_rec = float(np.std(aucs)) + EPS, float(np.std(recs)) + EPS
        se_gap = float(np.std(gaps)) + EPS
        pvals[f"{name}|auc"] = float(norm.cdf((auc - config.min_roc_auc) / se_auc))
        # Intersection-union test: a segment's recall fails only when it is significantly below
        # the overall recall minus the margin AND significantly below the recall its own risk
        # mix predicts (a low-risk segment is rightly contacted less under an EV policy).
        p_overall = float(norm.cdf((rec - floor_rec) / se_rec))
        p_expected = float(norm.cdf((rec - expected_rec + config.recall_margin) / se_gap))
        pvals[f"{name}|recall"] = max(p_overall, p_expected)
        cal = calibration_check(
            yy,
            pp,
            n_bins=n_bins,
            simulations=calibration.simulations,
            alpha=ece_alpha,
            seed=bootstrap.seed,
        )
        table[name] = {
            "rows": len(idx),
            "roc_auc": auc,
            "roc_auc_se": se_auc,
            "recall": rec,
            "recall_se": se_rec,
            "expected_recall": expected_rec,
            "ece": cal.ece,
            "ece_ideal_quantile": cal.ideal_quantile,
            "ece_ok": cal.ece - cal.ideal_quantile <= config.max_ece_excess,
        }
    if not supported:
        return GateResult(
            gate="segments",
            passed=False,
            metric="worst segment ROC-AUC",
            value=None,
            interval=None,
            threshold=config.min_roc_auc,
            evidence={"insufficient_support": insufficient},
            reason=f"no segment has >= {config.min_segment_rows} rows with both classes",
        )
    rejected = holm(pvals, config.alpha)
    failures = []
    for name, row in table.items():
        row["auc_below_floor"] = rejected[f"{name}|auc"]
        row["recall_below_overall"] = rejected[f"{name}|recall"]
        row["p_auc"], row["p_recall"] = pvals[f"{name}|auc"], pvals[f"{name}|recall"]
        if row["auc_below_floor"] or row["recall_below_overall"] or not row["ece_ok"]:
            failures.append(name)
    worst = min(table, key=lambda k: table[k]["roc_auc"])
    return GateResult(
        gate="segments",
        passed=not failures,
        metric="worst segment ROC-AUC",
        value=table[worst]["roc_auc"],
        interval=None,
        threshold=config.min_roc_auc,
        evidence={
            "worst_segment": worst,
            "overall_recall": overall_recall,
            "segments": table,
            "insufficient_support": insufficient,
            "failing_segments": failures,
            "correction": f"Holm at family-wise alpha={config.alpha} over {len(pvals)} tests",
            "ece_alpha_per_segment": ece_alpha,
        },
        reason=(
            "failing segments: " + "; ".join(f"{k} ({_why(table[k], config)})" for k in failures)
            if failures
            else f"{len(table)} segments pass; worst {worst} "
            f"(ROC-AUC {table[worst]['roc_auc']:.3f}); "
            f"{len(insufficient)} with insufficient support"
        ),
    )


@register("segments", order=50)
def _segments(inputs: GateInputs, config: SegmentsGateConfig) -> GateResult:
    return gate_segments(
        inputs.y,
        inputs.candidate.p,
        inputs.candidate.contact,
        inputs.segments,
        n_bins=inputs.n_bins,
        config=config,
        calibration=inputs.gates.calibration,
        bootstrap=inputs.bootstrap,
    )
