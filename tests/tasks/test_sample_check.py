"""The train-sample learning-curve check: absent when train is whole, climbing only where more
rows clearly help."""

from __future__ import annotations

import dataclasses

import numpy as np
import pandas as pd
import pytest

from configs.settings import (
    CalibrationConfig,
    CandidatesConfig,
    ScaleConfig,
    SplitConfig,
    TrainSampleCheckConfig,
)
from tasks.calibrate import calibrate
from tasks.load_data import ColumnRoles
from tasks.sample_check import check_train_sample
from tasks.split_data import Splits, split_data
from tasks.train_candidates import train_candidate

ROWS = 16_000  # train 10,400 rows: above the threshold below, so sampled to SAMPLE rows
SAMPLE = 4_000
SCALE = ScaleConfig(train_sample_above_rows=5_000, train_sample_rows=SAMPLE)
ONLY_LR = CandidatesConfig.model_validate(
    {"random_forest": {"enabled": False}, "gradient_boosting": {"enabled": False}}
)
RAW = CalibrationConfig(methods=["none"])


def _roles(numeric: tuple[str, ...], categorical: tuple[str, ...]) -> ColumnRoles:
    return ColumnRoles(
        id_column="id",
        label_column="churn",
        numeric=numeric,
        categorical=categorical,
        ignored=(),
        segment_columns=(),
        value_column=None,
    )


def _frame(logit: np.ndarray, columns: dict[str, np.ndarray], seed: int) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    churn = (rng.random(len(logit)) < 1 / (1 + np.exp(-logit))).astype(np.int64)
    return pd.DataFrame({"id": np.arange(len(logit)), **columns, "churn": churn})


def _logistic_frame(rows: int = ROWS) -> tuple[pd.DataFrame, ColumnRoles]:
    """Three numeric features, a linear log-odds: a few thousand rows learn it fully."""
    rng = np.random.default_rng(1)
    x = rng.normal(size=(rows, 3))
    logit = -0.5 + x @ np.array([1.0, -0.7, 0.4])
    cols = {f"x{i}": x[:, i] for i in range(3)}
    return _frame(logit, cols, 2), _roles(("x0", "x1", "x2"), ())


def _many_levels_frame(rows: int = ROWS, levels: int = 400) -> tuple[pd.DataFrame, ColumnRoles]:
    """Each of ``levels`` categories has its own churn log-odds: with ~5 sampled rows per
    level the half sample cannot learn them, the full sample (~10 per level) does better."""
    rng = np.random.default_rng(3)
    effect = rng.normal(0.0, 1.5, size=levels)
    level = rng.integers(0, levels, size=rows)
    noise = rng.normal(size=rows)
    cols = {"level": np.array([f"L{v}" for v in level], dtype=object), "noise": noise}
    return _frame(effect[level], cols, 4), _roles(("noise",), ("level",))


def _split(frame: pd.DataFrame, roles: ColumnRoles, scale: ScaleConfig | None) -> Splits:
    return split_data(frame, roles=roles, config=SplitConfig(), scale=scale)


def _chosen(splits: Splits, name: str = "logistic_regression"):
    candidate = train_candidate(splits, name=name, config=ONLY_LR)
    return calibrate(candidate, splits, config=RAW)


def test_check_train_sample_absent_when_train_not_sampled() -> None:
    frame, roles = _logistic_frame(rows=4_000)
    splits = _split(frame, roles, SCALE)
    assert not splits.plan["train"]["sampled"]
    assert check_train_sample(
        _chosen(splits), splits, candidates=ONLY_LR, config=TrainSampleCheckConfig()
    ) is None


def test_check_train_sample_absent_when_turned_off() -> None:
    splits = _split(*_logistic_frame(), SCALE)
    off = TrainSampleCheckConfig(enabled=False)
    assert check_train_sample(_chosen(splits), splits, candidates=ONLY_LR, config=off) is None


def test_check_train_sample_flat_on_a_simple_logistic_signal() -> None:
    frame, roles = _logistic_frame()
    splits = _split(frame, roles, SCALE)
    chosen = _chosen(splits)
    check = check_train_sample(
        chosen, splits, candidates=ONLY_LR, config=TrainSampleCheckConfig()
    )
    assert check is not None
    assert splits.plan["train"]["sampled"] and splits.plan["train"]["rows_used"] == SAMPLE
    assert (check.rows_full, check.rows_half) == (SAMPLE, SAMPLE // 2)
    assert check.selection_rows == splits.rows["selection"]
    assert not check.climbing, check.sentence
    assert check.relative_gain < TrainSampleCheckConfig().min_relative_gain
    assert check.roc_auc_full is not None and check.roc_auc_full > 0.7
    assert "flat" in check.sentence
    # the full fit's figures are the candidate's own: re-scored when calibration kept none
    again = check_train_sample(
        dataclasses.replace(chosen, selection_raw=None),
        splits,
        candidates=ONLY_LR,
        config=TrainSampleCheckConfig(),
    )
    assert again == check


def test_check_train_sample_climbing_when_a_small_sample_cannot_learn_the_signal(
    caplog: pytest.LogCaptureFixture,
) -> None:
    frame, roles = _many_levels_frame()
    splits = _split(frame, roles, SCALE)
    with caplog.at_level("WARNING", logger="tasks.sample_check"):
        check = check_train_sample(
            _chosen(splits), splits, candidates=ONLY_LR, config=TrainSampleCheckConfig()
        )
    assert check is not None and check.climbing, check and check.sentence
    assert check.gain_nats > TrainSampleCheckConfig().z * check.gain_se_nats > 0
    assert check.log_loss_half > check.log_loss_full
    assert check.roc_auc_half is not None and check.roc_auc_full is not None
    assert check.roc_auc_full > check.roc_auc_half
    assert "raise scale.train_sample_rows" in check.sentence
    assert any("train sample check" in r.getMessage() for r in caplog.records)


def test_check_train_sample_practical_share_decides_a_significant_but_small_gain() -> None:
    frame, roles = _many_levels_frame()
    splits = _split(frame, roles, SCALE)
    chosen = _chosen(splits)
    check = check_train_sample(chosen, splits, candidates=ONLY_LR, config=TrainSampleCheckConfig())
    assert check is not None and check.climbing
    strict = TrainSampleCheckConfig(min_relative_gain=min(0.99, check.relative_gain + 0.01))
    again = check_train_sample(chosen, splits, candidates=ONLY_LR, config=strict)
    assert again is not None and not again.climbing
    assert "beyond noise but below" in again.sentence
    assert again.gain_nats == check.gain_nats  # same seeded half, only the verdict moves


def test_check_train_sample_compares_at_most_max_selection_rows() -> None:
    frame, roles = _logistic_frame()
    splits = _split(frame, roles, SCALE)
    chosen = _chosen(splits)
    n_sel = splits.rows["selection"]
    capped = TrainSampleCheckConfig(max_selection_rows=n_sel // 3)
    check = check_train_sample(chosen, splits, candidates=ONLY_LR, config=capped)
    assert check is not None and check.selection_rows == n_sel // 3
    # the full fit's kept probabilities are read at the same sampled rows as re-scoring gives
    again = check_train_sample(
        dataclasses.replace(chosen, selection_raw=None), splits, candidates=ONLY_LR, config=capped
    )
    assert again == check
    whole = check_train_sample(chosen, splits, candidates=ONLY_LR, config=TrainSampleCheckConfig())
    assert whole is not None and whole.selection_rows == n_sel
