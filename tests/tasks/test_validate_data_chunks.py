"""Chunked validation: the schema run chunk by chunk reports what one whole-table pass does."""

from __future__ import annotations

from dataclasses import asdict, replace
from functools import partial

import numpy as np
import pandas as pd
import pytest

from configs.settings import build_config
from tasks.validate_data import ValidationReport, validate_data, validate_table
from tests.fixtures.bad.make_bad import BASE, _frame


def _bad_frame() -> pd.DataFrame:
    """80 rows with bad cells spread over several chunks and columns."""
    f = _frame().astype({"tenure": float, "MonthlyCharges": object})
    f.loc[[3, 40, 77], "tenure"] = [np.inf, -np.inf, np.inf]
    f.loc[[5, 61], "MonthlyCharges"] = ["abc", "x"]
    f.loc[[7, 70], "Churn"] = "Maybe"
    f.loc[50:, "Contract"] = None  # 37.5 % missing: a whole-column check
    return f


def _reports(frame: pd.DataFrame, chunk_rows: int) -> tuple[ValidationReport, ValidationReport]:
    cfg = build_config(BASE)
    roles = validate_table(frame, config=cfg).roles
    run = partial(
        validate_data,
        roles=roles,
        data=cfg.data,
        validation=cfg.validation,
        split=cfg.split,
        economics=cfg.economics,
    )
    a = run(frame, chunk_rows=None).report
    b = run(frame, chunk_rows=chunk_rows).report
    return a, b


@pytest.mark.parametrize("chunk_rows", [7, 33, 79])
def test_validate_data_in_chunks_reports_the_whole_pass_issues(chunk_rows: int) -> None:
    frame = _bad_frame()
    before = frame.copy()
    whole, chunked = _reports(frame, chunk_rows)
    assert not whole.passed and len(whole.issues) == 4
    key = lambda i: (i.column, i.check)  # noqa: E731
    # the same issues (column, check, failing count, examples); chunks list them by column
    assert sorted(chunked.issues, key=key) == sorted(whole.issues, key=key)
    assert asdict(replace(chunked, issues=())) == asdict(replace(whole, issues=()))
    by_column = {i.column: i for i in chunked.issues}
    assert by_column["tenure"].failing_count == 3
    assert by_column["MonthlyCharges"].examples == ("abc", "x")
    assert by_column["Contract"].examples == ("37.5% missing",)
    pd.testing.assert_frame_equal(frame, before)  # the input is not mutated


def test_validate_data_in_chunks_passes_a_clean_table_with_the_same_clean_frame() -> None:
    frame = _frame()
    cfg = build_config(BASE)
    roles = validate_table(frame, config=cfg).roles
    run = partial(
        validate_data, roles=roles, data=cfg.data, validation=cfg.validation, split=cfg.split
    )
    whole = run(frame, chunk_rows=None)
    chunked = run(frame, chunk_rows=9)
    assert whole.report.passed and chunked.report == whole.report
    assert whole.frame is not None and chunked.frame is not None
    pd.testing.assert_frame_equal(chunked.frame, whole.frame)
