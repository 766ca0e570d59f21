"""Validate a training table: pandera schema (lazy, every failure at once) plus dataset checks.

Dataset checks beyond the schema, as the development checklist asks: configured columns exist,
the label is not constant, both classes are large enough for the splits, and no single feature
is a near-copy of the label (leakage).
"""

from __future__ import annotations

import difflib
import json
import logging
from collections.abc import Callable
from dataclasses import asdict, dataclass, field

import numpy as np
import pandas as pd
import pandera.pandas as pa

from configs.settings import (
    ROW_ID_COLUMN,
    BayesPilotConfig,
    DataConfig,
    EconomicsConfig,
    SplitConfig,
    ValidationConfig,
)
from schemas.churn import CATEGORIES_ERROR, MISSING_SHARE_ERROR, build_schema
from tasks.load_data import MAX_LISTED_COLUMNS, ColumnRoles, load_data, resolve_roles

log = logging.getLogger(__name__)

BLANK = r"^\s*$"
# schema checks that judge a whole column (a share, a count of values): in chunked
# validation they run once per column on all its rows, the others chunk by chunk
WHOLE_COLUMN_CHECKS = ("max_missing_share", "max_categories")
MAX_EXAMPLES = 5
MISSING_COLUMN = "column missing from the data"


@dataclass(frozen=True)
class ValidationIssue:
    column: str
    check: str
    failing_count: int
    examples: tuple[str, ...]


@dataclass(frozen=True)
class ValidationReport:
    """Everything wrong with a table, found in one pass."""

    passed: bool
    rows: int
    columns: int
    issues: tuple[ValidationIssue, ...]
    blank_as_missing: dict[str, int] = field(default_factory=dict)
    missing_share: dict[str, float] = field(default_factory=dict)
    label_counts: dict[str, int] = field(default_factory=dict)
    found_columns: tuple[str, ...] = ()
    """The table's columns, kept when a configured column is missing from it."""

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2, default=str)

    def summary(self) -> str:
        if self.passed:
            return f"validation passed: {self.rows} rows, {self.columns} columns"
        lines = [f"validation failed: {len(self.issues)} problem(s) in {self.rows} rows"]
        for i in self.issues:
            ex = ", ".join(i.examples)
            lines.append(f"  - {i.column}: {i.check} ({i.failing_count} failing; e.g. {ex})")
        if self.found_columns:
            lines.append(f"columns in the data: {listed_columns(list(self.found_columns))}")
        return "\n".join(lines)


@dataclass(frozen=True)
class ValidatedData:
    """The report and, when it passed, a clean copy: numeric features as float, blanks as NaN,
    categorical features as text, the label as 0/1 in ``label_column``."""

    report: ValidationReport
    frame: pd.DataFrame | None


def _holds_booleans(series: pd.Series) -> bool:
    """pandas read the column's TRUE/FALSE (any case) text as booleans."""
    if pd.api.types.is_bool_dtype(series):
        return True
    values = series.dropna()
    return (
        series.dtype == object
        and len(values) > 0
        and all(isinstance(v, bool | np.bool_) for v in values)
    )


def _label_text(label: str | int | bool, *, booleans: bool) -> str:
    """The configured label as the label column reads once turned into text. A column pandas
    read as booleans reads 'True'/'False', so a label written as in the file (TRUE, true) or
    as a YAML boolean matches it."""
    text = str(label)
    if booleans and text.casefold() in {"true", "false"}:
        return text.casefold().capitalize()
    return text


def _label_values(series: pd.Series, data: DataConfig) -> tuple[str, str | None]:
    return label_values_from(
        series.dropna().astype(str).value_counts(), booleans=_holds_booleans(series), data=data
    )


def label_texts(series: pd.Series) -> tuple[pd.Series, bool]:
    """The label column's value counts as text (missing cells left out, most frequent first)
    and whether pandas read it as booleans (what :func:`label_values_from` needs; summed over
    a table's partitions, they give the whole table's)."""
    return series.dropna().astype(str).value_counts(), _holds_booleans(series)


def label_values_from(
    counts: pd.Series, *, booleans: bool, data: DataConfig
) -> tuple[str, str | None]:
    """The positive and the negative label as text, from the label's text value counts
    (most frequent first) and whether the column holds booleans."""
    positive = _label_text(data.positive_label, booleans=booleans)
    if data.negative_label is not None:
        return positive, _label_text(data.negative_label, booleans=booleans)
    others = [v for v in counts.index if v != positive]
    # The most frequent other value is the negative label; any further value fails the
    # schema's isin check (and none at all fails the constant-label check).
    return positive, (str(others[0]) if others else None)


def _issues_from_pandera(
    failures: pd.DataFrame, work: pd.DataFrame, *, roles: ColumnRoles, data: DataConfig
) -> list[ValidationIssue]:
    return issues_from_failures(
        failures,
        [str(c) for c in work.columns],
        rows=len(work),
        missing_of=lambda c: int(work[c].isna().sum()),
        distinct_of=lambda c: int(work[c].nunique(dropna=True)),
        roles=roles,
        data=data,
    )


def issues_from_failures(
    failures: pd.DataFrame,
    columns: list[str],
    *,
    rows: int,
    missing_of: Callable[[str], int],
    distinct_of: Callable[[str], int],
    roles: ColumnRoles,
    data: DataConfig,
) -> list[ValidationIssue]:
    """Pandera failure cases said as issues, given the table's columns, its row count and,
    for a failed whole-column check, the column's missing count and distinct values (a whole
    table's, or the sums and unions of its partitions')."""
    issues = []
    fc = failures.copy()
    missing_col = fc["check"].astype(str) == "column_in_dataframe"
    fc.loc[missing_col, "column"] = fc.loc[missing_col, "failure_case"]
    fc["column"] = fc["column"].fillna("(table)").astype(str)
    fc["check"] = fc["check"].astype(str)
    coerced = {str(c): True for c in fc.loc[fc["check"].str.startswith("coerce_dtype"), "column"]}
    for (col, chk), group in fc.groupby(["column", "check"], sort=False):
        column, check = str(col), str(chk)
        if check == "column_in_dataframe":
            key = _config_key(str(column), roles, data)
            what = f"{MISSING_COLUMN} ({key})"
            issues.append(_missing_column_issue(str(column), columns, what))
            continue
        if str(check).startswith("dtype("):
            continue  # the coerce_dtype failure for the same column says it better
        cases = group["failure_case"].astype(str)
        crashed = cases.str.match(r"^\w+(Error|Exception)\(")
        if crashed.all() and coerced.get(str(column)):
            continue  # a check that could not run on text the coercion already reported
        examples = tuple(str(v) for v in pd.unique(cases))
        count = int(group["index"].notna().sum()) or len(group)
        if column in columns and check.startswith(MISSING_SHARE_ERROR):
            # a whole-column check fails with a bare False: show the figure it judged
            count = missing_of(column)
            examples = (f"{count / max(rows, 1):.1%} missing",)
        elif column in columns and check.startswith(CATEGORIES_ERROR):
            examples = (f"{distinct_of(column)} distinct values",)
        issues.append(
            ValidationIssue(
                str(column), _describe_check(str(check)), count, examples[:MAX_EXAMPLES]
            )
        )
    return issues


def _normalised(name: str) -> str:
    return "".join(ch for ch in name.casefold() if ch.isalnum())


def close_columns(wanted: str, columns: list[str], n: int = 3) -> list[str]:
    """Columns that look like ``wanted``: the same name in another case or spelling first,
    then the closest case-insensitive matches (difflib)."""
    names = [str(c) for c in columns]
    same = [c for c in names if c.casefold() == wanted.casefold()]
    key = _normalised(wanted)
    same += [c for c in names if c not in same and key and _normalised(c) == key]
    by_folded: dict[str, str] = {}
    for c in names:
        by_folded.setdefault(c.casefold(), c)
    close = difflib.get_close_matches(wanted.casefold(), list(by_folded), n=n, cutoff=0.6)
    return (same + [by_folded[c] for c in close if by_folded[c] not in same])[:n]


def listed_columns(columns: list[str]) -> str:
    """The table's columns, at most ``MAX_LISTED_COLUMNS`` of them."""
    names = [str(c) for c in columns]
    listed = ", ".join(names[:MAX_LISTED_COLUMNS])
    if len(names) > MAX_LISTED_COLUMNS:
        listed += f", ... (+{len(names) - MAX_LISTED_COLUMNS} more)"
    return listed


def _missing_column_issue(column: str, columns: list[str], what: str) -> ValidationIssue:
    """A configured column the table lacks, with its closest matches (the report lists the
    table's columns once, under the issues)."""
    similar = close_columns(column, columns)
    hint = f"; closest matches: {', '.join(map(repr, similar))}" if similar else "; nothing similar"
    return ValidationIssue(column, f"{what}{hint}", 1, tuple(similar) or ("absent",))


def _config_key(column: str, roles: ColumnRoles, data: DataConfig) -> str:
    """The config key that names ``column`` (for the missing-column message)."""
    if column == roles.label_column:
        return "data.label_column"
    if column == roles.value_column:
        return "economics.customer_value.column"
    if data.numeric is not None and column in data.numeric:
        return "data.numeric"
    if data.categorical is not None and column in data.categorical:
        return "data.categorical"
    return "config"


def _missing_id_issue(
    columns: list[str], *, roles: ColumnRoles, data: DataConfig
) -> ValidationIssue:
    """The id column is absent: say what to set, which columns exist and which look alike."""
    if data.id_column is None:
        return ValidationIssue(
            roles.id_column,
            f"data.id_column is null but this frame has no {roles.id_column!r} column: load the "
            "table with tasks.load_data.load_data (or with_row_id), which adds the row number",
            1,
            ("absent",),
        )
    return _missing_column_issue(
        roles.id_column,
        columns,
        f"{MISSING_COLUMN} (data.id_column, the id column): set data.id_column to the column "
        "that identifies each row, or to null for a table without ids (a row-number column "
        f"{ROW_ID_COLUMN!r} is then added)",
    )


def _duplicate_issues(frame: pd.DataFrame, *, roles: ColumnRoles) -> list[ValidationIssue]:
    """Exact duplicate rows (every column equal to an earlier row) and, apart from them, ids
    shared by rows that differ. A generated row number is left out of the comparison."""
    compared = [c for c in frame.columns if not (c == ROW_ID_COLUMN and c == roles.id_column)]
    exact = frame.duplicated(subset=compared, keep="first")
    conflicting = pd.Series([], dtype=object)
    if roles.id_column in frame.columns:
        ids = frame.loc[~exact.to_numpy(), roles.id_column].dropna()
        conflicting = ids[ids.duplicated(keep=False)]
    return duplicate_issues(
        n_exact=int(exact.sum()),
        first_exact_rows=[int(i) for i in frame.index[exact.to_numpy()][:MAX_EXAMPLES]],
        roles=roles,
        conflicting_rows=len(conflicting),
        conflicting_ids=[str(v) for v in pd.unique(conflicting.astype(str))],
    )


def duplicate_issues(
    *,
    n_exact: int,
    first_exact_rows: list[int],
    roles: ColumnRoles,
    conflicting_rows: int,
    conflicting_ids: list[str],
    distinct_conflicting: int | None = None,
) -> list[ValidationIssue]:
    """The issues of ``n_exact`` exact duplicate rows (the first ones at ``first_exact_rows``)
    and of ``conflicting_rows`` rows that share one of ``conflicting_ids`` (in order of first
    appearance) while differing in other columns; ``distinct_conflicting``: how many ids
    that is when ``conflicting_ids`` holds only the first ones (default: all of them).

    With an id column, an exact repeat is a copy of one customer (a join or export error): it
    fails, with the fix. Without one, two customers may well share every recorded value (a
    table of few, coarse columns), so repeats are logged, not refused."""
    issues = []
    generated_id = roles.id_column == ROW_ID_COLUMN
    if n_exact and generated_id:
        log.warning(
            "%s row(s) repeat an earlier row exactly; kept, as the table has no id column to "
            "tell a copied row from two customers alike (drop them first if they are copies)",
            f"{n_exact:,}",
        )
    elif n_exact:
        issues.append(
            ValidationIssue(
                "(table)",
                f"{n_exact:,} exact duplicate row(s): every column equals an earlier row's; "
                "drop the repeats (pandas: frame.drop_duplicates()) and run again",
                n_exact,
                tuple(f"row {i}" for i in first_exact_rows[:MAX_EXAMPLES]),
            )
        )
    if conflicting_rows:
        issues.append(
            ValidationIssue(
                roles.id_column,
                "duplicate values: each row needs a unique id [field_uniqueness] "
                f"({distinct_conflicting or len(conflicting_ids):,} id(s) shared by "
                f"{conflicting_rows:,} rows that "
                "differ in other columns)",
                conflicting_rows,
                tuple(conflicting_ids[:MAX_EXAMPLES]),
            )
        )
    return issues


def _describe_check(check: str) -> str:
    """Pandera's check name, said in words a user acts on (the original kept in brackets)."""
    if check.startswith("coerce_dtype"):
        return f"expected a number, found text [{check}]"
    if check.startswith(MISSING_SHARE_ERROR):
        return f"too many missing values: allowed {check}"
    if check == "not_nullable":
        return "missing values are not allowed here [not_nullable]"
    if check == "field_uniqueness":
        return "duplicate values: each row needs a unique id [field_uniqueness]"
    if check.startswith("isin("):
        return f"value outside the allowed labels {check[5:-1]} [isin]"
    if check.startswith("greater_than_or_equal_to("):
        return f"must be >= {check[25:-1]} [{check}]"
    return check


def _single_feature_auc(x: pd.Series, y: np.ndarray, numeric: bool) -> float:
    from sklearn.metrics import roc_auc_score  # only once the data passed: bad input is fast

    if numeric:
        values = pd.to_numeric(x, errors="coerce").to_numpy(dtype=float)
        values = np.where(np.isnan(values), np.nanmedian(values), values)
    else:
        codes = x.astype(str).fillna("(missing)")
        values = codes.map(pd.Series(y, index=codes.index).groupby(codes).mean()).to_numpy()
    if np.all(values == values[0]):
        return 0.5
    auc = float(roc_auc_score(y, values))
    return max(auc, 1.0 - auc)


def validate_data(
    frame: pd.DataFrame,
    *,
    roles: ColumnRoles,
    data: DataConfig,
    validation: ValidationConfig,
    split: SplitConfig,
    economics: EconomicsConfig | None = None,
    chunk_rows: int | None = None,
) -> ValidatedData:
    """Validate ``frame`` lazily; never mutates it. Returns the report and a clean copy.

    A table without rows gets one issue and nothing else. ``economics``, when given, has its
    contact capacity checked against the rows: a count (>= 1) larger than the table fails.
    With ``chunk_rows`` and a longer table the schema runs chunk by chunk (see
    :func:`schema_failures`): the same issues, at most a chunk of rows coerced at a time.
    """
    if len(frame) == 0:
        return _no_rows(frame)
    work = frame.copy(deep=False)  # copy-on-write: changing a column of work leaves frame as is
    issues: list[ValidationIssue] = _duplicate_issues(frame, roles=roles)
    issues.extend(capacity_issues(economics, rows=len(frame)))

    blanks = blanks_to_missing(work, roles=roles)
    if roles.id_column not in work.columns:
        issues.append(_missing_id_issue(list(work.columns), roles=roles, data=data))
    for seg in roles.segment_columns:
        if seg not in work.columns:
            issues.append(
                _missing_column_issue(
                    seg, list(work.columns), f"{MISSING_COLUMN} (data.segment_columns)"
                )
            )

    label_present = roles.label_column in work.columns
    positive, negative = (
        _label_values(work[roles.label_column], data)
        if label_present
        else (str(data.positive_label), None)
    )
    allowed = [positive] + ([negative] if negative is not None else [])
    if label_present:
        label_as_text(work, roles=roles)
    schema = build_schema(
        roles,
        label_values=allowed,
        max_missing_share=validation.max_missing_share,
        max_categories=validation.max_categories,
        unique_id=False,  # _duplicate_issues tells exact duplicate rows from conflicting ids
    )
    failures = schema_failures(work, schema, chunk_rows=chunk_rows)
    if failures is not None:
        issues.extend(
            i
            for i in _issues_from_pandera(failures, work, roles=roles, data=data)
            if not (i.column == roles.id_column and i.check.startswith(MISSING_COLUMN))
        )

    label_counts: dict[str, int] = {}
    if label_present:
        label_counts = {str(k): int(v) for k, v in work[roles.label_column].value_counts().items()}
        issues.extend(
            label_issues(label_counts, positive=positive, rows=len(work), roles=roles, split=split)
        )

    missing_share = {
        c: round(float(work[c].isna().mean()), 4)
        for c in roles.features
        if c in work.columns and work[c].isna().any()
    }
    if not issues and label_present:
        clean = _clean(work, roles=roles, positive=positive)
        issues.extend(_leakage(clean, roles=roles, validation=validation))
    column_missing = any(i.check.startswith(MISSING_COLUMN) for i in issues)
    report = ValidationReport(
        passed=not issues,
        rows=len(frame),
        columns=frame.shape[1],
        issues=tuple(issues),
        blank_as_missing=blanks,
        missing_share=missing_share,
        label_counts=label_counts,
        found_columns=tuple(str(c) for c in frame.columns) if column_missing else (),
    )
    if not report.passed:
        log.debug("validation failed: %d problem(s)", len(report.issues))
        return ValidatedData(report=report, frame=None)
    return ValidatedData(report=report, frame=clean)


def blanks_to_missing(work: pd.DataFrame, *, roles: ColumnRoles) -> dict[str, int]:
    """Blank text cells of the features and the value column set to missing in ``work`` (a
    shallow copy the caller owns: columns are replaced, never changed in place); returns the
    count per column that had any."""
    text_cols = [c for c in (*roles.numeric, *roles.categorical) if c in work.columns]
    if roles.value_column and roles.value_column in work.columns:
        text_cols.append(roles.value_column)
    blanks: dict[str, int] = {}
    for col in text_cols:
        if not pd.api.types.is_numeric_dtype(work[col]):
            mask = _blank_cells(work[col])
            if mask.any():
                blanks[col] = int(mask.sum())
                work[col] = work[col].where(~mask, np.nan)
    return blanks


def label_as_text(work: pd.DataFrame, *, roles: ColumnRoles) -> None:
    """The label column of ``work`` (a shallow copy the caller owns) replaced by its text,
    missing cells kept missing: what the schema's label check compares."""
    work[roles.label_column] = (
        work[roles.label_column].astype(str).where(work[roles.label_column].notna(), None)
    )


def capacity_issues(economics: EconomicsConfig | None, *, rows: int) -> list[ValidationIssue]:
    """A contact capacity given as a count (>= 1) larger than the table's ``rows``."""
    capacity = economics.capacity if economics is not None else None
    if capacity is not None and capacity >= 1 and capacity > rows:
        return [
            ValidationIssue(
                "economics.capacity",
                f"a contact capacity of {capacity:g} customers is more than the "
                f"{rows:,} rows of the data: set a smaller count, or a share of "
                "customers in (0, 1)",
                1,
                (f"{capacity:g} > {rows}",),
            )
        ]
    return []


def label_issues(
    label_counts: dict[str, int],
    *,
    positive: str,
    rows: int,
    roles: ColumnRoles,
    split: SplitConfig,
) -> list[ValidationIssue]:
    """A constant label, or a class too small for the splits, from the label's value counts
    (rows per label text) in a table of ``rows`` rows."""
    n_pos = label_counts.get(positive, 0)
    n_neg = sum(v for k, v in label_counts.items() if k != positive)
    if n_pos == 0 or n_neg == 0:
        seen = ", ".join(sorted(label_counts)) or "nothing"
        return [
            ValidationIssue(
                roles.label_column,
                f"label is constant: need both '{positive}' and another value",
                rows,
                (seen,),
            )
        ]
    smallest = min(split.train_fraction, split.selection_fraction, split.test_fraction)
    need = int(np.ceil(split.min_rows_per_class_per_split / smallest))
    small = {k: v for k, v in {"positive": n_pos, "negative": n_neg}.items() if v < need}
    return [
        ValidationIssue(
            roles.label_column,
            f"{name} class too small for the splits: need >= {need} rows",
            count,
            (f"{count} rows",),
        )
        for name, count in small.items()
    ]


def _blank_cells(series: pd.Series) -> np.ndarray:
    """Cells that are blank text (empty or only whitespace). A categorical column is tested
    on its categories once, not cell by cell."""
    if isinstance(series.dtype, pd.CategoricalDtype):
        cats = pd.Series(series.cat.categories).astype("string")
        blank = cats.str.match(BLANK).fillna(False).to_numpy(dtype=bool)
        codes = series.cat.codes.to_numpy()
        return np.isin(codes, np.flatnonzero(blank)) if blank.any() else np.zeros(len(series), bool)
    as_text = series.astype("string")
    out: np.ndarray = as_text.str.match(BLANK).fillna(False).to_numpy(dtype=bool)
    return out


def _validate_chunk(chunk: pd.DataFrame, schema: pa.DataFrameSchema) -> pd.DataFrame | None:
    """Pandera's failure cases of ``schema`` on ``chunk`` (lazy: all at once), or None."""
    try:
        schema.validate(chunk, lazy=True)
    except pa.errors.SchemaErrors as exc:
        failures: pd.DataFrame = exc.failure_cases
        return failures
    return None


def _split_schema(
    schema: pa.DataFrameSchema,
) -> tuple[pa.DataFrameSchema, dict[str, pa.Column]]:
    """The schema without its whole-column checks, and per column a one-column schema's
    column holding just those checks."""
    row_columns: dict[str, pa.Column] = {}
    whole: dict[str, pa.Column] = {}
    for name, col in schema.columns.items():
        keep = [c for c in col.checks if c.name not in WHOLE_COLUMN_CHECKS]
        judged = [c for c in col.checks if c.name in WHOLE_COLUMN_CHECKS]
        row_columns[name] = col.set_checks(keep)
        if judged:
            whole[name] = col.set_checks(judged)
    row_schema = pa.DataFrameSchema(row_columns, strict=schema.strict, name=schema.name)
    return row_schema, whole


def schema_failures(
    work: pd.DataFrame, schema: pa.DataFrameSchema, *, chunk_rows: int | None
) -> pd.DataFrame | None:
    """Pandera failure cases of ``schema`` on ``work`` (None when it passes).

    Up to ``chunk_rows`` rows (or without it): one lazy pass over the whole table. Longer
    tables go chunk by chunk (a chunk-level function: ``validate a chunk``), so pandera never
    coerces more than a chunk; the whole-column checks (missing share, number of categories)
    run on one column at a time; table-level failures (a missing column, a failed dtype) that
    every chunk repeats are kept once. The failure cases are the whole pass's, grouped by the
    schema's column order (within a column, in chunk order)."""
    if chunk_rows is None or len(work) <= chunk_rows:
        return _validate_chunk(work, schema)
    row_schema, whole = _split_schema(schema)
    parts = [
        f
        for start in range(0, len(work), chunk_rows)
        if (f := _validate_chunk(work.iloc[start : start + chunk_rows], row_schema)) is not None
    ]
    for name, col in whole.items():
        if name not in work.columns:
            continue
        one = pa.DataFrameSchema({name: col}, strict=False)
        f = _validate_chunk(work[[name]], one)
        if f is not None:
            judged = {str(c.error or c.name) for c in col.checks}
            parts.append(f[f["check"].astype(str).isin(judged) & f["index"].isna()])
    if not parts:
        return None
    out = pd.concat(parts, ignore_index=True)
    once = out["index"].isna()
    key = out["column"].astype(str) + "\x1f" + out["check"].astype(str) + "\x1f"
    key += out["failure_case"].astype(str)
    out = out[~(once & key.duplicated())]
    order = {name: i for i, name in enumerate(schema.columns)}
    column = out["column"].where(out["column"].notna(), out["failure_case"])
    rank = column.map(lambda c: order.get(str(c), len(order))).astype(int)
    return out.iloc[np.argsort(rank.to_numpy(), kind="stable")].reset_index(drop=True)


def _no_rows(frame: pd.DataFrame) -> ValidatedData:
    issue = ValidationIssue(
        "(table)",
        "the table has no data rows (a header at most): nothing to validate or train on",
        0,
        (f"{frame.shape[1]} column(s), 0 rows",),
    )
    report = ValidationReport(passed=False, rows=0, columns=frame.shape[1], issues=(issue,))
    return ValidatedData(report=report, frame=None)


def _clean(work: pd.DataFrame, *, roles: ColumnRoles, positive: str) -> pd.DataFrame:
    out = work.copy(deep=False)  # copy-on-write: assigning columns leaves work as is
    for col in roles.numeric:
        out[col] = pd.to_numeric(out[col], errors="coerce").astype(float)
    for col in roles.categorical:
        as_categories = _text_categories(out[col])
        if as_categories is not None:
            out[col] = as_categories
            continue
        missing = out[col].isna().to_numpy()
        text = out[col].astype(str).to_numpy(dtype=object)
        text[missing] = np.nan
        out[col] = pd.Series(text, index=out.index, dtype=object)
    if roles.value_column:
        out[roles.value_column] = pd.to_numeric(out[roles.value_column]).astype(float)
    out[roles.label_column] = (out[roles.label_column] == positive).astype("int8")
    keep = [roles.id_column, *roles.features, roles.label_column]
    extra = [c for c in (*roles.segment_columns, roles.value_column) if c and c not in keep]
    return out[keep + extra].reset_index(drop=True)


def _text_categories(series: pd.Series) -> pd.Series | None:
    """A categorical column with its categories as text (the same cells as the object column
    ``_clean`` otherwise builds, held as codes), or None when the column is not categorical or
    two categories would read alike as text."""
    if not isinstance(series.dtype, pd.CategoricalDtype):
        return None
    cats = series.cat.categories
    text = [str(c) for c in cats]
    if len(set(text)) != len(text):
        return None
    if list(cats) == text and (
        pd.api.types.is_object_dtype(cats.dtype) or isinstance(cats.dtype, pd.StringDtype)
    ):
        return series
    return series.cat.rename_categories(text)


def leakage_positions(rows: int, validation: ValidationConfig) -> np.ndarray | None:
    """Positions (in sample order) of the seeded rows the leakage screen uses out of a clean
    table of ``rows`` rows (``DataFrame.sample(n, random_state=0)``'s), or None for all."""
    if rows <= validation.leakage_sample_rows:
        return None
    picked: np.ndarray = np.random.RandomState(0).choice(
        rows, validation.leakage_sample_rows, replace=False
    )
    return picked


def _leakage(
    clean: pd.DataFrame, *, roles: ColumnRoles, validation: ValidationConfig
) -> list[ValidationIssue]:
    positions = leakage_positions(len(clean), validation)
    sample = clean if positions is None else clean.take(positions)
    return leakage_issues(sample, roles=roles, validation=validation)


def leakage_issues(
    sample: pd.DataFrame, *, roles: ColumnRoles, validation: ValidationConfig
) -> list[ValidationIssue]:
    """Features that alone separate the label on ``sample`` (clean rows: the rows
    :func:`leakage_positions` picks)."""
    y = sample[roles.label_column].to_numpy()
    issues = []
    for col in roles.features:
        auc = _single_feature_auc(sample[col], y, numeric=col in roles.numeric)
        if auc >= validation.leakage_auc:
            issues.append(
                ValidationIssue(
                    col,
                    f"leakage: this feature alone separates the label (ROC-AUC {auc:.4f} >= "
                    f"{validation.leakage_auc}); drop it or list it under data.ignore",
                    len(sample),
                    (f"AUC={auc:.4f}",),
                )
            )
    return issues


@dataclass(frozen=True)
class ValidatedTable:
    roles: ColumnRoles
    validated: ValidatedData


def validate_table(frame: pd.DataFrame, *, config: BayesPilotConfig) -> ValidatedTable:
    """Resolve column roles from config and data, then validate (the flow's validate stage)."""
    roles = resolve_roles(
        frame,
        data=config.data,
        value_column=config.economics.customer_value.column,
        numeric_inference_share=config.validation.numeric_inference_share,
    )
    validated = validate_data(
        frame,
        roles=roles,
        data=config.data,
        validation=config.validation,
        split=config.split,
        economics=config.economics,
        chunk_rows=config.scale.chunk_rows,
    )
    return ValidatedTable(roles, validated)


def check_input(config: BayesPilotConfig) -> ValidationReport:
    """Load and validate the data as the flow's first stages will, with no framework, record
    or model: run before Prefect starts, it refuses bad input in seconds. Raises
    ``DataError`` for data that cannot be read; returns the validation report otherwise."""
    return validate_table(load_data(config).frame, config=config).validated.report
