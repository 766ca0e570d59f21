"""Monitoring what is served: drift against the champion's training reference, training/serving
skew, and realised outcomes once labels arrive. Plain functions; the flow wires them.

Drift is a family of two-sample tests against a reference stored in the promotion record, with
one family-wise false-alarm rate (``monitoring.drift_alpha``, Holm over every test):

* continuous numeric features and the score: ``scipy.stats.ks_2samp`` against a seeded sample
  of the training values (test scores for the score);
* categorical and low-cardinality numeric features (at most ``discrete_max_values`` distinct
  values at training): a chi-square test of the current counts against the training counts
  (``scipy.stats.chi2_contingency``), rare values pooled so each expected count is at least 5;
* the contact rate: a chi-square test of the current contacts against those on test.

A test alerts when it is significant after Holm *and* its effect is at least the configured
size (KS statistic, PSI, contact-rate change): with the sample size the p-value carries, the
effect floor keeps a large day from flagging differences nobody would act on. The rule itself
is returned with the result so the monitoring record states it.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
from scipy import stats

from configs.settings import BootstrapConfig, MonitoringConfig
from tasks.evaluate import PairedBootstrap, interval, weighted_mean
from tasks.gates.stats import holm
from tasks.load_data import ColumnRoles
from tasks.records import read_verified, resolve_artifact
from tasks.select_policy import Policy

if TYPE_CHECKING:
    from tasks.impact import ImpactEstimate

EPS = 1e-6
OTHER = "__other__"
MISSING = "(missing)"
QUANTILES = np.linspace(0, 1, 101)
PROFIT_HOLDOUT = "randomized_holdout"  # OutcomeReport.profit_basis
PROFIT_ASSUMED = "assumed_save_rate"
MIN_EXPECTED = 5.0  # chi-square: pool values until every expected count reaches this


# ---------------------------------------------------------------- reference at promotion
def _value_key(v: float) -> str:
    return format(float(v), ".12g")


def _numeric_reference(
    x: np.ndarray, bins: int, *, sample_rows: int, discrete_max_values: int, seed: int
) -> dict[str, Any]:
    """Continuous: PSI bins, quantiles and a seeded sample (for KS). Few distinct values:
    the counts of each value (for chi-square)."""
    missing = int(np.isnan(x).sum())
    x = x[~np.isnan(x)]
    distinct = np.unique(x)
    if 0 < len(distinct) <= discrete_max_values:
        values, counts = np.unique(x, return_counts=True)
        out = {_value_key(v): int(c) for v, c in zip(values, counts, strict=True)}
        if missing:
            out[MISSING] = missing
        return {"kind": "discrete", "counts": out, "shares": _shares(out)}
    edges = np.unique(np.quantile(x, np.linspace(0, 1, bins + 1))) if len(x) else np.array([])
    inner = edges[1:-1]
    shares = np.bincount(np.searchsorted(inner, x, side="right"), minlength=len(inner) + 1)
    rng = np.random.default_rng(seed)
    sample = rng.choice(x, size=min(sample_rows, len(x)), replace=False) if len(x) else x
    return {
        "kind": "numeric",
        "inner_edges": inner.tolist(),
        "shares": (shares / max(len(x), 1)).tolist(),
        "quantiles": np.quantile(x, QUANTILES).tolist() if len(x) else [],
        "sample": [float(f"{v:.6g}") for v in np.sort(sample)],
        "rows": int(len(x)),
    }


def _shares(counts: dict[str, int]) -> dict[str, float]:
    total = max(sum(counts.values()), 1)
    return {k: c / total for k, c in counts.items()}


def _categorical_reference(x: pd.Series, max_categories: int) -> dict[str, Any]:
    counts = x.astype(str).value_counts()
    top = counts.head(max_categories)
    out = {str(k): int(v) for k, v in top.items()}
    out[OTHER] = int(counts.iloc[len(top) :].sum())  # categories unseen at training land here
    return {"kind": "categorical", "counts": out, "shares": _shares(out)}


def build_reference(
    train: pd.DataFrame,
    roles: ColumnRoles,
    p_test: np.ndarray,
    contact_test: np.ndarray,
    *,
    bins: int = 10,
    max_categories: int = 50,
    sample_rows: int = 2000,
    discrete_max_values: int = 20,
    seed: int = 7,
) -> dict[str, Any]:
    """Feature distributions on train and score/contact distributions on test, for drift.
    ``sample_rows``: values kept per continuous feature for the KS test (seeded)."""
    kw = {"sample_rows": sample_rows, "discrete_max_values": discrete_max_values, "seed": seed}
    features = {}
    for col in roles.numeric:
        features[col] = _numeric_reference(train[col].to_numpy(dtype=float), bins, **kw)
    for col in roles.categorical:
        features[col] = _categorical_reference(train[col].fillna(MISSING), max_categories)
    contact = np.asarray(contact_test, bool)
    return {
        "features": features,
        "score": _numeric_reference(
            np.asarray(p_test, float), bins, **{**kw, "discrete_max_values": 0}
        ),
        "contact_rate": float(np.mean(contact)) if len(contact) else float("nan"),
        "contacts": int(contact.sum()),
        "scored": int(len(contact)),
        "rows": len(train),
    }


REFERENCE_FILE = "reference.json"  # beside the model artifact; the record holds its SHA-256


def reference_document(reference: dict[str, Any]) -> bytes:
    """The reference as the bytes written beside the model (compact JSON, sorted keys)."""
    return json.dumps(reference, sort_keys=True, separators=(",", ":"), allow_nan=False).encode()


def reference_block(path: str, document: bytes, reference: dict[str, Any]) -> dict[str, Any]:
    """What the promotion record says about the reference file (``path`` relative to the
    workspace): the record stays small, and its signature covers the file through the hash."""
    return {
        "path": path,
        "sha256": hashlib.sha256(document).hexdigest(),
        "features": sorted(reference["features"]),
        "rows": reference["rows"],
    }


def load_reference(workspace_root: Path, block: dict[str, Any]) -> dict[str, Any]:
    """The drift reference a record names: read once, checked against its SHA-256, parsed.
    Records written before references were files hold the reference inline."""
    if "path" not in block:
        return block
    data = read_verified(
        resolve_artifact(workspace_root, str(block["path"])),
        str(block["sha256"]),
        "drift reference",
    )
    reference: dict[str, Any] = json.loads(data)
    return reference


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


def _reference_sample(ref: dict[str, Any]) -> np.ndarray:
    """The stored sample; records written before samples were stored give their 101
    quantiles instead (a coarser reference: the test is then conservative)."""
    return np.asarray(ref.get("sample") or ref.get("quantiles") or [], float)


def ks_two_sample(ref: dict[str, Any], x: np.ndarray) -> tuple[float, float]:
    """(KS statistic, p-value) of ``x`` against the reference sample (scipy ``ks_2samp``);
    (nan, nan) when either side is empty."""
    x = x[~np.isnan(x)]
    sample = _reference_sample(ref)
    if len(x) == 0 or len(sample) == 0:
        return float("nan"), float("nan")
    res = stats.ks_2samp(sample, x)
    return float(res.statistic), float(res.pvalue)


def _reference_counts(ref: dict[str, Any], reference_rows: int) -> dict[str, float]:
    if "counts" in ref:
        return {k: float(v) for k, v in ref["counts"].items()}
    return {k: float(v) * reference_rows for k, v in ref["shares"].items()}  # older records


def _current_counts(ref: dict[str, Any], values: pd.Series) -> dict[str, float]:
    """Current counts over the reference's keys; values unseen at training count as OTHER
    (categorical) or as a value of their own (a numeric value never seen at training)."""
    if ref["kind"] == "discrete":
        num = pd.to_numeric(values, errors="coerce").to_numpy(dtype=float)
        keys = [MISSING if np.isnan(v) else _value_key(v) for v in num]
    else:
        keys = values.fillna(MISSING).astype(str).tolist()
    counted = pd.Series(keys, dtype=object).value_counts()
    out: dict[str, float] = {}
    for key, n in counted.items():
        k = str(key)
        if ref["kind"] == "categorical" and k not in ref["counts" if "counts" in ref else "shares"]:
            k = OTHER
        out[k] = out.get(k, 0.0) + float(n)
    return out


def chi_square_counts(
    reference: dict[str, float], current: dict[str, float]
) -> tuple[float, float, float]:
    """(PSI, chi-square p-value, dof) of current against reference counts over the union of
    their keys; keys are pooled (rarest first) until every expected count is >= 5."""
    keys = sorted(set(reference) | set(current), key=lambda k: reference.get(k, 0.0))
    ref = np.array([reference.get(k, 0.0) for k in keys])
    cur = np.array([current.get(k, 0.0) for k in keys])
    n_ref, n_cur = ref.sum(), cur.sum()
    if n_ref <= 0 or n_cur <= 0:
        return float("nan"), float("nan"), 0.0
    value = psi(ref / n_ref, cur / n_cur)
    # pool the rarest keys into one cell until every expected count (either row) is >= 5
    table = np.vstack([ref, cur])
    while table.shape[1] > 1:
        expected = np.outer(table.sum(axis=1), table.sum(axis=0)) / table.sum()
        if expected.min() >= MIN_EXPECTED:
            break
        table = np.column_stack([table[:, 0] + table[:, 1], table[:, 2:]])
    if table.shape[1] < 2:
        return value, 1.0, 0.0
    res = stats.chi2_contingency(table, correction=False)
    return value, float(res.pvalue), float(res.dof)


@dataclass(frozen=True)
class DriftTest:
    """One test of the drift family. ``effect`` is the KS statistic (continuous), PSI
    (discrete, categorical) or the absolute contact-rate change (probability)."""

    name: str
    kind: str
    test: str
    effect: float | None
    p_value: float | None


def drift_rule(config: MonitoringConfig) -> str:
    """The alert rule in words (stored in the monitoring record)."""
    return (
        f"a feature, the score or the contact rate alerts when its two-sample test is "
        f"significant at family-wise alpha {config.drift_alpha} (Holm over all "
        f"tests of the day) and its effect is at least the floor: KS >= {config.ks_alert} "
        f"(continuous: scipy ks_2samp against {config.reference_sample_rows} training "
        f"values), PSI >= {config.psi_alert} (categorical and numeric with <= "
        f"{config.discrete_max_values} values: chi-square on counts), |contact-rate change| "
        f">= {config.contact_rate_alert} (chi-square on contacts)"
    )


def _feature_test(col: str, ref: dict[str, Any], current: pd.DataFrame, rows: int) -> DriftTest:
    if col not in current.columns:
        return DriftTest(col, ref["kind"], "absent", None, None)
    if ref["kind"] == "numeric":
        x = pd.to_numeric(current[col], errors="coerce").to_numpy(dtype=float)
        ks, p = ks_two_sample(ref, x)
        return DriftTest(col, "numeric", "ks_2samp", _finite(ks), _finite(p))
    value, p, _ = chi_square_counts(
        _reference_counts(ref, rows), _current_counts(ref, current[col])
    )
    return DriftTest(col, ref["kind"], "chi2", _finite(value), _finite(p))


def _finite(v: float) -> float | None:
    return None if v is None or not np.isfinite(v) else float(v)


def drift_tests(
    reference: dict[str, Any],
    current: pd.DataFrame,
    p: np.ndarray,
    contact: np.ndarray,
    *,
    config: MonitoringConfig,
) -> dict[str, Any]:
    """Every feature, the score and the contact rate tested against the reference, with one
    family-wise false-alarm rate. Returns ``features`` (rows: feature, kind, test, ks, psi,
    p_value, alert, reason), ``prediction`` (score KS, contact rates, alerts), ``alerts``
    and ``rule``."""
    rows = int(reference.get("rows", 0))
    tests = [_feature_test(c, r, current, rows) for c, r in reference["features"].items()]
    score_ref = reference["score"]
    p = np.asarray(p, float)
    ks, ks_p = ks_two_sample(score_ref, p)
    tests.append(DriftTest("score", "numeric", "ks_2samp", _finite(ks), _finite(ks_p)))
    contact = np.asarray(contact, bool)
    rate = float(contact.mean()) if len(contact) else float("nan")
    ref_rate = float(reference["contact_rate"])
    scored = int(reference.get("scored", 0))
    if scored and len(contact):
        ref_contacts = int(reference.get("contacts", round(ref_rate * scored)))
        now = int(contact.sum())
        table = np.array([[ref_contacts, scored - ref_contacts], [now, len(contact) - now]])
        rate_p = (
            float(stats.chi2_contingency(table, correction=False).pvalue)
            if (table.sum(axis=0) > 0).all()
            else 1.0
        )
    else:
        rate_p = float("nan")  # older records: no test count stored
    change = _finite(abs(rate - ref_rate))
    tests.append(DriftTest("contact_rate", "rate", "chi2", change, _finite(rate_p)))
    pvals = {t.name: t.p_value for t in tests if t.p_value is not None}
    rejected = holm(pvals, config.drift_alpha) if pvals else {}

    def floor(t: DriftTest) -> float:
        if t.name == "contact_rate":
            return config.contact_rate_alert
        return config.ks_alert if t.test == "ks_2samp" else config.psi_alert

    out_rows: list[dict[str, Any]] = []
    alerts: list[str] = []
    for t in tests:
        limit = floor(t)
        if t.test == "absent":
            alert, reason = True, "feature absent from the logged inputs"
        else:
            big = t.effect is not None and t.effect >= limit
            alert = bool(rejected.get(t.name, False) and big)
            what = "KS" if t.test == "ks_2samp" else ("change" if t.kind == "rate" else "PSI")
            reason = (
                f"{what} {t.effect:.3f} >= {limit}, p {t.p_value:.2g} significant at "
                f"family-wise {config.drift_alpha} ({t.test})"
                if alert and t.effect is not None and t.p_value is not None
                else ""
            )
        row = {
            "feature": t.name,
            "kind": t.kind,
            "test": t.test,
            "ks": round(t.effect, 5) if t.test == "ks_2samp" and t.effect is not None else None,
            "psi": round(t.effect, 5) if t.test == "chi2" and t.effect is not None else None,
            "p_value": None if t.p_value is None else float(f"{t.p_value:.4g}"),
            "alert": alert,
            "reason": reason,
        }
        if t.name == "score":
            if alert:
                alerts.append(f"score drift: {reason}")
            score_row = row
        elif t.name == "contact_rate":
            if alert:
                alerts.append(f"contact rate moved {rate - ref_rate:+.3f}: {reason}")
            rate_row = row
        else:
            if alert:
                alerts.append(f"drift in {t.name}: {reason}")
            out_rows.append(row)
    out_rows.sort(key=lambda r: r["p_value"] if r["p_value"] is not None else -1.0)
    prediction = {
        "score_ks": score_row["ks"],
        "score_p_value": score_row["p_value"],
        "score_psi": round(
            psi(np.asarray(score_ref["shares"]), _current_numeric_shares(score_ref, p)), 5
        )
        if len(p)
        else None,
        "contact_rate": rate,
        "reference_contact_rate": ref_rate,
        "contact_rate_delta": rate - ref_rate,
        "contact_rate_p_value": rate_row["p_value"],
        "alerts": [a for a in alerts if a.startswith(("score drift", "contact rate"))],
    }
    return {
        "features": out_rows,
        "prediction": prediction,
        "alerts": alerts,
        "rule": drift_rule(config),
        "tests": len(tests),
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
    """Realised outcomes of logged decisions (see ``outcome_metrics``). Money in USD per
    customer, shares 0-1. ``profit_basis`` says where ``realised_profit_per_customer_usd``
    comes from: ``randomized_holdout`` (the programme's incremental profit measured against
    the holdout, ``tasks/impact.py``) or ``assumed_save_rate`` (the policy's profit with the
    configured save rate; it cannot separate the contact's effect from the outcomes).
    ``calibration_*`` and the mean churn figures are judged on untreated rows only (no contact
    delivered); ``treated_rows`` were left out of them."""

    rows: int
    precision: float | None
    recall: float | None
    realised_profit_per_customer_usd: float | None
    profit_interval: list[float] | None
    expected_profit_per_customer_usd: float | None
    calibration: list[dict[str, Any]]
    segments: list[dict[str, Any]]
    alerts: list[str] = field(default_factory=list)
    profit_basis: str = PROFIT_ASSUMED
    profit_note: str = ""
    assumed_save_rate: float | None = None
    profit_at_assumed_save_rate_usd: float | None = None
    treated_rows: int = 0
    contacted_source: str = "none"
    calibration_rows: int = 0
    mean_predicted_churn: float | None = None
    mean_observed_churn: float | None = None
    calibration_note: str = ""


def _bool_column(frame: pd.DataFrame, column: str) -> tuple[np.ndarray, np.ndarray]:
    """``frame[column]`` as (values, known): missing cells are unknown (``known`` False)."""
    if column not in frame.columns:
        n = len(frame)
        return np.zeros(n, bool), np.zeros(n, bool)
    raw = frame[column]
    known = raw.notna().to_numpy()
    return raw.where(raw.notna(), False).astype(bool).to_numpy(), known


def treatment_of_rows(joined: pd.DataFrame) -> tuple[np.ndarray, np.ndarray, str]:
    """Per joined row: the policy's decision (``would_contact`` where logged, else the
    action; the randomized holdout turns some decisions into no_contact), whether a contact
    was delivered (the outcomes' ``contacted`` where reported, else the served action is
    taken as carried out) and where that came from (``reported`` / ``action`` / ``mixed`` /
    ``none`` for no rows)."""
    acted = (joined["action"] == "contact").to_numpy()
    would, would_known = _bool_column(joined, "would_contact")
    decision = np.where(would_known, would, acted)
    contacted, reported = _bool_column(joined, "contacted")
    treated = np.where(reported, contacted, acted)
    if not len(joined):
        source = "none"
    elif reported.all():
        source = "reported"
    elif not reported.any():
        source = "action"
    else:
        source = "mixed"
    return decision, treated, source


def _detreated_churn(y: np.ndarray, treated: np.ndarray, save_rate: float) -> np.ndarray | None:
    """Each row's churn had it not been contacted, assuming the configured save rate (0-1):
    untreated rows keep their label, a delivered contact's label is divided by
    ``1 - save_rate`` (in expectation ``p0 (1 - s) / (1 - s) = p0``). ``None`` when the save
    rate is 1 and a contact was delivered (nothing left to infer from)."""
    if not treated.any():
        return y.astype(float)
    if save_rate >= 1:
        return None
    return np.where(treated, y / (1 - save_rate), y.astype(float))


def outcome_metrics(
    joined: pd.DataFrame,
    policy: Policy,
    *,
    value_column: str | None,
    segment_columns: tuple[str, ...],
    expected_profit: float | None,
    config: MonitoringConfig,
    bootstrap: BootstrapConfig,
    impact: ImpactEstimate | None = None,
) -> OutcomeReport:
    """Realised precision, recall, calibration by bin and profit (USD per customer) of
    labelled, logged predictions; overall and per segment, with an interval.

    A delivered contact changes the label (a contact that works keeps some churners), so:

    * calibration (bins, mean predicted vs observed churn, its alert) is judged on rows
      where no contact happened: holdout customers, no_contact decisions and undelivered
      contacts (the outcomes' ``contacted``; unreported, a served contact counts as made).
    * precision (no-contact churn rate of the customers the policy would contact) and recall
      (share of no-contact churners it would contact) use the untreated would-contact rows
      when there are any (the holdout), else the labels with the contact's effect removed at
      the configured save rate.
    * realised profit: with ``impact`` (the randomized holdout's measured effect among
      would-contact customers, ``tasks/impact.py``), the programme's incremental profit per
      assigned customer times the would-contact share, so per customer like the promoted
      expectation, with its interval. Without it, the policy's profit at the configured
      save rate (delivered contacts' churn divided by ``1 - save_rate``), bootstrap
      interval, and ``profit_note`` says the contact's effect cannot be separated.

    With no contact delivered every figure is what it was before treatment was known.
    """
    econ = policy.document["economics"]
    save_rate = float(econ["save_rate"])
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
            assumed_save_rate=save_rate,
        )
    y = joined["churned"].to_numpy(dtype=np.int64)
    p = joined["probability"].to_numpy(dtype=float)
    decision, treated, source = treatment_of_rows(joined)
    untreated = ~treated
    raw = joined[value_column].to_numpy(float) if value_column else None
    values = policy.values(raw, len(joined))
    cost = float(econ["contact_cost_usd"])
    y0 = _detreated_churn(y, treated, save_rate)
    n_treated = int(treated.sum())
    effect_note = (
        f"{n_treated} of {len(y)} customers were contacted"
        + (" (the served action, delivery not reported)" if source != "reported" else "")
        + f"; their outcomes carry the contact's effect, removed at the assumed save rate "
        f"{save_rate:g}"
    )

    # ---- the policy's profit at the configured save rate (per row, USD)
    profit = None if y0 is None else np.where(decision, y0 * save_rate * values - cost, 0.0)
    assumed_iv = None
    if profit is not None:
        boot = PairedBootstrap(
            len(y), config=bootstrap, resamples=min(bootstrap.resamples, 500), seed_offset=31
        )
        assumed_iv = interval(
            boot.run(lambda c: weighted_mean(c, profit[boot.rows])),
            float(profit.mean()),
            bootstrap.confidence,
        )
    basis, point, bounds = PROFIT_ASSUMED, None, None
    if assumed_iv is not None:
        point, bounds = assumed_iv.point, assumed_iv.as_list()
    inc = None if impact is None else impact.overall.incremental_profit_per_customer_usd
    if inc is not None and inc.low is not None and inc.high is not None:
        share = float(decision.mean())  # profit per assigned would-contact customer -> per customer
        basis, point = PROFIT_HOLDOUT, inc.point * share
        bounds = [inc.low * share, inc.high * share]
        o = impact.overall  # type: ignore[union-attr]
        profit_note = (
            f"the programme's incremental profit measured against the randomized holdout "
            f"({o.holdout_customers} holdout vs {o.assigned_customers} assigned would-contact "
            f"customers; {inc.point:.2f} USD per assigned customer x would-contact share "
            f"{share:.3f}); intention to treat, undelivered contacts included"
        )
    elif not treated.any():
        profit_note = (
            f"no contact delivered: outcomes are untreated; the profit contacting would make "
            f"assumes the configured save rate {save_rate:g}"
        )
    elif profit is None:
        profit_note = (
            f"not measurable: no randomized holdout and the configured save rate {save_rate:g} "
            "leaves no churn to infer from contacted outcomes"
        )
    else:
        profit_note = (
            f"no randomized holdout: realised profit assumes the configured save rate "
            f"{save_rate:g} and cannot separate the contact's effect from the outcomes "
            f"({effect_note}); serve with serving.experiment_id and a holdout_share to measure it"
        )

    # ---- precision / recall of the policy's decision, on no-contact churn
    precision = recall = None
    dec_untreated = decision & untreated
    if dec_untreated.any():
        precision = float(y[dec_untreated].mean())
    elif decision.any() and y0 is not None:
        precision = min(float(y0[decision].mean()), 1.0)
    rest = ~decision & untreated
    others: float | None = None  # no-contact churners among customers the policy leaves alone
    if not (~decision).any():
        others = 0.0
    elif rest.any():
        others = float(y[rest].mean()) * int((~decision).sum())
    elif y0 is not None:
        others = float(y0[~decision].sum())
    if precision is not None and others is not None:
        churners = precision * int(decision.sum())
        recall = churners / (churners + others) if churners + others > 0 else None
    elif not decision.any() and (y == 1).any():
        recall = 0.0

    # ---- calibration of the churn probability, on rows where no contact happened
    pc, yc = p[untreated], y[untreated]
    calib: list[dict[str, Any]] = []
    if len(yc):
        bins = np.clip((pc * config.calibration_bins).astype(int), 0, config.calibration_bins - 1)
        calib = [
            {
                "bin": int(b),
                "rows": int((bins == b).sum()),
                "predicted": round(float(pc[bins == b].mean()), 4),
                "observed": round(float(yc[bins == b].mean()), 4),
            }
            for b in np.unique(bins)
        ]
    if not treated.any():
        calibration_note = "all rows: no contact delivered"
    elif len(yc):
        calibration_note = (
            f"judged on the {len(yc)} customers not contacted (holdout, no_contact decisions, "
            f"undelivered contacts); {n_treated} contacted customers left out: their outcomes "
            "carry the contact's effect"
        )
    else:
        calibration_note = (
            f"not measurable: all {len(y)} customers were contacted and their outcomes carry "
            "the contact's effect; a randomized holdout keeps customers to judge it on"
        )
    segs = []
    for col in segment_columns:
        if col not in joined.columns:
            continue
        for value, idx in joined.groupby(col).indices.items():
            if len(idx) < config.min_segment_rows:
                continue
            rows_idx = np.asarray(idx)
            plain = rows_idx[untreated[rows_idx]]
            segs.append(
                {
                    "segment": f"{col}={value}",
                    "rows": int(len(idx)),
                    "realised_profit_per_customer_usd": None
                    if profit is None
                    else round(float(profit[idx].mean()), 4),
                    "observed_churn": round(float(y[plain].mean()), 4) if len(plain) else None,
                    "predicted_churn": round(float(p[plain].mean()), 4) if len(plain) else None,
                    "untreated_rows": int(len(plain)),
                    "profit_basis": PROFIT_ASSUMED,
                }
            )
    alerts = []
    if expected_profit is not None and expected_profit > 0 and bounds is not None:
        decay = 1 - bounds[1] / expected_profit
        if decay > config.profit_decay_alert:
            what = (
                "incremental profit of the programme (randomized holdout)"
                if basis == PROFIT_HOLDOUT
                else f"realised profit at the assumed save rate {save_rate:g}"
                + (" (no holdout: the contact's effect is not measured)" if treated.any() else "")
            )
            alerts.append(
                f"realised profit {point:.2f} USD/customer (upper bound {bounds[1]:.2f}; "
                f"{what}) is {decay:.0%} below the promoted {expected_profit:.2f}"
            )
    mean_p = float(pc.mean()) if len(yc) else None
    mean_y = float(yc.mean()) if len(yc) else None
    if (
        mean_p is not None
        and mean_y is not None
        and abs(mean_p - mean_y) > config.calibration_gap_alert
    ):
        alerts.append(
            f"mean predicted churn {mean_p:.3f} vs observed {mean_y:.3f}"
            + (f" (on {len(yc)} customers not contacted)" if treated.any() else "")
        )
    return OutcomeReport(
        len(y),
        precision,
        recall,
        point,
        bounds,
        expected_profit,
        calib,
        segs,
        alerts,
        profit_basis=basis,
        profit_note=profit_note,
        assumed_save_rate=save_rate,
        profit_at_assumed_save_rate_usd=None if assumed_iv is None else assumed_iv.point,
        treated_rows=n_treated,
        contacted_source=source,
        calibration_rows=int(len(yc)),
        mean_predicted_churn=mean_p,
        mean_observed_churn=mean_y,
        calibration_note=calibration_note,
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
    """Challenger vs champion on the same decisions (``shadow``: the challenger's decisions,
    each with the champion's action on the same row in ``champion_action``): action flip rate,
    and once outcomes arrive the realised profit difference (challenger - champion,
    USD/customer) with interval. The rows are put in a canonical order first (time, request
    id, customer id), so the evidence does not depend on the order they were stored or read
    in (the paired bootstrap draws rows by position)."""
    if shadow.empty:
        return {"shadow_predictions": 0}
    order = [c for c in ("time", "request_id", id_column) if c in shadow.columns]
    if order:  # ids may be logged as numbers or text: ordered by their text
        keys = pd.DataFrame(
            {
                c: shadow[c]
                if pd.api.types.is_datetime64_any_dtype(shadow[c])
                else shadow[c].astype(str)
                for c in order
            }
        )
        shadow = shadow.loc[keys.sort_values(order, kind="mergesort").index]
        shadow = shadow.reset_index(drop=True)
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
