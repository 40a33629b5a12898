"""Sources: where/order_by evaluated by DuckDB over any source, typed, locked down, spilling."""

from __future__ import annotations

from pathlib import Path

import pytest

from mailconduit.errors import SourceError
from mailconduit.sources import open_source
from mailconduit.sources import query as query_module

CSV = (
    "name,amount,zip,signup,active,note\n"
    "Ann,99,007,2024-01-15,true,\n"
    "Bob,100.5,010,2024-02-01,false,x\n"
    "Cid,,123,2024-03-09,true,\n"
    "Dee,9,020,2023-12-31,TRUE,y\n"
    "Eve,1000,030,2024-02-01,false,\n"
)


@pytest.fixture
def people(tmp_path: Path) -> Path:
    path = tmp_path / "people.csv"
    path.write_text(CSV, encoding="utf-8")
    return path


def names(path: Path | list[dict[str, object]], **options: object) -> list[object]:
    with open_source(path, **options) as source:  # type: ignore[arg-type]
        return [row.values["name"] for row in source.rows()]


def test_numbers_in_text_columns_compare_and_sort_as_numbers(people: Path) -> None:
    assert names(people, where="amount > 100") == ["Bob", "Eve"]
    assert names(people, order_by="amount DESC") == ["Eve", "Bob", "Ann", "Dee", "Cid"]
    assert names(people, order_by="amount NULLS FIRST") == ["Cid", "Dee", "Ann", "Bob", "Eve"]
    assert names(people, where="amount IS NULL") == ["Cid"]


def test_rows_keep_their_original_strings(people: Path) -> None:
    with open_source(people, where="amount > 99", order_by="amount") as source:
        rows = list(source.rows())
    assert [r.values["amount"] for r in rows] == ["100.5", "1000"]
    assert rows[0].values == {
        "name": "Bob",
        "amount": "100.5",
        "zip": "010",
        "signup": "2024-02-01",
        "active": "false",
        "note": "x",
    }


def test_codes_with_leading_zeros_dates_and_booleans(people: Path) -> None:
    assert names(people, where="zip = '010'") == ["Bob"]
    assert names(people, where="zip LIKE '0%'", order_by="zip DESC") == ["Eve", "Dee", "Bob", "Ann"]
    assert names(people, where="signup >= '2024-02-01'") == ["Bob", "Cid", "Eve"]
    assert names(people, where="signup < DATE '2024-01-01'") == ["Dee"]
    assert names(people, where="active") == ["Ann", "Cid", "Dee"]
    assert names(people, where="note = ''") == ["Ann", "Cid", "Eve"]


def test_ties_keep_the_source_order_and_order_by_alone_works(people: Path) -> None:
    assert names(people, order_by="signup DESC") == ["Cid", "Bob", "Eve", "Ann", "Dee"]
    assert names(people, order_by="active") == ["Bob", "Eve", "Ann", "Cid", "Dee"]
    assert names(people, order_by="2 DESC") == ["Eve", "Bob", "Ann", "Dee", "Cid"]


def test_numbers_and_keys_do_not_depend_on_the_filter(people: Path) -> None:
    with open_source(people) as plain:
        original = {r.number: (r.key, r.line) for r in plain.rows()}
    with open_source(people, where="active", order_by="name DESC") as filtered:
        rows = list(filtered.rows())
        assert filtered.count() == 3
        assert filtered.validate() == 3
        assert filtered.fingerprint() == open_source(people).fingerprint()
    assert [r.number for r in rows] == [4, 3, 1]
    assert all(original[r.number] == (r.key, r.line) for r in rows)


def test_key_uniqueness_is_checked_among_the_selected_rows(tmp_path: Path) -> None:
    path = tmp_path / "k.csv"
    path.write_text("id,keep\n1,yes\n2,yes\n1,no\n")
    assert open_source(path, key="id", where="keep = 'yes'").validate() == 2
    with pytest.raises(SourceError, match=r"key '1' .* \(rows 1, 3\)"):
        open_source(path, key="id", where="keep <> 'maybe'").validate()


def test_json_values_pass_through_the_filter_unchanged(tmp_path: Path) -> None:
    path = tmp_path / "r.jsonl"
    path.write_text(
        '{"n": 1, "tags": ["a"], "owner": {"name": "Zoë"}, "score": 3.5}\n'
        '{"n": 2, "score": null}\n'
        '{"n": 3, "tags": [], "score": 10}\n'
    )
    with open_source(
        path, where="score > 3 OR score IS NULL", order_by="score DESC NULLS LAST"
    ) as f:
        rows = [r.values for r in f.rows()]
    assert rows == [
        {"n": 3, "tags": [], "score": 10},
        {"n": 1, "tags": ["a"], "owner": {"name": "Zoë"}, "score": 3.5},
        {"n": 2, "score": None},
    ]


def test_a_column_without_values_compares_as_null_instead_of_failing(tmp_path: Path) -> None:
    empty = tmp_path / "empty.csv"
    empty.write_text("name,amount\n")
    assert names(empty, where="amount > 100", order_by="amount DESC") == []
    blank = tmp_path / "blank.csv"
    blank.write_text("name,amount\nAnn,\nBob,\n")
    assert names(blank, where="amount > 100") == []
    assert names(blank, where="amount IS NULL", order_by="amount") == ["Ann", "Bob"]


def test_python_data_filtered(tmp_path: Path) -> None:
    data: list[dict[str, object]] = [{"name": "a", "n": 5}, {"name": "b", "n": 50}, {"name": "c", "n": None}]
    assert names(data, where="n >= 5", order_by="n DESC") == ["b", "a"]


# -- errors: one line, before any row ------------------------------------------------------------


@pytest.mark.parametrize(
    ("options", "words"),
    [
        ({"where": "amout > 1"}, 'Referenced column "amout" not found'),
        ({"order_by": "surname"}, 'Referenced column "surname" not found'),
        ({"where": "amount >"}, "syntax error"),
        ({"where": "amount > 1; DROP TABLE source"}, "Parser Error"),
        ({"where": "1=1) UNION (SELECT 1"}, "syntax error"),
        ({"order_by": "amount LIMIT 1"}, "Parser Error"),
        ({"where": "getenv('HOME') <> ''"}, "does not exist"),
    ],
)
def test_bad_expressions_are_refused_when_the_source_opens(
    people: Path, options: dict[str, str], words: str
) -> None:
    with pytest.raises(SourceError) as caught:
        open_source(people, **options)
    message = str(caught.value)
    assert words in message and "\n" not in message
    assert message.startswith(f"{people}: cannot apply ")


@pytest.mark.parametrize(
    "where",
    [
        "(SELECT count(*) FROM read_csv('/etc/passwd')) > 0",
        "(SELECT content FROM read_text('/etc/hostname')) <> ''",
        "name IN (SELECT * FROM glob('/etc/*'))",
    ],
)
def test_a_where_cannot_read_files(people: Path, where: str) -> None:
    with pytest.raises(SourceError, match="disabled by configuration"):
        open_source(people, where=where)


def test_type_errors_surface_before_the_first_row(people: Path) -> None:
    source = open_source(people, where="name > 5")
    rows = source.rows()
    with pytest.raises(SourceError) as caught:
        next(rows)
    assert "Cannot compare" in str(caught.value) and "TRY_CAST" in str(caught.value)
    failing_cast = open_source(people, where="CAST(name AS INTEGER) > 1")
    with pytest.raises(SourceError, match="Conversion Error"):
        next(failing_cast.rows())
    with pytest.raises(SourceError, match="Conversion Error"):
        failing_cast.count()


def test_structural_errors_of_the_source_still_name_the_line(tmp_path: Path) -> None:
    path = tmp_path / "short.csv"
    path.write_text("a,b\n1,2\n3\n")
    with pytest.raises(SourceError) as caught:
        open_source(path, where="a > 0").count()
    assert caught.value.location == f"{path}:3"


def test_columns_differing_only_in_case_cannot_be_filtered(tmp_path: Path) -> None:
    path = tmp_path / "case.csv"
    path.write_text("Email,email\n1,2\n")
    assert len(list(open_source(path).rows())) == 1
    with pytest.raises(SourceError, match="differ only in case"):
        open_source(path, where="1 = 1")


def test_the_temporary_database_is_removed_on_close(people: Path) -> None:
    source = open_source(people, where="amount > 1")
    assert source.count() == 4
    directory = source._staged.directory  # type: ignore[attr-defined]
    assert (directory / "rows.duckdb").exists()
    source.close()
    assert not directory.exists()


@pytest.mark.slow
def test_sorting_rows_wider_than_the_memory_limit(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """~100 MB of rows under a 64 MB DuckDB limit: the sort covers keys, rows are spooled."""
    monkeypatch.setattr(query_module, "MEMORY_LIMIT", "64MB")
    path = tmp_path / "wide.csv"
    rows = 50_000
    columns = [f"c{i}" for i in range(20)]
    with path.open("w") as out:
        out.write("id,score," + ",".join(columns) + "\n")
        for i in range(rows):
            cells = ",".join(f"{'v' * 90}{c}-{i}" for c in range(20))
            out.write(f"{i},{(i * 7919) % rows},{cells}\n")
    assert path.stat().st_size > 90 * 1024 * 1024
    with open_source(path, where="score % 2 = 0", order_by="score DESC") as source:
        seen = [(r.values["score"], r.values["c7"], r.number) for r in source.rows()]
    assert len(seen) == rows // 2
    assert [int(score) for score, _, _ in seen] == list(range(rows - 2, -1, -2))
    assert all(c7 == f"{'v' * 90}7-{number - 1}" for _, c7, number in seen)
