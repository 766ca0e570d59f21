"""Evidence the gates judge: the candidate's decisions on test, refits for stability, and the
champion scored on the same rows. Plain computations; the gates in ``tasks.gates`` decide."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from sklearn.metrics import roc_auc_score
from sklearn.model_selection import RepeatedStratifiedKFold

from configs.settings import BayesPilotConfig
from tasks.calibrate import CalibratedModel, fit_calibrator
from tasks.evaluate import customer_values, expected_value, realised_profit
from tasks.gates import (
    GATE_IDS,
    ChampionScores,
    GateResult,
    Perturbation,
    RobustnessEvidence,
    StabilityEvidence,
    TechnicalEvidence,
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
    segment_index,
)
from tasks.load_data import ColumnRoles
from tasks.records import load_verified_model, load_verified_policy_text
from tasks.select_policy import Policy, apply_policy, capacity_share, profit_per_customer
from tasks.split_data import Splits
from tasks.train_candidates import TrainedModel, build_candidate


@dataclass(frozen=True)
class SplitScores:
    """A model's probabilities and decisions on one split under a policy."""

    y: np.ndarray
    p: np.ndarray
    values: np.ndarray
    ev: np.ndarray
    contact: np.ndarray
    profit: np.ndarray  # realised profit per customer (USD), 0 when not contacted

    @property
    def profit_if_contacted(self) -> np.ndarray:
        return np.where(self.contact, self.profit, 0.0)


def score_split(
    p: np.ndarray, frame: pd.DataFrame, y: np.ndarray, policy: Policy, *, config: BayesPilotConfig
) -> SplitScores:
    econ = config.economics
    d = apply_policy(p, frame, policy)
    values = customer_values(frame, economics=econ)
    return SplitScores(
        y,
        p,
        values,
        d.expected_value_usd,
        d.contact,
        profit_per_customer(y, values, d.contact, economics=econ),
    )


@dataclass(frozen=True)
class StabilityData:
    """Train + selection (subsampled to the cap) and the repeated stratified folds over it."""

    data: pd.DataFrame
    folds: list[tuple[np.ndarray, np.ndarray]]
    subsampled: bool


def stability_folds(splits: Splits, *, config: BayesPilotConfig) -> StabilityData:
    """Repeated stratified k-fold over train + selection (seeded; capped at ``max_rows``)."""
    cfg = config.gates.stability
    data = pd.concat([splits.train, splits.selection], ignore_index=True)
    subsampled = len(data) > cfg.max_rows
    if subsampled:
        data = data.sample(cfg.max_rows, random_state=config.split.seed).reset_index(drop=True)
    y = data[splits.roles.label_column].to_numpy(dtype=np.int64)
    folds = RepeatedStratifiedKFold(
        n_splits=cfg.n_splits, n_repeats=cfg.n_repeats, random_state=config.split.seed
    )
    return StabilityData(data, list(folds.split(np.zeros(len(y)), y)), subsampled)


def fit_stability_fold(
    fold: tuple[np.ndarray, np.ndarray],
    data: pd.DataFrame,
    calibration: pd.DataFrame,
    policy: Policy,
    *,
    name: str,
    method: str,
    roles: ColumnRoles,
    config: BayesPilotConfig,
) -> tuple[float, float]:
    """Refit candidate ``name`` on one fold, calibrate it with ``method`` on the calibration
    split, and return (ROC-AUC, profit per customer in USD) on the held-out part."""
    fit_idx, hold_idx = fold
    feats, label = list(roles.features), roles.label_column
    y = data[label].to_numpy(dtype=np.int64)
    pipe = build_candidate(name, roles, config=config.candidates)
    pipe.fit(data[feats].iloc[fit_idx], y[fit_idx])
    est = fit_calibrator(
        pipe, calibration[feats], calibration[label].to_numpy(dtype=np.int64), method=method
    )
    p = est.predict_proba(data[feats].iloc[hold_idx])[:, 1]  # type: ignore[attr-defined]
    s = score_split(p, data.iloc[hold_idx], y[hold_idx], policy, config=config)
    return float(roc_auc_score(y[hold_idx], p)), float(s.profit.mean())


def measure_stability(
    chosen: CalibratedModel, splits: Splits, policy: Policy, *, config: BayesPilotConfig
) -> StabilityEvidence:
    """All folds in one call (the flow runs ``fit_stability_fold`` as concurrent tasks)."""
    sd = stability_folds(splits, config=config)
    results = [
        fit_stability_fold(
            f,
            sd.data,
            splits.calibration,
            policy,
            name=chosen.name,
            method=chosen.method,
            roles=splits.roles,
            config=config,
        )
        for f in sd.folds
    ]
    return stability_evidence(results, sd)


def stability_evidence(results: list[tuple[float, float]], sd: StabilityData) -> StabilityEvidence:
    return StabilityEvidence(
        [r[0] for r in results], [r[1] for r in results], len(sd.data), sd.subsampled
    )


UNSEEN = "__unseen_category__"


def measure_robustness(
    predict: Callable[[pd.DataFrame], np.ndarray],
    splits: Splits,
    policy: Policy,
    *,
    config: BayesPilotConfig,
) -> RobustnessEvidence:
    """Perturb the test split and re-decide: noise on all numeric features; then, one feature
    at a time on a seeded share of rows, missing values, and unseen categories."""
    cfg = config.gates.robustness
    test, y = splits.test, splits.y("test")
    X = splits.X("test")
    base_p = predict(X)
    base = score_split(base_p, test, y, policy, config=config)
    rng = np.random.default_rng(config.bootstrap.seed + 17)
    rows = rng.random(len(X)) < cfg.perturbed_row_share
    part = X[rows]

    def run(name: str, p: np.ndarray) -> Perturbation:
        s = score_split(p, test, y, policy, config=config)
        return Perturbation(name, float((s.contact != base.contact).mean()), float(s.profit.mean()))

    def splice(Xp: pd.DataFrame) -> np.ndarray:  # noqa: N803
        """Re-score only the perturbed rows; the others keep their base probability."""
        p = base_p.copy()
        p[rows] = predict(Xp)
        return p

    out = []
    noisy = X.copy()
    for col in splits.roles.numeric:
        sd = float(np.nanstd(noisy[col].to_numpy(dtype=float)))
        noisy[col] = noisy[col] + rng.normal(0.0, cfg.noise_sd_share * sd, len(noisy))
    out.append(run(f"numeric noise ({cfg.noise_sd_share:g} sd)", predict(noisy)))
    share = f"{cfg.perturbed_row_share:.0%} of rows"
    for col in splits.roles.features:
        missing = part.copy()
        missing[col] = np.nan
        out.append(run(f"{col} missing ({share})", splice(missing)))
    for col in splits.roles.categorical:
        unseen = part.copy()
        unseen[col] = UNSEEN
        out.append(run(f"{col} unseen category ({share})", splice(unseen)))
    return RobustnessEvidence(float(base.profit.mean()), tuple(out))


def score_champion(
    champion: dict[str, Any] | None,
    record_id: str,
    splits: Splits,
    workspace_root: Path,
    *,
    config: BayesPilotConfig,
) -> ChampionScores | None:
    """Load the champion (hash-verified) and score the test split under its own policy."""
    if champion is None:
        return None
    version = str(champion.get("model_version"))
    try:
        model = load_verified_model(workspace_root, champion)
        policy = Policy.from_json(load_verified_policy_text(workspace_root, champion))
        test = splits.test
        needed = [c for col_list in champion.get("features", {}).values() for c in col_list]
        missing = [c for c in needed if c not in test.columns]
        if missing:
            raise KeyError(f"test split lacks the champion's features {missing}")
        p = model.predict_proba(test[needed])[:, 1]
        s = score_split(p, test, splits.y("test"), policy, config=config)
        return ChampionScores(version, record_id, s.profit)
    except Exception as exc:
        return ChampionScores(version, record_id, None, error=f"{type(exc).__name__}: {exc}")


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
) -> tuple[GateResult, ...]:
    """Every gate (or those in ``only``), in order, on the test split; each guarded: an error
    is a failed gate. ``predict`` gives calibrated probabilities, ``predict_raw`` the model's
    own (for the calibration gate's raw-vs-calibrated comparison)."""
    g, boot, econ = config.gates, config.bootstrap, config.economics
    n_bins = config.calibration.n_bins
    test, y = splits.test, splits.y("test")
    X_test = splits.X("test")
    cand = score_split(predict(X_test), test, y, policy, config=config)
    p_raw = cand.p if predict_raw is None else predict_raw(X_test)
    base_scores = {
        b.name: score_split(b.predict(X_test), test, y, policy, config=config)
        for b in baselines
        if b.ok
    }
    contact_all = realised_profit(y, cand.values, economics=econ)
    segments = segment_index(test, splits.roles.segment_columns)
    sel = splits.selection
    y_sel = splits.y("selection")
    sel_scores = score_split(predict(splits.X("selection")), sel, y_sel, policy, config=config)
    ev_sel = expected_value(sel_scores.p, sel_scores.values, economics=econ)
    profit_if_sel = realised_profit(y_sel, sel_scores.values, economics=econ)
    share = capacity_share(econ, sum(splits.rows.values()))
    thunks: dict[str, Callable[[], GateResult]] = {
        "baseline": lambda: gate_baseline(
            y,
            cand.p,
            cand.profit,
            {k: (v.p, v.profit) for k, v in base_scores.items()},
            config=g.baseline,
            bootstrap=boot,
        ),
        "business": lambda: gate_business(
            cand.profit,
            contact_all,
            cand.contact,
            capacity_share=share,
            config=g.business,
            bootstrap=boot,
        ),
        "calibration": lambda: gate_calibration(
            y,
            cand.p,
            p_raw,
            segments,
            n_bins=n_bins,
            min_segment_rows=g.segments.min_segment_rows,
            segment_ece_excess=g.segments.max_ece_excess,
            config=g.calibration,
            bootstrap=boot,
        ),
        "threshold": lambda: gate_threshold(
            ev_sel,
            profit_if_sel,
            sel_scores.profit,
            cand.profit,
            cand.contact,
            config=g.threshold,
            bootstrap=boot,
        ),
        "segments": lambda: gate_segments(
            y,
            cand.p,
            cand.contact,
            segments,
            n_bins=n_bins,
            config=g.segments,
            calibration=g.calibration,
            bootstrap=boot,
        ),
        "stability": lambda: gate_stability(stability, config=g.stability),
        "error-cost": lambda: gate_error_cost(
            y,
            cand.values,
            cand.contact,
            {k: v.contact for k, v in base_scores.items()},
            segments,
            save_rate=econ.save_rate,
            contact_cost_usd=econ.contact_cost_usd,
            min_segment_rows=g.segments.min_segment_rows,
            config=g.error_cost,
            bootstrap=boot,
        ),
        "technical": lambda: gate_technical(technical, config=g.technical),
        "robustness": lambda: gate_robustness(robustness, config=g.robustness),
        "champion": lambda: gate_champion(cand.profit, champion, config=g.champion, bootstrap=boot),
    }
    return tuple(guarded(n, thunks[n]) for n in GATE_IDS if only is None or n in only)
