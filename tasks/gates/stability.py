"""Stability gate: refits on other folds agree with each other as closely as sampling noise
at the fold size allows."""

from __future__ import annotations

import numpy as np

from configs.settings import StabilityGateConfig
from tasks.evidence import StabilityEvidence
from tasks.gates.registry import GateInputs, register
from tasks.gates.result import GateResult, failed_checks, failed_to_compute
from tasks.gates.stats import noise_std_quantile


def gate_stability(
    evidence: StabilityEvidence | None, *, config: StabilityGateConfig
) -> GateResult:
    """The std of fold ROC-AUC and of fold profit per customer (USD) may exceed the (1 -
    alpha) quantile of the std that sampling noise alone produces at the folds' sizes (each
    fold's standard error; chi-square on k - 1 degrees of freedom) by at most
    ``max_std_ratio``. Both limits follow n: small folds are allowed a larger spread, and
    money limits scale with the economics."""
    if evidence is None or len(evidence.folds) < 2:
        return failed_to_compute("stability", "no cross-validation folds were computed")
    auc = np.array([f.roc_auc for f in evidence.folds])
    profit = np.array([f.profit_per_customer_usd for f in evidence.folds])
    auc_sd, prof_sd = float(np.std(auc, ddof=1)), float(np.std(profit, ddof=1))
    auc_q = noise_std_quantile(np.array([f.roc_auc_se for f in evidence.folds]), alpha=config.alpha)
    prof_q = noise_std_quantile(
        np.array([f.profit_se_usd for f in evidence.folds]), alpha=config.alpha
    )
    auc_limit, prof_limit = config.max_std_ratio * auc_q, config.max_std_ratio * prof_q
    checks = {
        f"fold ROC-AUC std <= {config.max_std_ratio} x its noise quantile ({auc_limit:.4f})": (
            auc_sd <= auc_limit
        ),
        f"fold profit std <= {config.max_std_ratio} x its noise quantile ({prof_limit:.4g} USD)": (
            prof_sd <= prof_limit
        ),
    }
    failed = failed_checks(checks)
    return GateResult(
        gate="stability",
        passed=not failed,
        metric="std of fold ROC-AUC",
        value=auc_sd,
        interval=[float(auc.min()), float(auc.max())],
        threshold=auc_limit,
        evidence={
            "checks": checks,
            "fold_roc_auc": auc.tolist(),
            "fold_roc_auc_se": [f.roc_auc_se for f in evidence.folds],
            "fold_profit_per_customer_usd": profit.tolist(),
            "fold_profit_se_usd": [f.profit_se_usd for f in evidence.folds],
            "fold_rows": [f.rows for f in evidence.folds],
            "roc_auc_noise_std_quantile": auc_q,
            "profit_std_usd_per_customer": prof_sd,
            "profit_noise_std_quantile_usd": prof_q,
            "profit_std_limit_usd": prof_limit,
            "alpha": config.alpha,
            "rows": evidence.rows,
            "subsampled": evidence.subsampled,
            "folds": len(evidence.folds),
        },
        reason=(
            f"not met: fold ROC-AUC std {auc_sd:.4f} (limit {auc_limit:.4f}), fold profit std "
            f"{prof_sd:.4g} USD (limit {prof_limit:.4g})"
        )
        if failed
        else f"fold ROC-AUC std {auc_sd:.4f} within {auc_limit:.4f}, profit std "
        f"{prof_sd:.4g} USD within {prof_limit:.4g} (noise at "
        f"{int(np.mean([f.rows for f in evidence.folds]))} rows per fold)",
    )


@register("stability", order=60)
def _stability(inputs: GateInputs, config: StabilityGateConfig) -> GateResult:
    return gate_stability(inputs.stability, config=config)
