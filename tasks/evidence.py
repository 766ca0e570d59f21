"""Evidence the gates judge: the candidate's decisions on test, refits for stability, the
artifact's technical probe, perturbations, and the champion scored on the same rows. Plain
computations and their typed results; the gates in ``tasks.gates`` decide."""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from sklearn.metrics import roc_auc_score
from sklearn.model_selection import RepeatedStratifiedKFold, train_test_split

from configs.settings import BayesPilotConfig
from tasks.calibrate import CalibratedModel, calibration_segments, fit_calibrator
from tasks.evaluate import auc_standard_error, customer_values
from tasks.load_data import ColumnRoles
from tasks.records import load_verified_model, load_verified_policy_text
from tasks.select_policy import Policy, apply_policy, profit_per_customer
from tasks.split_data import Splits, stratified_sample
from tasks.train_candidates import build_candidate


# ------------------------------------------------------------------ evidence types
@dataclass(frozen=True)
class FoldResult:
    """One refit of the chosen pipeline, judged on its held-out fold: ROC-AUC and profit per
    customer (USD), each with its sampling standard error at the fold's size."""

    roc_auc: float
    roc_auc_se: float
    profit_per_customer_usd: float
    profit_se_usd: float
    rows: int


@dataclass(frozen=True)
class StabilityEvidence:
    """Fold results of refits of the chosen pipeline over train + selection."""

    folds: tuple[FoldResult, ...]
    rows: int
    subsampled: bool

    @property
    def fold_auc(self) -> list[float]:
        return [f.roc_auc for f in self.folds]

    @property
    def fold_profit(self) -> list[float]:
        return [f.profit_per_customer_usd for f in self.folds]


@dataclass(frozen=True)
class TechnicalEvidence:
    """Measured on the real serialized artifact, loaded in a fresh process.
    ``single_row_cpu_ms``: CPU milliseconds per single-row prediction, the minimum over
    repeated batches (what the gate judges); ``single_row_latency_ms``: wall-clock percentiles
    (recorded only: they depend on whatever else the machine runs)."""

    artifact_bytes: int
    loaded_in_fresh_process: bool
    max_abs_diff_after_reload: float | None
    rows_compared: int
    single_row_latency_ms: dict[str, float]
    single_row_cpu_ms: float | None = None
    error: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class ChampionScores:
    """The current champion scored on the same test rows under its own policy."""

    model_version: str
    record_id: str
    profit: np.ndarray | None
    error: str | None = None


@dataclass(frozen=True)
class Perturbation:
    """One perturbation of the test split: share of contact decisions that flipped and the
    policy's profit per customer (USD) afterwards."""

    name: str
    flip_rate: float
    profit_per_customer_usd: float


@dataclass(frozen=True)
class RobustnessEvidence:
    """``sampled_rows``: the test rows perturbed when the split was larger than
    ``gates.robustness.max_rows`` (a label-stratified seeded sample), else None (all rows)."""

    base_profit_per_customer_usd: float
    perturbations: tuple[Perturbation, ...]
    sampled_rows: int | None = None


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


@dataclass(frozen=True)
class ChosenScores:
    """The chosen model's probabilities, computed once per run and reused by every later
    stage that reads them (packaging's fast-scorer check, robustness, the gates, the plots and
    the monitoring reference): ``test`` calibrated and ``test_raw`` the candidate's own on the
    test split, ``selection`` calibrated on the selection split."""

    test: np.ndarray
    test_raw: np.ndarray
    selection: np.ndarray


def score_chosen(
    chosen: CalibratedModel, splits: Splits, *, selection: np.ndarray | None = None
) -> ChosenScores:
    """Score the test split with the served estimator and with the raw candidate (one pass of
    the pipeline where the two share it: ``CalibratedModel.predict_with_raw``);
    ``selection``: the chosen model's selection probabilities when already computed (by
    calibration), else they are scored here."""
    test, test_raw = chosen.predict_with_raw(splits.X("test"))
    return ChosenScores(
        test=test,
        test_raw=test_raw,
        selection=chosen.predict(splits.X("selection")) if selection is None else selection,
    )


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
    policy: Policy,
    *,
    name: str,
    method: str,
    roles: ColumnRoles,
    config: BayesPilotConfig,
) -> FoldResult:
    """Refit candidate ``name`` on one fold's fitting rows less a stratified, seeded
    ``calibration_share`` that fits its ``method`` calibrator, and judge it on the held-out
    rows: ROC-AUC and profit per customer (USD), with their standard errors."""
    fit_idx, hold_idx = fold
    feats, label = list(roles.features), roles.label_column
    y = data[label].to_numpy(dtype=np.int64)
    model_idx, cal_idx = train_test_split(
        fit_idx,
        test_size=config.gates.stability.calibration_share,
        stratify=y[fit_idx],
        random_state=config.split.seed,
    )
    pipe = build_candidate(name, roles, config=config.candidates)
    pipe.fit(data[feats].iloc[model_idx], y[model_idx])
    est = fit_calibrator(
        pipe,
        data[feats].iloc[cal_idx],
        y[cal_idx],
        method=method,
        segment_columns=calibration_segments(roles),
        segment_c=config.calibration.segment_C,
    )
    p = est.predict_proba(data[feats].iloc[hold_idx])[:, 1]  # type: ignore[attr-defined]
    yh = y[hold_idx]
    s = score_split(p, data.iloc[hold_idx], yh, policy, config=config)
    auc = float(roc_auc_score(yh, p))
    n_pos = int(yh.sum())
    return FoldResult(
        roc_auc=auc,
        roc_auc_se=auc_standard_error(auc, n_pos, len(yh) - n_pos),
        profit_per_customer_usd=float(s.profit.mean()),
        profit_se_usd=float(np.std(s.profit, ddof=1) / np.sqrt(len(yh))),
        rows=len(yh),
    )


def measure_stability(
    chosen: CalibratedModel, splits: Splits, policy: Policy, *, config: BayesPilotConfig
) -> StabilityEvidence:
    """All folds in one call (the flow runs ``fit_stability_fold`` as concurrent tasks)."""
    sd = stability_folds(splits, config=config)
    results = [
        fit_stability_fold(
            f,
            sd.data,
            policy,
            name=chosen.name,
            method=chosen.method,
            roles=splits.roles,
            config=config,
        )
        for f in sd.folds
    ]
    return stability_evidence(results, sd)


def stability_evidence(results: list[FoldResult], sd: StabilityData) -> StabilityEvidence:
    return StabilityEvidence(tuple(results), len(sd.data), sd.subsampled)


UNSEEN = "__unseen_category__"


def measure_robustness(
    predict: Callable[[pd.DataFrame], np.ndarray],
    splits: Splits,
    policy: Policy,
    *,
    config: BayesPilotConfig,
    base_p: np.ndarray | None = None,
) -> RobustnessEvidence:
    """Perturb the test split and re-decide: noise on all numeric features; then, one feature
    at a time on a seeded share of rows, missing values, and unseen categories. ``base_p``:
    ``predict`` of the unperturbed test split when already computed (not re-scored). A test
    split above ``gates.robustness.max_rows`` is perturbed on a label-stratified seeded sample
    of that many rows (flip rates and profits are per customer: their noise at that size is
    far below the bounds)."""
    cfg = config.gates.robustness
    test, y = splits.test, splits.y("test")
    X = splits.X("test")
    base_p = predict(X) if base_p is None else base_p
    sampled_rows = None
    if len(y) > cfg.max_rows:
        keep = stratified_sample(y, cfg.max_rows, seed=config.scale.seed)
        test, X, y, base_p = test.iloc[keep], X.iloc[keep], y[keep], base_p[keep]
        sampled_rows = len(keep)
    base = score_split(base_p, test, y, policy, config=config)
    rng = np.random.default_rng(config.bootstrap.seed + 17)
    rows = rng.random(len(X)) < cfg.perturbed_row_share
    part = X[rows]

    def run(name: str, p: np.ndarray) -> Perturbation:
        s = score_split(p, test, y, policy, config=config)
        return Perturbation(name, float((s.contact != base.contact).mean()), float(s.profit.mean()))

    def spliced(col: str, value: float | str) -> np.ndarray:
        """Set ``col`` to ``value`` on the perturbed rows and re-score only those rows; the
        others keep their base probability."""
        changed = part.copy()
        changed[col] = value
        p = base_p.copy()
        p[rows] = predict(changed)
        return p

    noisy = X.copy()  # the only random perturbation: drawn here, in order, before any job
    for col in splits.roles.numeric:
        sd = float(np.nanstd(noisy[col].to_numpy(dtype=float)))
        noisy[col] = noisy[col] + rng.normal(0.0, cfg.noise_sd_share * sd, len(noisy))
    share = f"{cfg.perturbed_row_share:.0%} of rows"
    jobs: list[tuple[str, Callable[[], np.ndarray]]] = [
        (f"numeric noise ({cfg.noise_sd_share:g} sd)", partial(predict, noisy)),
        *((f"{c} missing ({share})", partial(spliced, c, np.nan)) for c in splits.roles.features),
        *(
            (f"{c} unseen category ({share})", partial(spliced, c, UNSEEN))
            for c in splits.roles.categorical
        ),
    ]
    # the perturbations are independent re-scorings: several at a time, same results
    with ThreadPoolExecutor(max_workers=config.scale.evidence_threads) as pool:
        scored = list(pool.map(lambda job: job[1](), jobs))
    out = [run(name, p) for (name, _), p in zip(jobs, scored, strict=True)]
    return RobustnessEvidence(float(base.profit.mean()), tuple(out), sampled_rows)


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
