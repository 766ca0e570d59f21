"""Each gate with a case that passes and one that fails, by plain calls on small arrays."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import pytest

from configs.settings import BayesPilotConfig, build_config
from tasks.evaluate import realised_profit
from tasks.gates import (
    GATE_IDS,
    ChampionScores,
    StabilityEvidence,
    TechnicalEvidence,
    gate_baseline,
    gate_business,
    gate_calibration,
    gate_champion,
    gate_error_cost,
    gate_segments,
    gate_stability,
    gate_technical,
    gate_threshold,
    guarded,
    holm,
    segment_index,
)


@dataclass
class World:
    cfg: BayesPilotConfig
    frame: pd.DataFrame
    y: np.ndarray
    p: np.ndarray
    values: np.ndarray

    def contact(self, p: np.ndarray) -> np.ndarray:
        e = self.cfg.economics
        return p * e.save_rate * self.values - e.contact_cost_usd > 0

    def profit(self, p: np.ndarray) -> np.ndarray:
        c = self.contact(p)
        return np.where(c, realised_profit(self.y, self.values, economics=self.cfg.economics), 0)


def make_world(n: int = 6000, seed: int = 1) -> World:
    rng = np.random.default_rng(seed)
    seg = rng.choice(["a", "b", "c"], n, p=[0.45, 0.45, 0.10])
    logit = rng.normal(-1.2, 1.3, n)
    p = 1 / (1 + np.exp(-logit))
    y = (rng.random(n) < p).astype(int)
    values = rng.uniform(60, 360, n)
    frame = pd.DataFrame({"seg": seg, "value": values})
    cfg = build_config(
        {
            "economics": {"customer_value": {"column": "value", "multiplier": 1.0}},
            "bootstrap": {"resamples": 300},
            "gates": {"calibration": {"simulations": 200}, "threshold": {"resamples": 80}},
        }
    )
    return World(cfg, frame, y, p, values)


@pytest.fixture(scope="module")
def world() -> World:
    return make_world()


def test_gate_baseline_good_model_passes(world: World) -> None:
    prior = np.full(len(world.y), world.y.mean())
    r = gate_baseline(
        world.y,
        world.p,
        world.profit(world.p),
        {"majority": (prior, world.profit(prior))},
        config=world.cfg.gates.baseline,
        bootstrap=world.cfg.bootstrap,
    )
    assert r.passed, r.reason
    assert r.interval is not None and r.interval[0] > 0


def test_gate_baseline_useless_model_fails(world: World) -> None:
    rng = np.random.default_rng(3)
    useless = rng.permutation(world.p)  # right distribution, no ranking signal
    prior = np.full(len(world.y), world.y.mean())
    r = gate_baseline(
        world.y,
        useless,
        world.profit(useless),
        {"majority": (prior, world.profit(prior))},
        config=world.cfg.gates.baseline,
        bootstrap=world.cfg.bootstrap,
    )
    assert not r.passed
    assert "not shown" in r.reason


def test_gate_baseline_without_baselines_fails_with_reason(world: World) -> None:
    r = gate_baseline(
        world.y,
        world.p,
        world.profit(world.p),
        {},
        config=world.cfg.gates.baseline,
        bootstrap=world.cfg.bootstrap,
    )
    assert not r.passed and "no baseline" in r.reason


def test_gate_business_pass_and_contact_all_fail(world: World) -> None:
    e = world.cfg.economics
    all_profit = realised_profit(world.y, world.values, economics=e)
    ok = gate_business(
        world.profit(world.p),
        all_profit,
        world.contact(world.p),
        capacity_share=None,
        config=world.cfg.gates.business,
        bootstrap=world.cfg.bootstrap,
    )
    assert ok.passed, ok.reason
    everyone = np.ones(len(world.y), dtype=bool)
    bad = gate_business(
        all_profit,
        all_profit,
        everyone,
        capacity_share=None,
        config=world.cfg.gates.business,
        bootstrap=world.cfg.bootstrap,
    )
    assert not bad.passed
    assert not bad.evidence["checks"]["better than contact-all (lower bound > 0)"]


def test_gate_business_capacity_exceeded_fails(world: World) -> None:
    e = world.cfg.economics
    all_profit = realised_profit(world.y, world.values, economics=e)
    r = gate_business(
        world.profit(world.p),
        all_profit,
        world.contact(world.p),
        capacity_share=0.05,
        config=world.cfg.gates.business,
        bootstrap=world.cfg.bootstrap,
    )
    assert not r.passed and "capacity respected" in r.reason


def test_gate_calibration_calibrated_passes_miscalibrated_fails(world: World) -> None:
    segs = segment_index(world.frame, ("seg",))
    kw: dict[str, Any] = dict(
        n_bins=10,
        min_segment_rows=200,
        segment_ece_excess=0.03,
        config=world.cfg.gates.calibration,
        bootstrap=world.cfg.bootstrap,
    )
    ok = gate_calibration(world.y, world.p, world.p, segs, **kw)  # type: ignore[arg-type]
    assert ok.passed, ok.reason
    skewed = np.sqrt(world.p)
    bad = gate_calibration(world.y, skewed, world.p, segs, **kw)  # type: ignore[arg-type]
    assert not bad.passed
    assert bad.value is not None and bad.value > world.cfg.gates.calibration.max_ece


def test_gate_threshold_stable_passes_contact_nobody_fails(world: World) -> None:
    e = world.cfg.economics
    ev = world.p * e.save_rate * world.values - e.contact_cost_usd
    pic = realised_profit(world.y, world.values, economics=e)
    half = len(world.y) // 2
    sel, test = slice(0, half), slice(half, None)
    prof = world.profit(world.p)
    ok = gate_threshold(
        ev[sel],
        pic[sel],
        prof[sel],
        prof[test],
        world.contact(world.p)[test],
        config=world.cfg.gates.threshold,
        bootstrap=world.cfg.bootstrap,
    )
    assert ok.passed, ok.reason
    nobody = np.zeros(len(world.y) - half, dtype=bool)
    bad = gate_threshold(
        ev[sel],
        pic[sel],
        prof[sel],
        np.zeros(len(nobody)),
        nobody,
        config=world.cfg.gates.threshold,
        bootstrap=world.cfg.bootstrap,
    )
    assert not bad.passed and "contact rate within" in bad.reason


def test_gate_segments_segment_without_signal_fails(world: World) -> None:
    segs = segment_index(world.frame, ("seg",))
    kw: dict[str, Any] = dict(
        n_bins=10,
        config=world.cfg.gates.segments,
        calibration=world.cfg.gates.calibration,
        bootstrap=world.cfg.bootstrap,
    )
    ok = gate_segments(world.y, world.p, world.contact(world.p), segs, **kw)  # type: ignore[arg-type]
    assert ok.passed, ok.reason
    assert "seg=c" not in ok.evidence["insufficient_support"]
    broken = world.p.copy()
    idx = segs["seg=a"]
    broken[idx] = np.random.default_rng(5).permutation(broken[idx])  # no signal in segment a
    bad = gate_segments(world.y, broken, world.contact(broken), segs, **kw)  # type: ignore[arg-type]
    assert not bad.passed
    assert "seg=a" in bad.evidence["failing_segments"]
    assert bad.evidence["worst_segment"] == "seg=a"


def test_gate_segments_small_segment_listed_not_dropped(world: World) -> None:
    segs = segment_index(world.frame, ("seg",))
    cfg = world.cfg.gates.segments.model_copy(update={"min_segment_rows": 1000})
    r = gate_segments(
        world.y,
        world.p,
        world.contact(world.p),
        segs,
        n_bins=10,
        config=cfg,
        calibration=world.cfg.gates.calibration,
        bootstrap=world.cfg.bootstrap,
    )
    assert "seg=c" in r.evidence["insufficient_support"]
    assert "seg=c" not in r.evidence["segments"]


def test_gate_segments_no_segment_columns_fails(world: World) -> None:
    r = gate_segments(
        world.y,
        world.p,
        world.contact(world.p),
        {},
        n_bins=10,
        config=world.cfg.gates.segments,
        calibration=world.cfg.gates.calibration,
        bootstrap=world.cfg.bootstrap,
    )
    assert not r.passed and "no segment columns" in r.reason


def test_holm_controls_family() -> None:
    assert holm({"a": 0.001, "b": 0.02, "c": 0.04}, 0.05) == {"a": True, "b": True, "c": True}
    assert holm({"a": 0.01, "b": 0.03, "c": 0.04}, 0.05) == {"a": True, "b": False, "c": False}


def test_gate_stability_pass_and_unstable_fail(world: World) -> None:
    cfg = world.cfg.gates.stability
    ok = gate_stability(
        StabilityEvidence([0.81, 0.82, 0.80, 0.815], [5.0, 5.3, 4.9, 5.1], 1000, False), config=cfg
    )
    assert ok.passed
    bad = gate_stability(
        StabilityEvidence([0.70, 0.85, 0.62, 0.80], [2.0, 6.0, 1.0, 5.0], 1000, False), config=cfg
    )
    assert not bad.passed and "std" in bad.reason
    assert not gate_stability(None, config=cfg).passed


def test_gate_error_cost_pass_and_fail(world: World) -> None:
    e = world.cfg.economics
    segs = segment_index(world.frame, ("seg",))
    prior = np.full(len(world.y), world.y.mean())
    kw: dict[str, Any] = dict(
        save_rate=e.save_rate,
        contact_cost_usd=e.contact_cost_usd,
        min_segment_rows=200,
        config=world.cfg.gates.error_cost,
        bootstrap=world.cfg.bootstrap,
    )
    ok = gate_error_cost(
        world.y,
        world.values,
        world.contact(world.p),
        {"majority": world.contact(prior)},
        segs,
        **kw,
    )
    assert ok.passed, ok.reason
    useless = np.random.default_rng(9).permutation(world.p)
    bad = gate_error_cost(
        world.y, world.values, world.contact(useless), {"model": world.contact(world.p)}, segs, **kw
    )
    assert not bad.passed


def test_gate_error_cost_segment_bearing_misses_fails(world: World) -> None:
    e = world.cfg.economics
    segs = segment_index(world.frame, ("seg",))
    contact = world.contact(world.p).copy()
    contact[segs["seg=c"]] = False  # never contact segment c: its churners all missed
    cfg = world.cfg.gates.error_cost.model_copy(update={"max_segment_fn_cost_multiple": 1.5})
    r = gate_error_cost(
        world.y,
        world.values,
        contact,
        {"none": np.zeros(len(contact), bool)},
        segs,
        save_rate=e.save_rate,
        contact_cost_usd=e.contact_cost_usd,
        min_segment_rows=200,
        config=cfg,
        bootstrap=world.cfg.bootstrap,
    )
    assert not r.passed and "seg=c" in r.reason


def _tech(**kw) -> TechnicalEvidence:
    base = dict(
        artifact_bytes=2_000_000,
        loaded_in_fresh_process=True,
        max_abs_diff_after_reload=0.0,
        rows_compared=100,
        single_row_latency_ms={"p50": 3.0, "p95": 5.0, "p99": 6.0},
    )
    base.update(kw)
    return TechnicalEvidence(**base)  # type: ignore[arg-type]


def test_gate_technical_pass_and_failures(world: World) -> None:
    cfg = world.cfg.gates.technical
    assert gate_technical(_tech(), config=cfg).passed
    assert not gate_technical(_tech(max_abs_diff_after_reload=1e-3), config=cfg).passed
    slow = gate_technical(_tech(single_row_latency_ms={"p95": 500.0}), config=cfg)
    assert not slow.passed and "p95" in slow.reason
    assert not gate_technical(_tech(artifact_bytes=10**9), config=cfg).passed
    broken = gate_technical(_tech(loaded_in_fresh_process=False, error="boom"), config=cfg)
    assert not broken.passed and "boom" in broken.reason
    assert not gate_technical(None, config=cfg).passed


def test_gate_champion_first_model_recorded_explicitly(world: World) -> None:
    r = gate_champion(
        world.profit(world.p), None, config=world.cfg.gates.champion, bootstrap=world.cfg.bootstrap
    )
    assert r.passed and "no champion yet" in r.reason


def test_gate_champion_worse_challenger_fails(world: World) -> None:
    champ = ChampionScores("1", "rec", world.profit(world.p))
    worse = np.random.default_rng(2).permutation(world.p)
    r = gate_champion(
        world.profit(worse), champ, config=world.cfg.gates.champion, bootstrap=world.cfg.bootstrap
    )
    assert not r.passed and "worse than champion" in r.reason
    same = gate_champion(
        world.profit(world.p), champ, config=world.cfg.gates.champion, bootstrap=world.cfg.bootstrap
    )
    assert same.passed


def test_gate_champion_unscorable_champion_fails(world: World) -> None:
    r = gate_champion(
        world.profit(world.p),
        ChampionScores("3", "rec", None, error="gone"),
        config=world.cfg.gates.champion,
        bootstrap=world.cfg.bootstrap,
    )
    assert not r.passed and "gone" in r.reason


def test_guarded_turns_errors_into_failed_gates() -> None:
    def boom():
        raise ValueError("input missing")

    r = guarded("business", boom)
    assert not r.passed and r.gate == "business" and "input missing" in r.reason


def test_disabled_gate_is_recorded_as_disabled(world: World) -> None:
    cfg = world.cfg.gates.stability.model_copy(update={"enabled": False})
    r = gate_stability(None, config=cfg)
    assert r.evidence == {"disabled": True} and "disabled by config" in r.reason


def test_gate_ids_are_the_fixed_contract() -> None:
    assert GATE_IDS == (
        "baseline",
        "business",
        "calibration",
        "threshold",
        "segments",
        "stability",
        "error-cost",
        "technical",
        "champion",
        "robustness",
    )


def test_gate_robustness_pass_and_brittle_fail() -> None:
    from configs.settings import RobustnessGateConfig
    from tasks.gates import Perturbation, RobustnessEvidence, gate_robustness

    cfg = RobustnessGateConfig()
    steady = RobustnessEvidence(
        6.0, (Perturbation("noise", 0.01, 5.95), Perturbation("x missing", 0.02, 5.9))
    )
    assert gate_robustness(steady, config=cfg).passed
    brittle = RobustnessEvidence(6.0, (Perturbation("noise", 0.30, 3.0),))
    r = gate_robustness(brittle, config=cfg)
    assert not r.passed and "noise" in r.reason
    assert not gate_robustness(None, config=cfg).passed
