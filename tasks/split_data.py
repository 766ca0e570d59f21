"""Stratified, seeded train / selection / test splits as row positions, with content hashes.

There is no separate calibration split: calibrators are fitted on out-of-fold predictions
over train (cross-fitting, ``tasks.calibrate``), so the rows that used to be held back for
calibration now reach the model.

The splits are positions into the one validated frame, not copies of it. On a large table a
split above its cap (``scale`` config) is replaced by a label-stratified seeded sample of it;
what was used, out of how many rows and why is the split plan (``Splits.plan``), which the
promotion record carries.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
from sklearn.model_selection import train_test_split

from configs.settings import ScaleConfig, SplitConfig
from tasks.load_data import ColumnRoles, frame_sha256

SPLIT_NAMES = ("train", "selection", "test")
# the clean table held categorical features as objects: split hashes name them so
CLEAN_CATEGORIES_DTYPE = "object"


@dataclass(frozen=True)
class Splits:
    """Three disjoint sets of rows of ``data`` (clean, label as 0/1) and their hashes and sizes.

    ``train`` fits models, preprocessing statistics and (by cross-fitting) calibrators;
    ``selection`` chooses calibration method, policy and candidate; ``test`` is touched only
    by the gates. ``index[name]`` holds the split's positions in ``data`` in split order; the
    split frames (``train``, ``selection``, ``test``) are taken from ``data`` on first use and
    kept (each is at most its ``scale`` cap of rows).
    """

    data: pd.DataFrame
    index: dict[str, np.ndarray]
    roles: ColumnRoles
    hashes: dict[str, str]
    rows: dict[str, int]
    positive_rate: dict[str, float]
    plan: dict[str, Any] = field(default_factory=dict)
    total_rows: int | None = None
    """Rows of the whole clean table when ``data`` holds only the splits' rows (the
    partitioned path); None: ``data`` is the whole table."""
    _frames: dict[str, pd.DataFrame] = field(
        default_factory=dict, init=False, repr=False, compare=False
    )

    def frame(self, name: str) -> pd.DataFrame:
        if name not in SPLIT_NAMES:
            raise KeyError(f"unknown split {name!r}; expected one of {SPLIT_NAMES}")
        if name not in self._frames:
            self._frames[name] = self.data.take(self.index[name]).reset_index(drop=True)
        return self._frames[name]

    def restricted(self, names: tuple[str, ...]) -> Splits:
        """These splits with ``data`` cut to the rows of ``names`` (what a task run shipped to
        another process needs); hashes, sizes, rates, plan and ``table_rows`` unchanged, and
        the other splits' rows absent (asking for them is a ``KeyError``)."""
        keep = np.concatenate([self.index[n] for n in names])
        starts = np.cumsum([0, *(len(self.index[n]) for n in names)])
        return Splits(
            data=self.data.take(keep).reset_index(drop=True),
            index={n: np.arange(starts[i], starts[i + 1]) for i, n in enumerate(names)},
            roles=self.roles,
            hashes=self.hashes,
            rows=self.rows,
            positive_rate=self.positive_rate,
            plan=self.plan,
            total_rows=self.table_rows,
        )

    @property
    def table_rows(self) -> int:
        """Rows of the whole clean table (all splits before any sampling): the population a
        contact capacity given as a count is a share of."""
        return len(self.data) if self.total_rows is None else self.total_rows

    @property
    def train(self) -> pd.DataFrame:
        return self.frame("train")

    @property
    def selection(self) -> pd.DataFrame:
        return self.frame("selection")

    @property
    def test(self) -> pd.DataFrame:
        return self.frame("test")

    def X(self, name: str) -> pd.DataFrame:  # noqa: N802 - sklearn convention
        """Feature columns only (what a pipeline sees)."""
        return self.frame(name)[list(self.roles.features)]

    def y(self, name: str) -> np.ndarray:
        """Labels as an int array (1 = churn)."""
        labels = self.data[self.roles.label_column].to_numpy()
        return labels[self.index[name]].astype(np.int64)


def stratified_sample(y: np.ndarray, size: int, *, seed: int) -> np.ndarray:
    """Sorted positions of a seeded sample of exactly ``size`` of ``len(y)`` rows in which each
    label value keeps its share (largest-remainder rounding); all positions when ``size`` is
    at least ``len(y)``."""
    n = len(y)
    if size >= n:
        return np.arange(n)
    if size <= 0:
        raise ValueError(f"sample size must be positive, got {size}")
    rng = np.random.default_rng(seed)
    values, inverse = np.unique(y, return_inverse=True)
    counts = np.bincount(inverse, minlength=len(values))
    exact = counts * (size / n)
    take = np.floor(exact).astype(np.int64)
    short = size - int(take.sum())
    if short:
        take[np.argsort(-(exact - take), kind="stable")[:short]] += 1
    order = np.argsort(inverse, kind="stable")
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
    picked = [
        order[s + rng.choice(c, size=k, replace=False)]
        for s, c, k in zip(starts, counts, take, strict=True)
        if k
    ]
    return np.sort(np.concatenate(picked))


def split_positions(y: np.ndarray, config: SplitConfig) -> dict[str, np.ndarray]:
    """Positions of train / selection / test by the configured fractions, stratified by
    ``y`` (the same rows, in the same order, as splitting the frame itself)."""
    positions = np.arange(len(y))
    rest_share = 1.0 - config.train_fraction
    train, rest = train_test_split(
        positions, test_size=rest_share, stratify=y, random_state=config.seed
    )
    test_share = config.test_fraction / rest_share
    selection, test = train_test_split(
        rest, test_size=test_share, stratify=y[rest], random_state=config.seed + 1
    )
    return {"train": train, "selection": selection, "test": test}


def _caps(scale: ScaleConfig | None, train_rows: int) -> dict[str, tuple[int, str]]:
    if scale is None:
        return {}
    caps: dict[str, tuple[int, str]] = {}
    if train_rows > scale.train_sample_above_rows:
        caps["train"] = (
            scale.train_sample_rows,
            f"train has {train_rows:,} rows > scale.train_sample_above_rows "
            f"({scale.train_sample_above_rows:,}): candidates, calibrators, baselines, "
            f"stability folds and the reference fit on a label-stratified seeded sample of "
            f"scale.train_sample_rows ({scale.train_sample_rows:,})",
        )
    for name in ("selection", "test"):
        caps[name] = (
            scale.judge_max_rows,
            f"{name} judged on a label-stratified seeded sample of scale.judge_max_rows "
            f"({scale.judge_max_rows:,}) rows",
        )
    return caps


def split_data(
    frame: pd.DataFrame,
    *,
    roles: ColumnRoles,
    config: SplitConfig,
    scale: ScaleConfig | None = None,
    chunk_rows: int | None = None,
) -> Splits:
    """Split a clean frame (label already 0/1) by the configured fractions, stratified.

    With ``scale`` a split above its cap is sampled down (see ``configs.settings.ScaleConfig``);
    without it, or below the caps, every row is used. Never copies ``frame``: the splits are
    positions into it. Hashes are streamed over chunks of ``chunk_rows`` (default
    ``scale.chunk_rows``) and equal ``frame_sha256`` of the split frame."""
    y = frame[roles.label_column].to_numpy()
    index, plan = split_plan(y, roles=roles, config=config, scale=scale)
    return splits_over(
        frame,
        index,
        roles=roles,
        positive_rate=positive_rates(y, index),
        plan=plan,
        chunk_rows=chunk_rows or (scale.chunk_rows if scale is not None else None),
    )


def splits_over(
    data: pd.DataFrame,
    index: dict[str, np.ndarray],
    *,
    roles: ColumnRoles,
    positive_rate: dict[str, float],
    plan: dict[str, Any],
    chunk_rows: int | None,
    total_rows: int | None = None,
) -> Splits:
    """``Splits`` over ``data`` at positions ``index``, with each split's row count and its
    hash streamed over chunks of ``chunk_rows`` (equal to ``frame_sha256`` of the split
    frame). ``total_rows``: the whole clean table's rows when ``data`` holds only the
    sampled rows (the Dask engine)."""
    return Splits(
        data=data,
        index=index,
        roles=roles,
        hashes={
            k: frame_sha256(
                data, positions=v, chunk_rows=chunk_rows, categories=CLEAN_CATEGORIES_DTYPE
            )
            for k, v in index.items()
        },
        rows={k: len(v) for k, v in index.items()},
        positive_rate=positive_rate,
        plan=plan,
        total_rows=total_rows,
    )


def positive_rates(y: np.ndarray, index: dict[str, np.ndarray]) -> dict[str, float]:
    """Share of label 1 per split, rounded to 4 decimals."""
    return {k: round(float(y[v].astype(float).mean()), 4) for k, v in index.items()}


def split_plan(
    y: np.ndarray, *, roles: ColumnRoles, config: SplitConfig, scale: ScaleConfig | None
) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """The splits' positions (in split order) into a clean table whose label vector (0/1) is
    ``y``, each sampled down to its ``scale`` cap, and the plan saying what was used and why.
    Needs the labels only: a partitioned table is split from its label vector alone."""
    index = split_positions(y, config)
    caps = _caps(scale, len(index["train"]))
    plan: dict[str, Any] = {}
    for name in SPLIT_NAMES:
        available = len(index[name])
        cap, why = caps.get(name, (available, ""))
        entry: dict[str, Any] = {"rows_available": available, "rows_used": available}
        if available > cap:
            assert scale is not None
            keep = stratified_sample(y[index[name]], cap, seed=scale.seed + SPLIT_NAMES.index(name))
            index[name] = index[name][keep]
            entry.update(
                rows_used=cap,
                sampled=True,
                stratified_by=roles.label_column,
                seed=scale.seed + SPLIT_NAMES.index(name),
                reason=why,
            )
        else:
            entry["sampled"] = False
        plan[name] = entry
    return index, plan
