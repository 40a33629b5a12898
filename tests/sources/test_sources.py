"""Sources: CSV/TSV reading, row keys, open_source dispatch, stdin and Python data.

A catalogue of broken CSV inputs (issue 3 §6): each must give one clear SourceError
naming the file and line, never a traceback from a library.
"""

from __future__ import annotations

import io
import re
import subprocess
import sys
from pathlib import Path

import pytest

from mailconduit.errors import ConfigError, SourceError
from mailconduit.sources import Row, SourceKind, open_source
from mailconduit.sources.cells import CellProblem


def write(tmp_path: Path, name: str, text: str, encoding: str = "utf-8") -> Path:
    path = tmp_path / name
    path.write_bytes(text.encode(encoding))
    return path


def values(source_path: Path | str, **options: object) -> list[dict[str, object]]:
    with open_source(source_path, **options) as source:  # type: ignore[arg-type]
        return [row.values for row in source.rows()]


# -- reading what is right ---------------------------------------------------------------------


def test_csv_values_stay_exact_strings_with_numbers_lines_and_keys(tmp_path: Path) -> None:
    path = write(tmp_path, "people.csv", 'email,name,zip\na@x.org, Ann ,007\nb@x.org,"=cmd",\n')
    with open_source(path) as source:
        assert source.kind is SourceKind.CSV
        assert source.columns == ("email", "name", "zip")
        rows = list(source.rows())
    assert [r.values for r in rows] == [
        {"email": "a@x.org", "name": " Ann ", "zip": "007"},
        {"email": "b@x.org", "name": "=cmd", "zip": ""},
    ]
    assert [(r.number, r.line) for r in rows] == [(1, 2), (2, 3)]
    assert all(re.fullmatch(r"\d+-[0-9a-f]{10}", r.key) for r in rows)
    assert rows[0].key.startswith("1-") and rows[1].key.startswith("2-")
    assert isinstance(rows[0], Row)


def test_quoted_newlines_are_values_and_line_numbers_follow_the_file(tmp_path: Path) -> None:
    text = 'id,body\r\n1,"first\r\nsecond\r\nthird"\r\n2,plain\r\n3,"say ""hi"""\r\n'
    path = write(tmp_path, "multi.csv", text)
    with open_source(path) as source:
        rows = list(source.rows())
    assert rows[0].values["body"] == "first\r\nsecond\r\nthird"
    assert [(r.number, r.line) for r in rows] == [(1, 2), (2, 5), (3, 6)]
    assert rows[2].values["body"] == 'say "hi"'


def test_blank_lines_are_skipped_without_gaps_in_record_numbers(tmp_path: Path) -> None:
    path = write(tmp_path, "gaps.csv", "\n\na,b\n1,2\n\n3,4\n   \n")
    with open_source(path) as source:
        rows = list(source.rows())
        assert source.count() == 2
    assert [(r.number, r.line, r.values["a"]) for r in rows] == [(1, 4, "1"), (2, 6, "3")]


def test_a_stray_quote_inside_an_unquoted_value_is_kept(tmp_path: Path) -> None:
    path = write(tmp_path, "inch.csv", 'item,size\nscreen,15" wide\n')
    assert values(path) == [{"item": "screen", "size": '15" wide'}]


@pytest.mark.parametrize(
    ("name", "text", "delimiter"),
    [
        ("semi.csv", "a;b;c\n1;2,5;3\n4;5;6\n", ";"),
        ("tabs.tsv", "a\tb\tc\n1\t2\t3\n", "\t"),
        ("pipes.txt", "a|b|c\n1|2|3\n4|5|6\n", "|"),
        ("comma.csv", 'a,b,c\n"1;x",2,3\n', ","),
    ],
)
def test_delimiter_is_detected(tmp_path: Path, name: str, text: str, delimiter: str) -> None:
    path = write(tmp_path, name, text)
    with open_source(path) as source:
        assert source.delimiter == delimiter  # type: ignore[attr-defined]
        assert source.columns == ("a", "b", "c")
        assert len(list(source.rows())) == text.count("\n") - 1


def test_a_named_delimiter_wins_over_detection(tmp_path: Path) -> None:
    path = write(tmp_path, "odd.csv", "a;b\tc\n1;2\t3\n")
    assert values(path, delimiter="tab") == [{"a;b": "1;2", "c": "3"}]
    assert values(path, delimiter=";") == [{"a": "1", "b\tc": "2\t3"}]
    assert values(path, kind="tsv") == [{"a;b": "1;2", "c": "3"}]
    with pytest.raises(ConfigError, match="delimiter"):
        open_source(path, delimiter=";;")


def test_single_column_file(tmp_path: Path) -> None:
    path = write(tmp_path, "one.csv", "email\na@x.org\nb@x.org\n")
    assert values(path) == [{"email": "a@x.org"}, {"email": "b@x.org"}]


def test_header_names_are_trimmed_and_a_utf8_bom_never_reaches_them(tmp_path: Path) -> None:
    path = tmp_path / "bom.csv"
    path.write_bytes(b"\xef\xbb\xbfemail , name\nx@y.z,\xc3\xa9mile\n")
    assert values(path) == [{"email": "x@y.z", "name": "émile"}]
    assert values(path, encoding="utf-8") == [{"email": "x@y.z", "name": "émile"}]


def test_utf16_with_bom_is_detected(tmp_path: Path) -> None:
    path = write(tmp_path, "wide.csv", "\ufeffname;city\r\nZoë;Zürich\r\n", encoding="utf-16-le")
    with open_source(path) as source:
        assert source.encoding == "utf-16"  # type: ignore[attr-defined]
        assert [r.values for r in source.rows()] == [{"name": "Zoë", "city": "Zürich"}]


def test_latin1_file_works_when_its_encoding_is_named(tmp_path: Path) -> None:
    path = write(tmp_path, "latin.csv", "name,city\nRené,Besançon\n", encoding="latin-1")
    assert values(path, encoding="latin-1") == [{"name": "René", "city": "Besançon"}]
    assert values(path, encoding="cp1252") == [{"name": "René", "city": "Besançon"}]


# -- the catalogue of broken CSV ----------------------------------------------------------------


def test_latin1_read_as_utf8_names_line_byte_and_the_encoding_option(tmp_path: Path) -> None:
    body = "name,city\n" + "Ann,Paris\n" * 3 + "René,Lyon\n"
    path = write(tmp_path, "latin.csv", body, encoding="latin-1")
    with pytest.raises(SourceError) as caught:
        list(open_source(path).rows())
    message = str(caught.value)
    offset = body.encode("latin-1").index(b"\xe9")
    assert message.startswith(f"{path}:5: ")
    assert "0xe9" in message and f"byte offset {offset}" in message
    assert "not valid UTF-8" in message and "--encoding" in message


def test_undecodable_bytes_beyond_the_first_64k_name_the_right_line(tmp_path: Path) -> None:
    lines = ["id,text"] + [f"{i},{'é' * 40}" for i in range(3000)]
    data = ("\n".join(lines) + "\n").encode("utf-8") + b"3000,caf\xe9\n"
    path = tmp_path / "late.csv"
    path.write_bytes(data)
    with open_source(path) as source, pytest.raises(SourceError) as caught:
        source.validate()
    assert caught.value.location == f"{path}:3002"
    offset = data.index(b"caf\xe9") + 3
    assert f"byte offset {offset}" in str(caught.value)


def test_a_nul_character_rejects_its_row_not_the_file(tmp_path: Path) -> None:
    path = write(tmp_path, "nul.csv", "a,b\n1,2\n3,4\x00\n5,6\n")
    with open_source(path) as source:
        assert source.validate() == 3
        rows = list(source.rows())
    assert [(r.number, r.line, r.problem) for r in rows] == [
        (1, 2, None),
        (2, 3, CellProblem("b", "\x00")),
        (3, 4, None),
    ]
    assert rows[1].values == {"a": "3", "b": "4\x00"}
    assert rows[1].problem is not None and "U+0000 NUL" in rows[1].problem.reason


@pytest.mark.parametrize(
    ("text", "line", "words"),
    [
        ("a,b,c\n1,2,3\n4,5\n", 3, "2 fields where the header (line 1) has 3"),
        ("a,b,c\n1,2,3\n4,5,6,7\n", 3, "must be in double quotes"),
        ('a,b\n1,"x\ny"\n2,3,4\n', 4, "3 fields"),
    ],
)
def test_rows_with_the_wrong_number_of_fields(
    tmp_path: Path, text: str, line: int, words: str
) -> None:
    path = write(tmp_path, "ragged.csv", text)
    source = open_source(path)
    with pytest.raises(SourceError, match=re.escape(words)) as caught:
        list(source.rows())
    assert caught.value.location == f"{path}:{line}"


def test_unterminated_quote_at_end_of_file_names_where_it_opens(tmp_path: Path) -> None:
    path = write(tmp_path, "open.csv", 'a,b\n1,2\n3,"never closed\n4,5\n')
    with pytest.raises(SourceError, match="never closed") as caught:
        open_source(path).count()
    assert caught.value.location == f"{path}:3"


def test_text_after_a_closing_quote_is_refused(tmp_path: Path) -> None:
    path = write(tmp_path, "quote.csv", 'a,b\n"x"y,2\n')
    with pytest.raises(SourceError, match="doubled") as caught:
        open_source(path).validate()
    assert caught.value.location == f"{path}:2"


def test_empty_file_is_an_error_and_header_only_is_zero_rows(tmp_path: Path) -> None:
    with pytest.raises(SourceError, match="empty"):
        open_source(write(tmp_path, "empty.csv", ""))
    with pytest.raises(SourceError, match="empty"):
        open_source(write(tmp_path, "blank.csv", "\n\n  \n"))
    with open_source(write(tmp_path, "header.csv", "email,name\n")) as source:
        assert source.columns == ("email", "name")
        assert list(source.rows()) == []
        assert source.count() == 0
        assert source.validate() == 0


@pytest.mark.parametrize(
    ("header", "words"),
    [("email,name,email", "'email' appears more than once"), ("email,,name", "column 2")],
)
def test_duplicate_or_empty_header_names(tmp_path: Path, header: str, words: str) -> None:
    path = write(tmp_path, "head.csv", header + "\n1,2,3\n")
    with pytest.raises(SourceError, match=words) as caught:
        open_source(path)
    assert caught.value.location == f"{path}:1"


def test_missing_file_directory_and_unknown_extension(tmp_path: Path) -> None:
    with pytest.raises(SourceError, match="no such file"):
        open_source(tmp_path / "nope.csv")
    with pytest.raises(SourceError, match="directory"):
        open_source(tmp_path)
    with pytest.raises(ConfigError, match="kind"):
        open_source(write(tmp_path, "data.dat", "a\n1\n"))
    assert values(tmp_path / "data.dat", kind="csv") == [{"a": "1"}]
    with pytest.raises(SourceError, match=r"\.xls format"):
        open_source(write(tmp_path, "old.xls", "x"))
    with pytest.raises(ConfigError, match="database_url"):
        open_source("SELECT * FROM customers")


def test_options_that_do_not_apply_or_are_unknown_are_refused(tmp_path: Path) -> None:
    path = write(tmp_path, "d.csv", "a\n1\n")
    with pytest.raises(ConfigError, match="sheet: does not apply to a csv source"):
        open_source(path, sheet="Sheet1")
    with pytest.raises(ConfigError, match="unknown encoding"):
        open_source(path, encoding="klingon-8")
    with pytest.raises(ConfigError, match="unknown kind"):
        open_source(path, kind="dbase")
    with pytest.raises(SourceError, match="not a data container"):
        open_source({"a": 1})


def test_a_file_removed_after_open_is_a_source_error(tmp_path: Path) -> None:
    path = write(tmp_path, "gone.csv", "a\n1\n")
    source = open_source(path)
    path.unlink()
    with pytest.raises(SourceError, match="cannot read"):
        list(source.rows())


# -- row keys ------------------------------------------------------------------------------------


def test_key_column_gives_the_key_and_must_exist(tmp_path: Path) -> None:
    path = write(tmp_path, "k.csv", "email,name\na@x.org,Ann\nb@x.org,Bob\n")
    with open_source(path, key="email") as source:
        assert [r.key for r in source.rows()] == ["a@x.org", "b@x.org"]
        assert source.validate() == 2
    with pytest.raises(SourceError) as caught:
        open_source(path, key="mail")
    assert "'mail'" in str(caught.value) and "email, name" in str(caught.value)


def test_duplicate_key_values_are_found_by_validate_naming_the_rows(tmp_path: Path) -> None:
    lines = ["id,name"] + [f"{i},n{i}" for i in range(1, 50)] + ["7,again", "7,thrice", "9,also"]
    path = write(tmp_path, "dup.csv", "\n".join(lines) + "\n")
    with open_source(path, key="id") as source:
        assert len(list(source.rows())) == 52  # rows() itself streams without keeping keys
        with pytest.raises(SourceError) as caught:
            source.validate()
    message = str(caught.value)
    assert "key '7'" in message and "rows 7, 50, 51" in message
    assert "1 other key values are repeated" in message


def test_empty_key_value_names_the_row(tmp_path: Path) -> None:
    path = write(tmp_path, "blank.csv", "id,name\n1,a\n  ,b\n")
    with open_source(path, key="id") as source:
        with pytest.raises(SourceError, match="row 2: the key column 'id' is empty"):
            source.validate()
        with pytest.raises(SourceError, match="row 2"):
            list(source.rows())


def test_position_keys_are_stable_and_follow_content(tmp_path: Path) -> None:
    first = write(tmp_path, "v1.csv", "a,b\n1,2\n3,4\n5,6\n")
    second = write(tmp_path, "v2.csv", "a,b\n1,2\n3,X\n5,6\n")
    keys_once = [r.key for r in open_source(first).rows()]
    keys_again = [r.key for r in open_source(first).rows()]
    keys_changed = [r.key for r in open_source(second).rows()]
    assert keys_once == keys_again
    assert keys_once[0] == keys_changed[0] and keys_once[2] == keys_changed[2]
    assert keys_once[1] != keys_changed[1]
    assert len(set(keys_once)) == 3


def test_fingerprint_follows_content_not_the_file_name(tmp_path: Path) -> None:
    one = write(tmp_path, "one.csv", "a\n1\n")
    same = write(tmp_path, "same.csv", "a\n1\n")
    other = write(tmp_path, "other.csv", "a\n2\n")
    assert open_source(one).fingerprint() == open_source(same).fingerprint()
    assert open_source(one).fingerprint() != open_source(other).fingerprint()
    assert open_source(one).fingerprint().startswith("sha256:")


def test_describe_names_kind_options_and_columns(tmp_path: Path) -> None:
    path = write(tmp_path, "d.csv", "email;name\nx;y\n")
    text = open_source(path, key="email").describe()
    assert "CSV file" in text and "delimiter ';'" in text and "email, name" in text
    assert "key column 'email'" in text


# -- stdin ---------------------------------------------------------------------------------

_READ_STDIN = (
    "from mailconduit.sources import open_source\n"
    "with open_source('-') as s:\n"
    "    print(s.kind.value, s.columns)\n"
    "    for r in s.rows(): print(r.number, r.line, r.values)\n"
)


@pytest.mark.parametrize(
    ("data", "first_line"),
    [
        (b"name,age\nAnn,31\n", "csv ('name', 'age')"),
        (b'\n{"name": "Ann", "age": 31}\n\n{"name": "Bob"}\n', "jsonl ('name', 'age')"),
        (b'[{"name": "Ann", "age": 31}]', "json ('name', 'age')"),
    ],
)
def test_stdin_is_spooled_and_its_kind_detected(data: bytes, first_line: str) -> None:
    done = subprocess.run(
        [sys.executable, "-c", _READ_STDIN], input=data, capture_output=True, timeout=60, check=True
    )
    lines = done.stdout.decode().splitlines()
    assert lines[0] == first_line
    assert lines[1].startswith("1 ") and "'Ann'" in lines[1]


def test_stdin_as_a_text_stream_and_the_spool_is_removed_on_close(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(sys, "stdin", io.StringIO("email\nzoë@x.org\n"))
    source = open_source("-")
    spooled = source.path  # type: ignore[attr-defined]
    assert source.location == "<stdin>"
    assert [r.values for r in source.rows()] == [{"email": "zoë@x.org"}]
    assert spooled.exists()
    source.close()
    assert not spooled.exists()


def test_stdin_errors_name_stdin(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sys, "stdin", io.StringIO("a,b\n1\n"))
    with pytest.raises(SourceError) as caught:
        open_source("-").validate()
    assert str(caught.value).startswith("<stdin>:2: ")


# -- Python data -----------------------------------------------------------------------------------


def test_iterable_of_mappings_including_a_one_shot_generator() -> None:
    data = ({"email": f"u{i}@x.org", "n": i} for i in range(3))
    with open_source(data, key="email") as source:
        assert source.kind is SourceKind.ITERABLE
        assert source.columns == ("email", "n")
        first = [r.values for r in source.rows()]
        second = [r.key for r in source.rows()]
    assert first[2] == {"email": "u2@x.org", "n": 2}
    assert second == ["u0@x.org", "u1@x.org", "u2@x.org"]


def test_iterable_columns_are_the_union_of_keys_and_records_stay_as_given() -> None:
    with open_source([{"a": 1}, {"b": None, "a": 2}]) as source:
        assert source.columns == ("a", "b")
        assert [r.values for r in source.rows()] == [{"a": 1}, {"b": None, "a": 2}]


def test_iterable_items_must_be_mappings_with_text_names() -> None:
    with pytest.raises(SourceError, match="record 2 is not a mapping"):
        open_source([{"a": 1}, [1, 2]])
    with pytest.raises(SourceError, match="not text"):
        open_source([{1: "x"}])


def test_dataframe_cells_become_plain_python_values() -> None:
    pandas = pytest.importorskip("pandas")
    frame = pandas.DataFrame(
        {
            "id": [1, 2],
            "amount": [1.5, float("nan")],
            "when": pandas.to_datetime(["2024-01-02", None]),
            "name": ["Ann", None],
        }
    )
    with open_source(frame, key="id") as source:
        assert source.columns == ("id", "amount", "when", "name")
        assert source.count() == 2
        rows = list(source.rows())
    assert [r.key for r in rows] == ["1", "2"]
    first, second = rows[0].values, rows[1].values
    assert type(first["id"]) is int and first["amount"] == 1.5
    assert first["when"].isoformat() == "2024-01-02T00:00:00"
    assert second == {"id": 2, "amount": None, "when": None, "name": None}
