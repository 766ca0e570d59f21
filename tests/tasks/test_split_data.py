"""Train / selection / test splits: shares, disjointness, stratification, hashes."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from configs.settings import ConfigError, ScaleConfig, SplitConfig, build_config
from tasks.load_data import ColumnRoles
from tasks.split_data import SPLIT_NAMES, split_data, stratified_sample


def _frame(n: int) -> tuple[pd.DataFrame, ColumnRoles]:
    rng = np.random.default_rng(0)
    frame = pd.DataFrame(
        {"id": np.arange(n).astype(str), "x": rng.normal(size=n), "y": (rng.random(n) < 0.2) * 1}
    )
    roles = ColumnRoles("id", "y", ("x",), (), (), (), None)
    return frame, roles


def test_split_data_gives_train_the_calibration_share() -> None:
    frame, roles = _frame(10_000)
    before = frame.copy()
    s = split_data(frame, roles=roles, config=SplitConfig())
    assert SPLIT_NAMES == ("train", "selection", "test")
    expected = {"train": 6500, "selection": 1500, "test": 2000}
    assert all(abs(s.rows[k] - v) <= 1 for k, v in expected.items())
    assert sum(s.rows.values()) == 10_000
    ids = [set(s.frame(n)["id"]) for n in SPLIT_NAMES]
    assert sum(len(i) for i in ids) == 10_000 and len(set.union(*ids)) == 10_000
    assert all(abs(r - frame["y"].mean()) < 0.005 for r in s.positive_rate.values())
    assert set(s.hashes) == set(SPLIT_NAMES) and len(set(s.hashes.values())) == 3
    pd.testing.assert_frame_equal(frame, before)  # the input is not mutated
    with pytest.raises(KeyError, match="unknown split"):
        s.frame("calibration")


def test_split_config_has_no_calibration_share() -> None:
    with pytest.raises(ConfigError, match="calibration_fraction: unknown key"):
        build_config({"split": {"calibration_fraction": 0.1}})
    with pytest.raises(ConfigError, match="sum to 1.0"):
        build_config({"split": {"train_fraction": 0.5}})


def _copied_split_hashes(
    frame: pd.DataFrame, roles: ColumnRoles, cfg: SplitConfig
) -> dict[str, Any]:
    """The splits as the earlier code made them: copied frames, categorical text as objects."""
    from sklearn.model_selection import train_test_split

    from tasks.load_data import frame_sha256

    old = frame.copy()
    for col in roles.categorical:
        old[col] = old[col].astype(object).where(old[col].notna(), np.nan)
    y = old[roles.label_column].to_numpy()
    train, rest = train_test_split(
        old, test_size=1 - cfg.train_fraction, stratify=y, random_state=cfg.seed
    )
    selection, test = train_test_split(
        rest,
        test_size=cfg.test_fraction / (1 - cfg.train_fraction),
        stratify=rest[roles.label_column].to_numpy(),
        random_state=cfg.seed + 1,
    )
    parts = {"train": train, "selection": selection, "test": test}
    return {k: frame_sha256(v.reset_index(drop=True)) for k, v in parts.items()}


def test_split_data_positions_hash_as_the_copied_frames_did(tmp_path: Path) -> None:
    from tests.conftest import generator_splits

    cfg, splits = generator_splits(tmp_path, rows=3_000)
    assert set(splits.index) == set(SPLIT_NAMES)
    assert splits.data.shape[0] == 3_000 and splits.table_rows == 3_000
    assert splits.hashes == _copied_split_hashes(splits.data, splits.roles, cfg.split)
    # streamed in chunks: the same digests
    chunked = split_data(
        splits.data, roles=splits.roles, config=cfg.split, scale=cfg.scale, chunk_rows=97
    )
    assert chunked.hashes == splits.hashes
    assert all(not e["sampled"] for e in chunked.plan.values())
    for name in SPLIT_NAMES:  # a split frame is the positions' rows of the one clean table
        pd.testing.assert_frame_equal(
            splits.frame(name), splits.data.take(splits.index[name]).reset_index(drop=True)
        )


def test_split_data_samples_large_splits_stratified_seeded_and_says_why() -> None:
    frame, roles = _frame(20_000)
    scale = ScaleConfig(
        train_sample_above_rows=5_000, train_sample_rows=4_000, judge_max_rows=2_500, seed=3
    )
    a = split_data(frame, roles=roles, config=SplitConfig(), scale=scale)
    b = split_data(frame, roles=roles, config=SplitConfig(), scale=scale)
    full = split_data(frame, roles=roles, config=SplitConfig())
    assert a.rows == {"train": 4_000, "selection": 2_500, "test": 2_500}
    assert a.hashes == b.hashes  # seeded
    for name in SPLIT_NAMES:
        # a sample of its own split only: the splits stay disjoint
        assert set(a.index[name]) <= set(full.index[name])
        share = frame["y"].to_numpy()[a.index[name]].mean()
        full_share = frame["y"].to_numpy()[full.index[name]].mean()
        assert abs(share - full_share) <= 1 / a.rows[name]  # stratified (rounding only)
        entry = a.plan[name]
        assert entry["sampled"] and entry["rows_used"] == a.rows[name]
        assert entry["rows_available"] == full.rows[name] and entry["stratified_by"] == "y"
        assert entry["seed"] == 3 + SPLIT_NAMES.index(name) and entry["reason"]
    assert "scale.train_sample_above_rows" in a.plan["train"]["reason"]
    assert a.table_rows == 20_000  # a capacity count stays a share of the whole table
    other = split_data(
        frame, roles=roles, config=SplitConfig(), scale=scale.model_copy(update={"seed": 4})
    )
    assert other.hashes["train"] != a.hashes["train"]


def test_split_data_below_the_thresholds_uses_every_row() -> None:
    frame, roles = _frame(10_000)
    plain = split_data(frame, roles=roles, config=SplitConfig())
    scaled = split_data(frame, roles=roles, config=SplitConfig(), scale=ScaleConfig())
    assert scaled.hashes == plain.hashes and scaled.rows == plain.rows
    assert all(e == {**e, "sampled": False} for e in scaled.plan.values())


def test_stratified_sample_keeps_each_class_share_exactly_to_rounding() -> None:
    y = np.array([0] * 900 + [1] * 90 + [2] * 10)
    pos = stratified_sample(y, 100, seed=1)
    assert len(pos) == 100 and len(set(pos)) == 100 and np.all(np.diff(pos) > 0)
    assert np.bincount(y[pos]).tolist() == [90, 9, 1]
    assert np.array_equal(pos, stratified_sample(y, 100, seed=1))
    assert not np.array_equal(pos, stratified_sample(y, 100, seed=2))
    assert np.array_equal(stratified_sample(y, 5_000, seed=1), np.arange(1_000))


def test_scale_config_sample_cannot_exceed_its_threshold() -> None:
    with pytest.raises(ConfigError, match="train_sample_rows must be <="):
        build_config({"scale": {"train_sample_above_rows": 100, "train_sample_rows": 200}})


def test_split_data_restricted_keeps_only_the_named_splits_rows(tmp_path: Path) -> None:
    from tests.conftest import generator_splits

    _, splits = generator_splits(tmp_path, rows=3000)
    train = splits.restricted(("train", "selection"))
    assert len(train.data) == splits.rows["train"] + splits.rows["selection"]
    assert train.table_rows == splits.table_rows == 3000
    assert (train.hashes, train.rows, train.plan) == (splits.hashes, splits.rows, splits.plan)
    for name in ("train", "selection"):
        pd.testing.assert_frame_equal(train.frame(name), splits.frame(name))
        np.testing.assert_array_equal(train.y(name), splits.y(name))
    with pytest.raises(KeyError):
        train.frame("test")
