"""Each gate with a case that passes and one that fails, by plain calls on small arrays."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import pytest

from configs.settings import BayesPilotConfig, GatesConfig, build_config
from tasks.evaluate import profit_at_stake, realised_profit
from tasks.evidence import (
    ChampionScores,
    FoldResult,
    Perturbation,
    RobustnessEvidence,
    SplitScores,
    StabilityEvidence,
    TechnicalEvidence,
)
from tasks.gates import (
    GATE_IDS,
    GateInputs,
    gate_baseline,
    gate_business,
    gate_calibration,
    gate_champion,
    gate_error_cost,
    gate_robustness,
    gate_segments,
    gate_stability,
    gate_technical,
    gate_threshold,
    guarded,
    holm,
    registered,
    segment_index,
)
from tasks.gates.registry import run_registered


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

    @property
    def stake(self) -> float:
        return profit_at_stake(self.y, self.values, economics=self.cfg.economics)


def make_world(n: int = 6000, seed: int = 1, usd: float = 1.0) -> World:
    """A calibrated model on ``n`` customers; ``usd`` multiplies every money amount."""
    rng = np.random.default_rng(seed)
    seg = rng.choice(["a", "b", "c"], n, p=[0.45, 0.45, 0.10])
    logit = rng.normal(-1.2, 1.3, n)
    p = 1 / (1 + np.exp(-logit))
    y = (rng.random(n) < p).astype(int)
    values = rng.uniform(60, 360, n) * usd
    frame = pd.DataFrame({"seg": seg, "value": values})
    cfg = build_config(
        {
            "economics": {
                "customer_value": {"column": "value", "multiplier": 1.0},
                "contact_cost_usd": 15.0 * usd,
            },
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
        stake=world.stake,
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
        stake=world.stake,
        config=world.cfg.gates.baseline,
        bootstrap=world.cfg.bootstrap,
    )
    assert not r.passed
    assert "PR-AUC gain over majority" in r.reason


def test_gate_baseline_without_baselines_fails_with_reason(world: World) -> None:
    r = gate_baseline(
        world.y,
        world.p,
        world.profit(world.p),
        {},
        stake=world.stake,
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
        stake=world.stake,
        capacity_share=None,
        config=world.cfg.gates.business,
        bootstrap=world.cfg.bootstrap,
    )
    assert ok.passed, ok.reason
    # a policy that throws away a tenth of the customers' savable value loses to contact-all
    worse = np.where(np.random.default_rng(4).random(len(world.y)) < 0.5, 0.0, all_profit)
    bad = gate_business(
        worse,
        all_profit,
        worse != 0,
        stake=world.stake,
        capacity_share=None,
        config=world.cfg.gates.business,
        bootstrap=world.cfg.bootstrap,
    )
    assert not bad.passed
    assert "not worse than contact-all" in bad.reason


def test_gate_business_capacity_exceeded_fails(world: World) -> None:
    e = world.cfg.economics
    all_profit = realised_profit(world.y, world.values, economics=e)
    r = gate_business(
        world.profit(world.p),
        all_profit,
        world.contact(world.p),
        stake=world.stake,
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
    assert bad.evidence["overall"]["ece"] > bad.value  # the raw ECE is kept as evidence


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
        ev[test],
        prof[test],
        world.contact(world.p)[test],
        stake=world.stake,
        config=world.cfg.gates.threshold,
        bootstrap=world.cfg.bootstrap,
    )
    assert ok.passed, ok.reason
    nobody = np.zeros(len(world.y) - half, dtype=bool)
    bad = gate_threshold(
        ev[sel],
        pic[sel],
        prof[sel],
        ev[test],
        np.zeros(len(nobody)),
        nobody,
        stake=world.stake,
        config=world.cfg.gates.threshold,
        bootstrap=world.cfg.bootstrap,
    )
    assert not bad.passed and "contact rate 0.000 within" in bad.reason


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


def _folds(auc: list[float], profit: list[float], rows: int = 1000) -> StabilityEvidence:
    """Folds of ``rows`` rows with the standard errors sampling noise gives at that size."""
    from tasks.evaluate import auc_standard_error

    folds = tuple(
        FoldResult(
            roc_auc=a,
            roc_auc_se=auc_standard_error(a, rows // 4, rows - rows // 4),
            profit_per_customer_usd=pr,
            profit_se_usd=40.0 / np.sqrt(rows),
            rows=rows,
        )
        for a, pr in zip(auc, profit, strict=True)
    )
    return StabilityEvidence(folds, rows * len(auc), False)


def test_gate_stability_pass_and_unstable_fail(world: World) -> None:
    cfg = world.cfg.gates.stability
    ok = gate_stability(_folds([0.81, 0.82, 0.80, 0.815], [5.0, 5.3, 4.9, 5.1]), config=cfg)
    assert ok.passed, ok.reason
    bad = gate_stability(_folds([0.70, 0.85, 0.62, 0.80], [2.0, 6.0, 1.0, 5.0]), config=cfg)
    assert not bad.passed and "std" in bad.reason
    assert not gate_stability(None, config=cfg).passed


def test_gate_stability_spread_judged_against_noise_at_fold_size(world: World) -> None:
    """The same fold spread is noise on small folds and a real instability on large ones."""
    cfg = world.cfg.gates.stability
    auc = [0.84, 0.80, 0.83, 0.79, 0.82, 0.86, 0.81, 0.83, 0.80, 0.85]  # std ~0.022
    profit = [48.0, 45.5, 47.0, 44.0, 46.5, 49.0, 45.0, 47.5, 44.5, 48.5]
    small = gate_stability(_folds(auc, profit, rows=700), config=cfg)
    assert small.passed, small.reason
    large = gate_stability(_folds(auc, profit, rows=50_000), config=cfg)
    assert not large.passed
    assert small.threshold is not None and large.threshold is not None
    assert float(small.threshold) > float(large.threshold)


def test_gate_error_cost_pass_and_fail(world: World) -> None:
    e = world.cfg.economics
    segs = segment_index(world.frame, ("seg",))
    prior = np.full(len(world.y), world.y.mean())
    kw: dict[str, Any] = dict(
        save_rate=e.save_rate,
        contact_cost_usd=e.contact_cost_usd,
        stake=world.stake,
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
        stake=world.stake,
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
        single_row_cpu_ms=2.5,
    )
    base.update(kw)
    return TechnicalEvidence(**base)  # type: ignore[arg-type]


def test_gate_technical_pass_and_failures(world: World) -> None:
    cfg = world.cfg.gates.technical
    assert gate_technical(_tech(), config=cfg).passed
    assert not gate_technical(_tech(max_abs_diff_after_reload=1e-3), config=cfg).passed
    slow = gate_technical(_tech(single_row_cpu_ms=500.0), config=cfg)
    assert not slow.passed and "CPU time" in slow.reason
    # a busy machine's wall-clock latency is recorded, not judged
    busy = gate_technical(_tech(single_row_latency_ms={"p95": 500.0}), config=cfg)
    assert busy.passed, busy.reason
    assert not gate_technical(_tech(single_row_cpu_ms=None), config=cfg).passed
    assert not gate_technical(_tech(artifact_bytes=10**9), config=cfg).passed
    broken = gate_technical(_tech(loaded_in_fresh_process=False, error="boom"), config=cfg)
    assert not broken.passed and "boom" in broken.reason
    assert not gate_technical(None, config=cfg).passed


def test_gate_champion_first_model_recorded_explicitly(world: World) -> None:
    r = gate_champion(
        world.profit(world.p),
        None,
        stake=world.stake,
        config=world.cfg.gates.champion,
        bootstrap=world.cfg.bootstrap,
    )
    assert r.passed and "no champion yet" in r.reason


def test_gate_champion_worse_challenger_fails(world: World) -> None:
    champ = ChampionScores("1", "rec", world.profit(world.p))
    worse = np.random.default_rng(2).permutation(world.p)
    r = gate_champion(
        world.profit(worse),
        champ,
        stake=world.stake,
        config=world.cfg.gates.champion,
        bootstrap=world.cfg.bootstrap,
    )
    assert not r.passed and "worse than champion" in r.reason
    same = gate_champion(
        world.profit(world.p),
        champ,
        stake=world.stake,
        config=world.cfg.gates.champion,
        bootstrap=world.cfg.bootstrap,
    )
    assert same.passed


def test_gate_champion_unscorable_champion_fails(world: World) -> None:
    r = gate_champion(
        world.profit(world.p),
        ChampionScores("3", "rec", None, error="gone"),
        stake=world.stake,
        config=world.cfg.gates.champion,
        bootstrap=world.cfg.bootstrap,
    )
    assert not r.passed and "gone" in r.reason


def test_guarded_turns_errors_into_failed_gates() -> None:
    def boom():
        raise ValueError("input missing")

    r = guarded("business", boom)
    assert not r.passed and r.gate == "business" and "input missing" in r.reason


def test_registry_disabled_gate_is_recorded_as_disabled(world: World) -> None:
    gates = world.cfg.gates.model_copy(
        update={"stability": world.cfg.gates.stability.model_copy(update={"enabled": False})}
    )
    inputs = _inputs(world)
    results = run_registered(GateInputs(**{**inputs.__dict__, "gates": gates}), only=("stability",))
    (r,) = results
    assert r.passed and r.evidence == {"disabled": True} and "disabled by config" in r.reason
    # on by default: without the override, missing evidence is a failure, not a skip
    (on,) = run_registered(
        GateInputs(**{**inputs.__dict__, "stability": None}), only=("stability",)
    )
    assert not on.passed and "no cross-validation folds" in on.reason


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

    cfg = RobustnessGateConfig()
    steady = RobustnessEvidence(
        6.0, (Perturbation("noise", 0.01, 5.95), Perturbation("x missing", 0.02, 5.9))
    )
    assert gate_robustness(steady, stake=10.0, config=cfg).passed
    brittle = RobustnessEvidence(6.0, (Perturbation("noise", 0.30, 3.0),))
    r = gate_robustness(brittle, stake=10.0, config=cfg)
    assert not r.passed and "noise" in r.reason
    assert not gate_robustness(None, stake=10.0, config=cfg).passed


def test_registry_has_one_gate_per_config_section() -> None:
    ids = [s.gate for s in registered()]
    assert tuple(ids) == GATE_IDS
    assert {i.replace("-", "_") for i in ids} == set(GatesConfig.model_fields)


# ------------------------------------------------------------------ properties
def _inputs(world: World, rows: slice = slice(None)) -> GateInputs:
    """Gate inputs for ``world`` on ``rows``: first half of the rows selection, rest test."""
    e = world.cfg.economics
    y, p, v = world.y[rows], world.p[rows], world.values[rows]
    frame = world.frame.iloc[rows].reset_index(drop=True)
    ev = p * e.save_rate * v - e.contact_cost_usd
    contact = ev > 0
    pic = realised_profit(y, v, economics=e)
    profit = np.where(contact, pic, 0.0)
    half = len(y) // 2
    sel, test = slice(0, half), slice(half, None)

    def scores(part: slice, q: np.ndarray) -> SplitScores:
        evq = q[part] * e.save_rate * v[part] - e.contact_cost_usd
        c = evq > 0
        return SplitScores(y[part], q[part], v[part], evq, c, np.where(c, pic[part], 0.0))

    prior = np.full(len(y), y.mean())
    rule = np.where(v > np.median(v), y.mean() * 1.1, y.mean() * 0.9)
    cand = scores(test, p)
    fold_rows = 600
    rng = np.random.default_rng(0)
    folds = tuple(
        FoldResult(
            roc_auc=0.80 + rng.normal(0, 0.01),
            roc_auc_se=0.02,
            profit_per_customer_usd=float(profit.mean()) + rng.normal(0, 0.5 * (v.mean() / 210)),
            profit_se_usd=float(np.std(profit) / np.sqrt(fold_rows)),
            rows=fold_rows,
        )
        for _ in range(6)
    )
    return GateInputs(
        candidate=cand,
        p_raw=cand.p,
        baselines={"majority": scores(test, prior), "rule": scores(test, rule)},
        contact_all_profit=pic[test],
        segments=segment_index(frame.iloc[test].reset_index(drop=True), ("seg",)),
        selection=scores(sel, p),
        selection_profit_if_contacted=pic[sel],
        stake=profit_at_stake(y[test], v[test], economics=e),
        capacity_share=None,
        economics=e,
        n_bins=10,
        gates=world.cfg.gates,
        bootstrap=world.cfg.bootstrap,
        technical=_tech(),
        stability=StabilityEvidence(folds, fold_rows * 6, False),
        champion=ChampionScores("1", "rec", np.where(contact, pic, 0.0)[test]),
        robustness=RobustnessEvidence(
            float(cand.profit.mean()),
            (Perturbation("noise", 0.01, float(cand.profit.mean()) * 0.99),),
        ),
    )


def _passed(inputs: GateInputs) -> dict[str, bool]:
    return {r.gate: r.passed for r in run_registered(inputs)}


def test_gates_scale_free_in_usd() -> None:
    """Multiplying every USD amount (values and contact cost) by 10 changes no pass/fail."""
    one, ten = make_world(usd=1.0), make_world(usd=10.0)
    a, b = run_registered(_inputs(one)), run_registered(_inputs(ten))
    assert all(r.passed for r in a), [r.reason for r in a if not r.passed]
    assert {r.gate: r.passed for r in a} == {r.gate: r.passed for r in b}
    # every money limit is sized from the economics: ten times the USD, ten times the margin
    limits = (
        "profit_margin_usd_per_customer",
        "margin_usd_per_customer",
        "allowed_loss_usd_per_customer",
    )
    for ra, rb in zip(a, b, strict=True):
        for key in limits:
            if key in ra.evidence:
                assert rb.evidence[key] == pytest.approx(10 * ra.evidence[key], rel=1e-6), key
    money = {"baseline", "business", "error-cost", "champion", "threshold"}
    for ra, rb in zip(a, b, strict=True):
        if ra.gate in money and ra.gate != "baseline" and ra.value and rb.value:
            # money figures scale with the economics, shares do not
            ratio = rb.value / ra.value
            assert ratio == pytest.approx(10.0, rel=1e-6) or ratio == pytest.approx(1.0, rel=1e-6)


def test_gates_half_the_rows_widen_intervals_not_decisions() -> None:
    world = make_world(n=12000, seed=2)
    full, half = _inputs(world), _inputs(world, slice(0, 6000))
    assert _passed(full) == _passed(half) == dict.fromkeys(GATE_IDS, True)
    wide = {r.gate: r for r in run_registered(half)}
    narrow = {r.gate: r for r in run_registered(full)}
    for gate in ("baseline", "business"):
        iw, inn = wide[gate].interval, narrow[gate].interval
        assert iw is not None and inn is not None
        assert iw[1] - iw[0] > inn[1] - inn[0]


def _threshold_at_constant_value(p: np.ndarray, y: np.ndarray, *, resamples: int) -> Any:
    """The threshold gate for model probabilities ``p`` on labels ``y`` at a constant customer
    value of 300 USD and a 15 USD contact: first half selection, second half test."""
    cfg = build_config(
        {
            "economics": {"customer_value": {"constant_usd": 300.0}, "contact_cost_usd": 15.0},
            "bootstrap": {"resamples": 200},
            "gates": {"threshold": {"resamples": resamples}},
        }
    )
    e = cfg.economics
    v = np.full(len(y), 300.0)
    ev = p * e.save_rate * v - e.contact_cost_usd
    pic = realised_profit(y, v, economics=e)
    contact = ev > 0
    prof = np.where(contact, pic, 0.0)
    half = len(y) // 2
    return gate_threshold(
        ev[:half],
        pic[:half],
        prof[:half],
        ev[half:],
        prof[half:],
        contact[half:],
        stake=profit_at_stake(y[half:], v[half:], economics=e),
        config=cfg.gates.threshold,
        bootstrap=cfg.bootstrap,
    )


def test_gate_threshold_flat_profit_in_dense_scores_passes() -> None:
    """A cut-off in the densest part of the scores swings the contact rate, not the profit:
    judged in money it is stable (the public bank-churn case)."""
    rng = np.random.default_rng(11)
    n = 8000
    p = np.clip(rng.normal(0.2, 0.02, n), 0.01, 0.99)  # most customers sit at the cut-off
    y = (rng.random(n) < p).astype(int)
    r = _threshold_at_constant_value(p, y, resamples=80)
    rates = r.evidence["contact_rate_interval"]
    assert rates[1] - rates[0] > 0.2  # the old contact-rate spread limit would have failed it
    assert r.passed, r.reason


def test_gate_baseline_rule_that_wins_is_named_with_rows_needed(world: World) -> None:
    prior = np.full(len(world.y), world.y.mean())
    worse = np.clip(world.p + np.random.default_rng(6).normal(0, 0.25, len(world.p)), 0, 1)
    r = gate_baseline(
        world.y,
        worse,
        world.profit(worse),
        {"majority": (prior, world.profit(prior)), "rule": (world.p, world.profit(world.p))},
        stake=world.stake,
        config=world.cfg.gates.baseline,
        bootstrap=world.cfg.bootstrap,
    )
    assert not r.passed
    assert r.evidence["baseline_earns_more"] and "earns more" in r.reason
    close = gate_baseline(
        world.y,
        world.p,
        world.profit(world.p),
        {"rule": (prior, world.profit(world.p))},
        stake=world.stake,
        config=world.cfg.gates.baseline,
        bootstrap=world.cfg.bootstrap,
    )
    assert close.passed, close.reason  # equal profit: non-inferior
    assert close.evidence["rows_to_show_one_margin"] is not None


def test_gate_threshold_operating_point_far_from_the_data_fails() -> None:
    """A model that overstates risk puts its cut-off where the data say it should not be: on many
    rows the money lost across the re-optimised interval is beyond noise, and the gate fails."""
    rng = np.random.default_rng(12)
    n = 60_000
    logit = rng.normal(-1.5, 1.2, n)
    y = (rng.random(n) < 1 / (1 + np.exp(-logit))).astype(int)
    p = 1 / (1 + np.exp(-(logit + 2.0)))  # every risk overstated
    r = _threshold_at_constant_value(p, y, resamples=60)
    assert not r.passed
    assert "expected profit lost across the cut-off interval" in r.reason
    assert r.evidence["cutoff_interval_usd"][0] > 0  # the data want a higher cut-off
