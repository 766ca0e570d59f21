"""Shared evaluation: economics, calibration error, and a vectorised paired bootstrap.

The bootstrap draws one seeded index matrix per call site and turns it into a count matrix
(resamples x rows), so every metric of a comparison is computed on the very same resamples
(paired). Large inputs are resampled in chunks of resamples, optionally on a seeded subsample
of rows that is reported as such.
"""

from __future__ import annotations

import hashlib
import math
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import numpy as np
import pandas as pd
from sklearn.metrics import average_precision_score, brier_score_loss, log_loss, roc_auc_score

from configs.settings import BootstrapConfig, EconomicsConfig

EPS = 1e-15


# ---------------------------------------------------------------- economics
def customer_values(frame: pd.DataFrame, *, economics: EconomicsConfig) -> np.ndarray:
    """Value of keeping each customer (USD): ``column x multiplier`` or the constant."""
    cv = economics.customer_value
    if cv.column:
        if cv.column not in frame.columns:
            raise KeyError(f"economics.customer_value.column {cv.column!r} is not in the data")
        return frame[cv.column].to_numpy(dtype=float) * cv.multiplier
    return np.full(len(frame), cv.constant_usd, dtype=float)


def expected_value(p: np.ndarray, values: np.ndarray, *, economics: EconomicsConfig) -> np.ndarray:
    """Expected value of contacting (USD): ``p * save_rate * value - contact_cost``."""
    return p * economics.save_rate * values - economics.contact_cost_usd


def realised_profit(y: np.ndarray, values: np.ndarray, *, economics: EconomicsConfig) -> np.ndarray:
    """Per-customer profit of a contact given the outcome (USD): churners are saved at
    ``save_rate`` (expected over the save), every contact costs ``contact_cost``."""
    return y * economics.save_rate * values - economics.contact_cost_usd


def profit_at_stake(y: np.ndarray, values: np.ndarray, *, economics: EconomicsConfig) -> float:
    """Profit per customer (USD) of perfect information: contact exactly the churners whose
    savable value exceeds the contact cost. Every money limit of the gates is a share of this
    figure, so limits scale with the economics and never name a USD amount."""
    if len(y) == 0:
        return 0.0
    return float(np.maximum(realised_profit(y, values, economics=economics), 0.0).mean())


# ---------------------------------------------------------------- probability metrics
def ece(y: np.ndarray, p: np.ndarray, *, n_bins: int) -> float:
    """Expected calibration error over quantile bins (weighted mean |observed - predicted|)."""
    return float(ece_table(y, p, n_bins=n_bins)["weighted_gap"].sum())


def _quantile_bins(p: np.ndarray, n_bins: int) -> np.ndarray:
    edges = np.unique(np.quantile(p, np.linspace(0, 1, n_bins + 1)))
    if len(edges) < 2:
        return np.zeros(len(p), dtype=np.int64)
    return np.clip(np.searchsorted(edges, p, side="right") - 1, 0, len(edges) - 2)


def ece_table(y: np.ndarray, p: np.ndarray, *, n_bins: int) -> pd.DataFrame:
    """Per-bin counts, mean predicted and observed rate, and the bin's share of the ECE."""
    bins = _quantile_bins(p, n_bins)
    df = pd.DataFrame({"bin": bins, "p": p, "y": y})
    g = df.groupby("bin").agg(count=("y", "size"), predicted=("p", "mean"), observed=("y", "mean"))
    g["weighted_gap"] = (g["observed"] - g["predicted"]).abs() * g["count"] / len(p)
    return g.reset_index()


_NULL_ECE_CACHE: dict[tuple[str, int, int, int], np.ndarray] = {}
_NULL_ECE_LOCK = threading.Lock()
_NULL_ECE_CACHE_SIZE = 256  # entries of ``simulations`` floats each


def ece_null_quantile(
    p: np.ndarray, *, n_bins: int, simulations: int, quantile: float, seed: int
) -> tuple[float, np.ndarray]:
    """ECE of a perfectly calibrated model at this sample size: labels drawn from ``p``.

    Returns the ``quantile`` of the simulated ECEs and the simulations (vectorised). The
    simulations depend only on ``p``, ``n_bins``, ``simulations`` and ``seed``; they are kept
    (by a digest of ``p``) so a second check of the same rows at another quantile (the
    calibration and segments gates test the same segments) does not redraw them."""
    digest = hashlib.blake2b(np.ascontiguousarray(p, dtype=np.float64).tobytes()).hexdigest()
    key = (digest, n_bins, simulations, seed)
    with _NULL_ECE_LOCK:
        sims = _NULL_ECE_CACHE.get(key)
    if sims is None:
        sims = _ece_null_simulations(p, n_bins=n_bins, simulations=simulations, seed=seed)
        with _NULL_ECE_LOCK:
            if len(_NULL_ECE_CACHE) >= _NULL_ECE_CACHE_SIZE:
                _NULL_ECE_CACHE.pop(next(iter(_NULL_ECE_CACHE)))
            _NULL_ECE_CACHE[key] = sims
    return float(np.quantile(sims, quantile)), sims.copy()


def _ece_null_simulations(p: np.ndarray, *, n_bins: int, simulations: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    bins = _quantile_bins(p, n_bins)
    k = int(bins.max()) + 1
    onehot = np.eye(k)[bins]  # rows x bins
    pred_sum = p @ onehot
    sims = np.empty(simulations)
    chunk = max(1, int(2e7 // max(len(p), 1)))
    for start in range(0, simulations, chunk):
        stop = min(simulations, start + chunk)
        draws = (rng.random((stop - start, len(p))) < p).astype(float)
        sims[start:stop] = np.abs(draws @ onehot - pred_sum).sum(axis=1) / len(p)
    return sims


@dataclass(frozen=True)
class ProbabilityMetrics:
    """Ranking metrics (roc_auc, pr_auc) kept apart from probability metrics."""

    roc_auc: float
    pr_auc: float
    brier: float
    log_loss: float
    ece: float

    def as_dict(self) -> dict[str, float]:
        return {k: round(float(v), 6) for k, v in self.__dict__.items()}


def probability_metrics(y: np.ndarray, p: np.ndarray, *, n_bins: int) -> ProbabilityMetrics:
    pc = np.clip(p, EPS, 1 - EPS)
    return ProbabilityMetrics(
        roc_auc=float(roc_auc_score(y, p)),
        pr_auc=float(average_precision_score(y, p)),
        brier=float(brier_score_loss(y, p)),
        log_loss=float(log_loss(y, pc, labels=[0, 1])),
        ece=ece(y, p, n_bins=n_bins),
    )


def auc_standard_error(auc: float, n_pos: int, n_neg: int) -> float:
    """Hanley & McNeil (1982) standard error of a ROC-AUC from ``n_pos`` and ``n_neg`` rows."""
    if n_pos < 1 or n_neg < 1:
        return math.inf
    a = min(max(auc, 1e-6), 1 - 1e-6)
    q1, q2 = a / (2 - a), 2 * a * a / (1 + a)
    var = (a * (1 - a) + (n_pos - 1) * (q1 - a * a) + (n_neg - 1) * (q2 - a * a)) / (n_pos * n_neg)
    return math.sqrt(max(var, 0.0))


# ---------------------------------------------------------------- bootstrap
@dataclass(frozen=True)
class Interval:
    low: float
    high: float
    point: float

    def as_list(self) -> list[float]:
        return [round(self.low, 6), round(self.high, 6)]


class PairedBootstrap:
    """Seeded resampling counts shared by every metric of one comparison.

    ``rows`` is the subsample used (all rows unless ``max_rows`` capped it).
    """

    def __init__(
        self, n: int, *, config: BootstrapConfig, resamples: int | None = None, seed_offset: int = 0
    ) -> None:
        self.config = config
        self.resamples = resamples or config.resamples
        rng = np.random.default_rng(config.seed + seed_offset)
        self.rows = (
            np.sort(rng.choice(n, size=config.max_rows, replace=False))
            if n > config.max_rows
            else np.arange(n)
        )
        self.subsampled = n > config.max_rows
        self.n = len(self.rows)
        self._seed = int(rng.integers(0, 2**32 - 1))

    def chunks(self) -> Iterator[np.ndarray]:
        """Count matrices (chunk x n): how often each row appears in each resample."""
        rng = np.random.default_rng(self._seed)
        step = self.config.chunk_resamples
        for start in range(0, self.resamples, step):
            b = min(step, self.resamples - start)
            idx = rng.integers(0, self.n, size=(b, self.n))
            counts = np.empty((b, self.n), dtype=np.float64)
            for i in range(b):  # row by row: no offset copy of idx, no int64 count matrix
                counts[i] = np.bincount(idx[i], minlength=self.n)
            yield counts

    def describe(self) -> dict[str, object]:
        return {
            "resamples": self.resamples,
            "rows": self.n,
            "subsampled": self.subsampled,
            "seed": self.config.seed,
        }

    def run(self, stat: Callable[[np.ndarray], np.ndarray]) -> np.ndarray:
        """Apply ``stat`` (count matrix -> one value per resample) to every chunk."""
        return self.run_many(stat)[0]

    def run_many(self, *stats: Callable[[np.ndarray], np.ndarray]) -> tuple[np.ndarray, ...]:
        """Several statistics on the same resamples, drawing each chunk of counts once."""
        out: list[list[np.ndarray]] = [[] for _ in stats]
        for c in self.chunks():
            for acc, stat in zip(out, stats, strict=True):
                acc.append(stat(c))
        return tuple(np.concatenate(acc) for acc in out)


def interval(samples: np.ndarray, point: float, confidence: float) -> Interval:
    a = (1 - confidence) / 2
    lo, hi = np.quantile(samples, [a, 1 - a])
    return Interval(float(lo), float(hi), float(point))


def weighted_mean(counts: np.ndarray, values: np.ndarray) -> np.ndarray:
    return (counts @ values) / counts.sum(axis=1)


def _cumulative_at(counts: np.ndarray, class_positions: np.ndarray, at: np.ndarray) -> np.ndarray:
    """Per resample, the summed counts of one class's rows up to and including each sorted
    position in ``at``. ``counts``: (resamples x class rows), the class's columns in sorted
    order; ``class_positions``: their (increasing) sorted positions."""
    cum = np.cumsum(counts, axis=1)
    cum = np.concatenate([np.zeros((len(counts), 1)), cum], axis=1)
    out: np.ndarray = cum[:, np.searchsorted(class_positions, at, side="right")]
    return out


def weighted_average_precision(counts: np.ndarray, y: np.ndarray, score: np.ndarray) -> np.ndarray:
    """Average precision per resample (rows weighted by counts), matching sklearn on ties.

    True and false positives at each distinct score are cumulative sums of one class's
    columns only (no count x label products over every row). With integer counts (bootstrap
    resamples) those sums are exact integers in any order, so the result is bit for bit the
    one of the direct formula."""
    order = np.argsort(-score, kind="mergesort")
    s, yo = score[order], y[order] == 1
    last = np.r_[np.nonzero(np.diff(s))[0], len(s) - 1]
    pos_at, neg_at = np.nonzero(yo)[0], np.nonzero(~yo)[0]
    tp = _cumulative_at(counts[:, order[pos_at]], pos_at, last)
    fp = _cumulative_at(counts[:, order[neg_at]], neg_at, last)
    total = tp[:, -1:]
    precision = tp / np.maximum(tp + fp, EPS)
    recall = tp / np.maximum(total, EPS)
    d_recall = np.diff(np.concatenate([np.zeros((len(counts), 1)), recall], axis=1), axis=1)
    out: np.ndarray = (d_recall * precision).sum(axis=1)
    return out


def weighted_roc_auc(counts: np.ndarray, y: np.ndarray, score: np.ndarray) -> np.ndarray:
    """ROC-AUC per resample via weighted ranks (ties count one half).

    Works on the positives' columns only: each positive's weight times the negatives' weight
    below its score plus half the tied negatives' weight (a cumulative sum over the negatives'
    columns, read at each score group's start and end). With integer counts (bootstrap
    resamples) every partial sum is a multiple of one half well below 2**52, exact in any
    order, so the result is bit for bit the one of the all-rows rank formula."""
    order = np.argsort(score, kind="mergesort")
    s, yo = score[order], y[order] == 1
    starts = np.r_[0, np.nonzero(np.diff(s))[0] + 1]
    ends = np.r_[starts[1:], len(s)]
    group = np.repeat(np.arange(len(starts)), np.diff(ends, prepend=0))
    neg_at, pos_at = np.nonzero(~yo)[0], np.nonzero(yo)[0]
    cum_neg = np.cumsum(counts[:, order[neg_at]], axis=1)
    cum_neg = np.concatenate([np.zeros((len(counts), 1)), cum_neg], axis=1)
    g = group[pos_at]  # score group of each positive
    neg_before_start = np.asarray(np.searchsorted(neg_at, starts, side="left"))
    neg_before_end = np.asarray(np.searchsorted(neg_at, ends, side="left"))
    below = cum_neg[:, neg_before_start[g]]
    tied = cum_neg[:, neg_before_end[g]] - below
    pos = counts[:, order[pos_at]]
    n_pos = pos.sum(axis=1)
    n_neg = cum_neg[:, -1]
    wins = (pos * (below + 0.5 * tied)).sum(axis=1)
    out: np.ndarray = wins / np.maximum(n_pos * n_neg, EPS)
    return out
