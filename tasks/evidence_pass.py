"""The evidence pass over the whole test split: every test row, not the judged sample.

On a large table the gates judge a label-stratified sample of the test split
(``scale.judge_max_rows``, ``tasks.split_data``). Once the chosen model and policy are known,
this pass scores every test row with the chosen (calibrated) model and the policy, chunk by
chunk (a partition on a Dask worker, ``scale.chunk_rows`` rows with the local engine). A
chunk returns sufficient statistics only (:class:`PassStats`): rows, positives, the sum of
probabilities, contacts, the realised profit's sum and sum of squares under the policy's
economics, and per probability bin the rows, probability sum and positives. The reduction
(:func:`full_test_evidence`) gives the full split's base rate, mean probability, contact
rate, profit per customer with a normal-approximation interval, the expected calibration
error over the bins, and whether the sample's business figure lies inside that interval.

Every sum is exact (:class:`ExactSum`: integer mantissas per binary exponent), so the result
does not depend on how the rows were chunked: the Dask and the local engine record the same
figures, and the reduction equals the whole-frame computation. The pass adds evidence to
the record; it changes no gate and no decision. Nothing here imports Dask.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from fractions import Fraction
from typing import Protocol

import numpy as np
import pandas as pd
from scipy import stats

from configs.settings import DataConfig, EconomicsConfig
from tasks.evaluate import customer_values
from tasks.partitions import Partition, PartitionCheck, TableLayout, take_rows
from tasks.select_policy import Policy, apply_policy, profit_per_customer

_MANTISSA_BITS = 53
_HALF_BITS = 26
# rows summed at once per exponent: each half-mantissa is below 2**27 in magnitude, so the
# float64 running sum of 2**25 of them stays below 2**52 and is exact
_EXACT_BLOCK_ROWS = 1 << 25


class Scorer(Protocol):
    """What the pass scores with: calibrated churn probabilities (0-1) from feature columns."""

    def predict(self, X: pd.DataFrame) -> np.ndarray: ...  # noqa: N803 - sklearn convention


@dataclass(frozen=True)
class ServedScorer:
    """The served estimator alone (``tasks.calibrate.CalibratedModel.estimator``): calibrated
    churn probabilities (0-1) as ``CalibratedModel.predict`` gives them, without the
    candidate's training leftovers (raw model, selection probabilities), so shipping it to
    the workers costs the artifact's size only."""

    estimator: object

    def predict(self, X: pd.DataFrame) -> np.ndarray:  # noqa: N803 - sklearn convention
        proba: np.ndarray = self.estimator.predict_proba(X)[:, 1]  # type: ignore[attr-defined]
        return proba


@dataclass(frozen=True)
class ExactSum:
    """The exact sum of float64 values: ``sum(m * 2**(e - 53))`` over ``parts = {e: m}``
    (integer mantissa sums per binary exponent). Adding two is exact; :attr:`value` is the
    correctly rounded float, whatever the order or grouping of the values."""

    parts: tuple[tuple[int, int], ...] = ()

    @classmethod
    def of(cls, x: np.ndarray) -> ExactSum:
        """The exact sum of the finite values ``x`` (ValueError on NaN or infinity)."""
        x = np.asarray(x, dtype=np.float64).ravel()
        if not np.isfinite(x).all():
            raise ValueError("an exact sum needs finite values (found NaN or infinity)")
        totals: dict[int, int] = {}
        for start in range(0, len(x), _EXACT_BLOCK_ROWS):
            m, e = np.frexp(x[start : start + _EXACT_BLOCK_ROWS])
            mi = np.ldexp(m, _MANTISSA_BITS).astype(np.int64)  # exact: |m| < 1
            hi = mi >> _HALF_BITS
            lo = mi - (hi << _HALF_BITS)
            keys, inverse = np.unique(e, return_inverse=True)
            s_hi = np.bincount(inverse, weights=hi.astype(np.float64), minlength=len(keys))
            s_lo = np.bincount(inverse, weights=lo.astype(np.float64), minlength=len(keys))
            for k, a, b in zip(keys.tolist(), s_hi.tolist(), s_lo.tolist(), strict=True):
                totals[k] = totals.get(k, 0) + (int(a) << _HALF_BITS) + int(b)
        return cls(tuple(sorted((k, v) for k, v in totals.items() if v)))

    def __add__(self, other: ExactSum) -> ExactSum:
        totals = dict(self.parts)
        for k, v in other.parts:
            totals[k] = totals.get(k, 0) + v
        return ExactSum(tuple(sorted((k, v) for k, v in totals.items() if v)))

    @property
    def value(self) -> float:
        if not self.parts:
            return 0.0
        low = self.parts[0][0]
        total = sum(v << (k - low) for k, v in self.parts)
        shift = low - _MANTISSA_BITS
        exact = Fraction(total * 2**shift) if shift >= 0 else Fraction(total, 2**-shift)
        return float(exact)


def probability_edges(p: np.ndarray, n_bins: int) -> np.ndarray:
    """Quantile bin edges of the probabilities ``p`` (as ``tasks.evaluate.ece`` bins them):
    the pass bins every test row by the edges of the judged test sample's probabilities."""
    return np.unique(np.quantile(np.asarray(p, dtype=float), np.linspace(0, 1, n_bins + 1)))


def bin_index(p: np.ndarray, edges: np.ndarray) -> np.ndarray:
    """Each probability's bin (0 .. len(edges) - 2; outside the edges: the end bins)."""
    if len(edges) < 2:
        return np.zeros(len(p), dtype=np.int64)
    return np.clip(np.searchsorted(edges, p, side="right") - 1, 0, len(edges) - 2)


@dataclass(frozen=True)
class PassStats:
    """Sufficient statistics of a chunk of test rows: counts, exact sums (probability,
    realised profit in USD and its square in USD^2) and, per probability bin, rows, exact
    probability sums and positives."""

    rows: int
    positives: int
    contacts: int
    sum_p: ExactSum
    profit: ExactSum
    profit_sq: ExactSum
    bin_rows: tuple[int, ...]
    bin_p: tuple[ExactSum, ...]
    bin_positives: tuple[int, ...]

    def __add__(self, other: PassStats) -> PassStats:
        if len(self.bin_rows) != len(other.bin_rows):
            raise ValueError("pass statistics over different probability bins cannot be added")
        return PassStats(
            self.rows + other.rows,
            self.positives + other.positives,
            self.contacts + other.contacts,
            self.sum_p + other.sum_p,
            self.profit + other.profit,
            self.profit_sq + other.profit_sq,
            tuple(a + b for a, b in zip(self.bin_rows, other.bin_rows, strict=True)),
            tuple(a + b for a, b in zip(self.bin_p, other.bin_p, strict=True)),
            tuple(a + b for a, b in zip(self.bin_positives, other.bin_positives, strict=True)),
        )


def pass_stats(
    p: np.ndarray,
    frame: pd.DataFrame,
    y: np.ndarray,
    policy: Policy,
    *,
    economics: EconomicsConfig,
    edges: np.ndarray,
) -> PassStats:
    """The statistics of rows ``frame`` (clean, carrying the value column if one is used)
    with calibrated probabilities ``p`` and labels ``y`` (0/1): contacts by the policy, the
    realised profit per customer (USD) as the gates compute it (``tasks.evidence.score_split``)."""
    p = np.asarray(p, dtype=float)
    y = np.asarray(y).astype(np.int64)
    if not (len(p) == len(frame) == len(y)):
        raise ValueError(
            f"probabilities ({len(p)}), rows ({len(frame)}) and labels ({len(y)}) differ in length"
        )
    contact = apply_policy(p, frame, policy).contact
    values = customer_values(frame, economics=economics)
    profit = profit_per_customer(y, values, contact, economics=economics)
    n_bins = max(len(edges) - 1, 1)
    b = bin_index(p, edges)
    return PassStats(
        rows=len(p),
        positives=int(y.sum()),
        contacts=int(np.count_nonzero(contact)),
        sum_p=ExactSum.of(p),
        profit=ExactSum.of(profit),
        profit_sq=ExactSum.of(profit * profit),
        bin_rows=tuple(int(v) for v in np.bincount(b, minlength=n_bins)),
        bin_p=tuple(ExactSum.of(p[b == i]) for i in range(n_bins)),
        bin_positives=tuple(int(v) for v in np.bincount(b, weights=y, minlength=n_bins)),
    )


def score_pass_stats(
    predict: Callable[[pd.DataFrame], np.ndarray],
    frame: pd.DataFrame,
    policy: Policy,
    *,
    features: Sequence[str],
    label_column: str,
    economics: EconomicsConfig,
    edges: np.ndarray,
) -> PassStats:
    """Score clean rows ``frame`` with ``predict`` (calibrated probabilities from the feature
    columns) and return their :func:`pass_stats`."""
    p = predict(frame[list(features)])
    return pass_stats(
        p, frame, frame[label_column].to_numpy(), policy, economics=economics, edges=edges
    )


def chunked_pass_stats(
    predict: Callable[[pd.DataFrame], np.ndarray],
    frame: pd.DataFrame,
    positions: np.ndarray,
    policy: Policy,
    *,
    features: Sequence[str],
    label_column: str,
    economics: EconomicsConfig,
    edges: np.ndarray,
    chunk_rows: int,
) -> Iterable[PassStats]:
    """:func:`score_pass_stats` of the rows of ``frame`` at ``positions``, ``chunk_rows`` at a
    time (the local engine's pass: one chunk's rows are held at once, not the split)."""
    if chunk_rows <= 0:
        raise ValueError(f"chunk_rows must be positive, got {chunk_rows}")
    for start in range(0, len(positions), chunk_rows):
        rows = frame.take(positions[start : start + chunk_rows])
        yield score_pass_stats(
            predict,
            rows,
            policy,
            features=features,
            label_column=label_column,
            economics=economics,
            edges=edges,
        )


@dataclass(frozen=True)
class FullTestEvidence:
    """The whole test split's figures under the chosen model and policy (see the module
    docstring); money in USD per customer, rates and the ECE as shares (0-1)."""

    rows: int
    rows_judged: int
    base_rate: float
    mean_probability: float
    contact_rate: float
    profit_per_customer_usd: float
    profit_interval_usd: tuple[float, float]
    confidence: float
    ece: float
    calibration_bins: int
    sample_profit_per_customer_usd: float | None
    sample_inside_interval: bool | None

    def as_dict(self) -> dict[str, object]:
        return {
            "rows": self.rows,
            "rows_judged": self.rows_judged,
            "base_rate": self.base_rate,
            "mean_probability": self.mean_probability,
            "contact_rate": self.contact_rate,
            "profit_per_customer_usd": self.profit_per_customer_usd,
            "profit_interval_usd": list(self.profit_interval_usd),
            "confidence": self.confidence,
            "ece": self.ece,
            "calibration_bins": self.calibration_bins,
            "sample_profit_per_customer_usd": self.sample_profit_per_customer_usd,
            "sample_inside_interval": self.sample_inside_interval,
            "method": "every test row scored with the chosen calibrated model and policy; "
            "normal-approximation interval of the mean realised profit; ECE over the judged "
            "sample's quantile bins",
        }


def full_test_evidence(
    parts: Iterable[PassStats],
    *,
    confidence: float,
    rows_judged: int,
    sample_profit_usd: float | None,
) -> FullTestEvidence:
    """Reduce the chunks' statistics to the full split's figures: ``confidence`` (0-1) is
    the two-sided level of the profit interval, ``rows_judged`` the sample's rows and
    ``sample_profit_usd`` the business gate's value on the sample (None: no comparison)."""
    total: PassStats | None = None
    for part in parts:
        total = part if total is None else total + part
    if total is None or total.rows == 0:
        raise ValueError("the evidence pass saw no test rows")
    n = total.rows
    mean = total.profit.value / n
    if n > 1:
        # (sum of squares - n mean^2) / (n - 1), from the exact sums
        ss = Fraction(total.profit_sq.value) - Fraction(total.profit.value) ** 2 / n
        var = max(float(ss) / (n - 1), 0.0)
    else:
        var = 0.0
    half = float(stats.norm.ppf(0.5 + confidence / 2)) * math.sqrt(var / n)
    low, high = mean - half, mean + half
    ece = (
        sum(abs(pos - s.value) for s, pos in zip(total.bin_p, total.bin_positives, strict=True)) / n
    )
    inside = None if sample_profit_usd is None else bool(low <= sample_profit_usd <= high)
    return FullTestEvidence(
        rows=n,
        rows_judged=rows_judged,
        base_rate=total.positives / n,
        mean_probability=total.sum_p.value / n,
        contact_rate=total.contacts / n,
        profit_per_customer_usd=mean,
        profit_interval_usd=(low, high),
        confidence=confidence,
        ece=float(ece),
        calibration_bins=len(total.bin_rows),
        sample_profit_per_customer_usd=sample_profit_usd,
        sample_inside_interval=inside,
    )


def partition_pass_stats(
    layout: TableLayout,
    part: Partition,
    positions: np.ndarray,
    *,
    model: Scorer,
    policy: Policy,
    data: DataConfig,
    check: PartitionCheck,
    features: Sequence[str],
    economics: EconomicsConfig,
    edges: np.ndarray,
) -> PassStats:
    """One partition's share of the pass (what a Dask worker runs): the clean rows at table
    ``positions`` (sorted, inside ``part``) scored with ``model.predict``."""
    rows = take_rows(layout, part, positions, data=data, check=check)
    return score_pass_stats(
        model.predict,
        rows,
        policy,
        features=features,
        label_column=check.label_column,
        economics=economics,
        edges=edges,
    )
