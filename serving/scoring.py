"""Scoring shared by the service and the batch command: request schema from the record,
values through the fast scorer, decisions through the served policy document."""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Annotated, Any

import numpy as np
import pandas as pd
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, create_model

from serving.experiment import HOLDOUT_TIER, Experiment, apply_holdout
from serving.fast_scorer import ScoreOutput
from serving.loader import Champion
from serving.uplift import uplift_decide
from tasks.select_policy import decide

RESULT_COLUMNS = (
    "churn_probability",
    "expected_value_usd",
    "action",
    "tier",
    "model_version",
    "policy_id",
    "would_contact",
    "holdout",
    "experiment_id",
)


def _safe(name: str, taken: set[str]) -> str:
    base = re.sub(r"\W", "_", name)
    if not base or base[0].isdigit():
        base = f"f_{base}"
    out, i = base, 1
    while out in taken:
        out, i = f"{base}_{i}", i + 1
    taken.add(out)
    return out


MAX_ENUM_CATEGORIES = 30  # a categorical feature with more known categories gets no enum


def _encodable(value: str) -> str:
    """Text that can be written as UTF-8 (JSON's ``\\ud800`` decodes to a lone surrogate,
    which no response or log line can carry)."""
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise ValueError("text with a lone surrogate (not valid Unicode)") from None
    return value


Text = Annotated[str, AfterValidator(_encodable)]


def known_categories(champion: Champion) -> dict[str, list[Any]]:
    """Per categorical feature, the categories seen in training (one-hot order)."""
    block = champion.scorer.categorical
    return {
        col: [c for c in cats if c != fill]
        for col, cats, fill in zip(block.columns, block.categories, block.missing_fill, strict=True)
    }


def _category_schema(categories: list[Any]) -> dict[str, Any]:
    """The JSON schema of a categorical input: the known categories as an enum when there are
    at most ``MAX_ENUM_CATEGORIES``; any other text or number is accepted and scored as an
    unknown category (with a warning), null as missing."""
    other: list[dict[str, Any]] = [{"type": "string"}, {"type": "number"}, {"type": "boolean"}]
    if 0 < len(categories) <= MAX_ENUM_CATEGORIES:
        known = {"enum": categories, "title": "known category"}
        return {
            "anyOf": [known, *other, {"type": "null"}],
            "description": "One of the categories seen in training; another value is scored "
            "as an unknown category (warning), null or absent as missing.",
        }
    return {"anyOf": [*other, {"type": "null"}]}


def request_model(champion: Champion, *, max_abs: float = 1e12) -> type[BaseModel]:
    """A pydantic model for one customer, generated from the record: the id, the model's
    features (numeric: a finite number with |x| <= ``max_abs`` in the feature's unit, or
    null; categorical: text, number or null, the known categories published as an enum)
    and, when value comes from a column, that column (a number in [0, ``max_abs``]).
    Unknown fields are rejected; text must be valid Unicode."""
    number = Annotated[float, Field(allow_inf_nan=False, ge=-max_abs, le=max_abs)]
    category = Annotated[
        Text | int | Annotated[float, Field(allow_inf_nan=False)] | bool | None,
        Field(union_mode="left_to_right"),
    ]
    taken: set[str] = set()
    fields: dict[str, Any] = {
        _safe(champion.id_column, taken): (
            Annotated[Text, Field(min_length=1, max_length=200)] | int,
            Field(alias=champion.id_column, description="The customer's id (echoed back)."),
        )
    }
    cats = known_categories(champion)
    for col in champion.numeric:
        if col == champion.value_column:
            continue
        fields[_safe(col, taken)] = (number | None, Field(None, alias=col))
    for col in champion.categorical:
        if col == champion.value_column:
            continue
        fields[_safe(col, taken)] = (
            category,
            Field(None, alias=col, json_schema_extra=_category_schema(cats.get(col, []))),
        )
    if champion.value_column:
        fields[_safe(champion.value_column, taken)] = (
            Annotated[float, Field(allow_inf_nan=False, le=max_abs)],
            Field(alias=champion.value_column, ge=0, description="Customer value (USD)."),
        )
    return create_model(  # type: ignore[call-overload,no-any-return]
        "Customer", __config__=ConfigDict(extra="forbid", populate_by_name=False), **fields
    )


def example_customer(champion: Champion) -> dict[str, Any]:
    """A typical customer for the API documentation: each numeric feature at its training
    median, each categorical one at its first known category, and a generated id."""
    num = champion.scorer.numeric
    medians = dict(zip(num.columns, (float(m) for m in num.medians), strict=True))
    cats = known_categories(champion)
    row: dict[str, Any] = {champion.id_column: "C-0001"}
    for col in champion.numeric:
        row[col] = round(medians.get(col, 0.0), 2)
    for col in champion.categorical:
        known = cats.get(col) or [None]
        row[col] = known[0]
    if champion.value_column and row.get(champion.value_column) is None:
        row[champion.value_column] = round(medians.get(champion.value_column, 0.0), 2)
    return row


@dataclass(frozen=True)
class Scored:
    """Scores and decisions of a batch. ``contact``: what is done (holdout applied);
    ``would_contact``: what the policy decided; ``holdout``: the randomized holdout mask;
    ``tier``: the policy's tier, ``holdout`` for a holdout customer; ``experiment_id``:
    None when no experiment runs (serving/experiment.py)."""

    ids: list[Any]
    probability: np.ndarray
    expected_value: np.ndarray
    contact: np.ndarray
    tier: np.ndarray
    warnings: list[list[str]]
    would_contact: np.ndarray
    holdout: np.ndarray
    experiment_id: str | None = None
    effect: np.ndarray | None = None  # uplift policy: churn probability a contact removes


@dataclass(frozen=True)
class Decided:
    """The arrays of ``Scored`` without ids or warnings (the batch path); ``flags`` holds the
    scorer's imputed/unknown masks."""

    probability: np.ndarray
    expected_value: np.ndarray
    contact: np.ndarray
    tier: np.ndarray
    would_contact: np.ndarray
    holdout: np.ndarray
    experiment_id: str | None
    effect: np.ndarray | None
    flags: ScoreOutput


def decide_columns(
    champion: Champion,
    columns: Mapping[str, Any],
    n: int,
    *,
    ids: Sequence[Any] | None = None,
    experiment: Experiment | None = None,
) -> Decided:
    """Score ``n`` rows of column arrays (features + value column) and decide, with the
    holdout of ``experiment`` (if any; it needs the rows' ``ids``) applied to the policy's
    contacts."""
    out = champion.scorer.score(columns)
    raw_values = columns.get(champion.value_column) if champion.value_column else None
    values = champion.policy.values(
        None if raw_values is None else np.asarray(raw_values, dtype=float), n
    )
    effect = None
    if champion.uplift is None:
        probability = out.probability
        d = decide(probability, values, champion.policy.document)
    else:  # an uplift policy: the effect decides; the churn probability is without contact
        effect, probability = champion.uplift.score(columns, n)
        d = uplift_decide(effect, values, champion.policy.document)
    if experiment is not None and ids is None:
        raise ValueError("a holdout experiment needs the customers' ids")
    arm = apply_holdout(experiment, ids if ids is not None else (), d.contact)
    tier = np.where(arm.holdout, HOLDOUT_TIER, d.tier) if arm.holdout.any() else d.tier
    return Decided(
        probability,
        d.expected_value_usd,
        arm.contact,
        tier,
        arm.would_contact,
        arm.holdout,
        arm.experiment_id,
        effect,
        out,
    )


def score_columns(
    champion: Champion,
    columns: Mapping[str, Any],
    ids: Sequence[Any],
    *,
    with_warnings: bool = True,
    experiment: Experiment | None = None,
) -> Scored:
    """Score column arrays (features + value column) for the given ids, with the holdout of
    ``experiment`` (if any) applied to the policy's contacts."""
    n = len(ids)
    d = decide_columns(champion, columns, n, ids=ids, experiment=experiment)
    warnings: list[list[str]] = [[] for _ in range(n if with_warnings else 0)]
    for col, mask in d.flags.imputed.items() if with_warnings else ():
        for i in np.nonzero(mask)[0]:
            warnings[i].append(f"{col}: missing value imputed")
    for col, mask in d.flags.unknown.items() if with_warnings else ():
        for i in np.nonzero(mask)[0]:
            warnings[i].append(f"{col}: unknown category ignored")
    return Scored(
        list(ids),
        d.probability,
        d.expected_value,
        d.contact,
        d.tier,
        warnings,
        d.would_contact,
        d.holdout,
        d.experiment_id,
        d.effect,
    )


def score_customers(
    champion: Champion,
    customers: Sequence[Mapping[str, Any]],
    experiment: Experiment | None = None,
) -> Scored:
    """Score validated customer dicts (keys are the original column names)."""
    cols = list(champion.scorer.features)
    if champion.value_column and champion.value_column not in cols:
        cols.append(champion.value_column)
    columns = {c: [row.get(c) for row in customers] for c in cols}
    ids = [row[champion.id_column] for row in customers]
    return score_columns(champion, columns, ids, experiment=experiment)


def result_dicts(champion: Champion, scored: Scored) -> list[dict[str, Any]]:
    out = []
    for i, cid in enumerate(scored.ids):
        out.append(
            {
                "customer_id": cid,
                "churn_probability": float(scored.probability[i]),
                "expected_value_usd": round(float(scored.expected_value[i]), 4),
                "action": "contact" if scored.contact[i] else "no_contact",
                "tier": str(scored.tier[i]),
                "model_name": champion.model_name,
                "model_version": champion.model_version,
                "policy_id": champion.policy_id,
                "would_contact": bool(scored.would_contact[i]),
                "holdout": bool(scored.holdout[i]),
                "experiment_id": scored.experiment_id,
                "warnings": scored.warnings[i],
            }
        )
        if scored.effect is not None:
            out[-1]["uplift_effect"] = float(scored.effect[i])
    return out


def score_frame(
    champion: Champion, frame: pd.DataFrame, experiment: Experiment | None = None
) -> pd.DataFrame:
    """Batch scoring of a clean frame: id column plus the result columns, the holdout of
    ``experiment`` applied as in the service."""
    columns = {c: frame[c] for c in champion.scorer.features}
    if champion.value_column:
        columns[champion.value_column] = frame[champion.value_column]
    s = score_columns(
        champion,
        columns,
        frame[champion.id_column].tolist(),
        with_warnings=False,
        experiment=experiment,
    )
    result = pd.DataFrame(
        {
            champion.id_column: frame[champion.id_column].to_numpy(),
            "churn_probability": s.probability,
            "expected_value_usd": np.round(s.expected_value, 4),
            "action": np.where(s.contact, "contact", "no_contact"),
            "tier": s.tier,
            "model_version": champion.model_version,
            "policy_id": champion.policy_id,
            "would_contact": s.would_contact,
            "holdout": s.holdout,
            "experiment_id": pd.array([s.experiment_id] * len(frame), dtype="string"),
        }
    )
    if s.effect is not None:
        result["uplift_effect"] = s.effect
    return result


def reasons_for(champion: Champion, row: Mapping[str, Any], top: int = 3) -> list[dict[str, Any]]:
    """Why this score: per-feature sensitivity. Each feature in turn is replaced by the value
    the model imputes for a missing one (numeric: the training median; categorical: the
    missing/unknown encoding); the change in churn probability it causes is its effect.
    One vectorised call over (features + 1) rows, cheap enough for the hot path."""
    feats = list(champion.scorer.features)
    n = len(feats) + 1
    columns: dict[str, list[Any]] = {c: [row.get(c)] * n for c in feats}
    for i, c in enumerate(feats, start=1):
        columns[c][i] = None
    p = champion.scorer.score(columns).probability
    effects = p[0] - p[1:]
    order = np.argsort(-np.abs(effects), kind="mergesort")[:top]
    return [
        {
            "feature": feats[i],
            "value": row.get(feats[i]),
            "effect_on_probability": round(float(effects[i]), 5),
        }
        for i in order
    ]
