"""Monitoring what is served: drift against the champion's training reference, training/serving
skew, and realised outcomes once labels arrive. Plain functions; the flow wires them.

PSI uses the reference's bins (numeric: train deciles; categorical: train categories plus
"other"); KS compares the current sample with the reference quantile function.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from configs.settings import BootstrapConfig, MonitoringConfig
from tasks.evaluate import PairedBootstrap, interval, weighted_mean
from tasks.load_data import ColumnRoles
from tasks.select_policy import Policy

EPS = 1e-6
OTHER = "__other__"
QUANTILES = np.linspace(0, 1, 101)


# ---------------------------------------------------------------- reference at promotion
def _numeric_reference(x: np.ndarray, bins: int) -> dict[str, Any]:
    x = x[~np.isnan(x)]
    edges = np.unique(np.quantile(x, np.linspace(0, 1, bins + 1)))
    inner = edges[1:-1]
    shares = np.bincount(np.searchsorted(inner, x, side="right"), minlength=len(inner) + 1)
    return {
        "kind": "numeric",
        "inner_edges": inner.tolist(),
        "shares": (shares / max(len(x), 1)).tolist(),
        "quantiles": np.quantile(x, QUANTILES).tolist() if len(x) else [],
    }


def _categorical_reference(x: pd.Series, max_categories: int) -> dict[str, Any]:
    shares = x.astype(str).value_counts(normalize=True)
    top = shares.head(max_categories)
    out = {str(k): float(v) for k, v in top.items()}
    out[OTHER] = float(shares.iloc[len(top) :].sum())  # categories unseen at training land here
    return {"kind": "categorical", "shares": out}


def build_reference(
    train: pd.DataFrame,
    roles: ColumnRoles,
    p_test: np.ndarray,
    contact_test: np.ndarray,
    *,
    bins: int = 10,
    max_categories: int = 50,
) -> dict[str, Any]:
    """Feature distributions on train and score/contact distributions on test, for drift."""
    features = {}
    for col in roles.numeric:
        features[col] = _numeric_reference(train[col].to_numpy(dtype=float), bins)
    for col in roles.categorical:
        features[col] = _categorical_reference(train[col].fillna("(missing)"), max_categories)
    return {
        "features": features,
        "score": _numeric_reference(np.asarray(p_test, float), bins),
        "contact_rate": float(np.mean(contact_test)),
        "rows": len(train),
    }


# ---------------------------------------------------------------- drift
def psi(expected: np.ndarray, actual: np.ndarray) -> float:
    """Population stability index between two share vectors over the same bins."""
    e = np.clip(np.asarray(expected, float), EPS, None)
    a = np.clip(np.asarray(actual, float), EPS, None)
    return float(np.sum((a - e) * np.log(a / e)))


def _current_numeric_shares(ref: dict[str, Any], x: np.ndarray) -> np.ndarray:
    x = x[~np.isnan(x)]
    inner = np.asarray(ref["inner_edges"], float)
    counts = np.bincount(np.searchsorted(inner, x, side="right"), minlength=len(inner) + 1)
    return counts / max(len(x), 1)


def ks_against_reference(ref: dict[str, Any], x: np.ndarray) -> float:
    """KS statistic of the sample ``x`` against the reference quantile function."""
    x = np.sort(x[~np.isnan(x)])
    q = np.asarray(ref.get("quantiles") or [], float)
    if len(x) == 0 or len(q) == 0:
        return float("nan")
    q, idx = np.unique(q, return_index=True)
    ref_cdf = np.interp(x, q, QUANTILES[idx], left=0.0, right=1.0)
    ecdf_hi = np.arange(1, len(x) + 1) / len(x)
    ecdf_lo = np.arange(0, len(x)) / len(x)
    return float(max(np.max(np.abs(ecdf_hi - ref_cdf)), np.max(np.abs(ecdf_lo - ref_cdf))))


def feature_drift(
    reference: dict[str, Any], current: pd.DataFrame, *, config: MonitoringConfig
) -> list[dict[str, Any]]:
    """PSI (and KS for numeric) per reference feature present in ``current``."""
    rows = []
    for col, ref in reference["features"].items():
        if col not in current.columns:
            rows.append(
                {
                    "feature": col,
                    "kind": ref["kind"],
                    "psi": None,
                    "ks": None,
                    "alert": True,
                    "reason": "feature absent from the logged inputs",
                }
            )
            continue
        if ref["kind"] == "numeric":
            x = pd.to_numeric(current[col], errors="coerce").to_numpy(dtype=float)
            value = psi(np.asarray(ref["shares"]), _current_numeric_shares(ref, x))
            ks_value = ks_against_reference(ref, x)
            ks = None if np.isnan(ks_value) else ks_value
        else:
            ks = None
            shares = current[col].fillna("(missing)").astype(str).value_counts(normalize=True)
            keys = [k for k in ref["shares"] if k != OTHER]
            cur = [float(shares.get(k, 0.0)) for k in keys]
            cur.append(float(shares[~shares.index.isin(keys)].sum()))
            expected = [ref["shares"][k] for k in keys] + [ref["shares"].get(OTHER, 0.0)]
            value = psi(np.asarray(expected), np.asarray(cur))
        alert = value > config.psi_alert or (ks is not None and ks > config.ks_alert)
        rows.append(
            {
                "feature": col,
                "kind": ref["kind"],
                "psi": round(value, 5),
                "ks": None if ks is None else round(ks, 5),
                "alert": bool(alert),
                "reason": f"PSI {value:.3f} > {config.psi_alert}"
                if value > config.psi_alert
                else (f"KS {ks:.3f} > {config.ks_alert}" if alert else ""),
            }
        )
    return sorted(rows, key=lambda r: -(r["psi"] if r["psi"] is not None else np.inf))


def prediction_drift(
    reference: dict[str, Any], p: np.ndarray, contact: np.ndarray, *, config: MonitoringConfig
) -> dict[str, Any]:
    ref = reference["score"]
    value = psi(np.asarray(ref["shares"]), _current_numeric_shares(ref, np.asarray(p, float)))
    rate = float(np.mean(contact)) if len(contact) else float("nan")
    delta = rate - float(reference["contact_rate"])
    alerts = []
    if value > config.psi_alert:
        alerts.append(f"score PSI {value:.3f} > {config.psi_alert}")
    if abs(delta) > config.contact_rate_alert:
        alerts.append(f"contact rate moved {delta:+.3f} (> {config.contact_rate_alert})")
    return {
        "score_psi": round(value, 5),
        "contact_rate": rate,
        "reference_contact_rate": reference["contact_rate"],
        "contact_rate_delta": delta,
        "alerts": alerts,
    }


def skew(
    logged: pd.DataFrame,
    source: pd.DataFrame,
    *,
    id_column: str,
    features: list[str],
    tolerance: float = 1e-6,
) -> dict[str, Any]:
    """The same customer's features as logged at serving vs as in the source table: share of
    matched customers whose value differs, per feature."""
    left = logged.drop_duplicates(id_column, keep="last").set_index(id_column)
    right = source.drop_duplicates(id_column, keep="last").set_index(id_column)
    common = left.index.intersection(right.index)
    rows = []
    for col in features:
        if col not in left.columns or col not in right.columns or not len(common):
            continue
        a, b = left.loc[common, col], right.loc[common, col]
        if pd.api.types.is_numeric_dtype(b):
            an = pd.to_numeric(a, errors="coerce").to_numpy(float)
            bn = b.to_numpy(float)
            both_nan = np.isnan(an) & np.isnan(bn)
            diff = ~both_nan & ~(np.abs(an - bn) <= tolerance)
        else:
            diff = (
                a.fillna("(missing)").astype(str) != b.fillna("(missing)").astype(str)
            ).to_numpy()
        rows.append({"feature": col, "mismatch_share": round(float(np.mean(diff)), 5)})
    return {
        "matched_customers": int(len(common)),
        "features": sorted(rows, key=lambda r: -r["mismatch_share"]),
    }


# ---------------------------------------------------------------- outcomes
def read_prediction_log(
    path: Path, *, since: str | None = None, until: str | None = None, role: str = "champion"
) -> pd.DataFrame:
    """Logged predictions (current file and rotated ones) within [since, until) (ISO time)."""
    files = sorted(path.parent.glob(path.name + ".*"), reverse=True) + [path]
    lines: list[dict[str, Any]] = []
    for f in files:
        if f.suffix == ".lock" or not f.is_file():
            continue
        for line in f.read_text().splitlines():
            if line.strip():
                lines.append(json.loads(line))
    if not lines:
        return pd.DataFrame()
    df = pd.DataFrame(lines)
    roles = (
        df["role"].fillna("champion")
        if "role" in df.columns
        else pd.Series("champion", index=df.index)
    )
    df = df[roles == role]
    if df.empty:
        return pd.DataFrame()
    if since:
        df = df[df["time"] >= since]
    if until:
        df = df[df["time"] < until]
    inputs = pd.json_normalize(df["inputs"].tolist()) if len(df) else pd.DataFrame()
    inputs.index = df.index
    return pd.concat([df.drop(columns=["inputs"]), inputs], axis=1).reset_index(drop=True)


@dataclass(frozen=True)
class OutcomeReport:
    rows: int
    precision: float | None
    recall: float | None
    realised_profit_per_customer_usd: float | None
    profit_interval: list[float] | None
    expected_profit_per_customer_usd: float | None
    calibration: list[dict[str, Any]]
    segments: list[dict[str, Any]]
    alerts: list[str] = field(default_factory=list)


def outcome_metrics(
    joined: pd.DataFrame,
    policy: Policy,
    *,
    value_column: str | None,
    segment_columns: tuple[str, ...],
    expected_profit: float | None,
    config: MonitoringConfig,
    bootstrap: BootstrapConfig,
) -> OutcomeReport:
    """Realised precision, recall, calibration by bin and profit (USD per customer) of
    labelled, logged predictions; overall and per segment, with a bootstrap interval."""
    if joined.empty:
        return OutcomeReport(
            0,
            None,
            None,
            None,
            None,
            expected_profit,
            [],
            [],
            ["no outcomes joined to logged predictions yet"],
        )
    y = joined["churned"].to_numpy(dtype=np.int64)
    p = joined["probability"].to_numpy(dtype=float)
    contact = (joined["action"] == "contact").to_numpy()
    raw = joined[value_column].to_numpy(float) if value_column else None
    values = policy.values(raw, len(joined))
    econ = policy.document["economics"]
    profit = np.where(
        contact, y * float(econ["save_rate"]) * values - float(econ["contact_cost_usd"]), 0.0
    )
    boot = PairedBootstrap(
        len(y), config=bootstrap, resamples=min(bootstrap.resamples, 500), seed_offset=31
    )
    iv = interval(
        boot.run(lambda c: weighted_mean(c, profit[boot.rows])),
        float(profit.mean()),
        bootstrap.confidence,
    )
    precision = float(y[contact].mean()) if contact.any() else None
    recall = float(contact[y == 1].mean()) if (y == 1).any() else None
    bins = np.clip((p * config.calibration_bins).astype(int), 0, config.calibration_bins - 1)
    calib = [
        {
            "bin": int(b),
            "rows": int((bins == b).sum()),
            "predicted": round(float(p[bins == b].mean()), 4),
            "observed": round(float(y[bins == b].mean()), 4),
        }
        for b in np.unique(bins)
    ]
    segs = []
    for col in segment_columns:
        if col not in joined.columns:
            continue
        for value, idx in joined.groupby(col).indices.items():
            if len(idx) < config.min_segment_rows:
                continue
            segs.append(
                {
                    "segment": f"{col}={value}",
                    "rows": int(len(idx)),
                    "realised_profit_per_customer_usd": round(float(profit[idx].mean()), 4),
                    "observed_churn": round(float(y[idx].mean()), 4),
                    "predicted_churn": round(float(p[idx].mean()), 4),
                }
            )
    alerts = []
    if expected_profit is not None and expected_profit > 0:
        decay = 1 - iv.high / expected_profit
        if decay > config.profit_decay_alert:
            alerts.append(
                f"realised profit {iv.point:.2f} USD/customer (upper bound "
                f"{iv.high:.2f}) is {decay:.0%} below the promoted "
                f"{expected_profit:.2f}"
            )
    gap = abs(float(p.mean()) - float(y.mean()))
    if gap > config.calibration_gap_alert:
        alerts.append(f"mean predicted churn {p.mean():.3f} vs observed {y.mean():.3f}")
    return OutcomeReport(
        len(y), precision, recall, iv.point, iv.as_list(), expected_profit, calib, segs, alerts
    )


def clean_outcomes(
    frame: pd.DataFrame,
    *,
    id_column: str,
    label_column: str,
    positive_label: str,
    negative_label: str | None,
) -> pd.DataFrame:
    """Outcome labels that arrived later: id, churned (0/1), observed_at. Raises ValueError
    naming the column and what was expected."""
    problems = []
    for col in (id_column, label_column, "observed_at"):
        if col not in frame.columns:
            problems.append(f"{col}: column missing (expected id, label and observed_at)")
    if problems:
        raise ValueError("; ".join(problems))
    labels = frame[label_column].astype(str)
    allowed = {positive_label} | ({negative_label} if negative_label else set())
    if negative_label is None:
        others = [v for v in labels.unique() if v != positive_label]
        allowed |= set(others[:1])
    bad = ~labels.isin(allowed)
    if bad.any():
        problems.append(
            f"{label_column}: values outside {sorted(allowed)}: {sorted(labels[bad].unique())[:5]}"
        )
    if frame[id_column].isna().any():
        problems.append(f"{id_column}: {int(frame[id_column].isna().sum())} missing ids")
    when = pd.to_datetime(frame["observed_at"], errors="coerce", utc=True)
    if when.isna().any():
        problems.append(f"observed_at: {int(when.isna().sum())} values are not timestamps")
    if problems:
        raise ValueError("; ".join(problems))
    return pd.DataFrame(
        {
            id_column: frame[id_column].astype(str),
            "churned": (labels == positive_label).astype("int8"),
            "observed_at": when,
        }
    )


def challenger_comparison(
    shadow: pd.DataFrame,
    outcomes: pd.DataFrame,
    policy_champion: Policy,
    policy_challenger: Policy | None,
    *,
    id_column: str,
    bootstrap: BootstrapConfig,
) -> dict[str, Any]:
    """Shadow challenger vs champion on the same requests: action flip rate, and once outcomes
    arrive the realised profit difference (challenger - champion, USD/customer) with interval."""
    if shadow.empty:
        return {"shadow_predictions": 0}
    flips = (shadow["action"] != shadow["champion_action"]).to_numpy()
    out: dict[str, Any] = {
        "shadow_predictions": int(len(shadow)),
        "challenger_versions": sorted(shadow["model_version"].astype(str).unique().tolist()),
        "action_flip_rate": round(float(flips.mean()), 5),
    }
    if outcomes.empty or policy_challenger is None:
        return out
    last = shadow.assign(**{id_column: shadow[id_column].astype(str)}).drop_duplicates(
        id_column, keep="last"
    )
    joined = last.merge(outcomes.drop_duplicates(id_column, keep="last"), on=id_column)
    if joined.empty:
        return out
    y = joined["churned"].to_numpy(dtype=np.int64)
    col = policy_challenger.value_column
    values = policy_challenger.values(joined[col].to_numpy(float) if col else None, len(joined))
    econ = policy_challenger.document["economics"]
    gain = y * float(econ["save_rate"]) * values - float(econ["contact_cost_usd"])
    chall = np.where(joined["action"] == "contact", gain, 0.0)
    champ = np.where(joined["champion_action"] == "contact", gain, 0.0)
    boot = PairedBootstrap(
        len(y), config=bootstrap, resamples=min(bootstrap.resamples, 500), seed_offset=41
    )
    diff = chall - champ
    iv = interval(
        boot.run(lambda c: weighted_mean(c, diff[boot.rows])),
        float(diff.mean()),
        bootstrap.confidence,
    )
    out.update(
        {
            "labelled": int(len(y)),
            "profit_difference_usd_per_customer": round(iv.point, 4),
            "profit_difference_interval": iv.as_list(),
        }
    )
    return out
