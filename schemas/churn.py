"""Pandera schemas built from the config's column roles (never from fixed column names)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandera.pandas as pa

from tasks.load_data import ColumnRoles

# the starts of the checks' messages (pandera reports a failed check by its message)
FINITE_ERROR = "finite numbers only: inf/-inf found"
MISSING_SHARE_ERROR = "missing share"
CATEGORIES_ERROR = "at most"


def _max_missing(share: float) -> pa.Check:
    return pa.Check(
        lambda s: bool(s.isna().mean() <= share),
        name="max_missing_share",
        error=f"{MISSING_SHARE_ERROR} <= {share:g}",
        ignore_na=False,
    )


def _finite() -> pa.Check:
    """No inf/-inf (missing values are the missing-share check's business)."""
    return pa.Check(
        lambda s: ~np.isinf(s.astype(float)),
        name="finite",
        error=FINITE_ERROR,
        ignore_na=True,
    )


def _max_categories(limit: int) -> pa.Check:
    return pa.Check(
        lambda s: bool(s.nunique(dropna=True) <= limit),
        name="max_categories",
        error=f"{CATEGORIES_ERROR} {limit} distinct values "
        "(list identifier-like columns under data.ignore)",
    )


def build_schema(
    roles: ColumnRoles,
    *,
    label_values: Sequence[str],
    max_missing_share: float,
    max_categories: int,
    unique_id: bool = True,
) -> pa.DataFrameSchema:
    """Schema for a training table (the label column compared as text).

    - the id column is present, non-null and (``unique_id``) unique (``roles.id_column``
      always names a real column: with ``data.id_column: null`` it is the row number the
      loader added); a caller that tells exact duplicate rows apart from conflicting ids
      checks uniqueness itself;
    - the label holds only ``label_values``;
    - numeric features coerce to float (blank cells were turned into missing before), are
      finite (no inf/-inf) and miss at most ``max_missing_share`` of their values;
    - categorical features (any type, compared as text) have at most ``max_categories`` values;
    - the customer-value column, when used, is numeric, finite, non-negative and complete.
    """
    columns: dict[str, pa.Column] = {
        roles.id_column: pa.Column(nullable=False, unique=unique_id),
        roles.label_column: pa.Column(
            str, pa.Check.isin(list(label_values)), nullable=False, coerce=True
        ),
    }
    for col in roles.numeric:
        columns[col] = pa.Column(
            float,
            nullable=True,
            coerce=True,
            checks=[_finite(), _max_missing(max_missing_share)],
        )
    for col in roles.categorical:
        columns[col] = pa.Column(
            nullable=True,
            checks=[_max_missing(max_missing_share), _max_categories(max_categories)],
        )
    if roles.value_column:
        columns[roles.value_column] = pa.Column(
            float, [_finite(), pa.Check.ge(0)], nullable=False, coerce=True
        )
    return pa.DataFrameSchema(columns, strict=False, name="churn_training_table")


def build_scoring_schema(roles: ColumnRoles) -> pa.DataFrameSchema:
    """Schema for rows to score: id and features; the label is not needed."""
    columns: dict[str, pa.Column] = {roles.id_column: pa.Column(nullable=False)}
    for col in roles.numeric:
        columns[col] = pa.Column(float, nullable=True, coerce=True)
    for col in roles.categorical:
        columns[col] = pa.Column(nullable=True)
    if roles.value_column:
        columns[roles.value_column] = pa.Column(float, pa.Check.ge(0), nullable=False, coerce=True)
    return pa.DataFrameSchema(columns, strict=False, name="churn_scoring_table")
