"""A CSV staged as Parquet (tasks/stage_csv.py) reads, partition by partition, as the whole
file reads locally: same cells, dtypes, categories and data hash."""

from __future__ import annotations

import random
from pathlib import Path

import pandas as pd
import pytest

from configs.settings import DataConfig
from tasks.load_data import DataError, frame_sha256, read_table
from tasks.partitions import (
    TableLayout,
    concat_rows,
    profile_partition,
    read_partition,
    reduce_profiles,
    table_layout,
)
from tasks.stage_csv import BOOL_MISSING, EMPTY, FLOAT, INT, TEXT, join_kinds, stage_csv

# cells by what pandas makes of them (quoted ones as written in the file)
CELLS = {
    "int": ["1", "-2", "30", "+5", "-0", " 7", "123456789012345678"],
    "float": ["1.5", "2e3", "-0.25", "inf", "1e400", "1.0", "-inf", ".5"],
    "missing": ["", "NA", "nan", "None", "NULL", "n/a"],
    "bool": ["True", "false", "TRUE", "False"],
    "text": ["a", "b c", '"x,y"', "007", "0x10", '"multi\nline"', "true ", "1 2", '"q""q"'],
}
HUGE = ["18446744073709551615", "9223372036854775808", "99999999999999999999999"]


def _staged(csv: Path, chunk_rows: int, tmp: Path) -> tuple[TableLayout, DataConfig]:
    staged = stage_csv(csv, tmp / "staged.parquet", chunk_rows=chunk_rows)
    layout = table_layout(
        tmp / "staged.parquet", partition_rows=chunk_rows, categories=staged.categories
    )
    assert layout.rows == staged.rows
    return layout, DataConfig(source="file", path=str(csv), id_column="k")


def _same_as_whole(csv: Path, chunk_rows: int, tmp: Path) -> None:
    whole = read_table(csv)
    layout, data = _staged(csv, chunk_rows, tmp)
    parts = [read_partition(layout, p, data=data) for p in layout.partitions]
    pd.testing.assert_frame_equal(
        concat_rows(parts, sort_categories=True), whole, check_index_type=False
    )
    sha256 = reduce_profiles([profile_partition(layout, p, data=data) for p in layout.partitions])
    assert sha256[0] == frame_sha256(whole)


def _write(path: Path, columns: dict[str, list[str]]) -> Path:
    rows = len(next(iter(columns.values())))
    lines = [",".join([*columns, "k"])]
    lines += [",".join([*(v[i] for v in columns.values()), "k"]) for i in range(rows)]
    path.write_text("\n".join(lines) + "\n")
    return path


@pytest.mark.parametrize("seed", range(4))
def test_stage_csv_reads_as_the_whole_file_for_random_tables(tmp_path: Path, seed: int) -> None:
    """Columns mixing a few kinds of cell (whole numbers, decimals, missing markers,
    booleans, text with quotes and line breaks), cut into random chunk sizes: the staged
    partitions are the whole-file read, frame for frame."""
    rng = random.Random(seed)
    for trial in range(30):
        rows = rng.randint(1, 40)
        columns = {}
        for j in range(4):
            kinds = rng.sample(list(CELLS), rng.randint(1, 3))
            columns[f"c{j}"] = [rng.choice(CELLS[rng.choice(kinds)]) for _ in range(rows)]
        csv = _write(tmp_path / f"t{trial}.csv", columns)
        _same_as_whole(csv, rng.randint(1, 10), tmp_path)


def test_stage_csv_types_a_column_by_all_its_chunks(tmp_path: Path) -> None:
    """What a chunk alone would type otherwise: whole numbers with a text cell far down are
    text (as written, "007" kept); a chunk of blanks before booleans keeps booleans with a
    gap; whole numbers with a blank later are float; a column of blanks is float."""
    columns = {
        "code": ["1", "2", "3", "007", "x"],
        "flag": ["", "", "True", "False", "True"],
        "count": ["1", "2", "3", "4", ""],
        "empty": ["", "", "", "", ""],
        "rate": ["1", "2", "2.5", "4", "5"],
    }
    csv = _write(tmp_path / "t.csv", columns)
    _same_as_whole(csv, 2, tmp_path)
    whole = read_table(csv)
    assert list(whole["code"]) == ["1", "2", "3", "007", "x"]
    assert whole["flag"].dtype == object and whole["count"].dtype == "float64"


def test_stage_csv_join_kinds_is_the_whole_column_type() -> None:
    assert join_kinds([INT, INT], column="c") == INT
    assert join_kinds([INT, FLOAT, EMPTY], column="c") == FLOAT
    assert join_kinds([EMPTY], column="c") == FLOAT
    assert join_kinds([EMPTY, "bool"], column="c") == BOOL_MISSING
    assert join_kinds(["bool", INT], column="c") == TEXT
    assert join_kinds([INT, TEXT], column="c") == TEXT


@pytest.mark.parametrize("huge", HUGE)
def test_stage_csv_refuses_whole_numbers_beyond_64_bits_naming_the_column(
    tmp_path: Path, huge: str
) -> None:
    csv = _write(tmp_path / "t.csv", {"ok": ["1", "2", "3"], "iccid": ["1", huge, ""]})
    with pytest.raises(DataError, match="'iccid'.*64-bit") as err:
        stage_csv(csv, tmp_path / "s.parquet", chunk_rows=2)
    assert err.value.column == "iccid"
    assert not list(tmp_path.glob("*.parquet*"))  # nothing half-written


@pytest.mark.parametrize(
    "content",
    ["", "a,b\n", "a,a\n1,2\n", 'a,b\n1,2\n3,"4\n', "a,b\n1,2\n3,4,5,6\n"],
    ids=["empty", "header-only", "repeated-name", "open-quote", "extra-fields"],
)
def test_stage_csv_refuses_what_the_loader_refuses_with_its_message(
    tmp_path: Path, content: str
) -> None:
    csv = tmp_path / "bad.csv"
    csv.write_text(content)
    with pytest.raises(DataError) as local:
        read_table(csv)
    with pytest.raises(DataError) as staged:
        stage_csv(csv, tmp_path / "s.parquet", chunk_rows=1)
    assert str(staged.value) == str(local.value)
    assert not list(tmp_path.glob("*.parquet*"))
