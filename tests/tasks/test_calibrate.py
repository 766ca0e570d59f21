"""Cross-fitted calibration: out-of-fold calibrators, one served estimator, segment sigmoid."""

from __future__ import annotations

import dataclasses
import pickle
from typing import Any

import numpy as np
import pandas as pd
import pytest
from scipy.special import expit, logit
from sklearn.base import clone
from sklearn.metrics import log_loss
from sklearn.model_selection import StratifiedKFold, cross_val_predict

from tasks.calibrate import (
    METHOD_COMPLEXITY,
    CalibratedPipeline,
    SegmentSigmoid,
    calibrate,
    choose_method,
    cross_fit_fold_count,
    cross_fit_folds,
    decision_and_probability,
    fit_cross_fold,
    out_of_fold_scores,
    plan_cross_fits,
)
from tasks.train_candidates import train_candidate

from ..conftest import generator_splits


@pytest.fixture(scope="module")
def splits(tmp_path_factory):
    return generator_splits(tmp_path_factory.mktemp("ws"), 4000)


def test_calibrate_serves_one_estimator_around_the_candidates_own_pipeline(splits) -> None:
    cfg, s = splits
    cand = train_candidate(s, name="logistic_regression", config=cfg.candidates)
    forced = cfg.calibration.model_copy(update={"methods": ["sigmoid"]})
    c = calibrate(cand, s, config=forced)
    est = c.estimator
    assert isinstance(est, CalibratedPipeline) and est.method == "sigmoid"
    assert est.pipeline is cand.estimator  # fitted on all train rows, not refitted
    X = s.X("test")
    again = pickle.loads(pickle.dumps(est))
    assert np.array_equal(again.predict_proba(X), est.predict_proba(X))
    assert c.oof_log_loss is not None and set(c.oof_log_loss) == {"sigmoid"}
    assert "out-of-fold train rows" in c.reason


def test_out_of_fold_scores_differ_from_in_sample_scores(splits) -> None:
    cfg, s = splits
    cand = train_candidate(s, name="random_forest", config=cfg.candidates)
    X, y = s.X("train"), s.y("train")
    oof, response = out_of_fold_scores(cand, X, y, config=cfg.calibration)
    assert response == "predict_proba" and oof.shape == (len(y),)
    in_sample = cand.predict(X)
    # a forest is overconfident on rows it was fitted on; out of fold it is not
    assert log_loss(y, np.clip(oof, 1e-6, 1 - 1e-6)) > log_loss(y, in_sample)
    again, _ = out_of_fold_scores(cand, X, y, config=cfg.calibration)
    assert np.array_equal(oof, again)  # folds seeded from config


def test_out_of_fold_scores_same_on_several_threads(splits) -> None:
    cfg, s = splits
    X, y = s.X("train"), s.y("train")
    for name in ("gradient_boosting", "random_forest"):
        cand = train_candidate(s, name=name, config=cfg.candidates)
        one, _ = out_of_fold_scores(cand, X, y, config=cfg.calibration)
        two, _ = out_of_fold_scores(cand, X, y, config=cfg.calibration, threads=2)
        assert np.array_equal(one, two)  # folds fitted at once: bit for bit the same scores


def test_out_of_fold_scores_on_every_row_equal_sklearns_cross_val_predict(splits) -> None:
    cfg, s = splits
    X, y = s.X("train"), s.y("train")
    folds = StratifiedKFold(
        cfg.calibration.cv_folds, shuffle=True, random_state=cfg.calibration.seed
    )
    for name in ("gradient_boosting", "random_forest", "logistic_regression"):
        cand = train_candidate(s, name=name, config=cfg.candidates)
        oof, response = out_of_fold_scores(cand, X, y, config=cfg.calibration)
        ref = np.asarray(cross_val_predict(clone(cand.estimator), X, y, cv=folds, method=response))
        assert np.array_equal(oof, ref[:, 1] if ref.ndim == 2 else ref)


def test_cross_fit_folds_withhold_at_most_one_cv_share_of_the_rows() -> None:
    rng = np.random.default_rng(1)
    y = (rng.random(10_000) < 0.2).astype(np.int64)
    every = cross_fit_folds(y, cv_folds=5, seed=7)
    ref = StratifiedKFold(5, shuffle=True, random_state=7).split(np.zeros(len(y)), y)
    for (fit, scored), (ref_fit, ref_scored) in zip(every, ref, strict=True):
        assert np.array_equal(fit, ref_fit) and np.array_equal(scored, ref_scored)
    for held_rows, k in ((4_000, 2), (5_000, 3), (1_000, 2), (9_000, 5)):
        assert cross_fit_fold_count(len(y), held_rows, 5) == k
        held = np.sort(rng.choice(len(y), held_rows, replace=False))
        folds = cross_fit_folds(y, held, cv_folds=5, seed=7)
        assert len(folds) == k
        scored_all = np.concatenate([sc for _, sc in folds])
        assert np.array_equal(np.sort(scored_all), held)  # each held-out row scored once
        for fit, scored in folds:
            assert len(np.intersect1d(fit, scored)) == 0
            assert len(fit) + len(scored) == len(y)  # the model fits on every other row
            assert len(fit) >= len(y) * 4 / 5 - 1  # no fold withholds more than 1/cv_folds
            share = y[scored].mean()
            assert abs(share - y[held].mean()) < 0.03  # stratified


def test_out_of_fold_scores_on_held_out_rows_fit_on_the_other_rows(splits) -> None:
    cfg, s = splits
    X, y = s.X("train"), s.y("train")
    cand = train_candidate(s, name="logistic_regression", config=cfg.candidates)
    held = np.sort(np.random.default_rng(2).choice(len(y), len(y) // 3, replace=False))
    oof, _ = out_of_fold_scores(cand, X, y, config=cfg.calibration, held_out=held)
    assert oof.shape == (len(held),)
    for fit, scored in cross_fit_folds(
        y, held, cv_folds=cfg.calibration.cv_folds, seed=cfg.calibration.seed
    ):
        model = clone(cand.estimator).fit(X.iloc[fit], y[fit])
        expected = model.decision_function(X.iloc[scored])
        assert np.array_equal(oof[np.searchsorted(held, scored)], expected)


@pytest.mark.parametrize("max_rows", [None, 1500])
def test_fit_cross_fold_before_training_gives_calibrate_the_same_result(splits, max_rows) -> None:
    """The flow fits the folds beside the candidates (no fitted candidate needed) and hands
    them to ``calibrate``: the same calibration as ``calibrate`` cross-fitting by itself."""
    cfg, s = splits
    names = ("gradient_boosting", "random_forest", "logistic_regression")
    plans = plan_cross_fits(
        s, names=names, candidates=cfg.candidates, config=cfg.calibration, max_rows=max_rows
    )
    for name in names:
        plan = plans[name]
        folds = [
            fit_cross_fold(plan, i, s, candidates=cfg.candidates) for i in range(len(plan.folds))
        ]
        cand = train_candidate(s, name=name, config=cfg.candidates)
        own = calibrate(cand, s, config=cfg.calibration, max_rows=max_rows)
        given = calibrate(cand, s, config=cfg.calibration, max_rows=max_rows, out_of_fold=folds)
        assert given.reason == own.reason and given.method == own.method
        assert given.oof_log_loss == own.oof_log_loss
        assert given.selection_p is not None and own.selection_p is not None
        assert np.array_equal(given.selection_p, own.selection_p)


def test_segment_sigmoid_fits_a_segment_with_its_own_slope() -> None:
    rng = np.random.default_rng(0)
    n = 20_000
    seg = np.where(rng.random(n) < 0.1, "rare", "common")
    s = rng.normal(0, 1.5, n)
    true_logit = np.where(seg == "rare", -1.0 + 0.3 * s, s)
    y = (rng.random(n) < expit(true_logit)).astype(int)
    frame = pd.DataFrame({"seg": seg})
    cal = SegmentSigmoid(("seg",), C=1.0).fit(s, y, {"seg": frame["seg"]})
    p = cal.predict(s, {"seg": frame["seg"]})
    rare = seg == "rare"
    overall = expit(s)  # what one sigmoid for everyone would say
    assert log_loss(y[rare], p[rare]) < log_loss(y[rare], overall[rare]) - 0.05
    assert np.allclose(logit(p[rare]), true_logit[rare], atol=0.3)
    unseen = cal.predict(s[:5], {"seg": ["atlantis"] * 5})
    assert np.allclose(unseen, expit(cal.coef_[0] * s[:5] + cal.intercept_))


def test_calibrate_chooses_the_method_by_selection_log_loss(splits) -> None:
    cfg, s = splits
    cand = train_candidate(s, name="gradient_boosting", config=cfg.candidates)
    c = calibrate(cand, s, config=cfg.calibration)
    assert set(c.selection_metrics) == {"none", "sigmoid", "isotonic", "segment_sigmoid"}
    losses = {m: v["log_loss"] for m, v in c.selection_metrics.items()}
    lowest = min(losses, key=lambda m: losses[m])
    rank = METHOD_COMPLEXITY.index
    assert c.method == lowest or rank(c.method) < rank(lowest)  # only ever a simpler one
    assert "lowest selection log loss" in c.reason
    assert c.oof_log_loss is not None and "none" not in c.oof_log_loss
    p = c.predict(s.X("selection"))
    assert np.isclose(log_loss(s.y("selection"), p), losses[c.method], atol=1e-6)


def test_choose_method_keeps_the_simpler_method_unless_beaten_beyond_noise() -> None:
    rng = np.random.default_rng(1)
    base = rng.exponential(0.45, 2000)
    noisy_gain = base - 0.002 + rng.normal(0, 0.2, 2000)  # lower on average, within noise
    clear_gain = base - 0.05 + rng.normal(0, 0.01, 2000)  # lower beyond noise
    chosen, gaps = choose_method({"sigmoid": base, "isotonic": noisy_gain}, z=1.96)
    assert chosen == "sigmoid" and gaps["isotonic"] == (0.0, 0.0)
    assert 0 < gaps["sigmoid"][0] <= gaps["sigmoid"][1]
    assert choose_method({"sigmoid": base, "isotonic": clear_gain}, z=1.96)[0] == "isotonic"
    assert choose_method({"sigmoid": base, "isotonic": noisy_gain}, z=0.0)[0] == "isotonic"


def test_calibrate_leaves_out_segment_sigmoid_without_categorical_segments(splits) -> None:
    cfg, s = splits
    no_segments = dataclasses.replace(
        s, roles=s.roles.__class__(**{**s.roles.__dict__, "segment_columns": ()})
    )
    cand = train_candidate(no_segments, name="logistic_regression", config=cfg.candidates)
    c = calibrate(cand, no_segments, config=cfg.calibration)
    assert "segment_sigmoid" not in c.selection_metrics
    assert "no categorical segment column" in c.reason


def test_calibrate_cross_fits_on_a_seeded_stratified_sample_above_max_rows(splits) -> None:
    cfg, s = splits
    cand = train_candidate(s, name="logistic_regression", config=cfg.candidates)
    n = len(cand.train_index) if cand.train_index is not None else s.rows["train"]
    sampled = calibrate(cand, s, config=cfg.calibration, max_rows=n // 2, seed=3)
    assert f"sample of {n // 2} of its {n} train rows" in sampled.reason
    k = cross_fit_fold_count(n, n // 2, cfg.calibration.cv_folds)
    assert k == 3 and sampled.cv_folds == k  # ceil(5 x 1/2): fold models fit on 5/6 of train
    assert f"fitted on {n // 2} out-of-fold train rows ({k} folds)" in sampled.reason
    assert f"models each fit on at least {n - -(-(n // 2) // k)} of them" in sampled.reason
    again = calibrate(cand, s, config=cfg.calibration, max_rows=n // 2, seed=3)
    assert again.oof_log_loss == sampled.oof_log_loss  # seeded
    every = calibrate(cand, s, config=cfg.calibration, max_rows=n)  # at the cap: all rows
    assert "calibration_max_rows" not in every.reason
    assert every.oof_log_loss == calibrate(cand, s, config=cfg.calibration).oof_log_loss


def test_decision_and_probability_equal_the_two_public_calls(splits) -> None:
    cfg, s = splits
    X = s.X("test")
    for name in ("gradient_boosting", "logistic_regression"):
        pipe: Any = train_candidate(s, name=name, config=cfg.candidates).estimator
        decision, proba = decision_and_probability(pipe, X)
        assert np.array_equal(decision, pipe.decision_function(X))
        assert np.array_equal(proba, pipe.predict_proba(X)[:, 1])


def test_predict_with_raw_equals_predict_and_raw_predict(splits) -> None:
    cfg, s = splits
    X = s.X("test")
    for name in ("gradient_boosting", "random_forest", "logistic_regression"):
        cand = train_candidate(s, name=name, config=cfg.candidates)
        for method in ("none", "sigmoid", "segment_sigmoid"):
            forced = cfg.calibration.model_copy(update={"methods": [method]})
            c = calibrate(cand, s, config=forced)
            p, p_raw = c.predict_with_raw(X)
            assert np.array_equal(p, c.predict(X)), (name, method)
            assert np.array_equal(p_raw, c.raw.predict(X)), (name, method)
