"""Serving an uplift policy (issue 17): the packaged learner's fitted sklearn pipelines and
the uplift decision rule. No training imports: the artifact is a plain dict of pipelines
(``tasks.uplift.UpliftModel.artifact``) unpickled from verified bytes, as churn-risk
champions are.

The *effect* is the churn probability a contact removes (0-1; negative: the contact pushes
the customer out). Policy kind ``uplift``: contact iff ``effect x value - contact_cost`` (USD)
is positive and at least the cut-off (USD); tiers by that expected incremental value.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from tasks.select_policy import Decisions, assign_tiers

KIND = "uplift"
_KEYS = ("learner", "numeric", "categorical", "assigned_share", "control", "treated")


def is_uplift_artifact(obj: Any) -> bool:
    return isinstance(obj, dict) and obj.get("kind") == KIND


def is_uplift_policy(document: Mapping[str, Any]) -> bool:
    return document.get("kind") == KIND


def feature_frame(
    columns: Mapping[str, Any],
    n: int,
    *,
    numeric: tuple[str, ...],
    categorical: tuple[str, ...],
) -> pd.DataFrame:
    """The feature frame an uplift learner is fitted on and scores: numeric as float
    (missing or not a number: NaN, imputed by the pipeline), categorical as text (missing:
    NaN). The challenge flow fits on this very conversion of the logged inputs."""
    data: dict[str, Any] = {}
    for col in numeric:
        raw = columns.get(col)
        data[col] = (
            np.full(n, np.nan)
            if raw is None
            else pd.to_numeric(pd.Series(list(raw), dtype=object), errors="coerce")
            .astype(float)
            .to_numpy()
        )
    for col in categorical:
        raw = columns.get(col)
        vals = [None] * n if raw is None else list(raw)
        data[col] = np.array(
            [np.nan if v is None or v != v else str(v) for v in vals], dtype=object
        )
    return pd.DataFrame(data, index=pd.RangeIndex(n))


@dataclass(frozen=True)
class UpliftScorer:
    """The learner's models: ``control`` = P(churn | x, no contact), ``treated`` = P(churn |
    x, contact); the X-learner adds its two effect regressors blended by ``assigned_share``."""

    learner: str
    numeric: tuple[str, ...]
    categorical: tuple[str, ...]
    assigned_share: float
    control: Any
    treated: Any
    effect_from_control: Any = None
    effect_from_treated: Any = None

    @classmethod
    def from_artifact(cls, obj: dict[str, Any]) -> UpliftScorer:
        missing = [k for k in _KEYS if k not in obj]
        if missing:
            raise ValueError(f"uplift artifact lacks {missing}")
        return cls(
            learner=str(obj["learner"]),
            numeric=tuple(obj["numeric"]),
            categorical=tuple(obj["categorical"]),
            assigned_share=float(obj["assigned_share"]),
            control=obj["control"],
            treated=obj["treated"],
            effect_from_control=obj.get("effect_from_control"),
            effect_from_treated=obj.get("effect_from_treated"),
        )

    def score(self, columns: Mapping[str, Any], n: int) -> tuple[np.ndarray, np.ndarray]:
        """(effect, churn probability without contact) per row (both 0-1 scale)."""
        X = feature_frame(columns, n, numeric=self.numeric, categorical=self.categorical)  # noqa: N806
        p0 = np.asarray(self.control.predict_proba(X)[:, 1], dtype=float)
        if self.effect_from_control is None or self.effect_from_treated is None:
            effect = p0 - self.treated.predict_proba(X)[:, 1]
        else:
            e = self.assigned_share
            effect = e * self.effect_from_control.predict(X) + (1 - e) * (
                self.effect_from_treated.predict(X)
            )
        return np.asarray(effect, dtype=float), p0


def uplift_decide(effect: np.ndarray, values: np.ndarray, document: dict[str, Any]) -> Decisions:
    """The uplift rule on arrays: expected incremental value ``effect x value - cost`` (USD),
    contact iff it is positive and at least the cut-off, tier by that value."""
    ev = np.asarray(effect, dtype=float) * np.asarray(values, dtype=float) - float(
        document["economics"]["contact_cost_usd"]
    )
    contact = (ev > 0) & (ev >= float(document["cutoff_expected_value_usd"]))
    return Decisions(ev, contact, assign_tiers(ev, contact, document["tiers"]))
