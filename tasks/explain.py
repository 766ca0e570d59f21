"""Explanation for the decision record: permutation importance of the served model on the test
split (scored by the business metric and by ROC-AUC), and the top error slices (segments and
feature bins where the error cost per customer is highest)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
from joblib import parallel_backend
from sklearn.inspection import permutation_importance
from sklearn.metrics import roc_auc_score

from configs.settings import BayesPilotConfig
from tasks.gates import error_costs
from tasks.select_policy import Policy, decide, policy_values
from tasks.split_data import Splits


@dataclass(frozen=True)
class _Business:
    """A scorer: realised profit per customer (USD) of the policy's decisions. Customer values
    come from the untouched test frame, so permuting a feature changes only the model input."""

    values: np.ndarray
    document: dict[str, Any]
    save_rate: float
    contact_cost: float

    def __call__(
        self,
        estimator: Any,
        X: pd.DataFrame,
        y: np.ndarray,  # noqa: N803
    ) -> dict[str, float]:
        """Both metrics from one ``predict_proba`` per permutation."""
        p = estimator.predict_proba(X)[:, 1]
        contact = decide(p, self.values, self.document).contact
        profit = np.where(contact, y * self.save_rate * self.values - self.contact_cost, 0.0)
        return {
            "profit_usd_per_customer": float(profit.mean()),
            "roc_auc": float(roc_auc_score(y, p)),
        }


def explain(
    estimator: Any, splits: Splits, policy: Policy, *, config: BayesPilotConfig
) -> dict[str, Any]:
    """Permutation importance (mean and std over repeats, by metric) and top error slices."""
    cfg = config.explain
    test = splits.test
    if len(test) > cfg.max_rows:
        test = test.sample(cfg.max_rows, random_state=config.split.seed)
    X = test[list(splits.roles.features)]
    y = test[splits.roles.label_column].to_numpy(dtype=np.int64)
    econ = policy.document["economics"]
    values = policy_values(test, policy)
    scoring = _Business(
        values, policy.document, float(econ["save_rate"]), float(econ["contact_cost_usd"])
    )
    # features on scale.evidence_threads threads: every feature's shuffles come from the same
    # seed whatever the thread count, so the importances are the same
    threads = config.scale.evidence_threads
    with parallel_backend("threading", n_jobs=threads):
        result = permutation_importance(
            estimator,
            X,
            y,
            scoring=scoring,
            n_repeats=cfg.repeats,
            random_state=config.split.seed,
            n_jobs=threads,
        )
    importance: dict[str, list[dict[str, Any]]] = {}
    for metric, r in result.items():
        order = np.argsort(-r.importances_mean, kind="mergesort")[: cfg.top_features]
        importance[metric] = [
            {
                "feature": str(X.columns[i]),
                "mean_drop": round(float(r.importances_mean[i]), 6),
                "std": round(float(r.importances_std[i]), 6),
            }
            for i in order
        ]
    p = estimator.predict_proba(X)[:, 1]
    contact = decide(p, values, policy.document).contact
    fn, fp = error_costs(
        y,
        values,
        contact,
        save_rate=float(econ["save_rate"]),
        contact_cost_usd=float(econ["contact_cost_usd"]),
    )
    return {
        "rows": len(test),
        "repeats": cfg.repeats,
        "permutation_importance": importance,
        "error_slices": error_slices(
            test, fn + fp, splits=splits, min_rows=cfg.min_slice_rows, top=cfg.top_slices
        ),
        "overall_error_cost_per_customer_usd": round(float((fn + fp).mean()), 4),
    }


def error_slices(
    frame: pd.DataFrame, cost: np.ndarray, *, splits: Splits, min_rows: int, top: int
) -> list[dict[str, Any]]:
    """Segments and feature bins (numeric quartiles, categories) ranked by error cost per
    customer (USD), each with at least ``min_rows`` rows."""
    cost_s = pd.Series(cost, index=frame.index)
    out: list[dict[str, Any]] = []
    roles = splits.roles
    for col in dict.fromkeys([*roles.segment_columns, *roles.categorical]):
        for value, idx in frame.groupby(col, dropna=False).groups.items():
            if len(idx) >= min_rows:
                out.append(
                    {
                        "slice": f"{col}={value}",
                        "rows": len(idx),
                        "error_cost_per_customer_usd": float(cost_s.loc[idx].mean()),
                    }
                )
    for col in roles.numeric:
        x = frame[col]
        if x.nunique(dropna=True) < 4:
            continue
        bins = pd.qcut(x, 4, duplicates="drop")
        for interval, idx in frame.groupby(bins, observed=True).groups.items():
            if len(idx) >= min_rows:
                out.append(
                    {
                        "slice": f"{col} in {interval}",
                        "rows": len(idx),
                        "error_cost_per_customer_usd": float(cost_s.loc[idx].mean()),
                    }
                )
    out.sort(key=lambda d: -float(d["error_cost_per_customer_usd"]))
    for d in out:
        d["error_cost_per_customer_usd"] = round(float(d["error_cost_per_customer_usd"]), 4)
    return out[:top]
