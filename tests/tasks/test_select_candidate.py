"""Candidate selection: a proper scoring rule first, realised profit only beyond noise."""

from __future__ import annotations

import numpy as np
import pandas as pd

from configs.settings import build_config
from tasks.select_policy import Selection, select_candidate


def _world(n: int, seed: int) -> tuple[pd.DataFrame, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    p = rng.beta(2, 5, n)
    y = (rng.random(n) < p).astype(int)
    return pd.DataFrame({"value": rng.uniform(50, 400, n)}), p, y


def _select(
    probabilities: dict[str, np.ndarray], y: np.ndarray, frame: pd.DataFrame, scale: float = 1.0
) -> Selection:
    cfg = build_config(
        {
            "economics": {
                "customer_value": {"column": "value", "multiplier": scale},
                "contact_cost_usd": 15.0 * scale,
            },
            "bootstrap": {"resamples": 300},
            "policy": {"bootstrap_resamples": 100},
        }
    )
    return select_candidate(
        probabilities,
        y,
        frame,
        calibration_methods={n: "none" for n in probabilities},
        economics=cfg.economics,
        policy=cfg.policy,
        bootstrap=cfg.bootstrap,
        population_rows=len(y),
    )


def test_select_candidate_chooses_lowest_log_loss_and_records_every_figure() -> None:
    frame, p, y = _world(6000, 1)
    flat = 0.5 * p + 0.5 * p.mean()  # same ranking, worse calibration
    sel = _select({"flat": flat, "truth": p}, y, frame)
    assert sel.chosen == "truth"
    f = sel.figures
    assert set(f) == {"flat", "truth"}
    assert f["truth"].log_loss < f["flat"].log_loss
    assert f["flat"].log_loss_gain.low > 0  # worse beyond noise
    assert f["truth"].log_loss_gain.point == 0.0
    assert abs(f["truth"].roc_auc - f["flat"].roc_auc) < 1e-12  # ranking is not the criterion
    for fig in f.values():
        d = fig.as_dict()
        lo, hi = d["expected_profit_interval"]
        assert lo <= d["expected_profit_per_customer_usd"] <= hi
        assert {"brier", "realised_profit_interval", "log_loss_minus_best_interval"} <= set(d)
    assert "lowest selection log loss" in sel.reason and "worse beyond noise" in sel.reason


def test_select_candidate_profit_does_not_override_a_tie_within_noise() -> None:
    frame, p, y = _world(3000, 2)
    rng = np.random.default_rng(3)
    twin = np.clip(p + rng.normal(0, 0.002, len(p)), 1e-3, 1 - 1e-3)
    sel = _select({"a": p, "b": twin}, y, frame)
    best = min(sel.figures, key=lambda n: sel.figures[n].log_loss)
    other = "b" if best == "a" else "a"
    assert sel.figures[other].log_loss_gain.low <= 0  # tied within noise
    assert sel.figures[other].realised_profit_gain_usd.low <= 0  # no profit gain beyond noise
    assert sel.chosen == best and "tied within noise" in sel.reason


def test_select_candidate_is_unchanged_when_every_usd_amount_scales() -> None:
    frame, p, y = _world(4000, 4)
    rng = np.random.default_rng(5)
    probs = {
        "noisy": np.clip(p + rng.normal(0, 0.05, len(p)), 1e-3, 1 - 1e-3),
        "sharp": np.clip(p + rng.normal(0, 0.01, len(p)), 1e-3, 1 - 1e-3),
    }
    one, ten = _select(probs, y, frame), _select(probs, y, frame, scale=10.0)
    assert one.chosen == ten.chosen
    for n in probs:
        a, b = one.figures[n], ten.figures[n]
        assert b.log_loss == a.log_loss
        assert np.isclose(b.realised_profit_usd.point, 10 * a.realised_profit_usd.point)
        assert np.isclose(b.expected_profit_usd.low, 10 * a.expected_profit_usd.low)
