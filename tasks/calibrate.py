"""Calibration as its own stage: sigmoid and isotonic fitted on the calibration split with
``CalibratedClassifierCV(FrozenEstimator(model))``, the method chosen on the selection split by
log loss. Ranking metrics (ROC-AUC, PR-AUC) are reported apart from probability metrics."""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
import pandas as pd
from sklearn.calibration import CalibratedClassifierCV
from sklearn.frozen import FrozenEstimator

from configs.settings import CalibrationConfig
from tasks.evaluate import ProbabilityMetrics, ece_table, probability_metrics
from tasks.split_data import Splits
from tasks.train_candidates import TrainedModel

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class CalibratedModel:
    """A candidate with its chosen calibration; ``estimator`` is exactly what would be served."""

    name: str
    method: str
    estimator: object
    raw: TrainedModel
    selection_metrics: dict[str, dict[str, float]]  # method -> metrics on the selection split
    reason: str

    def predict(self, X: pd.DataFrame) -> np.ndarray:  # noqa: N803
        """Calibrated churn probability per row."""
        proba: np.ndarray = self.estimator.predict_proba(X)[:, 1]  # type: ignore[attr-defined]
        return proba


def fit_calibrator(estimator: object, X: pd.DataFrame, y: np.ndarray, *, method: str) -> object:  # noqa: N803
    """Wrap a fitted estimator with a calibrator fitted on ``(X, y)`` (or return it for none)."""
    if method == "none":
        return estimator
    cal = CalibratedClassifierCV(FrozenEstimator(estimator), method=method)
    cal.fit(X, y)
    return cal


def calibrate(
    candidate: TrainedModel, splits: Splits, *, config: CalibrationConfig
) -> CalibratedModel:
    """Fit each allowed method on the calibration split, pick the lowest selection log loss."""
    if not candidate.ok:
        raise ValueError(f"cannot calibrate failed candidate {candidate.name}: {candidate.error}")
    methods = list(config.methods)
    skipped = ""
    if "isotonic" in methods and splits.rows["calibration"] < config.min_rows_for_isotonic:
        methods.remove("isotonic")
        skipped = (
            f"; isotonic not considered: {splits.rows['calibration']} calibration rows < "
            f"{config.min_rows_for_isotonic}"
        )
    X_cal, y_cal = splits.X("calibration"), splits.y("calibration")
    X_sel, y_sel = splits.X("selection"), splits.y("selection")
    fitted: dict[str, object] = {}
    metrics: dict[str, dict[str, float]] = {}
    for method in methods:
        est = fit_calibrator(candidate.estimator, X_cal, y_cal, method=method)
        p = est.predict_proba(X_sel)[:, 1]  # type: ignore[attr-defined]
        fitted[method] = est
        metrics[method] = probability_metrics(y_sel, p, n_bins=config.n_bins).as_dict()
    best = min(methods, key=lambda m: metrics[m]["log_loss"])
    losses = ", ".join(f"{m}={metrics[m]['log_loss']:.5f}" for m in methods)
    reason = f"lowest selection log loss: {losses}{skipped}"
    log.info("calibration for %s: %s (%s)", candidate.name, best, reason)
    return CalibratedModel(candidate.name, best, fitted[best], candidate, metrics, reason)


def reliability_table(
    y: np.ndarray, p_raw: np.ndarray, p_cal: np.ndarray, *, n_bins: int
) -> pd.DataFrame:
    """Reliability by quantile bin for raw and calibrated probabilities (counts per bin)."""
    raw = ece_table(y, p_raw, n_bins=n_bins).assign(kind="raw")
    cal = ece_table(y, p_cal, n_bins=n_bins).assign(kind="calibrated")
    return pd.concat([raw, cal], ignore_index=True)


def segment_calibration(
    frame: pd.DataFrame,
    y: np.ndarray,
    p: np.ndarray,
    *,
    segment_columns: tuple[str, ...],
    n_bins: int,
) -> pd.DataFrame:
    """Per-segment rows, churn rate, mean predicted probability and ECE."""
    rows = []
    for col in segment_columns:
        for value, idx in frame.groupby(col, dropna=False).indices.items():
            yy, pp = y[idx], p[idx]
            m: ProbabilityMetrics | None = None
            if len(np.unique(yy)) == 2:
                m = probability_metrics(yy, pp, n_bins=n_bins)
            rows.append(
                {
                    "segment": f"{col}={value}",
                    "rows": len(idx),
                    "observed_rate": round(float(yy.mean()), 4),
                    "mean_predicted": round(float(pp.mean()), 4),
                    "ece": round(m.ece, 4) if m else None,
                }
            )
    return pd.DataFrame(rows)
