from __future__ import annotations

import numpy as np
import pytest
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline

from configs.settings import build_config
from serving.fast_scorer import UnsupportedPipeline, compile_scorer
from tasks.calibrate import calibration_segments, fit_calibrator
from tasks.load_data import load_data
from tasks.split_data import split_data
from tasks.train_candidates import CANDIDATE_NAMES, build_preprocessor, train_candidate
from tasks.validate_data import validate_table


@pytest.fixture(scope="module")
def splits():
    cfg = build_config(
        {"synthetic": {"rows": 5000}, "candidates": {"random_forest": {"n_estimators": 20}}}
    )
    t = validate_table(load_data(cfg).frame, config=cfg)
    assert t.validated.frame is not None
    return cfg, split_data(t.validated.frame, roles=t.roles, config=cfg.split)


@pytest.mark.parametrize("name", CANDIDATE_NAMES)
@pytest.mark.parametrize("method", ["none", "sigmoid", "isotonic", "segment_sigmoid"])
def test_fast_scorer_matches_sklearn_exactly(splits, name: str, method: str) -> None:
    cfg, s = splits
    model = train_candidate(s, name=name, config=cfg.candidates)
    est = fit_calibrator(
        model.estimator,
        s.X("selection"),
        s.y("selection"),
        method=method,
        segment_columns=calibration_segments(s.roles),
    )
    X = s.X("test")
    fast = compile_scorer(est).score_frame(X).probability
    ref = est.predict_proba(X)[:, 1]  # type: ignore[attr-defined]
    assert np.max(np.abs(fast - ref)) <= 1e-12
    one = compile_scorer(est).score({c: [X[c].iat[0]] for c in X.columns}).probability
    assert one[0] == pytest.approx(ref[0], abs=1e-12)


def test_fast_scorer_flags_missing_and_unknown(splits) -> None:
    cfg, s = splits
    est = train_candidate(s, name="logistic_regression", config=cfg.candidates).estimator
    # loaded tables keep text as categories; a served request holds plain text, which can
    # carry a value training never saw
    X = s.X("test").head(3).astype({"region": str})
    X.loc[X.index[0], "usage_gb_30d"] = np.nan
    X.loc[X.index[1], "region"] = "atlantis"
    out = compile_scorer(est).score_frame(X)
    assert out.imputed["usage_gb_30d"].tolist() == [True, False, False]
    assert out.unknown["region"].tolist() == [False, True, False]
    ref = est.predict_proba(X)[:, 1]  # type: ignore[union-attr]
    assert np.allclose(out.probability, ref, atol=1e-12)


def test_fast_scorer_refuses_unknown_pipelines(splits) -> None:
    _, s = splits
    pre = build_preprocessor(s.roles)
    pipe = Pipeline([("prep", pre), ("model", LogisticRegression())]).fit(
        s.X("train"), s.y("train")
    )
    with pytest.raises(UnsupportedPipeline, match="preprocess"):
        compile_scorer(pipe)
