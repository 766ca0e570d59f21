"""Baselines and candidate pipelines under one shared preprocessing definition.

Every candidate is an sklearn ``Pipeline(preprocess, model)`` fitted on the train split only,
so preprocessing statistics (medians, scales, categories) come from train alone. Calibration
(``tasks.calibrate``) refits clones of it out of fold on the same train rows.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.compose import ColumnTransformer
from sklearn.dummy import DummyClassifier
from sklearn.ensemble import (
    HistGradientBoostingClassifier,
    HistGradientBoostingRegressor,
    RandomForestClassifier,
    RandomForestRegressor,
)
from sklearn.impute import SimpleImputer
from sklearn.linear_model import LogisticRegression, Ridge
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import OneHotEncoder, StandardScaler
from sklearn.utils.validation import check_is_fitted

from configs.settings import CandidatesConfig
from tasks.load_data import ColumnRoles
from tasks.split_data import Splits

log = logging.getLogger(__name__)

CANDIDATE_NAMES = ("logistic_regression", "random_forest", "gradient_boosting")
BASELINE_NAMES = ("majority", "stratified", "rule")


@dataclass(frozen=True)
class TrainedModel:
    """A fitted estimator (``predict_proba`` on the feature frame) or the reason it failed."""

    name: str
    kind: str  # "candidate" or "baseline"
    estimator: object | None
    params: dict[str, object] = field(default_factory=dict)
    fit_seconds: float = 0.0
    train_rows: int = 0
    error: str | None = None
    train_index: np.ndarray | None = None  # positions in the train split it was fitted on

    @property
    def ok(self) -> bool:
        return self.estimator is not None and self.error is None

    def predict(self, X: pd.DataFrame) -> np.ndarray:  # noqa: N803
        """Churn probability per row."""
        if self.estimator is None:
            raise RuntimeError(f"{self.name} has no fitted estimator: {self.error}")
        return pipeline_scores(self.estimator, X, "predict_proba")


def binary_boosting(pipeline: Any) -> Any:
    """The final ``HistGradientBoostingClassifier`` of a binary, numeric-split ``pipeline``
    whose trees :func:`tree_sums` can read (None for anything else)."""
    model = pipeline.steps[-1][1] if isinstance(pipeline, Pipeline) else None
    if not isinstance(model, HistGradientBoostingClassifier):
        return None
    categorical = getattr(model, "is_categorical_", None)
    readable = (
        getattr(model, "n_trees_per_iteration_", None) == 1
        and (categorical is None or not np.any(categorical))
        and all(
            hasattr(model, a)
            for a in (
                "_preprocess_X",
                "_bin_mapper",
                "_predictors",
                "_predict_iterations",
                "_baseline_prediction",
                "_loss",
            )
        )
    )
    return model if readable else None


def tree_sums(model: Any, Xt: Any) -> np.ndarray:  # noqa: N803
    """``model._raw_predict(Xt)`` (rows x 1, log-odds) read from the trees' binned form, as
    sklearn scores its own early-stopping rows during ``fit``.

    Exact, not approximate: a split sends a row left when ``x <= threshold``, the threshold
    being the upper edge of bin ``b`` of that feature's bin edges, and the bin mapper puts
    ``x`` in the first bin whose edge is ``>= x``; so ``x <= edge[b]`` exactly when
    ``bin(x) <= b``, and a missing value goes to the missing bin, which each node sends the way
    it sends ``NaN``. The same leaves are summed in the same order (bit for bit, tested).
    The trees then compare one-byte bins instead of floats: about a quarter less CPU."""
    from sklearn.utils._openmp_helpers import _openmp_effective_n_threads

    X = model._preprocess_X(Xt, reset=False)  # noqa: N806
    binned = model._bin_mapper.transform(X)
    sums = np.zeros((X.shape[0], 1), dtype=model._baseline_prediction.dtype, order="F")
    sums += model._baseline_prediction
    model._predict_iterations(
        binned, model._predictors, sums, True, _openmp_effective_n_threads(None)
    )
    return sums


def pipeline_scores(estimator: object, X: pd.DataFrame, response: str) -> np.ndarray:  # noqa: N803
    """The uncalibrated score ``response`` (``decision_function`` or ``predict_proba``) of a
    fitted binary ``estimator`` per row (1-d float array); a gradient-boosting pipeline's
    trees are read binned (:func:`tree_sums`, the same values)."""
    model = binary_boosting(estimator)
    if model is not None and response in ("decision_function", "predict_proba"):
        sums = tree_sums(model, estimator[:-1].transform(X))  # type: ignore[index]
        if response == "decision_function":
            return np.asarray(sums.ravel(), dtype=float)
        return np.asarray(model._loss.predict_proba(sums), dtype=float)[:, 1]
    out = np.asarray(getattr(estimator, response)(X), dtype=float)
    return out[:, 1] if out.ndim == 2 else out


def build_preprocessor(roles: ColumnRoles) -> ColumnTransformer:
    """Imputation + scaling for numeric features, imputation + one-hot (unknown categories
    ignored) for categorical ones. Dense output, so every model can consume it."""
    numeric = Pipeline(
        [
            ("impute", SimpleImputer(strategy="median", add_indicator=True)),
            ("scale", StandardScaler()),
        ]
    )
    categorical = Pipeline(
        [
            ("impute", SimpleImputer(strategy="constant", fill_value="(missing)")),
            ("onehot", OneHotEncoder(handle_unknown="ignore", sparse_output=False)),
        ]
    )
    return ColumnTransformer(
        [
            ("numeric", numeric, list(roles.numeric)),
            ("categorical", categorical, list(roles.categorical)),
        ],
        remainder="drop",
        sparse_threshold=0.0,
        verbose_feature_names_out=False,
    )


def build_model(name: str, *, config: CandidatesConfig, regressor: bool = False) -> BaseEstimator:
    """The unfitted model of candidate ``name`` with its configured settings: the classifier,
    or with ``regressor`` the same family as a regressor (ridge for the logistic model, with
    alpha = 1 / C), which the X-learner's effect stage fits."""
    if name == "logistic_regression":
        lr = config.logistic_regression
        if regressor:
            return Ridge(alpha=1.0 / lr.C)
        return LogisticRegression(C=lr.C, max_iter=lr.max_iter)
    if name == "random_forest":
        rf = config.random_forest
        forest = RandomForestRegressor if regressor else RandomForestClassifier
        return forest(
            n_estimators=rf.n_estimators,
            min_samples_leaf=rf.min_samples_leaf,
            max_samples=rf.max_samples,
            max_depth=rf.max_depth,
            n_jobs=config.n_jobs,
            random_state=config.seed,
        )
    if name == "gradient_boosting":
        gb = config.gradient_boosting
        boosting = HistGradientBoostingRegressor if regressor else HistGradientBoostingClassifier
        return boosting(
            learning_rate=gb.learning_rate,
            max_iter=gb.max_iter,
            max_leaf_nodes=gb.max_leaf_nodes,
            min_samples_leaf=gb.min_samples_leaf,
            l2_regularization=gb.l2_regularization,
            early_stopping=True,
            validation_fraction=gb.validation_fraction,
            n_iter_no_change=gb.n_iter_no_change,
            random_state=config.seed,
        )
    raise ValueError(f"unknown candidate {name!r}; expected one of {CANDIDATE_NAMES}")


def build_candidate(name: str, roles: ColumnRoles, *, config: CandidatesConfig) -> Pipeline:
    """The unfitted pipeline for candidate ``name``."""
    model = build_model(name, config=config)
    return Pipeline([("preprocess", build_preprocessor(roles)), ("model", model)])


def enabled_candidates(config: CandidatesConfig) -> tuple[str, ...]:
    return tuple(n for n in CANDIDATE_NAMES if getattr(config, n).enabled)


def train_rows(name: str, n: int, config: CandidatesConfig) -> np.ndarray:
    """Sorted train positions candidate ``name`` fits on (of ``n``): all, or a seeded
    subsample of ``random_forest.max_train_rows`` for the forest."""
    cap = config.random_forest.max_train_rows if name == "random_forest" else n
    if n <= cap:
        return np.arange(n)
    return np.sort(np.random.default_rng(config.seed).choice(n, size=cap, replace=False))


def train_candidate(splits: Splits, *, name: str, config: CandidatesConfig) -> TrainedModel:
    """Fit one candidate on train; a failure is returned, not raised, so others go on."""
    start = time.perf_counter()
    rows = train_rows(name, splits.rows["train"], config)
    try:
        pipeline = build_candidate(name, splits.roles, config=config)
        pipeline.fit(splits.X("train").iloc[rows], splits.y("train")[rows])
    except Exception as exc:  # recorded as a failed candidate; the flow goes on
        log.exception("candidate %s failed", name)
        return TrainedModel(name, "candidate", None, error=f"{type(exc).__name__}: {exc}")
    params: dict[str, object] = {
        f"model__{k}": v
        for k, v in pipeline.named_steps["model"].get_params().items()
        if isinstance(v, int | float | str | bool) or v is None
    }
    return TrainedModel(
        name,
        "candidate",
        pipeline,
        params=params,
        fit_seconds=round(time.perf_counter() - start, 3),
        train_rows=len(rows),
        train_index=rows,
    )


class RuleBaseline(ClassifierMixin, BaseEstimator):
    """The best single-feature rule found on train: ``feature > cut`` (or ``<``, or
    ``== category``) flags churners; its probability is the churn rate on each side."""

    def __init__(self, roles: ColumnRoles, quantiles: int = 20) -> None:
        self.roles = roles
        self.quantiles = quantiles

    def fit(self, X: pd.DataFrame, y: np.ndarray) -> RuleBaseline:  # noqa: N803
        y = np.asarray(y)
        best: tuple[float, str, str, float | str] = (-np.inf, "", "", 0.0)
        base = y.mean()
        for col in self.roles.numeric:
            x = X[col].to_numpy(dtype=float)
            fill = np.nanmedian(x) if np.isfinite(x).any() else 0.0
            x = np.where(np.isnan(x), fill, x)
            for cut in np.unique(np.quantile(x, np.linspace(0.05, 0.95, self.quantiles))):
                for op in (">", "<="):
                    flag = x > cut if op == ">" else x <= cut
                    score = self._score(flag, y, base)
                    if score > best[0]:
                        best = (score, col, op, float(cut))
        for col in self.roles.categorical:
            x = X[col].astype(str).to_numpy()
            for value in pd.unique(x):
                score = self._score(x == value, y, base)
                if score > best[0]:
                    best = (score, col, "==", str(value))
        _, self.feature_, self.op_, self.cut_ = best
        flag = self._flag(X)
        self.rate_in_ = float(y[flag].mean()) if flag.any() else float(base)
        self.rate_out_ = float(y[~flag].mean()) if (~flag).any() else float(base)
        self.classes_ = np.array([0, 1])
        return self

    @staticmethod
    def _score(flag: np.ndarray, y: np.ndarray, base: float) -> float:
        """Youden-like gain: recall minus false-positive rate of the flagged group."""
        if flag.all() or not flag.any():
            return -np.inf
        pos = y == 1
        return float(flag[pos].mean() - flag[~pos].mean())

    def _flag(self, X: pd.DataFrame) -> np.ndarray:  # noqa: N803
        if self.op_ == "==":
            out: np.ndarray = X[self.feature_].astype(str).to_numpy() == self.cut_
            return out
        x = X[self.feature_].to_numpy(dtype=float)
        cut = float(self.cut_)
        return np.where(np.isnan(x), False, x > cut if self.op_ == ">" else x <= cut)

    def predict_proba(self, X: pd.DataFrame) -> np.ndarray:  # noqa: N803
        check_is_fitted(self, "feature_")
        p = np.where(self._flag(X), self.rate_in_, self.rate_out_)
        return np.column_stack([1 - p, p])

    def describe(self) -> str:
        return f"{self.feature_} {self.op_} {self.cut_}"


def train_baselines(splits: Splits, *, config: CandidatesConfig) -> tuple[TrainedModel, ...]:
    """Majority class, stratified random, and the best one-feature rule, all fit on train."""
    X, y = splits.X("train"), splits.y("train")
    out = []
    for name, est in (
        ("majority", DummyClassifier(strategy="prior")),
        ("stratified", DummyClassifier(strategy="stratified", random_state=config.seed)),
        ("rule", RuleBaseline(splits.roles, quantiles=config.rule_quantiles)),
    ):
        start = time.perf_counter()
        est.fit(X, y)
        params: dict[str, object] = {"strategy": getattr(est, "strategy", "rule")}
        if isinstance(est, RuleBaseline):
            params["rule"] = est.describe()
        out.append(
            TrainedModel(
                name,
                "baseline",
                est,
                params=params,
                fit_seconds=round(time.perf_counter() - start, 3),
                train_rows=len(y),
            )
        )
    return tuple(out)
