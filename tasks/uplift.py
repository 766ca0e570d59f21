"""Treatment-effect (uplift) candidates fitted on randomized outcomes, and their metrics.

The *effect* of a contact on a customer is the churn probability it removes,
``tau(x) = P(churn | x, not contacted) - P(churn | x, assigned a contact)`` (0-1; negative for
customers a contact pushes out). It is by assignment (intention to treat), so undelivered
contacts are part of it, as they are in practice.

- **T-learner**: one outcome model per arm (the candidate pipelines of
  ``tasks.train_candidates``, shared preprocessing); ``tau = mu_0(x) - mu_1(x)``.
- **X-learner** (Kuenzel et al. 2019): the T-learner's outcome models impute each customer's
  effect from the other arm (``mu_0(x) - y`` for assigned, ``y - mu_1(x)`` for holdout); a
  regressor of the same family fits each imputed effect, and the two are blended by the
  randomized assignment share ``e``: ``tau = e tau_0(x) + (1 - e) tau_1(x)``.

A policy contacts when ``tau x value - contact_cost`` is positive and at least the cut-off (USD).

Metrics judged on randomized rows held out from fitting: the uplift curve and its Qini
coefficient (area between the curve and random targeting, in retained customers per customer),
the incremental profit of a contact decision (``share contacted x (mean loss in holdout - mean
loss among assigned)``, loss = value x churn + cost per delivered contact; a ratio estimator
within the contacted set), and the predicted vs observed effect per bin of predicted effect. All
comparisons use one seeded paired bootstrap (``tasks.evaluate.PairedBootstrap``).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import pandas as pd
from scipy.stats import chi2
from sklearn.base import clone
from sklearn.pipeline import Pipeline

from configs.settings import BayesPilotConfig, BootstrapConfig, CandidatesConfig
from tasks.evaluate import EPS, Interval, PairedBootstrap, interval
from tasks.load_data import ColumnRoles
from tasks.select_policy import Policy, decide, policy_values
from tasks.train_candidates import build_candidate, build_model, build_preprocessor

if TYPE_CHECKING:
    from tasks.gates.result import GateResult

log = logging.getLogger(__name__)

LEARNERS = ("t_learner", "x_learner")
Learner = Literal["t_learner", "x_learner"]


@dataclass(frozen=True)
class UpliftModel:
    """A fitted uplift learner. ``predict_effect`` gives the churn probability a contact
    removes per customer (0-1 scale, negative: the contact raises churn)."""

    name: str
    base_model: str
    features: tuple[str, ...]
    control: Pipeline  # P(churn | x, holdout)
    treated: Pipeline  # P(churn | x, assigned)
    assigned_share: float  # e: share of fitting rows assigned a contact
    effect_from_control: Pipeline | None = None  # X-learner tau_0
    effect_from_treated: Pipeline | None = None  # X-learner tau_1
    fit_rows: int = 0

    def predict_effect(self, X: pd.DataFrame) -> np.ndarray:  # noqa: N803
        X = X[list(self.features)]
        if self.effect_from_control is None or self.effect_from_treated is None:
            p0 = self.control.predict_proba(X)[:, 1]
            p1 = self.treated.predict_proba(X)[:, 1]
            return np.asarray(p0 - p1, dtype=float)
        t0 = self.effect_from_control.predict(X)
        t1 = self.effect_from_treated.predict(X)
        e = self.assigned_share
        return np.asarray(e * t0 + (1 - e) * t1, dtype=float)

    def artifact(self, *, numeric: tuple[str, ...], categorical: tuple[str, ...]) -> dict[str, Any]:
        """The served form: a plain dict of the fitted sklearn pipelines (no class of this
        module), so serving unpickles it without training imports (``serving.uplift``)."""
        return {
            "kind": "uplift",
            "learner": self.name,
            "base_model": self.base_model,
            "numeric": list(numeric),
            "categorical": list(categorical),
            "assigned_share": self.assigned_share,
            "control": self.control,
            "treated": self.treated,
            "effect_from_control": self.effect_from_control,
            "effect_from_treated": self.effect_from_treated,
        }


def build_effect_regressor(name: str, roles: ColumnRoles, *, config: CandidatesConfig) -> Pipeline:
    """The X-learner's second-stage regressor: the same preprocessing and model family as
    candidate ``name`` (ridge for the logistic model), with its configured settings."""
    model = build_model(name, config=config, regressor=True)
    return Pipeline([("preprocess", build_preprocessor(roles)), ("model", model)])


def _check_inputs(X: pd.DataFrame, y: np.ndarray, assigned: np.ndarray, roles: ColumnRoles) -> None:  # noqa: N803
    missing = [c for c in roles.features if c not in X.columns]
    if missing:
        raise KeyError(f"feature columns missing from the randomized data: {missing}")
    n = len(X)
    if np.asarray(y).shape != (n,) or np.asarray(assigned).shape != (n,):
        raise ValueError(f"y and assigned must have one value per row ({n})")
    if not np.isin(np.asarray(y), (0, 1)).all():
        raise ValueError("y must be 0/1 (1 = churned)")
    for arm, mask in (("holdout", ~assigned), ("assigned", assigned)):
        yy = np.asarray(y)[mask]
        if len(yy) == 0 or yy.min() == yy.max():
            raise ValueError(f"the {arm} arm needs churners and stayers to fit an outcome model")


def fit_uplift(
    learner: Learner,
    X: pd.DataFrame,  # noqa: N803
    y: np.ndarray,
    assigned: np.ndarray,
    *,
    roles: ColumnRoles,
    base_model: str,
    config: CandidatesConfig,
) -> UpliftModel:
    """Fit ``learner`` on randomized rows: features ``X``, churn ``y`` (0/1) and ``assigned``
    (bool: randomized to a contact, False: holdout). Raises ``ValueError``/``KeyError`` naming
    the bad input."""
    if learner not in LEARNERS:
        raise ValueError(f"unknown uplift learner {learner!r}; expected one of {LEARNERS}")
    assigned = np.asarray(assigned, dtype=bool)
    y = np.asarray(y).astype(np.int64)
    _check_inputs(X, y, assigned, roles)
    X = X[list(roles.features)]
    template = build_candidate(base_model, roles, config=config)
    control = clone(template).fit(X[~assigned], y[~assigned])
    treated = clone(template).fit(X[assigned], y[assigned])
    e = float(assigned.mean())
    if learner == "t_learner":
        return UpliftModel(
            learner, base_model, roles.features, control, treated, e, fit_rows=len(y)
        )
    # X-learner: imputed effects from the other arm's outcome model
    d_treated = control.predict_proba(X[assigned])[:, 1] - y[assigned]
    d_control = y[~assigned] - treated.predict_proba(X[~assigned])[:, 1]
    reg = build_effect_regressor(base_model, roles, config=config)
    tau_1 = clone(reg).fit(X[assigned], d_treated)
    tau_0 = clone(reg).fit(X[~assigned], d_control)
    return UpliftModel(
        learner,
        base_model,
        roles.features,
        control,
        treated,
        e,
        effect_from_control=tau_0,
        effect_from_treated=tau_1,
        fit_rows=len(y),
    )


def uplift_contact(
    effect: np.ndarray, values_usd: np.ndarray, *, contact_cost_usd: float, cutoff_usd: float = 0.0
) -> np.ndarray:
    """Contact iff the expected incremental value ``effect x value - cost`` (USD) is positive
    and at least ``cutoff_usd``."""
    ev = np.asarray(effect) * np.asarray(values_usd, dtype=float) - contact_cost_usd
    return np.asarray((ev > 0) & (ev >= cutoff_usd))


# ---------------------------------------------------------------- metrics on randomized rows
def _uplift_curve_weighted(
    counts: np.ndarray, score: np.ndarray, retained: np.ndarray, assigned: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Per resample (rows of ``counts``): the uplift curve at every row of the ranking
    (incremental retained customers per customer when contacting the top) and the share of
    customers targeted."""
    order = np.argsort(-score, kind="mergesort")
    c = counts[:, order]
    t = assigned[order].astype(float)
    r = retained[order].astype(float)
    n_t = np.cumsum(c * t, axis=1)
    n_c = np.cumsum(c * (1 - t), axis=1)
    r_t = np.cumsum(c * t * r, axis=1)
    r_c = np.cumsum(c * (1 - t) * r, axis=1)
    total = c.sum(axis=1, keepdims=True)
    with np.errstate(divide="ignore", invalid="ignore"):
        rate = np.where(
            (n_t > 0) & (n_c > 0), r_t / np.maximum(n_t, EPS) - r_c / np.maximum(n_c, EPS), 0.0
        )
    targeted = n_t + n_c
    return rate * targeted / total, targeted / total


def _qini_weighted(
    counts: np.ndarray, score: np.ndarray, retained: np.ndarray, assigned: np.ndarray
) -> np.ndarray:
    """Qini coefficient per resample: the mean (over customers, weighted) of the uplift
    curve minus random targeting with the same overall effect."""
    curve, share = _uplift_curve_weighted(counts, score, retained, assigned)
    order = np.argsort(-score, kind="mergesort")
    c = counts[:, order]
    random = share * curve[:, -1:]
    out: np.ndarray = ((curve - random) * c).sum(axis=1) / c.sum(axis=1)
    return out


def uplift_curve(
    score: np.ndarray, churned: np.ndarray, assigned: np.ndarray, *, points: int = 101
) -> pd.DataFrame:
    """The uplift curve of a ranking: share contacted (0-1, from the top score) against the
    incremental retained customers per customer (observed: holdout vs assigned in the top)."""
    ones = np.ones((1, len(score)))
    curve, share = _uplift_curve_weighted(
        ones, np.asarray(score), 1 - np.asarray(churned), np.asarray(assigned, dtype=bool)
    )
    idx = np.unique(np.linspace(0, len(score) - 1, points).astype(int))
    return pd.DataFrame(
        {"contact_share": share[0, idx], "incremental_retained_per_customer": curve[0, idx]}
    )


def qini_coefficient(score: np.ndarray, churned: np.ndarray, assigned: np.ndarray) -> float:
    """Area between the uplift curve and random targeting (retained customers per customer)."""
    ones = np.ones((1, len(score)))
    return float(
        _qini_weighted(
            ones, np.asarray(score), 1 - np.asarray(churned), np.asarray(assigned, bool)
        )[0]
    )


def _policy_profit_weighted(
    counts: np.ndarray,
    contact: np.ndarray,
    loss: np.ndarray,
    assigned: np.ndarray,
) -> np.ndarray:
    """Incremental profit per customer (USD) of contacting ``contact`` vs nobody, per
    resample: share contacted x (mean loss in holdout - mean loss among assigned), within the
    contacted set. ``nan`` when an arm is empty there."""
    k = contact.astype(float)
    t = assigned.astype(float)
    n_t = counts @ (k * t)
    n_c = counts @ (k * (1 - t))
    l_t = counts @ (k * t * loss)
    l_c = counts @ (k * (1 - t) * loss)
    total = counts.sum(axis=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        diff = l_c / n_c - l_t / n_t
    out: np.ndarray = np.where(n_t + n_c > 0, diff * (n_t + n_c) / total, 0.0)
    return out


def randomized_loss(
    churned: np.ndarray, values_usd: np.ndarray, contacted: np.ndarray, *, contact_cost_usd: float
) -> np.ndarray:
    """Per customer: value lost to churn plus the cost of a delivered contact (USD)."""
    return np.asarray(churned, float) * np.asarray(
        values_usd, float
    ) + contact_cost_usd * np.asarray(contacted, float)


def policy_profit(
    contact: np.ndarray,
    churned: np.ndarray,
    assigned: np.ndarray,
    values_usd: np.ndarray,
    *,
    contacted: np.ndarray | None = None,
    contact_cost_usd: float,
) -> float:
    """Incremental profit per customer (USD) of a contact decision against contacting nobody,
    estimated on randomized rows (``contacted`` defaults to ``assigned``)."""
    a = np.asarray(assigned, bool)
    loss = randomized_loss(
        churned,
        values_usd,
        a if contacted is None else contacted,
        contact_cost_usd=contact_cost_usd,
    )
    return float(
        _policy_profit_weighted(np.ones((1, len(a))), np.asarray(contact, bool), loss, a)[0]
    )


@dataclass(frozen=True)
class UpliftComparison:
    """An uplift ranking/policy against the churn-risk ranking/current policy on randomized
    rows: Qini coefficients (retained customers per customer), their gain with a paired
    bootstrap interval, the incremental profit per customer (USD) of each policy and the gain.
    ``resamples_used`` counts resamples where every figure was defined."""

    qini_uplift: float
    qini_risk: float
    qini_gain: Interval
    profit_uplift_usd: float
    profit_current_usd: float
    profit_gain_usd: Interval
    contact_rate_uplift: float
    contact_rate_current: float
    rows: int
    resamples_used: int
    bootstrap: dict[str, object]


def compare_uplift(
    effect: np.ndarray,
    risk: np.ndarray,
    uplift_contacts: np.ndarray,
    current_contacts: np.ndarray,
    churned: np.ndarray,
    assigned: np.ndarray,
    values_usd: np.ndarray,
    *,
    contact_cost_usd: float,
    bootstrap: BootstrapConfig,
    contacted: np.ndarray | None = None,
) -> UpliftComparison:
    """The uplift candidate (``effect``, ``uplift_contacts``) against the churn-risk model
    (``risk``) and current policy (``current_contacts``) on the same randomized rows."""
    a = np.asarray(assigned, bool)
    y = np.asarray(churned, float)
    loss = randomized_loss(
        y, values_usd, a if contacted is None else contacted, contact_cost_usd=contact_cost_usd
    )
    boot = PairedBootstrap(len(y), config=bootstrap, seed_offset=211)
    rows = boot.rows
    eff, rk, uc, cc = effect[rows], risk[rows], uplift_contacts[rows], current_contacts[rows]
    yy, aa, ll = y[rows], a[rows], loss[rows]
    q_u, q_r, p_u, p_c = boot.run_many(
        lambda c: _qini_weighted(c, eff, 1 - yy, aa),
        lambda c: _qini_weighted(c, rk, 1 - yy, aa),
        lambda c: _policy_profit_weighted(c, uc, ll, aa),
        lambda c: _policy_profit_weighted(c, cc, ll, aa),
    )
    qg, pg = q_u - q_r, p_u - p_c
    ok = np.isfinite(qg) & np.isfinite(pg)
    point_q_u = qini_coefficient(effect, y, a)
    point_q_r = qini_coefficient(risk, y, a)
    point_p_u = float(_policy_profit_weighted(np.ones((1, len(y))), uplift_contacts, loss, a)[0])
    point_p_c = float(_policy_profit_weighted(np.ones((1, len(y))), current_contacts, loss, a)[0])
    if ok.sum() < 2:
        raise ValueError("too few bootstrap resamples with both arms among the contacted")
    return UpliftComparison(
        qini_uplift=point_q_u,
        qini_risk=point_q_r,
        qini_gain=interval(qg[ok], point_q_u - point_q_r, bootstrap.confidence),
        profit_uplift_usd=point_p_u,
        profit_current_usd=point_p_c,
        profit_gain_usd=interval(pg[ok], point_p_u - point_p_c, bootstrap.confidence),
        contact_rate_uplift=float(np.mean(uplift_contacts)),
        contact_rate_current=float(np.mean(current_contacts)),
        rows=len(y),
        resamples_used=int(ok.sum()),
        bootstrap=boot.describe(),
    )


@dataclass(frozen=True)
class EffectCalibration:
    """Predicted vs observed effect per bin of predicted effect (equal-count bins). ``table``
    has per bin: rows, predicted mean effect, observed effect (holdout churn - assigned churn)
    and its standard error; ``chi2``/``p_value`` test observed = predicted in every bin."""

    table: pd.DataFrame
    chi2: float
    degrees_of_freedom: int
    p_value: float
    max_abs_gap: float


def effect_calibration(
    effect: np.ndarray, churned: np.ndarray, assigned: np.ndarray, *, bins: int
) -> EffectCalibration:
    """Calibration of the predicted effect per bin (deciles for ``bins=10``). A bin with no
    holdout or no assigned row is merged away by using fewer bins; raises ``ValueError`` when
    no bin has both arms."""
    eff = np.asarray(effect, float)
    y = np.asarray(churned, float)
    a = np.asarray(assigned, bool)
    ranks = np.argsort(np.argsort(eff, kind="mergesort"), kind="mergesort")
    rows = []
    for b in range(bins):
        m = (ranks * bins // len(eff)) == b
        h, t = m & ~a, m & a
        if h.sum() < 2 or t.sum() < 2:
            continue
        ch, ct = y[h].mean(), y[t].mean()
        se = math.sqrt(max(ch * (1 - ch), 1e-4) / h.sum() + max(ct * (1 - ct), 1e-4) / t.sum())
        rows.append(
            {
                "bin": b,
                "rows": int(m.sum()),
                "predicted_effect": float(eff[m].mean()),
                "observed_effect": float(ch - ct),
                "standard_error": se,
            }
        )
    if not rows:
        raise ValueError("no bin of predicted effect has rows in both arms")
    table = pd.DataFrame(rows)
    z = (table["observed_effect"] - table["predicted_effect"]) / table["standard_error"]
    stat = float((z**2).sum())
    dof = len(table)
    return EffectCalibration(
        table=table,
        chi2=stat,
        degrees_of_freedom=dof,
        p_value=float(chi2.sf(stat, dof)),
        max_abs_gap=float((table["observed_effect"] - table["predicted_effect"]).abs().max()),
    )


# ---------------------------------------------------------------- the uplift challenge
@dataclass(frozen=True)
class UpliftCandidate:
    """One fitted learner and its uplift gates (on randomized rows held out from fitting)."""

    learner: str
    model: UpliftModel | None
    gates: tuple[GateResult, ...]
    error: str | None = None

    @property
    def passed(self) -> bool:
        return self.model is not None and bool(self.gates) and all(g.passed for g in self.gates)

    def profit_gain_usd(self) -> float:
        for g in self.gates:
            if g.gate == "uplift-profit" and g.value is not None:
                return float(g.value)
        return -math.inf


@dataclass(frozen=True)
class UpliftChallenge:
    """Whether an uplift candidate replaces the churn-risk policy, and why. ``status`` is
    ``not_enough_randomized_outcomes`` (nothing fitted) or ``evaluated``; ``winner`` the passing
    learner with the largest profit gain (``None``: the churn-risk policy stays)."""

    status: Literal["not_enough_randomized_outcomes", "evaluated"]
    holdout_customers: int
    assigned_customers: int
    fit_rows: int
    judge_rows: int
    candidates: tuple[UpliftCandidate, ...]
    winner: str | None
    reason: str

    def as_dict(self) -> dict[str, object]:
        return {
            "status": self.status,
            "holdout_customers": self.holdout_customers,
            "assigned_customers": self.assigned_customers,
            "fit_rows": self.fit_rows,
            "judge_rows": self.judge_rows,
            "winner": self.winner,
            "reason": self.reason,
            "candidates": [
                {
                    "learner": c.learner,
                    "passed": c.passed,
                    "error": c.error,
                    "gates": [g.as_dict() for g in c.gates],
                }
                for c in self.candidates
            ],
        }


def challenge_uplift(
    frame: pd.DataFrame,
    churned: np.ndarray,
    assigned: np.ndarray,
    contacted: np.ndarray,
    *,
    roles: ColumnRoles,
    risk: Callable[[pd.DataFrame], np.ndarray],
    policy: Policy,
    config: BayesPilotConfig,
    would_contact: np.ndarray | None = None,
) -> UpliftChallenge:
    """Fit every configured uplift learner on randomized outcomes and judge it against the
    churn-risk model ``risk`` (calibrated churn probability) and its current ``policy``.

    ``frame`` holds the features (and the policy's value column) per customer; ``churned``
    (0/1), ``assigned`` (randomized to contact; False: holdout) and ``contacted`` (delivered)
    are per row. With ``would_contact`` (the policy's decision before the holdout, as a serving
    holdout records it) only those rows are used: a contact was randomized there alone, so the
    uplift policy can only re-rank within them. ``uplift.evaluation_share`` of the rows (seeded)
    are held out from fitting for the gates. Nothing is fitted when either arm has fewer than
    ``uplift.min_randomized_customers``. ``risk`` receives the judged rows' feature columns
    (index renumbered from 0 within the rows used).
    """
    from tasks.gates.uplift import UpliftGateInputs, run_uplift_gates

    n = len(frame)
    y = np.asarray(churned).astype(np.int64)
    a = np.asarray(assigned, dtype=bool)
    d = np.asarray(contacted, dtype=bool)
    for name, arr in (("churned", y), ("assigned", a), ("contacted", d)):
        if arr.shape != (n,):
            raise ValueError(f"{name} has shape {arr.shape}, expected ({n},)")
    keep = np.ones(n, bool) if would_contact is None else np.asarray(would_contact, dtype=bool)
    frame = frame[keep].reset_index(drop=True)
    y, a, d = y[keep], a[keep], d[keep]
    uc = config.uplift
    nh, nt = int((~a).sum()), int(a.sum())
    if min(nh, nt) < uc.min_randomized_customers:
        return UpliftChallenge(
            "not_enough_randomized_outcomes",
            nh,
            nt,
            0,
            0,
            (),
            None,
            f"{nh} holdout and {nt} assigned customers with outcomes; uplift candidates need "
            f"at least {uc.min_randomized_customers} in each arm "
            "(uplift.min_randomized_customers)",
        )
    judge = np.random.default_rng(uc.seed).random(len(y)) < uc.evaluation_share
    econ = policy.document["economics"]
    cost = float(econ["contact_cost_usd"])
    jf = frame[judge]
    values = policy_values(jf, policy)
    p_risk = np.asarray(risk(jf[list(roles.features)]), dtype=float)
    current = decide(p_risk, values, policy.document).contact
    if would_contact is not None:
        current = np.ones(len(jf), bool)  # every row here was a would-contact customer
    out: list[UpliftCandidate] = []
    for learner in uc.learners:
        try:
            model = fit_uplift(
                learner,
                frame[~judge],
                y[~judge],
                a[~judge],
                roles=roles,
                base_model=uc.base_model,
                config=config.candidates,
            )
        except Exception as exc:  # a failed learner is recorded; the others go on
            log.exception("uplift learner %s failed", learner)
            out.append(UpliftCandidate(learner, None, (), error=f"{type(exc).__name__}: {exc}"))
            continue
        gates = run_uplift_gates(
            UpliftGateInputs(
                effect=model.predict_effect(jf),
                risk=p_risk,
                current_contact=current,
                churned=y[judge],
                assigned=a[judge],
                contacted=d[judge],
                values_usd=values,
                contact_cost_usd=cost,
                cutoff_usd=policy.cutoff_usd,
                bootstrap=config.bootstrap,
                config=uc.gates,
            )
        )
        out.append(UpliftCandidate(learner, model, gates))
    passing = [c for c in out if c.passed]
    winner = max(passing, key=lambda c: c.profit_gain_usd()) if passing else None
    if winner is not None:
        reason = (
            f"{winner.learner} passes every uplift gate with a profit gain of "
            f"{winner.profit_gain_usd():.2f} USD per customer over the current policy"
        )
    else:
        failed = [
            f"{c.learner}: "
            + ("; ".join(g.reason for g in c.gates if not g.passed) or str(c.error))
            for c in out
        ]
        reason = "the churn-risk policy stays: " + " | ".join(failed)
    return UpliftChallenge(
        "evaluated",
        nh,
        nt,
        int((~judge).sum()),
        int(judge.sum()),
        tuple(out),
        None if winner is None else winner.learner,
        reason,
    )


def challenge_from_outcomes(
    joined: pd.DataFrame,
    *,
    roles: ColumnRoles,
    risk: Callable[[pd.DataFrame], np.ndarray],
    policy: Policy,
    config: BayesPilotConfig,
) -> UpliftChallenge:
    """``challenge_uplift`` on served decisions joined with outcomes, as monitoring joins them:
    the features, ``churned`` (0/1), ``holdout`` and ``would_contact`` (bool) and optionally
    ``contacted`` (bool; missing: every assigned customer counts as contacted). Assigned =
    would contact and not held out; only would-contact rows are used. Raises ``KeyError``
    naming a missing column."""
    for col in ("churned", "holdout", "would_contact", *roles.features):
        if col not in joined.columns:
            raise KeyError(f"column {col!r} is not in the joined outcomes")
    would = joined["would_contact"].astype(bool).to_numpy()
    assigned = would & ~joined["holdout"].astype(bool).to_numpy()
    contacted = (
        joined["contacted"].astype(bool).to_numpy() & assigned
        if "contacted" in joined.columns and bool(joined["contacted"].notna().all())
        else assigned
    )
    return challenge_uplift(
        joined,
        joined["churned"].astype(int).to_numpy(),
        assigned,
        contacted,
        roles=roles,
        risk=risk,
        policy=policy,
        config=config,
        would_contact=would,
    )
