"""Sources: Excel workbooks (.xlsx) read in openpyxl's read-only mode; Parquet through DuckDB."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from mailconduit.errors import SourceError
from mailconduit.sources import SourceKind, open_source


def workbook(path: Path, sheets: dict[str, list[list[Any]]]) -> Path:
    openpyxl = pytest.importorskip("openpyxl")
    book = openpyxl.Workbook()
    book.remove(book.active)
    for title, rows in sheets.items():
        sheet = book.create_sheet(title)
        for row in rows:
            sheet.append(row)
    book.save(path)
    return path


@pytest.fixture
def book(tmp_path: Path) -> Path:
    return workbook(
        tmp_path / "crm.xlsx",
        {
            "Customers": [
                ["email", "name", "amount", "since", "vip"],
                ["a@x.org", "Ann", 120, dt.datetime(2024, 1, 31), True],
                ["b@x.org", "Bob", 99.5, None, False],
                [None, None, None, None, None],
                ["c@x.org", "Cid", 7, dt.datetime(2023, 5, 1, 8, 30), None],
                [None, None],
                [None],
            ],
            "Managers": [[], [], ["manager", "region"], ["Dee", "North"]],
        },
    )


def test_first_sheet_by_default_with_types_kept_and_sheet_rows_as_lines(book: Path) -> None:
    with open_source(book) as source:
        assert source.kind is SourceKind.XLSX
        assert source.sheet == "Customers"  # type: ignore[attr-defined]
        assert source.columns == ("email", "name", "amount", "since", "vip")
        rows = list(source.rows())
        assert source.count() == 3
    assert [(r.number, r.line) for r in rows] == [(1, 2), (2, 3), (3, 5)]
    assert rows[0].values == {
        "email": "a@x.org",
        "name": "Ann",
        "amount": 120,
        "since": dt.datetime(2024, 1, 31),
        "vip": True,
    }
    assert rows[1].values["amount"] == 99.5 and rows[1].values["since"] is None


@pytest.mark.parametrize("sheet", ["Managers", 2, "2"])
def test_sheet_by_name_or_position_and_header_after_empty_rows(book: Path, sheet: object) -> None:
    with open_source(book, sheet=sheet, key="manager") as source:  # type: ignore[arg-type]
        assert source.columns == ("manager", "region")
        rows = list(source.rows())
    assert [(r.key, r.line, r.values) for r in rows] == [
        ("Dee", 4, {"manager": "Dee", "region": "North"})
    ]


@pytest.mark.parametrize(
    ("sheet", "words"), [("Orders", "no sheet named 'Orders'"), (3, "no sheet 3")]
)
def test_missing_sheet_lists_the_sheets(book: Path, sheet: object, words: str) -> None:
    with pytest.raises(SourceError) as caught:
        open_source(book, sheet=sheet)  # type: ignore[arg-type]
    assert words in str(caught.value)
    assert "'Customers', 'Managers'" in str(caught.value)


def test_a_value_under_no_header_names_its_cell(tmp_path: Path) -> None:
    path = workbook(tmp_path / "wide.xlsx", {"S": [["a", "b"], [1, 2], [3, 4, None, "stray"]]})
    with pytest.raises(SourceError, match="column D") as caught:
        open_source(path).validate()
    assert caught.value.location == f"{path}:3"


def test_duplicate_and_missing_header_names(tmp_path: Path) -> None:
    dup = workbook(tmp_path / "dup.xlsx", {"S": [["a", "a"], [1, 2]]})
    with pytest.raises(SourceError, match="'a' appears more than once"):
        open_source(dup)
    hole = workbook(tmp_path / "hole.xlsx", {"S": [["a", None, "c"], [1, 2, 3]]})
    with pytest.raises(SourceError, match="column 2 of the header row has no name"):
        open_source(hole)


def test_empty_sheet_and_not_a_workbook(tmp_path: Path) -> None:
    empty = workbook(tmp_path / "empty.xlsx", {"Blank": []})
    with pytest.raises(SourceError, match="sheet 'Blank' is empty"):
        open_source(empty)
    fake = tmp_path / "fake.xlsx"
    fake.write_text("name,email\n")
    with pytest.raises(SourceError, match=r"not a readable \.xlsx workbook"):
        open_source(fake)


def test_duplicate_keys_in_a_sheet(tmp_path: Path) -> None:
    path = workbook(tmp_path / "k.xlsx", {"S": [["id"], [1], [2], [1]]})
    with pytest.raises(SourceError, match=r"key '1' .* \(rows 1, 3\)"):
        open_source(path, key="id").validate()


def test_where_and_order_by_on_excel_types(book: Path) -> None:
    with open_source(book, where="amount >= 99.5 AND NOT vip", order_by="amount") as source:
        assert [r.values["name"] for r in source.rows()] == ["Bob"]
    with open_source(book, where="since >= DATE '2024-01-01'") as source:
        rows = list(source.rows())
    assert [r.values["since"] for r in rows] == [dt.datetime(2024, 1, 31)]


# -- Parquet -------------------------------------------------------------------------------


@pytest.fixture
def parquet(tmp_path: Path) -> Path:
    import duckdb

    path = tmp_path / "orders.parquet"
    con = duckdb.connect()
    con.execute(
        "COPY (SELECT range AS id, 'c' || (range % 3) AS customer, "
        "(range * 1.5)::DECIMAL(10, 2) AS amount, DATE '2024-01-01' + range::INT AS day "
        f"FROM range(2500)) TO '{path}' (FORMAT parquet, ROW_GROUP_SIZE 1000)"
    )
    con.close()
    return path


def test_parquet_rows_keep_types_and_order(parquet: Path) -> None:
    with open_source(parquet) as source:
        assert source.kind is SourceKind.PARQUET
        assert source.columns == ("id", "customer", "amount", "day")
        assert source.count() == 2500
        rows = list(source.rows())
    assert len(rows) == 2500 and [r.number for r in rows[:3]] == [1, 2, 3]
    assert rows[3].values == {
        "id": 3,
        "customer": "c0",
        "amount": Decimal("4.50"),
        "day": dt.date(2024, 1, 4),
    }
    assert rows[2499].values["id"] == 2499 and rows[0].line is None


def test_parquet_where_uses_native_types_and_keeps_keys(parquet: Path) -> None:
    with open_source(parquet) as plain:
        keys = {r.number: r.key for r in plain.rows()}
    with open_source(parquet, where="amount > 3000 AND customer = 'c1'", order_by="day DESC") as f:
        rows = list(f.rows())
        assert f.count() == len(rows)
    assert rows[0].values["id"] == 2497 and rows[-1].values["id"] == 2002
    assert all(r.values["customer"] == "c1" for r in rows)
    assert all(r.key == keys[r.number] and r.number == r.values["id"] + 1 for r in rows)


def test_a_broken_parquet_file(tmp_path: Path) -> None:
    path = tmp_path / "broken.parquet"
    path.write_bytes(b"PAR1 this is not really parquet")
    with pytest.raises(SourceError, match="cannot read the Parquet file"):
        open_source(path)
