"""Train / selection / test splits: shares, disjointness, stratification, hashes."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from configs.settings import ConfigError, SplitConfig, build_config
from tasks.load_data import ColumnRoles
from tasks.split_data import SPLIT_NAMES, split_data


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
