"""Candidate scoring: a gradient-boosting pipeline's trees read binned give sklearn's values."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from sklearn.ensemble import HistGradientBoostingClassifier

from tasks.train_candidates import binary_boosting, pipeline_scores, train_candidate, tree_sums

from ..conftest import generator_splits


def test_tree_sums_equal_sklearns_raw_predict_at_every_bin_edge_and_on_missing_values() -> None:
    rng = np.random.default_rng(3)
    X = rng.normal(size=(3000, 4))
    X[rng.random(X.shape) < 0.05] = np.nan  # missing values seen in fit
    X[:, 3] = np.round(X[:, 3], 1)  # few distinct values: edges between them
    y = (np.nan_to_num(X[:, 0]) + np.nan_to_num(X[:, 3]) + rng.normal(size=3000) > 0).astype(int)
    model = HistGradientBoostingClassifier(max_iter=60, random_state=0).fit(X, y)
    edges = model._bin_mapper.bin_thresholds_
    n = max(len(e) for e in edges)
    # every bin edge exactly, just above it, missing and infinite values, out of range
    probe = np.full((4 * n + 4, 4), np.nan)
    for j, e in enumerate(edges):
        probe[: len(e), j] = e
        probe[n : n + len(e), j] = np.nextafter(e, np.inf)
        probe[2 * n : 2 * n + len(e), j] = np.nextafter(e, -np.inf)
    probe[-4:] = [[np.inf] * 4, [-np.inf] * 4, [1e300] * 4, [-1e300] * 4]
    probe[3 * n : 4 * n] = rng.normal(size=(n, 4)) * 10
    assert np.array_equal(tree_sums(model, probe), model._raw_predict(probe))


def test_pipeline_scores_equal_the_public_calls_bit_for_bit(tmp_path_factory) -> None:
    cfg, s = generator_splits(tmp_path_factory.mktemp("ws"), 3000)
    X = s.X("test")
    for name in ("gradient_boosting", "random_forest", "logistic_regression"):
        pipe = train_candidate(s, name=name, config=cfg.candidates).estimator
        assert (binary_boosting(pipe) is not None) == (name == "gradient_boosting")
        expected = pipe.predict_proba(X)[:, 1]  # type: ignore[union-attr]
        assert np.array_equal(pipeline_scores(pipe, X, "predict_proba"), expected)
        if hasattr(pipe, "decision_function"):
            decision = pipe.decision_function(X)  # type: ignore[union-attr]
            assert np.array_equal(pipeline_scores(pipe, X, "decision_function"), decision)


@pytest.mark.parametrize("response", ["decision_function", "predict_proba"])
def test_pipeline_scores_of_a_model_on_categorical_splits_use_sklearn(response) -> None:
    rng = np.random.default_rng(4)
    X = pd.DataFrame({"plan": rng.integers(0, 5, 2000), "usage": rng.normal(size=2000)})
    y = (X["plan"] > 2).astype(int).to_numpy()
    model = HistGradientBoostingClassifier(max_iter=20, categorical_features=[0]).fit(X, y)
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import FunctionTransformer

    pipe = make_pipeline(FunctionTransformer(), model)
    assert binary_boosting(pipe) is None  # categorical splits: sklearn's own path
    expected = getattr(pipe, response)(X)
    expected = expected[:, 1] if expected.ndim == 2 else expected
    assert np.array_equal(pipeline_scores(pipe, X, response), expected)
