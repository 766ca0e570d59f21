"""The evidence pass over a whole test split: per-chunk statistics reduce to the whole-frame
figures, whatever the chunking."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from configs.settings import EconomicsConfig
from tasks.evaluate import customer_values, ece
from tasks.evidence_pass import (
    ExactSum,
    chunked_pass_stats,
    full_test_evidence,
    pass_stats,
    probability_edges,
)
from tasks.select_policy import Policy, apply_policy, profit_per_customer

ECON = EconomicsConfig.model_validate(
    {"customer_value": {"column": "value_usd", "multiplier": 3.0}}
)


def _policy(cutoff: float) -> Policy:
    return Policy(
        {
            "cutoff_expected_value_usd": cutoff,
            "economics": ECON.model_dump(mode="json"),
            "tiers": [
                {"name": "none", "min_expected_value_usd": None, "contact": False},
                {"name": "call", "min_expected_value_usd": cutoff, "contact": True},
            ],
        }
    )


def _frame(rows: int, seed: int) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=rows)
    p = 1 / (1 + np.exp(-(x - 1.2)))
    return pd.DataFrame(
        {
            "x": x,
            "value_usd": rng.uniform(10, 120, rows).round(2),
            "churned": (rng.uniform(size=rows) < p).astype(np.int64),
        }
    )


class _Model:
    def predict(self, X: pd.DataFrame) -> np.ndarray:  # noqa: N803
        out: np.ndarray = 1 / (1 + np.exp(-(X["x"].to_numpy() - 1.0)))
        return out


def _evidence(frame: pd.DataFrame, positions: np.ndarray, chunk_rows: int, **kw: Any) -> Any:
    edges = probability_edges(_Model().predict(frame.take(positions[:400])), 10)
    parts = chunked_pass_stats(
        _Model().predict,
        frame,
        positions,
        _policy(0.0),
        features=("x",),
        label_column="churned",
        economics=ECON,
        edges=edges,
        chunk_rows=chunk_rows,
    )
    return full_test_evidence(parts, confidence=0.95, rows_judged=400, **kw)


def test_evidence_pass_reduce_equals_the_whole_frame_computation() -> None:
    frame = _frame(5000, seed=3)
    positions = np.arange(len(frame))
    got = _evidence(frame, positions, 700, sample_profit_usd=None)

    p = _Model().predict(frame)
    y = frame["churned"].to_numpy()
    contact = apply_policy(p, frame, _policy(0.0)).contact
    profit = profit_per_customer(y, customer_values(frame, economics=ECON), contact, economics=ECON)
    half = stats.norm.ppf(0.975) * profit.std(ddof=1) / math.sqrt(len(profit))
    assert got.rows == 5000 and got.rows_judged == 400
    assert got.base_rate == pytest.approx(y.mean(), abs=1e-15)
    assert got.mean_probability == pytest.approx(p.mean(), rel=1e-12)
    assert got.contact_rate == pytest.approx(contact.mean(), abs=1e-15)
    assert got.profit_per_customer_usd == pytest.approx(profit.mean(), rel=1e-12)
    assert got.profit_interval_usd == pytest.approx(
        (profit.mean() - half, profit.mean() + half), rel=1e-9
    )
    assert got.sample_inside_interval is None
    # the bins are the judged sample's quantile bins; with the whole frame's own edges the
    # ECE is tasks.evaluate.ece of the whole frame
    whole = full_test_evidence(
        [pass_stats(p, frame, y, _policy(0.0), economics=ECON, edges=probability_edges(p, 10))],
        confidence=0.95,
        rows_judged=5000,
        sample_profit_usd=None,
    )
    assert whole.ece == pytest.approx(ece(y, p, n_bins=10), rel=1e-12)


def test_evidence_pass_figures_do_not_depend_on_the_chunking_or_order() -> None:
    frame = _frame(3000, seed=5)
    positions = np.random.default_rng(1).permutation(len(frame))
    a = _evidence(frame, positions, 3000, sample_profit_usd=1.0)
    b = _evidence(frame, positions, 1, sample_profit_usd=1.0)
    c = _evidence(frame, np.sort(positions), 777, sample_profit_usd=1.0)
    assert a.as_dict() == b.as_dict()
    # the same rows in another order: same sums, but other bin edges (first 400 rows)
    assert {k: v for k, v in a.as_dict().items() if k != "ece"} == {
        k: v for k, v in c.as_dict().items() if k != "ece"
    }


def test_evidence_pass_says_whether_the_sample_figure_is_inside_the_interval() -> None:
    frame = _frame(4000, seed=8)
    positions = np.arange(len(frame))
    full = _evidence(frame, positions, 1000, sample_profit_usd=None)
    low, high = full.profit_interval_usd
    assert _evidence(
        frame, positions, 1000, sample_profit_usd=(low + high) / 2
    ).sample_inside_interval
    assert not _evidence(
        frame, positions, 1000, sample_profit_usd=high + 1.0
    ).sample_inside_interval


def test_evidence_pass_exact_sum_is_correctly_rounded_whatever_the_grouping() -> None:
    rng = np.random.default_rng(0)
    x = np.concatenate(
        [rng.normal(size=10_000) * 10.0 ** rng.integers(-8, 9, 10_000), [1e16, -1e16]]
    )
    whole = ExactSum.of(x)
    parts = ExactSum()
    for chunk in np.array_split(rng.permutation(x), 13):
        parts = parts + ExactSum.of(chunk)
    assert whole == parts
    assert whole.value == math.fsum(x.tolist())
    assert ExactSum.of(np.zeros(0)).value == 0.0
    with pytest.raises(ValueError, match="finite"):
        ExactSum.of(np.array([1.0, np.nan]))


def test_evidence_pass_refuses_an_empty_split_and_mismatched_lengths() -> None:
    frame = _frame(10, seed=1)
    with pytest.raises(ValueError, match="no test rows"):
        full_test_evidence([], confidence=0.95, rows_judged=0, sample_profit_usd=None)
    with pytest.raises(ValueError, match="differ in length"):
        pass_stats(
            np.zeros(3),
            frame,
            frame["churned"].to_numpy(),
            _policy(0.0),
            economics=ECON,
            edges=np.array([0.0, 1.0]),
        )
