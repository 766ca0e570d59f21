"""Compile a fitted churn pipeline into a numpy scorer for the hot path.

The promoted model is ``Pipeline(preprocess, model)``, optionally wrapped in a calibrator:
``tasks.calibrate.CalibratedPipeline`` (cross-fitted; its ``segment_sigmoid`` calibrator also
reads the segment columns) or, for older artifacts,
``CalibratedClassifierCV(FrozenEstimator(...))``. ``preprocess`` is the ``ColumnTransformer``
built by ``tasks.train_candidates.build_preprocessor``. Building a one-row pandas frame and
running the ``ColumnTransformer`` costs milliseconds per request; here the fitted
preprocessing becomes precomputed arrays (medians, indicator columns, means, scales, one-hot
positions) applied with numpy, in front of the fitted estimator and calibrator, which are
called on a numpy matrix.

Exactness is checked, not assumed: the technical gate compares this scorer with the sklearn
pipeline on the whole test split and records the result; serving refuses a model whose record
lacks a passing check. Anything this compiler does not know raises ``UnsupportedPipeline``.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

MISSING_FILL = "(missing)"
_THREAD = threading.local()


def pin_threads() -> None:
    """Limit OpenMP/BLAS to one thread in the calling thread (once per thread).

    OpenMP's thread count is per thread, so a limit set at start-up does not reach request
    threads; several request threads each spinning OpenMP teams stall badly on 2 cores."""
    if not getattr(_THREAD, "pinned", False):
        from threadpoolctl import threadpool_limits

        threadpool_limits(1)
        _THREAD.pinned = True


class UnsupportedPipeline(TypeError):
    """The fitted pipeline has a step or option the fast scorer cannot reproduce exactly."""


@dataclass(frozen=True)
class NumericBlock:
    columns: tuple[str, ...]
    medians: np.ndarray
    indicator_features: np.ndarray  # positions (in ``columns``) that get a missing indicator
    mean: np.ndarray | None
    scale: np.ndarray | None


@dataclass(frozen=True)
class CategoricalBlock:
    columns: tuple[str, ...]
    categories: tuple[dict[str, int], ...]  # value -> position within the feature's one-hot
    offsets: np.ndarray  # start of each feature's one-hot block in the output
    width: int
    missing_fill: tuple[str, ...]


@dataclass(frozen=True)
class ScoreOutput:
    """Probabilities plus per-row flags for the warnings a caller sees."""

    probability: np.ndarray
    imputed: dict[str, np.ndarray]  # feature -> rows where a missing value was imputed
    unknown: dict[str, np.ndarray]  # feature -> rows with a category unseen in training


def _arrow_text_codes(
    values: pd.Series, mapping: dict[str, int], fill: str
) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
    """(codes, missing, unknown) of an Arrow-backed text column (what a Parquet/Arrow batch
    becomes in pandas), looked up in Arrow without a Python string per row; the same result
    as the generic path (``str`` of a text is itself; missing takes ``fill``'s code). None
    for any other column (the generic path handles it)."""
    import pyarrow as pa
    import pyarrow.compute as pc

    dtype = values.dtype
    if not (
        (isinstance(dtype, pd.StringDtype) and dtype.storage == "pyarrow")
        or (isinstance(dtype, pd.ArrowDtype) and pa.types.is_string(dtype.pyarrow_dtype))
        or (isinstance(dtype, pd.ArrowDtype) and pa.types.is_large_string(dtype.pyarrow_dtype))
    ):
        return None
    arr = pa.array(values)
    if isinstance(arr, pa.ChunkedArray):
        arr = arr.combine_chunks()
    miss = arr.is_null().to_numpy(zero_copy_only=False)
    known = pa.array(list(mapping), type=arr.type)
    found = pc.index_in(arr, value_set=known)
    codes = found.fill_null(-1).to_numpy(zero_copy_only=False).astype(np.int64)
    if miss.any():
        codes[miss] = mapping.get(fill, -1)
    return codes, miss, codes < 0


def _step(obj: Any, name: str) -> Any:
    steps = dict(obj.steps)
    if name not in steps:
        raise UnsupportedPipeline(f"expected a pipeline step named {name!r}")
    return steps[name]


def _compile_numeric(pipe: Any, columns: Sequence[str]) -> NumericBlock:
    from sklearn.impute import SimpleImputer
    from sklearn.preprocessing import StandardScaler

    imputer, scaler = _step(pipe, "impute"), _step(pipe, "scale")
    if not isinstance(imputer, SimpleImputer) or imputer.strategy != "median":
        raise UnsupportedPipeline("numeric imputer must be SimpleImputer(strategy='median')")
    if not isinstance(scaler, StandardScaler):
        raise UnsupportedPipeline("numeric scaler must be StandardScaler")
    if np.isnan(imputer.statistics_).any():
        raise UnsupportedPipeline("a numeric feature had no observed values in train")
    indicator = (
        np.asarray(imputer.indicator_.features_, dtype=np.int64)
        if imputer.add_indicator
        else np.zeros(0, dtype=np.int64)
    )
    return NumericBlock(
        columns=tuple(columns),
        medians=np.asarray(imputer.statistics_, dtype=float),
        indicator_features=indicator,
        mean=None if scaler.mean_ is None else np.asarray(scaler.mean_, dtype=float),
        scale=None if scaler.scale_ is None else np.asarray(scaler.scale_, dtype=float),
    )


def _compile_categorical(pipe: Any, columns: Sequence[str]) -> CategoricalBlock:
    from sklearn.impute import SimpleImputer
    from sklearn.preprocessing import OneHotEncoder

    imputer, onehot = _step(pipe, "impute"), _step(pipe, "onehot")
    if not isinstance(imputer, SimpleImputer) or imputer.strategy != "constant":
        raise UnsupportedPipeline("categorical imputer must be SimpleImputer(strategy='constant')")
    if imputer.add_indicator:
        raise UnsupportedPipeline("categorical missing indicators are not supported")
    if not isinstance(onehot, OneHotEncoder) or onehot.handle_unknown != "ignore":
        raise UnsupportedPipeline(
            "categorical encoder must be OneHotEncoder(handle_unknown='ignore')"
        )
    if onehot.drop is not None or getattr(onehot, "_infrequent_enabled", False):
        raise UnsupportedPipeline(
            "OneHotEncoder with drop or infrequent categories is not supported"
        )
    maps, offsets, pos = [], [], 0
    for cats in onehot.categories_:
        maps.append({str(v): i for i, v in enumerate(cats)})
        offsets.append(pos)
        pos += len(cats)
    fill = str(imputer.fill_value)
    return CategoricalBlock(
        tuple(columns),
        tuple(maps),
        np.asarray(offsets, dtype=np.int64),
        pos,
        tuple(fill for _ in columns),
    )


class FastScorer:
    """Numpy preprocessing + the fitted estimator (+ calibrator), scored on columns of values."""

    def __init__(
        self,
        numeric: NumericBlock,
        categorical: CategoricalBlock,
        model: Any,
        calibrator: Any | None,
        response: str,
        *,
        pin: bool = False,
        calibrator_reads_columns: bool = False,
    ) -> None:
        self.pin = pin
        # True: ``calibrator.calibrate_scores(raw, columns)`` (a CalibratedPipeline)
        self.calibrator_reads_columns = calibrator_reads_columns
        self.numeric = numeric
        self.categorical = categorical
        self.model = model
        self.calibrator = calibrator
        self.response = response  # "decision_function" or "predict_proba"
        self.features = numeric.columns + categorical.columns

    # ------------------------------------------------------------------ inputs
    @staticmethod
    def _numeric_array(values: Sequence[Any] | np.ndarray | pd.Series) -> np.ndarray:
        if isinstance(values, pd.Series):
            return pd.to_numeric(values, errors="coerce").to_numpy(dtype=float)
        arr = np.asarray(values, dtype=object)
        out = np.empty(len(arr), dtype=float)
        for i, v in enumerate(arr):
            out[i] = np.nan if v is None else float(v)
        return out

    def transform(
        self, columns: Mapping[str, Any]
    ) -> tuple[np.ndarray, dict[str, np.ndarray], dict[str, np.ndarray]]:
        """Feature matrix equal to the fitted ``ColumnTransformer``'s output."""
        nb, cb = self.numeric, self.categorical
        n = len(next(iter(columns.values()))) if columns else 0
        imputed: dict[str, np.ndarray] = {}
        unknown: dict[str, np.ndarray] = {}
        num = np.empty((n, len(nb.columns)), dtype=float)
        for j, col in enumerate(nb.columns):
            num[:, j] = self._numeric_array(columns[col])
        missing = np.isnan(num)
        for j, col in enumerate(nb.columns):
            if missing[:, j].any():
                imputed[col] = missing[:, j]
        num = np.where(missing, nb.medians, num)
        if len(nb.indicator_features):
            num = np.hstack([num, missing[:, nb.indicator_features].astype(float)])
        if nb.mean is not None:
            num = num - nb.mean
        if nb.scale is not None:
            num = num / nb.scale
        onehot = np.zeros((n, cb.width), dtype=float)
        for j, col in enumerate(cb.columns):
            codes, miss, unk = self._codes(columns[col], cb.categories[j], cb.missing_fill[j])
            if miss.any():
                imputed[col] = miss
            if unk.any():
                unknown[col] = unk
            hit = codes >= 0
            onehot[np.nonzero(hit)[0], cb.offsets[j] + codes[hit]] = 1.0
        return np.hstack([num, onehot]), imputed, unknown

    @staticmethod
    def _codes(
        values: Any, mapping: dict[str, int], fill: str
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        if isinstance(values, pd.Series) and len(values) > 32:
            text_codes = _arrow_text_codes(values, mapping, fill)
            if text_codes is not None:
                return text_codes
            miss = values.isna().to_numpy()
            text = values.astype(str).where(~miss, fill)
            cats = list(mapping)
            codes = pd.Categorical(text, categories=cats).codes.astype(np.int64)
            return codes, miss, codes < 0
        seq = list(values)
        codes = np.empty(len(seq), dtype=np.int64)
        miss = np.zeros(len(seq), dtype=bool)
        for i, v in enumerate(seq):
            is_missing = v is None or (isinstance(v, float) and math.isnan(v))
            miss[i] = is_missing
            codes[i] = mapping.get(fill if is_missing else str(v), -1)
        return codes, miss, codes < 0

    # ------------------------------------------------------------------ scoring
    def score(self, columns: Mapping[str, Any]) -> ScoreOutput:
        if self.pin:
            pin_threads()
        X, imputed, unknown = self.transform(columns)
        if self.response == "decision_function":
            raw = self.model.decision_function(X)
        else:
            raw = self.model.predict_proba(X)[:, 1]
        if self.calibrator is None:
            p = raw
        elif self.calibrator_reads_columns:
            p = self.calibrator.calibrate_scores(raw, columns)
        else:
            p = self.calibrator.predict(raw)
        return ScoreOutput(np.asarray(p, dtype=float), imputed, unknown)

    def score_frame(self, frame: pd.DataFrame) -> ScoreOutput:
        return self.score({c: frame[c] for c in self.features})


def compile_scorer(estimator: Any, *, pin: bool = False) -> FastScorer:
    """Compile a fitted churn pipeline (optionally inside a frozen calibrator). ``pin``:
    limit OpenMP/BLAS to one thread in each thread that scores (serving workers)."""
    from sklearn.calibration import CalibratedClassifierCV
    from sklearn.compose import ColumnTransformer
    from sklearn.frozen import FrozenEstimator
    from sklearn.pipeline import Pipeline

    from tasks.calibrate import CalibratedPipeline

    calibrator = None
    pipeline = estimator
    reads_columns = False
    if isinstance(estimator, CalibratedPipeline):
        if estimator.method not in ("sigmoid", "isotonic", "segment_sigmoid"):
            raise UnsupportedPipeline(f"unsupported calibration method {estimator.method!r}")
        calibrator, pipeline, reads_columns = estimator, estimator.pipeline, True
    elif isinstance(estimator, CalibratedClassifierCV):
        if len(estimator.calibrated_classifiers_) != 1:
            raise UnsupportedPipeline("expected one calibrated classifier (a frozen estimator)")
        cc = estimator.calibrated_classifiers_[0]
        if cc.method not in ("sigmoid", "isotonic") or len(cc.calibrators) != 1:
            raise UnsupportedPipeline(f"unsupported calibration method {cc.method!r}")
        calibrator = cc.calibrators[0]
        pipeline = cc.estimator
        if isinstance(pipeline, FrozenEstimator):
            pipeline = pipeline.estimator
    if not isinstance(pipeline, Pipeline):
        raise UnsupportedPipeline("expected an sklearn Pipeline(preprocess, model)")
    pre, model = _step(pipeline, "preprocess"), _step(pipeline, "model")
    if not isinstance(pre, ColumnTransformer) or pre.remainder != "drop":
        raise UnsupportedPipeline("preprocess must be a ColumnTransformer with remainder='drop'")
    blocks = {name: (trans, cols) for name, trans, cols in pre.transformers_ if name != "remainder"}
    if [n for n, _, _ in pre.transformers_ if n != "remainder"] != ["numeric", "categorical"]:
        raise UnsupportedPipeline("expected transformers 'numeric' then 'categorical'")
    numeric = _compile_numeric(*blocks["numeric"])
    categorical = _compile_categorical(*blocks["categorical"])
    if reads_columns:
        response = estimator.response
        missing = [c for c in estimator.segment_columns if c not in categorical.columns]
        if missing:
            raise UnsupportedPipeline(f"calibrator reads columns that are not features {missing}")
    elif calibrator is not None:
        response = (
            "decision_function" if hasattr(pipeline, "decision_function") else "predict_proba"
        )
    else:
        response = "predict_proba"
    return FastScorer(
        numeric,
        categorical,
        model,
        calibrator,
        response,
        pin=pin,
        calibrator_reads_columns=reads_columns,
    )


@dataclass(frozen=True)
class ExactnessCheck:
    rows: int
    max_abs_diff: float
    actions_identical: bool
    tolerance: float

    @property
    def passed(self) -> bool:
        return self.max_abs_diff <= self.tolerance and self.actions_identical
