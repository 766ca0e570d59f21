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
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
from scipy import stats

from configs.settings import BootstrapConfig, MonitoringConfig
from tasks.decision_store import iter_decisions, stored_columns
from tasks.evaluate import PairedBootstrap, interval, weighted_mean
from tasks.gates.stats import holm
from tasks.load_data import ColumnRoles
from tasks.outcome_impact import add_experiment_counts, experiment_counts
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
        distinct, n_of = np.unique(num[~np.isnan(num)], return_counts=True)
        pairs = [(_value_key(v), int(c)) for v, c in zip(distinct, n_of, strict=True)]
        if np.isnan(num).any():
            pairs.append((MISSING, int(np.isnan(num).sum())))
    else:
        counted = values.astype(object).where(values.notna(), MISSING).value_counts()
        pairs = [(str(k), int(c)) for k, c in counted.items()]
    out: dict[str, float] = {}
    for key, n in pairs:
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


@dataclass(frozen=True)
class DriftInputs:
    """What the drift tests need of the current window: for continuous features a sample of
    their values, for discrete and categorical ones their counts (over every row), the
    score's sample and its counts in the reference bins, and the contacts. ``absent``:
    reference features no row of the window carries."""

    numeric: dict[str, np.ndarray]
    counts: dict[str, dict[str, float]]
    absent: frozenset[str]
    score_sample: np.ndarray
    score_bin_counts: np.ndarray
    contacts: int
    scored: int


def drift_inputs(
    reference: dict[str, Any], current: pd.DataFrame, p: np.ndarray, contact: np.ndarray
) -> DriftInputs:
    """``DriftInputs`` of one in-memory frame (every row is its own sample)."""
    acc = DriftAccumulator(reference, sample_rows=None)
    acc.add_features(current)
    acc.add_scores(np.asarray(p, float), np.asarray(contact, bool))
    return acc.result()


class DriftAccumulator:
    """``DriftInputs`` built chunk by chunk: exact counts, and for continuous features and
    the score a seeded uniform sample of at most ``sample_rows`` values each (bottom-k on
    random keys, so the sample does not depend on chunk sizes; None: keep every value)."""

    def __init__(
        self, reference: dict[str, Any], *, sample_rows: int | None, seed: int = 0
    ) -> None:
        self.reference = reference
        self.sample_rows = sample_rows
        self._rng = np.random.default_rng(seed)
        self._samples: dict[str, list[tuple[np.ndarray, np.ndarray]]] = {}
        self.counts: dict[str, dict[str, float]] = {}
        self.seen: set[str] = set()
        score_ref = reference["score"]
        self._score_inner = np.asarray(score_ref.get("inner_edges", []), float)
        self.score_bins = np.zeros(len(self._score_inner) + 1, dtype=np.int64)
        self.contacts = 0
        self.scored = 0

    def _sample(self, name: str, values: np.ndarray) -> None:
        values = values[~np.isnan(values)]
        keys = self._rng.random(len(values))
        parts = self._samples.setdefault(name, [])
        parts.append((keys, values))
        if self.sample_rows is None:
            return
        if sum(len(k) for k, _ in parts) > 2 * self.sample_rows:
            k = np.concatenate([k for k, _ in parts])
            v = np.concatenate([v for _, v in parts])
            keep = np.argpartition(k, self.sample_rows)[: self.sample_rows]
            self._samples[name] = [(k[keep], v[keep])]

    def _values(self, name: str) -> np.ndarray:
        parts = self._samples.get(name, [])
        if not parts:
            return np.array([], dtype=float)
        k = np.concatenate([k for k, _ in parts])
        v = np.concatenate([v for _, v in parts])
        if self.sample_rows is not None and len(k) > self.sample_rows:
            v = v[np.argpartition(k, self.sample_rows)[: self.sample_rows]]
        return v

    def add_features(self, current: pd.DataFrame) -> None:
        """Rows whose inputs are raw (what the feature tests may use)."""
        for col, ref in self.reference["features"].items():
            if col not in current.columns:
                continue
            self.seen.add(col)
            if ref["kind"] == "numeric":
                x = pd.to_numeric(current[col], errors="coerce").to_numpy(dtype=float)
                self._sample(col, x)
            else:
                acc = self.counts.setdefault(col, {})
                for k, n in _current_counts(ref, current[col]).items():
                    acc[k] = acc.get(k, 0.0) + n

    def add_scores(self, p: np.ndarray, contact: np.ndarray) -> None:
        """Every row: its probability and whether it was contacted."""
        self._sample("__score__", p)
        q = p[~np.isnan(p)]
        self.score_bins += np.bincount(
            np.searchsorted(self._score_inner, q, side="right"), minlength=len(self.score_bins)
        )
        self.contacts += int(contact.sum())
        self.scored += len(contact)

    def result(self) -> DriftInputs:
        features = self.reference["features"]
        return DriftInputs(
            numeric={c: self._values(c) for c in features if features[c]["kind"] == "numeric"},
            counts=dict(self.counts),
            absent=frozenset(c for c in features if c not in self.seen),
            score_sample=self._values("__score__"),
            score_bin_counts=self.score_bins.copy(),
            contacts=self.contacts,
            scored=self.scored,
        )


def _feature_test(col: str, ref: dict[str, Any], current: DriftInputs, rows: int) -> DriftTest:
    if col in current.absent:
        return DriftTest(col, ref["kind"], "absent", None, None)
    if ref["kind"] == "numeric":
        ks, p = ks_two_sample(ref, current.numeric.get(col, np.array([], dtype=float)))
        return DriftTest(col, "numeric", "ks_2samp", _finite(ks), _finite(p))
    value, p, _ = chi_square_counts(_reference_counts(ref, rows), current.counts.get(col, {}))
    return DriftTest(col, ref["kind"], "chi2", _finite(value), _finite(p))


def _finite(v: float) -> float | None:
    return None if v is None or not np.isfinite(v) else float(v)


def drift_tests(
    reference: dict[str, Any],
    current: pd.DataFrame | DriftInputs,
    p: np.ndarray | None = None,
    contact: np.ndarray | None = None,
    *,
    config: MonitoringConfig,
) -> dict[str, Any]:
    """Every feature, the score and the contact rate tested against the reference, with one
    family-wise false-alarm rate. ``current``: the logged rows with raw inputs (then ``p``
    and ``contact`` are every logged row's probability and contact), or their summary
    (``DriftAccumulator``: windows too large to hold). Returns ``features`` (rows: feature,
    kind, test, ks, psi, p_value, alert, reason), ``prediction`` (score KS, contact rates,
    alerts), ``alerts`` and ``rule``."""
    if not isinstance(current, DriftInputs):
        assert p is not None and contact is not None, "p and contact go with a frame"
        current = drift_inputs(reference, current, p, contact)
    rows = int(reference.get("rows", 0))
    tests = [_feature_test(c, r, current, rows) for c, r in reference["features"].items()]
    score_ref = reference["score"]
    ks, ks_p = ks_two_sample(score_ref, current.score_sample)
    tests.append(DriftTest("score", "numeric", "ks_2samp", _finite(ks), _finite(ks_p)))
    n_scored = current.scored
    rate = current.contacts / n_scored if n_scored else float("nan")
    ref_rate = float(reference["contact_rate"])
    scored = int(reference.get("scored", 0))
    if scored and n_scored:
        ref_contacts = int(reference.get("contacts", round(ref_rate * scored)))
        now = current.contacts
        table = np.array([[ref_contacts, scored - ref_contacts], [now, n_scored - now]])
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
            psi(
                np.asarray(score_ref["shares"]),
                current.score_bin_counts / max(int(current.score_bin_counts.sum()), 1),
            ),
            5,
        )
        if n_scored
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
HASHED_PREFIX = "hmac:"  # a logged id kept as a keyed hash (serving.predlog.HASH_PREFIX)


@dataclass(frozen=True)
class DecisionScan:
    """One streaming pass over a window of the decision store (``scan_decisions``).

    ``rows``: rows read per source; ``raw_rows``: rows that keep raw inputs
    (``serving.log_inputs: full``; hashed/none rows carry a hashed ``customer_id``);
    ``drift``: the drift tests' inputs (features over raw rows, score and contacts over all);
    ``sample``: a seeded sample of at most ``sample_rows`` raw rows (time, id column,
    features; for the skew join), oldest first; ``labelled``: the latest decision of every
    customer that has an outcome (id column as the outcome's id, time, probability, action,
    would_contact, holdout, experiment_id, extra columns); ``experiments``: the holdout
    experiments' counts (``tasks.outcome_impact.experiment_counts``) over the window."""

    rows: dict[str, int]
    raw_rows: int
    drift: DriftInputs
    sample: pd.DataFrame
    labelled: pd.DataFrame
    experiments: dict[str, dict[str, Any]] = field(default_factory=dict)

    @property
    def total(self) -> int:
        return sum(self.rows.values())


class _FrameSample:
    """Bottom-k sample of frame rows on seeded random keys (independent of chunking)."""

    def __init__(self, k: int, rng: np.random.Generator) -> None:
        self.k = k
        self.rng = rng
        self.parts: list[pd.DataFrame] = []
        self.n = 0

    def add(self, frame: pd.DataFrame) -> None:
        if frame.empty:
            return
        self.parts.append(frame.assign(__key=self.rng.random(len(frame))))
        self.n += len(frame)
        if self.n > 2 * self.k:
            self._prune()

    def _prune(self) -> None:
        df = pd.concat(self.parts, ignore_index=True)
        df = df.nsmallest(self.k, "__key") if len(df) > self.k else df
        self.parts, self.n = [df], len(df)

    def frame(self) -> pd.DataFrame:
        if not self.parts:
            return pd.DataFrame()
        self._prune()
        df = self.parts[0].drop(columns="__key")
        return df.sort_values("time", kind="stable").reset_index(drop=True)


def outcome_id_map(
    outcome_ids: pd.Series, hash_id: Callable[[str], str] | None = None
) -> dict[str, str]:
    """Logged id -> outcome id: each outcome id as text, and (given the service's keyed
    ``hash_id``) its hash, the way ``serving.log_inputs`` hashed/none logs ids."""
    ids = outcome_ids.astype(str).drop_duplicates().tolist()
    out = {i: i for i in ids}
    if hash_id is not None:
        out.update({hash_id(i): i for i in ids})
    return out


def scan_decisions(
    root: Path,
    *,
    reference: dict[str, Any],
    since: str | None = None,
    until: str | None = None,
    sources: Sequence[str] = ("http", "batch"),
    id_column: str,
    outcome_ids: Mapping[str, str] | None = None,
    extra_columns: Sequence[str] = (),
    sample_rows: int = 200_000,
    seed: int = 0,
    batch_rows: int = 262_144,
) -> DecisionScan:
    """Read the window ``[since, until)`` of the decision store once, chunk by chunk (memory
    flat in its size): only the columns monitoring needs (time, customer id, probability,
    action, the reference's features, ``extra_columns``), counting what the drift tests
    count and sampling what they sample (``DriftAccumulator``), and keeping the latest
    decision of the customers in ``outcome_ids`` (logged id -> outcome id, see
    ``outcome_id_map``)."""
    features = list(reference.get("features", {}))
    present = stored_columns(root, since=since, until=until, sources=sources)
    wanted = [c for c in dict.fromkeys([*features, *extra_columns]) if c in present]
    fixed = ["time", "customer_id", "probability", "action", *EXPERIMENT_COLUMNS]
    columns = [*fixed, *wanted]
    acc = DriftAccumulator(reference, sample_rows=sample_rows, seed=seed)
    sample = _FrameSample(sample_rows, np.random.default_rng(seed + 1))
    keep = list(
        dict.fromkeys(["time", "probability", "action", *EXPERIMENT_COLUMNS, *extra_columns])
    )
    experiments: dict[str, dict[str, Any]] = {}
    keep = [c for c in keep if c in columns]
    labelled: list[pd.DataFrame] = []
    rows: dict[str, int] = {}
    raw_rows = 0
    # logged id -> outcome id, looked up through one cached hash index (not rebuilt per chunk)
    ids = None if not outcome_ids else pd.Index(list(outcome_ids))
    targets = None if ids is None or outcome_ids is None else np.array(list(outcome_ids.values()))
    for source in sources:
        n = 0
        for chunk in iter_decisions(
            root,
            since=since,
            until=until,
            sources=[source],
            columns=columns,
            batch_rows=batch_rows,
        ):
            n += len(chunk)
            cid = chunk["customer_id"]
            raw = ~cid.astype(str).str.startswith(HASHED_PREFIX).to_numpy()
            acc.add_scores(chunk["probability"].to_numpy(float), policy_contacts(chunk))
            add_experiment_counts(experiments, experiment_counts(chunk))
            if raw.any():
                raw_rows += int(raw.sum())
                current = chunk.loc[raw, features_in(chunk, features)]
                acc.add_features(current)
                sample.add(
                    chunk.loc[raw, ["time", *features_in(chunk, features)]].assign(
                        **{id_column: cid[raw].to_numpy()}
                    )
                )
            if ids is not None and targets is not None:
                pos = ids.get_indexer(pd.Index(cid.astype(object)))
                hit = pos >= 0
                if hit.any():
                    got = chunk.loc[hit, keep]
                    labelled.append(got.assign(**{id_column: targets[pos[hit]]}))
        rows[source] = n
    if labelled:
        last = pd.concat(labelled, ignore_index=True).sort_values("time", kind="stable")
        last = last.drop_duplicates(id_column, keep="last").reset_index(drop=True)
    else:
        last = pd.DataFrame()
    return DecisionScan(rows, raw_rows, acc.result(), sample.frame(), last, experiments)


EXPERIMENT_COLUMNS = ("would_contact", "holdout", "experiment_id")


def policy_contacts(decisions: pd.DataFrame) -> np.ndarray:
    """What the policy decided per decision: ``would_contact`` where stored (the randomized
    holdout turns some of those contacts into no_contact, which is no drift), else the
    action."""
    acted = (decisions["action"] == "contact").to_numpy()
    if "would_contact" not in decisions.columns:
        return acted
    would = decisions["would_contact"]
    return np.where(would.notna().to_numpy(), would.fillna(False).astype(bool).to_numpy(), acted)


def features_in(frame: pd.DataFrame, features: Sequence[str]) -> list[str]:
    """The ``features`` ``frame`` has, in order."""
    return [c for c in features if c in frame.columns]


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
