"""The one registry of gates: id -> (function, config section), in decision order.

A gate module registers its gate with ``@register("id", order=N)``; the gate's config is the
``GatesConfig`` field of the same name (dashes as underscores). ``run_gates`` computes the
shared inputs once (the candidate's and baselines' decisions on test, the segments, the profit
at stake) and runs every registered gate, guarded, so adding a gate touches its module, its
config class and the README, and nothing else.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import partial
from typing import Any

import numpy as np
import pandas as pd

from configs.settings import BayesPilotConfig, BootstrapConfig, EconomicsConfig, GatesConfig
from tasks.evaluate import profit_at_stake, realised_profit
from tasks.evidence import (
    ChampionScores,
    ChosenScores,
    RobustnessEvidence,
    SplitScores,
    StabilityEvidence,
    TechnicalEvidence,
    score_split,
)
from tasks.gates.result import GateResult, disabled, guarded
from tasks.gates.stats import segment_index
from tasks.select_policy import Policy, capacity_share
from tasks.split_data import Splits
from tasks.train_candidates import TrainedModel


@dataclass(frozen=True)
class GateInputs:
    """Everything a gate may judge, computed once per run. Arrays are per test row unless
    named ``selection``; money is USD per customer."""

    candidate: SplitScores
    p_raw: np.ndarray
    baselines: Mapping[str, SplitScores]
    contact_all_profit: np.ndarray
    segments: Mapping[str, np.ndarray]
    selection: SplitScores
    selection_profit_if_contacted: np.ndarray
    stake: float
    capacity_share: float | None
    economics: EconomicsConfig
    n_bins: int
    gates: GatesConfig
    bootstrap: BootstrapConfig
    technical: TechnicalEvidence | None = None
    stability: StabilityEvidence | None = None
    champion: ChampionScores | None = None
    robustness: RobustnessEvidence | None = None

    @property
    def y(self) -> np.ndarray:
        return self.candidate.y


GateFn = Callable[[GateInputs, Any], GateResult]


@dataclass(frozen=True)
class GateSpec:
    """A registered gate: its id, place in the decision order and the adapter that runs it
    from the shared inputs with its own config section."""

    gate: str
    order: int
    run: GateFn

    @property
    def config_key(self) -> str:
        return self.gate.replace("-", "_")

    def config(self, gates: GatesConfig) -> Any:
        return getattr(gates, self.config_key)


_REGISTRY: dict[str, GateSpec] = {}


def register(gate: str, *, order: int) -> Callable[[GateFn], GateFn]:
    """Register ``fn(inputs, config) -> GateResult`` as gate ``gate``. The config class must be
    the ``GatesConfig`` field ``gate`` (dashes as underscores) and carry ``enabled``."""

    def deco(fn: GateFn) -> GateFn:
        if gate in _REGISTRY and _REGISTRY[gate].run is not fn:
            raise ValueError(f"gate {gate!r} is registered twice")
        if gate.replace("-", "_") not in GatesConfig.model_fields:
            raise ValueError(f"gate {gate!r} has no config section gates.{gate}")
        _REGISTRY[gate] = GateSpec(gate, order, fn)
        return fn

    return deco


def registered() -> tuple[GateSpec, ...]:
    """Every registered gate, in decision order."""
    return tuple(sorted(_REGISTRY.values(), key=lambda s: (s.order, s.gate)))


def run_registered(
    inputs: GateInputs, *, only: tuple[str, ...] | None = None, threads: int = 1
) -> tuple[GateResult, ...]:
    """Run every registered gate (or those in ``only``); a disabled gate says so, an error is
    a failed gate with the reason. Results come in decision order; with ``threads`` > 1 the
    gates (pure functions of ``inputs``, each with its own seeded draws) run that many at a
    time, with the same results."""
    jobs: list[Callable[[], GateResult]] = []
    for spec in registered():
        if only is not None and spec.gate not in only:
            continue
        cfg = spec.config(inputs.gates)
        if not cfg.enabled:
            jobs.append(partial(disabled, spec.gate))
            continue
        jobs.append(partial(guarded, spec.gate, partial(spec.run, inputs, cfg)))
    if threads <= 1 or len(jobs) <= 1:
        return tuple(job() for job in jobs)
    with ThreadPoolExecutor(max_workers=threads, thread_name_prefix="gate") as pool:
        return tuple(pool.map(lambda job: job(), jobs))


def gate_inputs(
    predict: Callable[[pd.DataFrame], np.ndarray],
    baselines: tuple[TrainedModel, ...],
    splits: Splits,
    policy: Policy,
    *,
    predict_raw: Callable[[pd.DataFrame], np.ndarray] | None = None,
    technical: TechnicalEvidence | None = None,
    stability: StabilityEvidence | None = None,
    champion: ChampionScores | None = None,
    robustness: RobustnessEvidence | None = None,
    config: BayesPilotConfig,
    scores: ChosenScores | None = None,
) -> GateInputs:
    """Score the candidate and baselines on test (and the candidate on selection) under
    ``policy``; ``predict`` gives calibrated probabilities, ``predict_raw`` the model's own.
    ``scores``: those probabilities when the run already computed them (not re-scored)."""
    econ = config.economics
    test, y = splits.test, splits.y("test")
    X_test = splits.X("test")
    p_test = predict(X_test) if scores is None else scores.test
    cand = score_split(p_test, test, y, policy, config=config)
    base_scores = {
        b.name: score_split(b.predict(X_test), test, y, policy, config=config)
        for b in baselines
        if b.ok
    }
    sel, y_sel = splits.selection, splits.y("selection")
    p_sel = predict(splits.X("selection")) if scores is None else scores.selection
    sel_scores = score_split(p_sel, sel, y_sel, policy, config=config)
    if scores is not None:
        p_raw = scores.test_raw
    else:
        p_raw = cand.p if predict_raw is None else predict_raw(X_test)
    return GateInputs(
        candidate=cand,
        p_raw=p_raw,
        baselines=base_scores,
        contact_all_profit=realised_profit(y, cand.values, economics=econ),
        segments=segment_index(test, splits.roles.segment_columns),
        selection=sel_scores,
        selection_profit_if_contacted=realised_profit(y_sel, sel_scores.values, economics=econ),
        stake=profit_at_stake(y, cand.values, economics=econ),
        capacity_share=capacity_share(econ, splits.table_rows),
        economics=econ,
        n_bins=config.calibration.n_bins,
        gates=config.gates,
        bootstrap=config.bootstrap,
        technical=technical,
        stability=stability,
        champion=champion,
        robustness=robustness,
    )


def run_gates(
    predict: Callable[[pd.DataFrame], np.ndarray],
    baselines: tuple[TrainedModel, ...],
    splits: Splits,
    policy: Policy,
    *,
    predict_raw: Callable[[pd.DataFrame], np.ndarray] | None = None,
    technical: TechnicalEvidence | None = None,
    stability: StabilityEvidence | None = None,
    champion: ChampionScores | None = None,
    robustness: RobustnessEvidence | None = None,
    config: BayesPilotConfig,
    only: tuple[str, ...] | None = None,
    scores: ChosenScores | None = None,
) -> tuple[GateResult, ...]:
    """Every registered gate (or those in ``only``), in order, on the test split; ``scores``:
    the candidate's probabilities already computed by the run (see :func:`gate_inputs`)."""
    inputs = gate_inputs(
        predict,
        baselines,
        splits,
        policy,
        predict_raw=predict_raw,
        technical=technical,
        stability=stability,
        champion=champion,
        robustness=robustness,
        config=config,
        scores=scores,
    )
    return run_registered(inputs, only=only, threads=config.scale.evidence_threads)
