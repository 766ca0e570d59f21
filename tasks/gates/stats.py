"""Statistics several gates share: multiple testing, segment indexing, the calibration error a
perfectly calibrated model shows at a given size, and the spread sampling noise produces."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy.stats import chi2, norm

from tasks.evaluate import ece, ece_null_quantile


def holm(pvalues: Mapping[str, float], alpha: float) -> dict[str, bool]:
    """Holm step-down: which hypotheses are rejected at family-wise level ``alpha``."""
    order = sorted(pvalues, key=lambda k: pvalues[k])
    rejected: dict[str, bool] = dict.fromkeys(pvalues, False)
    m = len(order)
    for i, key in enumerate(order):
        if pvalues[key] <= alpha / (m - i):
            rejected[key] = True
        else:
            break
    return rejected


def segment_index(frame: pd.DataFrame, columns: tuple[str, ...]) -> dict[str, np.ndarray]:
    """``"column=value"`` -> row positions, for every value of every segment column."""
    out: dict[str, np.ndarray] = {}
    for col in columns:
        for value, idx in frame.groupby(col, dropna=False, sort=True).indices.items():
            out[f"{col}={value}"] = np.asarray(idx)
    return out


@dataclass(frozen=True)
class CalibrationCheck:
    """``ece`` observed; ``noise_floor`` the median and ``ideal_quantile`` the (1 - alpha)
    quantile of the ECE a perfectly calibrated model shows at this sample size (probability
    units); ``excess`` is ``ece - ideal_quantile``."""

    ece: float
    noise_floor: float
    ideal_quantile: float
    excess: float
    rows: int
    alpha: float


def calibration_check(
    y: np.ndarray, p: np.ndarray, *, n_bins: int, simulations: int, alpha: float, seed: int
) -> CalibrationCheck:
    """ECE against the ECE a perfectly calibrated model would show at this sample size."""
    observed = ece(y, p, n_bins=n_bins)
    q, sims = ece_null_quantile(
        p, n_bins=n_bins, simulations=simulations, quantile=1 - alpha, seed=seed
    )
    return CalibrationCheck(observed, float(np.median(sims)), q, observed - q, len(y), alpha)


def noise_std_quantile(standard_errors: np.ndarray, *, alpha: float) -> float:
    """The (1 - alpha) quantile of the sample std of k estimates whose only spread is sampling
    noise with the given standard errors: ``se * sqrt(chi2_{1-alpha}(k-1) / (k-1))``."""
    k = len(standard_errors)
    if k < 2:
        return math.inf
    se = float(np.sqrt(np.mean(np.square(standard_errors))))
    return se * math.sqrt(float(chi2.ppf(1 - alpha, k - 1)) / (k - 1))


def rows_to_show(gain: float, sd_per_row: float, *, confidence: float, power: float) -> int | None:
    """Rows a paired comparison needs to show ``gain`` (per row, any unit) with a one-sided
    lower bound at ``confidence`` and the given power, when one row's difference has standard
    deviation ``sd_per_row``. ``None`` when the gain is not positive."""
    if gain <= 0 or not math.isfinite(sd_per_row):
        return None
    z = float(norm.ppf(1 - (1 - confidence) / 2) + norm.ppf(power))
    return int(math.ceil((z * sd_per_row / gain) ** 2))


def one_sided_p_above(estimate: float, limit: float, se: float) -> float:
    """p-value of ``estimate > limit`` (normal approximation; small p: significantly above)."""
    if se <= 0 or not math.isfinite(se):
        return 0.0 if estimate > limit else 1.0
    return float(norm.sf((estimate - limit) / se))


def one_sided_p_below(estimate: float, limit: float, se: float) -> float:
    """p-value of ``estimate < limit`` (normal approximation; small p: significantly below)."""
    return one_sided_p_above(-estimate, -limit, se)
