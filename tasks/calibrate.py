"""Calibration by cross-fitting, as its own stage.

Out-of-fold scores over the candidate's own train rows (stratified folds, seeded from config)
fit each calibration method once: ``sigmoid`` (Platt), ``isotonic``, and ``segment_sigmoid`` (a
sigmoid whose offset and slope may differ by the value of each categorical segment column,
shrunk towards the overall sigmoid by an L2 penalty). The served model is ONE estimator,
:class:`CalibratedPipeline`: the candidate's pipeline fitted on all of its train rows plus the
chosen calibrator (``ensemble=False`` semantics of ``CalibratedClassifierCV``). The method is
chosen on the selection split by log loss: the simplest method (none, sigmoid,
segment_sigmoid, isotonic) within noise of the lowest. Ranking metrics (ROC-AUC, PR-AUC) are
reported apart from probability metrics.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
from joblib import Parallel, delayed, parallel_backend
from scipy.special import expit
from sklearn.base import BaseEstimator, ClassifierMixin, clone
from sklearn.calibration import _SigmoidCalibration
from sklearn.isotonic import IsotonicRegression
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import StratifiedKFold, cross_val_predict

from configs.settings import CalibrationConfig, CandidatesConfig
from tasks.evaluate import ProbabilityMetrics, ece_table, probability_metrics
from tasks.load_data import ColumnRoles
from tasks.select_policy import row_log_loss
from tasks.split_data import Splits, stratified_sample
from tasks.train_candidates import (
    TrainedModel,
    binary_boosting,
    build_candidate,
    pipeline_scores,
    train_rows,
    tree_sums,
)

log = logging.getLogger(__name__)

MISSING_FILL = "(missing)"  # what the preprocessor's categorical imputer writes


def response_method(estimator: object) -> str:
    """What a calibrator reads from ``estimator``: its decision function (log-odds scale)
    when it has one, else its positive-class probability (as ``CalibratedClassifierCV``)."""
    return "decision_function" if hasattr(estimator, "decision_function") else "predict_proba"


def raw_scores(estimator: object, X: pd.DataFrame, response: str) -> np.ndarray:  # noqa: N803
    """The uncalibrated score ``response`` of ``estimator`` per row (1-d float array); a
    gradient-boosting pipeline's trees are read binned (same values; see
    :func:`tasks.train_candidates.pipeline_scores`)."""
    return pipeline_scores(estimator, X, response)


def decision_and_probability(
    pipeline: Any,
    X: pd.DataFrame,  # noqa: N803
) -> tuple[np.ndarray, np.ndarray]:
    """``(decision_function, predict_proba[:, 1])`` of a fitted binary ``pipeline`` per row.

    A gradient-boosting pipeline (sklearn's ``HistGradientBoostingClassifier``) computes both
    from one pass of its trees (read binned: :func:`tasks.train_candidates.tree_sums`): its
    ``predict_proba`` is its loss's link applied to the very sums its ``decision_function``
    returns, so the two results are bit for bit those of the two public calls at under half
    the cost. Any other pipeline is simply called twice."""
    model = binary_boosting(pipeline)
    if model is not None:
        sums = tree_sums(model, pipeline[:-1].transform(X))
        proba = np.asarray(model._loss.predict_proba(sums), dtype=float)
        return np.asarray(sums.ravel(), dtype=float), proba[:, 1]
    return (
        raw_scores(pipeline, X, "decision_function"),
        raw_scores(pipeline, X, "predict_proba"),
    )


def segment_text(values: Any) -> pd.Series:
    """Segment values as the calibrator reads them: missing as ``MISSING_FILL``, anything
    else as its ``str`` (what the preprocessor's imputer and one-hot encoder see)."""
    raw = values.to_numpy() if isinstance(values, pd.Series) else list(values)
    s = pd.Series(raw, dtype=object)
    return s.astype(str).where(~s.isna().to_numpy(), MISSING_FILL)


def segment_codes(values: Any, mapping: Mapping[str, int]) -> np.ndarray:
    """Position of each value in ``mapping`` (positions 0..k-1 in insertion order; -1:
    a value unseen when the calibrator was fitted)."""
    codes = pd.Categorical(segment_text(values), categories=list(mapping)).codes
    return np.asarray(codes, dtype=np.int64)


class SegmentSigmoid(BaseEstimator):
    """Logistic calibrator on ``[s, onehot(segments), onehot(segments) * s]`` for a raw score
    ``s``: the overall sigmoid plus an offset and a slope change per segment value. An unseen
    segment value gets the overall sigmoid."""

    def __init__(self, columns: Sequence[str] = (), C: float = 1.0) -> None:  # noqa: N803
        self.columns = columns
        self.C = C

    def _onehot(self, segments: Mapping[str, Any], n: int) -> np.ndarray:
        out = np.zeros((n, self.width_), dtype=float)
        for offset, col, mapping in zip(self.offsets_, self.columns, self.categories_, strict=True):
            codes = segment_codes(segments[col], mapping)
            hit = codes >= 0
            out[np.nonzero(hit)[0], offset + codes[hit]] = 1.0
        return out

    def _design(self, raw: np.ndarray, segments: Mapping[str, Any]) -> np.ndarray:
        onehot = self._onehot(segments, len(raw))
        return np.column_stack([raw, onehot, onehot * raw[:, None]])

    def fit(self, raw: np.ndarray, y: np.ndarray, segments: Mapping[str, Any]) -> SegmentSigmoid:
        raw = np.asarray(raw, dtype=float)
        cats: list[dict[str, int]] = []
        offsets: list[int] = []
        width = 0
        for col in self.columns:
            seen = sorted(set(segment_text(segments[col])))
            cats.append({v: i for i, v in enumerate(seen)})
            offsets.append(width)
            width += len(seen)
        self.categories_ = tuple(cats)
        self.offsets_ = tuple(offsets)
        self.width_ = width
        model = LogisticRegression(C=self.C, max_iter=2000)
        model.fit(self._design(raw, segments), np.asarray(y))
        self.coef_ = np.asarray(model.coef_, dtype=float).ravel()
        self.intercept_ = float(model.intercept_[0])
        return self

    def predict(self, raw: np.ndarray, segments: Mapping[str, Any]) -> np.ndarray:
        """Calibrated probability per row from raw scores and the rows' segment values."""
        raw = np.asarray(raw, dtype=float)
        out: np.ndarray = expit(self._design(raw, segments) @ self.coef_ + self.intercept_)
        return out


class CalibratedPipeline(ClassifierMixin, BaseEstimator):
    """A fitted pipeline and a calibrator fitted on its (out-of-fold) raw scores, served as
    one estimator: ``predict_proba(X) = calibrator(raw_score(pipeline, X), segments of X)``.

    Built already fitted (by :func:`fit_calibrator` or :func:`calibrate`); it pickles with
    both parts, and ``serving.fast_scorer`` compiles it. ``fit`` redoes the cross-fit from
    scratch (``cv`` stratified folds seeded by ``random_state``), for sklearn tools that
    refit.
    """

    def __init__(
        self,
        pipeline: Any = None,
        calibrator: Any = None,
        method: str = "sigmoid",
        response: str = "decision_function",
        segment_columns: Sequence[str] = (),
        cv: int = 5,
        random_state: int | None = None,
        segment_c: float = 1.0,
    ) -> None:
        self.pipeline = pipeline
        self.calibrator = calibrator
        self.method = method
        self.response = response
        self.segment_columns = segment_columns
        self.cv = cv
        self.random_state = random_state
        self.segment_c = segment_c

    def fit(self, X: pd.DataFrame, y: np.ndarray) -> CalibratedPipeline:  # noqa: N803
        """Out-of-fold scores of clones of ``pipeline`` fit the calibrator; a clone fitted on
        all rows becomes the served pipeline."""
        y = np.asarray(y)
        base = clone(self.pipeline)
        self.response = response_method(base)
        folds = StratifiedKFold(n_splits=self.cv, shuffle=True, random_state=self.random_state)
        oof = np.asarray(cross_val_predict(base, X, y, cv=folds, method=self.response))
        oof = oof[:, 1] if oof.ndim == 2 else oof
        self.calibrator = _fit_method(
            self.method,
            oof,
            y,
            X,
            segment_columns=self.segment_columns,
            segment_c=self.segment_c,
        )
        self.pipeline = clone(self.pipeline).fit(X, y)
        return self

    @property
    def classes_(self) -> np.ndarray:
        return np.array([0, 1])

    def __sklearn_is_fitted__(self) -> bool:
        return self.pipeline is not None and self.calibrator is not None

    def calibrate_scores(self, raw: np.ndarray, columns: Mapping[str, Any]) -> np.ndarray:
        """Calibrated churn probability from raw scores (``columns``: at least the segment
        columns, as column -> values; used by ``segment_sigmoid`` only)."""
        if self.method == "segment_sigmoid":
            p = self.calibrator.predict(raw, columns)
        else:
            p = self.calibrator.predict(raw)
        return np.asarray(p, dtype=float)

    def predict_proba(self, X: pd.DataFrame) -> np.ndarray:  # noqa: N803
        raw = raw_scores(self.pipeline, X, self.response)
        p = self.calibrate_scores(raw, {c: X[c] for c in self.segment_columns})
        return np.column_stack([1.0 - p, p])

    def predict(self, X: pd.DataFrame) -> np.ndarray:  # noqa: N803
        out: np.ndarray = (self.predict_proba(X)[:, 1] >= 0.5).astype(np.int64)
        return out


def calibration_segments(roles: ColumnRoles) -> tuple[str, ...]:
    """Segment columns ``segment_sigmoid`` may use: the categorical features among them."""
    return tuple(c for c in roles.segment_columns if c in roles.categorical)


def _fit_method(
    method: str,
    raw: np.ndarray,
    y: np.ndarray,
    X: pd.DataFrame,  # noqa: N803
    *,
    segment_columns: Sequence[str],
    segment_c: float,
) -> object:
    if method == "sigmoid":
        return _SigmoidCalibration().fit(raw, y)
    if method == "isotonic":
        return IsotonicRegression(out_of_bounds="clip").fit(raw, y)
    if method == "segment_sigmoid":
        return SegmentSigmoid(tuple(segment_columns), C=segment_c).fit(
            raw, y, {c: X[c] for c in segment_columns}
        )
    raise ValueError(f"unknown calibration method {method!r}")


def fit_calibrator(
    estimator: object,
    X: pd.DataFrame,  # noqa: N803
    y: np.ndarray,
    *,
    method: str,
    segment_columns: Sequence[str] = (),
    segment_c: float = 1.0,
) -> object:
    """Wrap a fitted estimator with a calibrator fitted on ``(X, y)`` (or return it for
    none). ``X`` must not be rows the estimator was fitted on. ``segment_sigmoid`` reads
    ``segment_columns`` (pass :func:`calibration_segments` of the roles and
    ``CalibrationConfig.segment_C``); without them it is a plain sigmoid."""
    if method == "none":
        return estimator
    response = response_method(estimator)
    raw = raw_scores(estimator, X, response)
    calibrator = _fit_method(
        method, raw, np.asarray(y), X, segment_columns=segment_columns, segment_c=segment_c
    )
    return CalibratedPipeline(
        estimator, calibrator, method, response, tuple(segment_columns), segment_c=segment_c
    )


@dataclass(frozen=True)
class CalibratedModel:
    """A candidate with its chosen calibration; ``estimator`` is exactly what would be served."""

    name: str
    method: str
    estimator: object
    raw: TrainedModel
    selection_metrics: dict[str, dict[str, float]]  # method -> metrics on the selection split
    reason: str
    oof_log_loss: dict[str, float] | None = None  # method -> log loss on the out-of-fold rows
    cv_folds: int = 0
    # ``predict`` of the selection split, kept from the method choice (not re-scored later)
    selection_p: np.ndarray | None = field(default=None, repr=False, compare=False)
    # the candidate's raw (uncalibrated) churn probability on the selection split, kept from
    # the method choice when it was computed there (None: not computed; score it if needed)
    selection_raw: np.ndarray | None = field(default=None, repr=False, compare=False)

    def predict(self, X: pd.DataFrame) -> np.ndarray:  # noqa: N803
        """Calibrated churn probability per row."""
        proba: np.ndarray = self.estimator.predict_proba(X)[:, 1]  # type: ignore[attr-defined]
        return proba

    def predict_with_raw(self, X: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:  # noqa: N803
        """``(predict(X), raw.predict(X))``, the pipeline's pass over ``X`` shared where the
        served estimator calibrates the candidate's own pipeline (bit for bit the two calls)."""
        est = self.estimator
        if est is self.raw.estimator:  # method "none": the candidate itself is served
            p = self.raw.predict(X)
            return p, p
        if (
            isinstance(est, CalibratedPipeline)
            and est.pipeline is self.raw.estimator
            and est.response == "decision_function"
        ):
            decision, p_raw = decision_and_probability(est.pipeline, X)
            p = est.calibrate_scores(decision, {c: X[c] for c in est.segment_columns})
            return p, p_raw
        return self.predict(X), self.raw.predict(X)


METHOD_COMPLEXITY = ("none", "sigmoid", "segment_sigmoid", "isotonic")


def choose_method(
    row_losses: Mapping[str, np.ndarray], *, z: float
) -> tuple[str, dict[str, tuple[float, float]]]:
    """The simplest method (``METHOD_COMPLEXITY`` order) whose selection log loss is within
    noise of the lowest: its mean excess over the lowest is at most ``z`` standard errors
    of the paired per-row difference. A flexible calibrator (isotonic) that wins by less
    than noise on a small selection split is not trusted over a simpler one.

    Returns the method and, per method, (mean excess, ``z`` standard errors) in nats."""
    lowest = min(row_losses, key=lambda m: float(np.mean(row_losses[m])))
    gaps: dict[str, tuple[float, float]] = {}
    for m, loss in row_losses.items():
        d = loss - row_losses[lowest]
        se = float(np.std(d, ddof=1) / np.sqrt(len(d))) if len(d) > 1 else 0.0
        gaps[m] = (float(np.mean(d)), z * se)
    order = sorted(row_losses, key=lambda m: METHOD_COMPLEXITY.index(m))
    chosen = next(m for m in order if gaps[m][0] <= gaps[m][1])
    return chosen, gaps


def cross_fit_fold_count(rows: int, held_out: int, cv_folds: int) -> int:
    """Folds of a cross-fit over ``rows`` fitting rows of which ``held_out`` get an
    out-of-fold score: ``cv_folds`` when all do, else ``ceil(cv_folds * held_out / rows)``
    (at least 2, at most ``cv_folds``): no fold withholds more than ``rows / cv_folds``."""
    if held_out >= rows:
        return cv_folds
    return max(2, min(cv_folds, math.ceil(cv_folds * held_out / rows)))


def cross_fit_folds(
    y: np.ndarray, held_out: np.ndarray | None = None, *, cv_folds: int, seed: int
) -> list[tuple[np.ndarray, np.ndarray]]:
    """Cross-fit folds over ``len(y)`` fitting rows: ``(fit positions, scored positions)``
    per fold, both sorted. The scored positions of the folds partition ``held_out`` (sorted
    positions of the rows that get an out-of-fold score; all rows when None), stratified by
    label and seeded; each fold's model fits on every other row.

    With every row held out this is ``StratifiedKFold(cv_folds)``: each fold model fits on
    ``(cv_folds - 1)/cv_folds`` of the rows. With fewer held out (``m`` of ``n``) it takes
    ``ceil(cv_folds * m / n)`` folds (at least 2): each fold then withholds at most
    ``n / cv_folds`` rows, so every fold model still fits on at least that share of the rows,
    as close to the model fitted on all of them as the full cross-fit, for fewer fits."""
    n = len(y)
    positions = np.arange(n) if held_out is None else np.asarray(held_out)
    m = len(positions)
    folds = StratifiedKFold(
        n_splits=cross_fit_fold_count(n, m, cv_folds), shuffle=True, random_state=seed
    )
    out = []
    for _, scored in folds.split(np.zeros(m), y[positions]):
        rows = positions[scored]
        keep = np.ones(n, dtype=bool)
        keep[rows] = False
        out.append((np.flatnonzero(keep), rows))
    return out


@dataclass(frozen=True)
class CrossFitPlan:
    """A candidate's cross-fit, fixed before anything is fitted. ``fit_rows``: the train
    positions the candidate fits on (sorted); ``held``: positions within them that get an
    out-of-fold score (sorted; all when None); ``folds``: ``(fit, scored)`` positions within
    ``fit_rows`` (:func:`cross_fit_folds`), none when no calibration method needs scores."""

    name: str
    fit_rows: np.ndarray = field(repr=False)
    held: np.ndarray | None = field(repr=False)
    folds: tuple[tuple[np.ndarray, np.ndarray], ...] = field(repr=False)

    @property
    def scored_rows(self) -> int:
        return len(self.fit_rows) if self.held is None else len(self.held)


def plan_cross_fit(
    name: str,
    fit_rows: np.ndarray,
    y_train: np.ndarray,
    *,
    config: CalibrationConfig,
    max_rows: int | None = None,
    seed: int = 0,
) -> CrossFitPlan:
    """The cross-fit of candidate ``name`` fitted on train positions ``fit_rows`` (labels of
    all train rows: ``y_train``). Above ``max_rows`` fitting rows a label-stratified sample of
    that many (seeded by ``seed``) is scored, in :func:`cross_fit_fold_count` folds."""
    y_fit = y_train[fit_rows]
    held = (
        stratified_sample(y_fit, max_rows, seed=seed)
        if max_rows is not None and len(fit_rows) > max_rows
        else None
    )
    needs_scores = any(m != "none" for m in config.methods)
    folds = (
        tuple(cross_fit_folds(y_fit, held, cv_folds=config.cv_folds, seed=config.seed))
        if needs_scores
        else ()
    )
    return CrossFitPlan(name, np.asarray(fit_rows), held, folds)


def plan_cross_fits(
    splits: Splits,
    *,
    names: Sequence[str],
    candidates: CandidatesConfig,
    config: CalibrationConfig,
    max_rows: int | None = None,
    seed: int = 0,
) -> dict[str, CrossFitPlan]:
    """:func:`plan_cross_fit` of each candidate in ``names``, on the train rows it fits on."""
    return {
        n: plan_cross_fit(
            n,
            train_rows(n, splits.rows["train"], candidates),
            splits.y("train"),
            config=config,
            max_rows=max_rows,
            seed=seed,
        )
        for n in names
    }


def fit_cross_fold(
    plan: CrossFitPlan, fold: int, splits: Splits, *, candidates: CandidatesConfig
) -> np.ndarray:
    """Fold ``fold`` of ``plan``: a fresh pipeline of the candidate fitted on the fold's fitting
    rows, and its raw scores (the candidate's response) on the fold's scored rows. Needs no
    fitted candidate, so it runs beside the candidate's own fit."""
    fit, scored = plan.folds[fold]
    model = build_candidate(plan.name, splits.roles, config=candidates)
    X = splits.X("train").iloc[plan.fit_rows]  # noqa: N806
    y = splits.y("train")[plan.fit_rows]
    return _fit_and_score(model, X, y, fit, scored, response_method(model))


def assemble_out_of_fold(plan: CrossFitPlan, fold_scores: Sequence[np.ndarray]) -> np.ndarray:
    """The folds' scores in the order of the scored rows (``plan.held``, or all fit rows)."""
    n = len(plan.fit_rows)
    positions = np.arange(n) if plan.held is None else plan.held
    slot = np.empty(n, dtype=np.int64)
    slot[positions] = np.arange(len(positions))
    oof = np.empty(len(positions), dtype=float)
    for (_, scored), scores in zip(plan.folds, fold_scores, strict=True):
        oof[slot[scored]] = scores
    return oof


def _fit_and_score(
    estimator: object,
    X: pd.DataFrame,  # noqa: N803
    y: np.ndarray,
    fit: np.ndarray,
    scored: np.ndarray,
    response: str,
) -> np.ndarray:
    model = clone(estimator).fit(X.iloc[fit], y[fit])  # type: ignore[attr-defined]
    return raw_scores(model, X.iloc[scored], response)


def out_of_fold_scores(
    candidate: TrainedModel,
    X: pd.DataFrame,  # noqa: N803
    y: np.ndarray,
    *,
    config: CalibrationConfig,
    threads: int = 1,
    held_out: np.ndarray | None = None,
) -> tuple[np.ndarray, str]:
    """Raw scores of clones of the candidate's pipeline, each fitted without the rows it
    scores (:func:`cross_fit_folds`: stratified, seeded). ``held_out``: sorted positions of
    the rows of ``X`` to score (all when None); the scores come in that order. Returns the
    scores and the response method. ``threads``: folds fitted at once (threads; each fold's
    fit is seeded and independent of the others, so the scores do not depend on it)."""
    response = response_method(candidate.estimator)
    folds = cross_fit_folds(y, held_out, cv_folds=config.cv_folds, seed=config.seed)
    with parallel_backend("threading", n_jobs=threads):
        scores = Parallel(n_jobs=threads)(
            delayed(_fit_and_score)(candidate.estimator, X, y, fit, scored, response)
            for fit, scored in folds
        )
    plan = CrossFitPlan(candidate.name, np.arange(len(y)), held_out, tuple(folds))
    return assemble_out_of_fold(plan, scores), response


def calibrate(
    candidate: TrainedModel,
    splits: Splits,
    *,
    config: CalibrationConfig,
    max_rows: int | None = None,
    seed: int = 0,
    threads: int = 1,
    out_of_fold: Sequence[np.ndarray] | None = None,
) -> CalibratedModel:
    """Cross-fit each allowed method on the candidate's train rows, pick the simplest one
    within noise of the lowest selection log loss (:func:`choose_method`). The served
    estimator wraps the candidate's own fitted pipeline.

    ``max_rows`` (``scale.calibration_max_rows``): a candidate fitted on more train rows gets
    out-of-fold scores (and its calibrators their fitting rows) on a label-stratified sample
    of that many of them (seeded by ``seed``), in :func:`cross_fit_fold_count` folds whose
    models fit on all its other train rows (:func:`cross_fit_folds`); the reason says so.
    Without it, or at or below it, every train row is scored in ``cv_folds`` folds. ``threads``
    (``scale.evidence_threads``): cross-fit folds fitted at once; the result does not depend
    on it. ``out_of_fold``: the folds' scores already computed by :func:`fit_cross_fold` on
    :func:`plan_cross_fit` with the same arguments (the flow fits them beside the candidate)."""
    if not candidate.ok:
        raise ValueError(f"cannot calibrate failed candidate {candidate.name}: {candidate.error}")
    index = (
        candidate.train_index
        if candidate.train_index is not None
        else np.arange(splits.rows["train"])
    )
    plan = plan_cross_fit(
        candidate.name, index, splits.y("train"), config=config, max_rows=max_rows, seed=seed
    )
    notes = []
    X_fit, y_fit = splits.X("train").iloc[index], splits.y("train")[index]
    held = plan.held
    folds = len(plan.folds) or config.cv_folds
    if held is not None and plan.folds:
        notes.append(
            f"out-of-fold scores on a label-stratified seeded sample of {len(held)} of its "
            f"{len(index)} train rows (scale.calibration_max_rows), in {folds} folds whose "
            f"models each fit on at least {min(len(f) for f, _ in plan.folds)} of "
            f"them (the other rows)"
        )
    X_tr, y_tr = (X_fit, y_fit) if held is None else (X_fit.iloc[held], y_fit[held])
    methods = list(config.methods)
    if "isotonic" in methods and len(y_tr) < config.min_rows_for_isotonic:
        methods.remove("isotonic")
        notes.append(
            f"isotonic not considered: {len(y_tr)} out-of-fold rows < "
            f"{config.min_rows_for_isotonic}"
        )
    segments = calibration_segments(splits.roles)
    if "segment_sigmoid" in methods and not segments:
        methods.remove("segment_sigmoid")
        notes.append("segment_sigmoid not considered: no categorical segment column")
    needs_oof = any(m != "none" for m in methods)
    response = response_method(candidate.estimator)
    if not needs_oof:
        oof = np.zeros(0)
    elif out_of_fold is not None:
        oof = assemble_out_of_fold(plan, out_of_fold)
    else:
        oof, _ = out_of_fold_scores(
            candidate, X_fit, y_fit, config=config, threads=threads, held_out=held
        )
    X_sel, y_sel = splits.X("selection"), splits.y("selection")
    # one pass of the pipeline over selection per response (not one per method): each
    # method's selection probabilities are its calibrator applied to the same raw scores
    p_none: np.ndarray | None = None
    raw_sel: np.ndarray | None = None
    if needs_oof and response == "decision_function" and "none" in methods:
        raw_sel, p_none = decision_and_probability(candidate.estimator, X_sel)
    else:
        if "none" in methods:
            p_none = raw_scores(candidate.estimator, X_sel, "predict_proba")
        if needs_oof:
            same = response == "predict_proba" and p_none is not None
            raw_sel = p_none if same else raw_scores(candidate.estimator, X_sel, response)
    sel_segments = {c: X_sel[c] for c in segments}
    fitted: dict[str, object] = {}
    metrics: dict[str, dict[str, float]] = {}
    oof_loss: dict[str, float] = {}
    row_losses: dict[str, np.ndarray] = {}
    selection_p: dict[str, np.ndarray] = {}
    for method in methods:
        if method == "none":
            est: object = candidate.estimator
        else:
            cal = _fit_method(
                method, oof, y_tr, X_tr, segment_columns=segments, segment_c=config.segment_C
            )
            est = CalibratedPipeline(
                candidate.estimator,
                cal,
                method,
                response,
                segments,
                cv=config.cv_folds,
                random_state=config.seed,
                segment_c=config.segment_C,
            )
            p_oof = est.calibrate_scores(oof, {c: X_tr[c] for c in segments})
            oof_loss[method] = round(
                probability_metrics(y_tr, p_oof, n_bins=config.n_bins).log_loss, 6
            )
        if method == "none":
            assert p_none is not None
            p = p_none
        else:
            assert raw_sel is not None and isinstance(est, CalibratedPipeline)
            p = est.calibrate_scores(raw_sel, sel_segments)
        fitted[method] = est
        selection_p[method] = p
        metrics[method] = probability_metrics(y_sel, p, n_bins=config.n_bins).as_dict()
        row_losses[method] = row_log_loss(y_sel, p)
    best, gaps = choose_method(row_losses, z=config.tie_z)
    losses = ", ".join(
        f"{m}={metrics[m]['log_loss']:.5f} (+{gaps[m][0]:.5f} +/- {gaps[m][1]:.5f})"
        for m in methods
    )
    lowest = min(methods, key=lambda m: metrics[m]["log_loss"])
    why = (
        "lowest selection log loss"
        if best == lowest
        else f"simplest method within noise of the lowest selection log loss ({lowest})"
    )
    reason = (
        f"{why}; log loss and its excess over the lowest (+/- {config.tie_z:g} standard "
        f"errors of the paired difference): {losses}; calibrators fitted on {len(y_tr)} "
        f"out-of-fold train rows ({folds} folds)" + "".join(f"; {n}" for n in notes)
    )
    log.info("calibration for %s: %s (%s)", candidate.name, best, reason)
    return CalibratedModel(
        candidate.name,
        best,
        fitted[best],
        candidate,
        metrics,
        reason,
        oof_log_loss=oof_loss,
        cv_folds=folds,
        selection_p=selection_p[best],
        selection_raw=(
            p_none if p_none is not None else raw_sel if response == "predict_proba" else None
        ),
    )


def reliability_table(
    y: np.ndarray, p_raw: np.ndarray, p_cal: np.ndarray, *, n_bins: int
) -> pd.DataFrame:
    """Reliability by quantile bin for raw and calibrated probabilities (counts per bin)."""
    raw = ece_table(y, p_raw, n_bins=n_bins).assign(kind="raw")
    cal = ece_table(y, p_cal, n_bins=n_bins).assign(kind="calibrated")
    return pd.concat([raw, cal], ignore_index=True)


def segment_calibration(
    frame: pd.DataFrame,
    y: np.ndarray,
    p: np.ndarray,
    *,
    segment_columns: tuple[str, ...],
    n_bins: int,
) -> pd.DataFrame:
    """Per-segment rows, churn rate, mean predicted probability and ECE."""
    rows = []
    for col in segment_columns:
        for value, idx in frame.groupby(col, dropna=False).indices.items():
            yy, pp = y[idx], p[idx]
            m: ProbabilityMetrics | None = None
            if len(np.unique(yy)) == 2:
                m = probability_metrics(yy, pp, n_bins=n_bins)
            rows.append(
                {
                    "segment": f"{col}={value}",
                    "rows": len(idx),
                    "observed_rate": round(float(yy.mean()), 4),
                    "mean_predicted": round(float(pp.mean()), 4),
                    "ece": round(m.ece, 4) if m else None,
                }
            )
    return pd.DataFrame(rows)
