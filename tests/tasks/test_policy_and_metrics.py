from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import average_precision_score, roc_auc_score

from configs.settings import BootstrapConfig, EconomicsConfig, PolicyConfig, build_config
from tasks.evaluate import (
    PairedBootstrap,
    ece,
    expected_value,
    weighted_average_precision,
    weighted_roc_auc,
)
from tasks.select_policy import (
    Policy,
    apply_policy,
    optimal_cutoffs,
    select_candidate,
    select_policy,
)


def _frame(n: int, rng: np.random.Generator) -> tuple[pd.DataFrame, np.ndarray, np.ndarray]:
    p = rng.beta(2, 5, n)
    y = (rng.random(n) < p).astype(int)
    frame = pd.DataFrame({"value": rng.uniform(50, 400, n)})
    return frame, p, y


def test_weighted_metrics_match_sklearn_sample_weights(rng) -> None:
    n = 400
    y = rng.integers(0, 2, n)
    s = np.round(rng.random(n) + 0.4 * y, 2)  # ties on purpose
    counts = rng.integers(0, 3, (3, n)).astype(float)
    ap = weighted_average_precision(counts, y, s)
    auc = weighted_roc_auc(counts, y, s)
    for i, w in enumerate(counts):
        assert ap[i] == pytest.approx(average_precision_score(y, s, sample_weight=w))
        assert auc[i] == pytest.approx(roc_auc_score(y, s, sample_weight=w))


def _all_rows_average_precision(counts: np.ndarray, y: np.ndarray, score: np.ndarray) -> np.ndarray:
    """The direct formula over every row (the one the fast form replaced)."""
    order = np.argsort(-score, kind="mergesort")
    s, yy, c = score[order], y[order].astype(float), counts[:, order]
    last = np.r_[np.nonzero(np.diff(s))[0], len(s) - 1]
    tp = np.cumsum(c * yy, axis=1)[:, last]
    fp = np.cumsum(c * (1 - yy), axis=1)[:, last]
    precision = tp / np.maximum(tp + fp, 1e-15)
    recall = tp / np.maximum(tp[:, -1:], 1e-15)
    d_recall = np.diff(np.concatenate([np.zeros((len(c), 1)), recall], axis=1), axis=1)
    out: np.ndarray = (d_recall * precision).sum(axis=1)
    return out


def _all_rows_roc_auc(counts: np.ndarray, y: np.ndarray, score: np.ndarray) -> np.ndarray:
    """The direct weighted-rank formula over every row (the one the fast form replaced)."""
    order = np.argsort(score, kind="mergesort")
    s, yy, c = score[order], y[order].astype(float), counts[:, order]
    neg, pos = c * (1 - yy), c * yy
    cum_neg = np.cumsum(neg, axis=1)
    starts = np.r_[0, np.nonzero(np.diff(s))[0] + 1]
    group = np.repeat(np.arange(len(starts)), np.diff(np.r_[starts, len(s)]))
    ends = np.r_[starts[1:], len(s)] - 1
    before = np.where(starts > 0, cum_neg[:, np.maximum(starts - 1, 0)], 0.0)
    below, tied = before[:, group], (cum_neg[:, ends] - before)[:, group]
    wins = (pos * (below + 0.5 * tied)).sum(axis=1)
    out: np.ndarray = wins / np.maximum(pos.sum(axis=1) * neg.sum(axis=1), 1e-15)
    return out


@pytest.mark.parametrize("n", [1, 2, 9, 400, 5000])
def test_weighted_metrics_equal_the_all_rows_formulas_bit_for_bit(rng, n: int) -> None:
    for decimals in (1, 3, 12):  # many ties, some ties, none
        y = rng.integers(0, 2, n)
        s = np.round(rng.random(n) + 0.3 * y, decimals)
        counts = rng.integers(0, 4, (7, n)).astype(float)
        assert np.array_equal(
            weighted_average_precision(counts, y, s), _all_rows_average_precision(counts, y, s)
        )
        assert np.array_equal(weighted_roc_auc(counts, y, s), _all_rows_roc_auc(counts, y, s))


def test_paired_bootstrap_is_seeded_and_caps_rows() -> None:
    cfg = BootstrapConfig(resamples=120, max_rows=500, chunk_resamples=50)
    a = PairedBootstrap(2000, config=cfg)
    b = PairedBootstrap(2000, config=cfg)
    assert a.subsampled and a.n == 500 and np.array_equal(a.rows, b.rows)
    ca, cb = list(a.chunks()), list(b.chunks())
    assert [c.shape for c in ca] == [(50, 500), (50, 500), (20, 500)]
    assert all(np.array_equal(x, y) for x, y in zip(ca, cb, strict=True))
    assert all((c.sum(axis=1) == 500).all() for c in ca)


def test_ece_small_for_calibrated_large_for_miscalibrated(rng) -> None:
    p = rng.beta(2, 5, 20000)
    y = (rng.random(len(p)) < p).astype(int)
    assert ece(y, p, n_bins=10) < 0.01
    assert ece(y, np.sqrt(p), n_bins=10) > 0.15


def test_expected_value_formula() -> None:
    econ = EconomicsConfig(save_rate=0.25, contact_cost_usd=15)
    ev = expected_value(np.array([0.2, 0.6]), np.array([500.0, 100.0]), economics=econ)
    assert ev.tolist() == pytest.approx([0.2 * 0.25 * 500 - 15, 0.6 * 0.25 * 100 - 15])


def _policy(frame, p, y, **econ):
    economics = EconomicsConfig(customer_value={"column": "value", "multiplier": 1.0}, **econ)
    return select_policy(
        p,
        y,
        frame,
        economics=economics,
        policy=PolicyConfig(),
        bootstrap=BootstrapConfig(),
        calibration_method="sigmoid",
        population_rows=len(p),
    )


def test_select_policy_contacts_exactly_positive_expected_value(rng) -> None:
    frame, p, y = _frame(5000, rng)
    ev = _policy(frame, p, y)
    d = apply_policy(p, frame, ev.policy)
    expected = p * 0.25 * frame["value"].to_numpy() - 15 > 0
    assert np.array_equal(d.contact, expected)
    assert ev.policy.cutoff_usd == 0
    assert ev.probability_threshold is None  # value varies: no single probability threshold


def test_select_policy_constant_value_reduces_to_probability_threshold(rng) -> None:
    frame, p, y = _frame(3000, rng)
    economics = EconomicsConfig(save_rate=0.25, contact_cost_usd=15)  # constant 500 USD
    ev = select_policy(
        p,
        y,
        frame,
        economics=economics,
        policy=PolicyConfig(),
        bootstrap=BootstrapConfig(),
        calibration_method="none",
        population_rows=len(p),
    )
    assert ev.probability_threshold == pytest.approx(15 / (0.25 * 500))
    d = apply_policy(p, frame, ev.policy)
    assert np.array_equal(d.contact, p > ev.probability_threshold)


def test_select_policy_capacity_share_limits_contacts(rng) -> None:
    frame, p, y = _frame(5000, rng)
    ev = _policy(frame, p, y, capacity=0.1)
    d = apply_policy(p, frame, ev.policy)
    assert d.contact.mean() == pytest.approx(0.1, abs=0.002)
    assert ev.policy.cutoff_usd > 0
    # a single row is decided alone with the stored cut-off
    one = apply_policy(p[:1], frame.iloc[:1], ev.policy)
    assert one.contact[0] == d.contact[0]


def test_select_policy_capacity_count_scales_to_population(rng) -> None:
    frame, p, y = _frame(2000, rng)
    economics = EconomicsConfig(customer_value={"column": "value"}, capacity=1000)
    ev = select_policy(
        p,
        y,
        frame,
        economics=economics,
        policy=PolicyConfig(),
        bootstrap=BootstrapConfig(),
        calibration_method="none",
        population_rows=10_000,
    )
    assert ev.policy.document["capacity_share"] == pytest.approx(0.1)


def test_tiers_follow_expected_value_and_action(rng) -> None:
    frame, p, y = _frame(5000, rng)
    ev = _policy(frame, p, y, capacity=0.05)
    d = apply_policy(p, frame, ev.policy)
    contact_tiers = {"contact", "priority_contact"}
    assert all(t in contact_tiers for t in d.tier[d.contact])
    assert not any(t in contact_tiers for t in d.tier[~d.contact])
    # positive value beyond capacity shows as monitor, not no_action
    deferred = (~d.contact) & (d.expected_value_usd > 0)
    assert deferred.any() and set(d.tier[deferred]) == {"monitor"}


def test_policy_id_is_content_hash_and_detects_edits(rng) -> None:
    frame, p, y = _frame(1000, rng)
    pol = _policy(frame, p, y).policy
    text = pol.to_json()
    assert Policy.from_json(text).policy_id == pol.policy_id
    doc = json.loads(text)
    doc["cutoff_expected_value_usd"] = -100
    with pytest.raises(ValueError, match="policy id mismatch"):
        Policy.from_json(json.dumps(doc))


def test_optimal_cutoffs_finds_best_prefix() -> None:
    ev = np.array([30.0, 20.0, 10.0, -5.0])
    profit = np.array([40.0, -15.0, 50.0, -15.0])
    cut, rate = optimal_cutoffs(ev, profit, np.ones((1, 4)))
    assert cut[0] == 10.0 and rate[0] == pytest.approx(0.75)


def test_select_candidate_prefers_the_better_calibrated_model(rng) -> None:
    frame, p, y = _frame(4000, rng)
    noisy = np.clip(p + rng.normal(0, 0.25, len(p)), 0.001, 0.999)
    cfg = build_config({"economics": {"customer_value": {"column": "value"}}})
    sel = select_candidate(
        {"good": p, "noisy": noisy},
        y,
        frame,
        calibration_methods={"good": "none", "noisy": "none"},
        economics=cfg.economics,
        policy=cfg.policy,
        bootstrap=cfg.bootstrap,
        population_rows=len(p),
    )
    assert sel.chosen == "good"
