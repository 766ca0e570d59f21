from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from configs.settings import TreatmentResponseConfig
from tasks.generate_data import TRUTH_COLUMN, generate_data
from tasks.simulate_campaign import (
    EFFECT,
    P_CONTACTED,
    P_NOT_CONTACTED,
    SAVE_RATE,
    TYPE,
    simulate_campaign,
    treatment_response,
)


@pytest.fixture(scope="module")
def frame() -> pd.DataFrame:
    return generate_data(rows=20_000, seed=5)


def test_simulate_campaign_response_has_all_customer_types(frame: pd.DataFrame) -> None:
    truth = treatment_response(frame, config=TreatmentResponseConfig(sleeping_dog_share=0.1))
    assert set(truth[TYPE]) == {"persuadable", "sure_thing", "lost_cause", "sleeping_dog"}
    dogs = truth[TYPE] == "sleeping_dog"
    assert dogs.mean() == pytest.approx(0.1, abs=0.001)
    assert (truth.loc[dogs, EFFECT] < 0).all() and (truth.loc[~dogs, EFFECT] >= 0).all()
    assert truth.loc[~dogs, SAVE_RATE].mean() == pytest.approx(0.25, abs=1e-6)
    assert truth[SAVE_RATE].std() > 0.05  # heterogeneous
    np.testing.assert_allclose(truth[P_NOT_CONTACTED], frame[TRUTH_COLUMN])


def test_simulate_campaign_no_sleeping_dogs_when_share_zero(frame: pd.DataFrame) -> None:
    truth = treatment_response(frame, config=TreatmentResponseConfig(sleeping_dog_share=0.0))
    assert "sleeping_dog" not in set(truth[TYPE])
    assert (truth[EFFECT] >= 0).all()
    flat = treatment_response(
        frame, config=TreatmentResponseConfig(save_rate_spread=0.0, sleeping_dog_share=0.0)
    )
    assert flat[SAVE_RATE].std() == pytest.approx(0.0, abs=1e-12)


def test_simulate_campaign_keeps_truth_apart_and_input_intact(frame: pd.DataFrame) -> None:
    before = frame.copy()
    c = simulate_campaign(
        frame,
        config=TreatmentResponseConfig(),
        holdout_share=0.2,
        seed=1,
        would_contact=np.arange(len(frame)) % 2 == 0,
    )
    pd.testing.assert_frame_equal(frame, before)
    assert TRUTH_COLUMN not in c.frame.columns
    assert not {P_CONTACTED, P_NOT_CONTACTED, EFFECT, TYPE} & set(c.frame.columns)
    f = c.frame
    assert f["holdout"].mean() == pytest.approx(0.2, abs=0.02)
    assert not (f["contacted"] & (f["holdout"] | ~f["would_contact"])).any()
    assert f.loc[f["assigned_contact"], "contacted"].mean() == pytest.approx(0.9, abs=0.02)
    assert set(f["churned"]) == {"yes", "no"}


def test_simulate_campaign_is_seeded(frame: pd.DataFrame) -> None:
    cfg = TreatmentResponseConfig()
    a = simulate_campaign(frame, config=cfg, holdout_share=0.1, seed=3)
    b = simulate_campaign(frame, config=cfg, holdout_share=0.1, seed=3)
    c = simulate_campaign(frame, config=cfg, holdout_share=0.1, seed=4)
    pd.testing.assert_frame_equal(a.frame, b.frame)
    assert not a.frame["holdout"].equals(c.frame["holdout"])


def test_simulate_campaign_outcomes_follow_the_truth(frame: pd.DataFrame) -> None:
    c = simulate_campaign(frame, config=TreatmentResponseConfig(), holdout_share=0.5, seed=2)
    y = (c.frame["churned"] == "yes").to_numpy()
    d = c.frame["contacted"].to_numpy()
    p = np.where(d, c.truth[P_CONTACTED], c.truth[P_NOT_CONTACTED])
    assert abs(y.mean() - p.mean()) < 3 * np.sqrt(p.mean() * (1 - p.mean()) / len(y))


def test_simulate_campaign_missing_column_is_named(frame: pd.DataFrame) -> None:
    with pytest.raises(KeyError, match="usage_gb_30d"):
        treatment_response(frame.drop(columns=["usage_gb_30d"]), config=TreatmentResponseConfig())
