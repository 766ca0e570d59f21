"""Batch validation is vectorised: the same rejects and reasons as the pandera scoring schema
it replaced (the schema is the oracle here), chunk by chunk, without pandera's per-row cost."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pandera.pandas as pa
import pytest

from schemas.churn import build_scoring_schema
from serving.batch import BLANK, _roles, validate_chunk
from serving.loader import Champion, load_champion
from serving.settings import ServingSettings
from tasks.generate_data import TRUTH_COLUMN, generate_data


def _pandera_reasons(frame: pd.DataFrame, champion: Champion) -> dict[int, str]:
    """Row -> reason, as the pandera schema reported them (the implementation before)."""
    roles = _roles(champion)
    work = frame.reset_index(drop=True).copy()
    for col in (*roles.numeric, *([roles.value_column] if roles.value_column else [])):
        if not pd.api.types.is_numeric_dtype(work[col]):
            mask = work[col].astype("string").str.match(BLANK).fillna(False).to_numpy(bool)
            work[col] = work[col].where(~mask, np.nan)
    reasons: list[str] = [""] * len(work)
    try:
        build_scoring_schema(roles).validate(work, lazy=True)
    except pa.errors.SchemaErrors as exc:
        fc = exc.failure_cases
        fc = fc[fc["index"].notna()]
        for (col, check), grp in fc.groupby(["column", "check"], sort=False):
            if str(check).startswith("dtype("):
                continue
            for i, case in zip(grp["index"].astype(int), grp["failure_case"], strict=True):
                reasons[i] += f"{col}: {check} (got {case!r}); "
    return {i: r.rstrip("; ") for i, r in enumerate(reasons) if r}


@pytest.fixture
def champion(settings: ServingSettings) -> Champion:
    return load_champion(settings, pin=False)


def _customers(n: int, seed: int) -> pd.DataFrame:
    return generate_data(rows=n, seed=seed).drop(columns=["churned", TRUTH_COLUMN])


def test_validate_chunk_rejects_like_the_scoring_schema_typed(champion: Champion) -> None:
    df = _customers(40, 5)
    df["customer_id"] = df["customer_id"].astype(object)
    df.loc[0, "customer_id"] = None
    df.loc[0, "monthly_charges_usd"] = np.nan
    df.loc[1, "customer_id"] = None
    df.loc[1, "monthly_charges_usd"] = -3.0
    df.loc[2, "monthly_charges_usd"] = -np.inf
    df.loc[3, "tenure_months"] = np.nan  # a missing feature is imputed, not rejected
    df.loc[4, "customer_id"] = np.nan
    df.loc[5, "region"] = "atlantis"  # unknown categories are scored with a warning
    good, bad = validate_chunk(df, champion)
    expected = _pandera_reasons(df, champion)
    assert sorted(expected) == [0, 1, 2, 4]
    assert dict(zip(bad.index, bad["reject_reason"], strict=True)) == expected
    assert len(good) == 36 and good["tenure_months"].dtype == np.float64
    assert np.isnan(df["tenure_months"].to_numpy()[3])  # the input frame is unchanged
    assert list(bad.columns) == [*df.columns, "reject_reason"]


def test_validate_chunk_rejects_like_the_scoring_schema_text(champion: Champion) -> None:
    df = _customers(30, 6)
    for col in ("tenure_months", "monthly_charges_usd", "age_years"):
        df[col] = df[col].astype(str)
    df.loc[0, "tenure_months"] = "soon"
    df.loc[1, "tenure_months"] = "   "  # blank: missing, imputed
    df.loc[2, "tenure_months"] = " 7 "
    df.loc[3, "monthly_charges_usd"] = "-2"
    df.loc[4, "monthly_charges_usd"] = "nan"
    df.loc[5, "monthly_charges_usd"] = ""
    df.loc[6, "age_years"] = "1e2"
    df.loc[7, "age_years"] = "forty"
    df.loc[7, "tenure_months"] = "x"
    good, bad = validate_chunk(df, champion)
    expected = _pandera_reasons(df, champion)
    assert sorted(expected) == [0, 3, 4, 5, 7]
    assert dict(zip(bad.index, bad["reject_reason"], strict=True)) == expected
    assert "tenure_months: coerce_dtype('float64') (got 'x'); age_years" in expected[7]
    ids = df["customer_id"].tolist()
    got = good.set_index("customer_id")
    assert got["tenure_months"][ids[2]] == 7.0
    assert np.isnan(got["tenure_months"][ids[1]])
    assert got["age_years"][ids[6]] == 100.0


def test_validate_chunk_checks_the_value_column_even_beside_unparsable_text(
    champion: Champion,
) -> None:
    """The schema skipped the ``>= 0`` check of a column in which any value failed to
    convert (so a negative charge was scored when another row held text); every row is
    checked now."""
    df = _customers(10, 7)
    df["monthly_charges_usd"] = df["monthly_charges_usd"].astype(object)
    df.loc[0, "monthly_charges_usd"] = "lots"
    df.loc[1, "monthly_charges_usd"] = -3.0
    df.loc[2, "monthly_charges_usd"] = None
    _, bad = validate_chunk(df, champion)
    reasons = dict(zip(bad.index, bad["reject_reason"], strict=True))
    assert reasons == {
        0: "monthly_charges_usd: coerce_dtype('float64') (got 'lots')",
        1: "monthly_charges_usd: greater_than_or_equal_to(0) (got -3.0)",
        2: "monthly_charges_usd: not_nullable (got None)",
    }
    oracle = _pandera_reasons(df, champion)
    assert oracle[0] == reasons[0] and oracle[2] == reasons[2] and 1 not in oracle
