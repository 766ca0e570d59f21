"""The challenger's decisions on stored champion decisions, scored in batch off the request
path (what the shadow sidecar used to do live, one logged request at a time).

Input: champion decision rows as ``tasks.decision_store.read_decisions`` returns them (the
fixed decision columns plus the logged raw inputs as plain feature columns). Only rows logged
with raw inputs (``serving.log_inputs: full``) can be scored: a hashed or absent customer id
marks the others, which are counted, not scored. Output: one challenger decision per scored
row in the store's columns, keyed to the champion's row (same ``time``, ``request_id`` and
``customer_id``) and carrying the champion's action in ``champion_action``; of the inputs it
keeps only the customer value column (``input.<column>``), which the realised profit needs.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
import pandas as pd

from serving.loader import Champion
from serving.predlog import HASH_PREFIX
from serving.scoring import score_columns

log = logging.getLogger(__name__)
REQUIRED = ("time", "request_id", "customer_id", "action")
INPUT_PREFIX = "input."  # the store's column prefix of logged inputs


@dataclass(frozen=True)
class ChallengerBatch:
    """The challenger's decisions on one frame of champion rows; ``unscorable``: rows logged
    without raw inputs (``serving.log_inputs`` hashed/none), left out."""

    decisions: pd.DataFrame
    unscorable: int


def raw_input_rows(champion_rows: pd.DataFrame) -> pd.Series:
    """Rows that keep raw inputs: the customer id is logged raw (hashed/none modes log a
    keyed hash of it and no raw feature values)."""
    ids = champion_rows["customer_id"]
    return ids.notna() & ~ids.astype(str).str.startswith(HASH_PREFIX)


def champion_policy_action(rows: pd.DataFrame) -> pd.Series:
    """What the champion's policy decided on each row: ``would_contact`` where the row has
    it (a randomized-holdout customer's ``action`` is no_contact whatever the policy said,
    serving/experiment.py), else the logged ``action``."""
    action = rows["action"].astype(str)
    if "would_contact" not in rows.columns:
        return action
    would = rows["would_contact"]
    policy = pd.Series(
        np.where(would.fillna(False).astype(bool), "contact", "no_contact"), index=rows.index
    )
    return policy.where(would.notna(), action)


def challenger_decisions(challenger: Champion, champion_rows: pd.DataFrame) -> ChallengerBatch:
    """Score ``champion_rows`` (not modified) with ``challenger``. Probabilities are
    calibrated churn probabilities (0-1), expected values in USD per customer. A feature the
    challenger reads that no row logged is missing for every row (imputed, as a logged request
    without it would be); a warning names it."""
    missing = [c for c in REQUIRED if c not in champion_rows.columns]
    if missing:
        raise ValueError(f"champion decisions lack column(s) {missing}")
    raw = raw_input_rows(champion_rows)
    rows = champion_rows[raw].reset_index(drop=True)
    n = len(rows)
    wanted = list(challenger.scorer.features)
    if challenger.value_column and challenger.value_column not in wanted:
        wanted.append(challenger.value_column)
    absent = [c for c in wanted if c not in rows.columns]
    if absent and n:
        log.warning("challenger features not in the stored inputs (imputed): %s", absent)
    columns = {
        c: (rows[c] if c in rows.columns else pd.Series([None] * n, dtype=object)) for c in wanted
    }
    if n:
        s = score_columns(challenger, columns, rows["customer_id"].tolist(), with_warnings=False)
        probability, expected, contact = s.probability, s.expected_value, s.contact
    else:
        probability = expected = np.zeros(0)
        contact = np.zeros(0, dtype=bool)
    action = np.where(contact, "contact", "no_contact")
    decisions = pd.DataFrame(
        {
            "time": pd.to_datetime(rows["time"], utc=True),
            "source": "challenger",
            "request_id": rows["request_id"].astype(str),
            "model_version": challenger.model_version,
            "policy_id": challenger.policy_id,
            "customer_id": rows["customer_id"].astype(str),
            "probability": np.asarray(probability, dtype=float),
            "action": action,
            "expected_value_usd": np.round(np.asarray(expected, dtype=float), 4),
            "would_contact": np.asarray(contact, dtype=bool),
            "holdout": False,
            "experiment_id": pd.Series([None] * n, dtype=object),
            "champion_action": champion_policy_action(rows),
        }
    )
    value = challenger.value_column
    if value is not None and value in rows.columns:  # realised profit is computed from it
        decisions[INPUT_PREFIX + value] = rows[value]
    return ChallengerBatch(decisions, int((~raw).sum()))
