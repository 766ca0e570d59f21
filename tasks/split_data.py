"""Stratified, seeded train / selection / test splits with content hashes.

There is no separate calibration split: calibrators are fitted on out-of-fold predictions
over train (cross-fitting, ``tasks.calibrate``), so the rows that used to be held back for
calibration now reach the model.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
from sklearn.model_selection import train_test_split

from configs.settings import SplitConfig
from tasks.load_data import ColumnRoles, frame_sha256

SPLIT_NAMES = ("train", "selection", "test")


@dataclass(frozen=True)
class Splits:
    """Three disjoint frames (clean, label as 0/1) and their hashes and sizes.

    ``train`` fits models, preprocessing statistics and (by cross-fitting) calibrators;
    ``selection`` chooses calibration method, policy and candidate; ``test`` is touched only
    by the gates.
    """

    train: pd.DataFrame
    selection: pd.DataFrame
    test: pd.DataFrame
    roles: ColumnRoles
    hashes: dict[str, str]
    rows: dict[str, int]
    positive_rate: dict[str, float]

    def frame(self, name: str) -> pd.DataFrame:
        if name not in SPLIT_NAMES:
            raise KeyError(f"unknown split {name!r}; expected one of {SPLIT_NAMES}")
        frame: pd.DataFrame = getattr(self, name)
        return frame

    def X(self, name: str) -> pd.DataFrame:  # noqa: N802 - sklearn convention
        """Feature columns only (what a pipeline sees)."""
        return self.frame(name)[list(self.roles.features)]

    def y(self, name: str) -> np.ndarray:
        """Labels as an int array (1 = churn)."""
        return self.frame(name)[self.roles.label_column].to_numpy(dtype=np.int64)


def split_data(frame: pd.DataFrame, *, roles: ColumnRoles, config: SplitConfig) -> Splits:
    """Split a clean frame (label already 0/1) by the configured fractions, stratified."""
    y = frame[roles.label_column].to_numpy()
    rest_share = 1.0 - config.train_fraction
    train, rest = train_test_split(
        frame, test_size=rest_share, stratify=y, random_state=config.seed
    )
    test_share = config.test_fraction / rest_share
    rest_y = rest[roles.label_column].to_numpy()
    selection, test = train_test_split(
        rest, test_size=test_share, stratify=rest_y, random_state=config.seed + 1
    )
    parts = {
        "train": train.reset_index(drop=True),
        "selection": selection.reset_index(drop=True),
        "test": test.reset_index(drop=True),
    }
    return Splits(
        **parts,
        roles=roles,
        hashes={k: frame_sha256(v) for k, v in parts.items()},
        rows={k: len(v) for k, v in parts.items()},
        positive_rate={k: round(float(v[roles.label_column].mean()), 4) for k, v in parts.items()},
    )
