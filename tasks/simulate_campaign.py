"""Simulated retention campaigns with a known treatment response (synthetic data only).

``treatment_response`` gives every customer of a generated frame a true churn probability if
contacted and if not, from a heterogeneous-effect model (``synthetic.treatment``):

- **persuadables**: a delivered contact removes a share ``s`` of their churn probability,
  ``p1 = p0 (1 - s)``. The save rate ``s`` varies with features: customers whose reasons to
  leave a contact can address (support calls, low satisfaction, month-to-month, short tenure)
  respond more; customers leaving for money reasons (repeated late payments) hardly respond
  (**lost causes** when they are likely to churn anyway); its mean is ``mean_save_rate``.
- **sure things**: a low ``p0`` leaves little to save whatever ``s`` is.
- **sleeping dogs** (a share ``sleeping_dog_share``): disengaged customers (low usage, paperless,
  no recent support contact, with noise) whom a contact reminds to leave:
  ``p1 = p0 + (1 - p0) x sleeping_dog_churn_increase``.

``simulate_campaign`` then randomizes a holdout, delivers a share ``delivery_rate`` of the
assigned contacts and draws each outcome from the probability that applies. The truth stays in
a separate frame (``Campaign.truth``), never among the features.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy.optimize import brentq

from configs.settings import TreatmentResponseConfig
from tasks.generate_data import LABEL_COLUMN, TRUTH_COLUMN

HOLDOUT_COLUMN = "holdout"
WOULD_CONTACT_COLUMN = "would_contact"
ASSIGNED_COLUMN = "assigned_contact"
CONTACTED_COLUMN = "contacted"
P_CONTACTED = "true_churn_probability_if_contacted"
P_NOT_CONTACTED = "true_churn_probability_if_not_contacted"
EFFECT = "true_contact_effect"  # p_not_contacted - p_contacted: churn probability removed
SAVE_RATE = "true_save_rate"
TYPE = "customer_type"
SURE_THING_MAX_CHURN = 0.1  # descriptive labels only; the outcomes never use them
LOST_CAUSE_MAX_SAVE_RATE = 0.05

_NEEDED = (
    "support_calls_90d",
    "satisfaction_score",
    "contract",
    "tenure_months",
    "late_payments_12m",
    "usage_gb_30d",
    "paperless_billing",
)


def _z(x: np.ndarray) -> np.ndarray:
    x = np.where(np.isnan(x), np.nanmedian(x), x)
    sd = x.std()
    return (x - x.mean()) / sd if sd > 0 else np.zeros_like(x)


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


def treatment_response(
    frame: pd.DataFrame, *, config: TreatmentResponseConfig, p_no_contact: np.ndarray | None = None
) -> pd.DataFrame:
    """The true response to a delivered contact, one row per customer (same index).

    ``p_no_contact`` defaults to the generator's ``true_churn_probability`` column. Columns:
    churn probability if contacted / not (0-1), the effect (probability removed, negative for
    sleeping dogs), the save rate (0-1; ``nan`` for sleeping dogs) and a descriptive type.
    Raises ``KeyError`` naming a missing feature column.
    """
    for col in _NEEDED:
        if col not in frame.columns:
            raise KeyError(f"treatment response needs column {col!r}")
    if p_no_contact is None:
        if TRUTH_COLUMN not in frame.columns:
            raise KeyError(f"treatment response needs {TRUTH_COLUMN!r} or p_no_contact")
        p_no_contact = frame[TRUTH_COLUMN].to_numpy(dtype=float)
    p0 = np.asarray(p_no_contact, dtype=float)
    n = len(frame)
    rng = np.random.default_rng(config.seed)

    calls = frame["support_calls_90d"].to_numpy(dtype=float)
    sat = frame["satisfaction_score"].to_numpy(dtype=float)
    m2m = (frame["contract"].astype(str) == "month-to-month").to_numpy(dtype=float)
    tenure = frame["tenure_months"].to_numpy(dtype=float)
    late = frame["late_payments_12m"].to_numpy(dtype=float)
    usage = frame["usage_gb_30d"].to_numpy(dtype=float)
    paperless = (frame["paperless_billing"].astype(str) == "yes").to_numpy(dtype=float)

    # responsiveness (log-odds scale): addressable reasons up, money reasons down, some noise
    score = (
        0.6 * _z(np.minimum(calls, 5))
        - 0.5 * _z(sat)
        + 0.4 * (m2m - m2m.mean())
        - 0.3 * _z(np.log1p(tenure))
        - 1.5 * (late >= 2)
        + 0.5 * rng.normal(size=n)
    )
    score = score / max(float(score.std()), 1e-12)
    dogs = np.zeros(n, bool)
    if config.sleeping_dog_share > 0:
        disengaged = (
            -_z(np.log1p(usage))
            + 0.5 * paperless
            - 0.5 * _z(np.minimum(calls, 5))
            + 0.7 * rng.normal(size=n)
        )
        k = int(round(config.sleeping_dog_share * n))
        if k > 0:
            dogs[np.argsort(-disengaged, kind="mergesort")[:k]] = True

    def mean_rate(shift: float) -> float:
        return float(_sigmoid(shift + config.save_rate_spread * score[~dogs]).mean())

    target = config.mean_save_rate
    shift = float(brentq(lambda b: mean_rate(b) - target, -30.0, 30.0)) if (~dogs).any() else 0.0
    save = _sigmoid(shift + config.save_rate_spread * score)
    p1 = np.where(dogs, p0 + (1 - p0) * config.sleeping_dog_churn_increase, p0 * (1 - save))
    kind = np.where(
        dogs,
        "sleeping_dog",
        np.where(
            p0 < SURE_THING_MAX_CHURN,
            "sure_thing",
            np.where(save < LOST_CAUSE_MAX_SAVE_RATE, "lost_cause", "persuadable"),
        ),
    )
    return pd.DataFrame(
        {
            P_NOT_CONTACTED: p0,
            P_CONTACTED: p1,
            EFFECT: p0 - p1,
            SAVE_RATE: np.where(dogs, np.nan, save),
            TYPE: kind.astype(str),
        },
        index=frame.index,
    )


@dataclass(frozen=True)
class Campaign:
    """A simulated campaign. ``frame``: the input columns (truth dropped) with the label
    redrawn from the campaign and ``would_contact``, ``holdout``, ``assigned_contact``,
    ``contacted`` (bool); ``truth``: ``treatment_response`` (same index), never features."""

    frame: pd.DataFrame
    truth: pd.DataFrame
    holdout_share: float
    delivery_rate: float
    seed: int


def assign_holdout(n: int, *, holdout_share: float, seed: int) -> np.ndarray:
    """Seeded Bernoulli randomization: ``True`` = holdout (never contacted)."""
    if not 0 <= holdout_share <= 1:
        raise ValueError(f"holdout_share must be in [0, 1], got {holdout_share}")
    return np.random.default_rng(seed).random(n) < holdout_share


def simulate_campaign(
    frame: pd.DataFrame,
    *,
    config: TreatmentResponseConfig,
    holdout_share: float,
    seed: int,
    would_contact: np.ndarray | None = None,
    p_no_contact: np.ndarray | None = None,
    label_column: str = LABEL_COLUMN,
) -> Campaign:
    """Randomize a holdout (share 0-1, seeded), contact the others the policy would contact
    (``would_contact``, default everyone), deliver a share ``config.delivery_rate`` of those
    contacts and draw each outcome (``"yes"``/``"no"`` in ``label_column``) from the
    probability that applies. The input frame is not modified."""
    n = len(frame)
    truth = treatment_response(frame, config=config, p_no_contact=p_no_contact)
    rng = np.random.default_rng(seed)
    holdout = assign_holdout(n, holdout_share=holdout_share, seed=int(rng.integers(2**31)))
    wc = np.ones(n, bool) if would_contact is None else np.asarray(would_contact, dtype=bool)
    if wc.shape != (n,):
        raise ValueError(f"would_contact has shape {wc.shape}, expected ({n},)")
    assigned = wc & ~holdout
    contacted = assigned & (rng.random(n) < config.delivery_rate)
    p = np.where(contacted, truth[P_CONTACTED].to_numpy(), truth[P_NOT_CONTACTED].to_numpy())
    churned = rng.random(n) < p
    out = frame.drop(columns=[c for c in (TRUTH_COLUMN,) if c in frame.columns])
    out = out.assign(
        **{
            label_column: np.where(churned, "yes", "no"),
            WOULD_CONTACT_COLUMN: wc,
            HOLDOUT_COLUMN: holdout,
            ASSIGNED_COLUMN: assigned,
            CONTACTED_COLUMN: contacted,
        }
    )
    return Campaign(
        frame=out,
        truth=truth,
        holdout_share=holdout_share,
        delivery_rate=config.delivery_rate,
        seed=seed,
    )


def true_itt_save_rate(campaign: Campaign) -> float:
    """The expected ITT save rate (0-1) among the would-contact customers of ``campaign``:
    ``1 - E[churn | assigned] / E[churn | holdout]`` over those customers' true probabilities,
    with assigned contacts delivered at ``delivery_rate``."""
    wc = campaign.frame[WOULD_CONTACT_COLUMN].to_numpy()
    p0 = campaign.truth[P_NOT_CONTACTED].to_numpy()[wc]
    p1 = campaign.truth[P_CONTACTED].to_numpy()[wc]
    d = campaign.delivery_rate
    return float(1 - (d * p1 + (1 - d) * p0).mean() / p0.mean())
