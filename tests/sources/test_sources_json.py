"""Sources: JSON arrays (streamed by our incremental reader) and JSON Lines, good and broken."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from mailconduit.errors import SourceError
from mailconduit.sources import SourceKind, jsonfile, open_source


def write(tmp_path: Path, name: str, text: str, encoding: str = "utf-8") -> Path:
    path = tmp_path / name
    path.write_bytes(text.encode(encoding))
    return path


def test_array_of_objects_keeps_nested_values_and_record_lines(tmp_path: Path) -> None:
    text = (
        '[\n  {"id": 1, "tags": ["a", "b"]},\n'
        '  {"id": 2, "owner": {"name": "Zoë"}, "ok": true}\n]\n'
    )
    path = write(tmp_path, "records.json", text)
    with open_source(path) as source:
        assert source.kind is SourceKind.JSON
        assert source.columns == ("id", "tags", "owner", "ok")
        assert source.count() == 2
        rows = list(source.rows())
    assert rows[0].values == {"id": 1, "tags": ["a", "b"]}
    assert rows[1].values == {"id": 2, "owner": {"name": "Zoë"}, "ok": True}
    assert [(r.number, r.line) for r in rows] == [(1, 2), (2, 3)]


def test_many_records_across_read_chunks_and_one_record_larger_than_a_chunk(tmp_path: Path) -> None:
    records = [{"n": i, "text": "x" * (i % 97), "price": i / 7} for i in range(6000)]
    records[3000]["big"] = "é" * 300_000
    path = tmp_path / "many.json"
    path.write_text(json.dumps(records, ensure_ascii=False, indent=1), encoding="utf-8")
    with open_source(path) as source:
        got = [r.values for r in source.rows()]
    assert got == records


def test_numbers_split_by_a_chunk_boundary_are_read_whole(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(jsonfile, "_CHUNK", 7)
    path = write(tmp_path, "small.json", '[{"a": 1234567890123}, {"a": -1.25e+10, "b": null}]')
    assert [r.values for r in open_source(path).rows()] == [
        {"a": 1234567890123},
        {"a": -1.25e10, "b": None},
    ]


def test_empty_array_is_zero_rows(tmp_path: Path) -> None:
    with open_source(write(tmp_path, "none.json", " [ ] \n")) as source:
        assert source.columns == ()
        assert list(source.rows()) == []


def test_json_lines_skip_blank_lines_and_keep_file_lines(tmp_path: Path) -> None:
    path = write(tmp_path, "events.jsonl", '{"a": 1}\r\n\r\n{"a": 2, "b": [1]}\r\n')
    with open_source(path) as source:
        assert source.kind is SourceKind.JSONL
        rows = list(source.rows())
    assert [(r.number, r.line, r.values) for r in rows] == [
        (1, 1, {"a": 1}),
        (2, 3, {"a": 2, "b": [1]}),
    ]


def test_a_json_file_holding_json_lines_is_read_as_lines(tmp_path: Path) -> None:
    path = write(tmp_path, "actually-lines.json", '{"a": 1}\n{"a": 2}\n')
    with open_source(path) as source:
        assert source.kind is SourceKind.JSONL
        assert source.count() == 2


def test_key_column_from_json_numbers(tmp_path: Path) -> None:
    path = write(tmp_path, "ids.json", '[{"id": 10}, {"id": 11}]')
    assert [r.key for r in open_source(path, key="id").rows()] == ["10", "11"]


def test_utf16_json_with_bom(tmp_path: Path) -> None:
    path = write(tmp_path, "wide.json", '\ufeff[{"name": "Zoë"}]', encoding="utf-16-le")
    assert [r.values for r in open_source(path).rows()] == [{"name": "Zoë"}]


# -- broken JSON ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "line", "words"),
    [
        ('[{"a": 1},\n 2,\n {"a": 3}]', 2, "record 2 is not an object (it is a number)"),
        ('[{"a": 1}, ["x"]]', 1, "record 2 is not an object (it is an array)"),
        ("42", 1, "expected a JSON array of objects"),
        ('"text"', 1, "expected a JSON array of objects"),
        ('{\n  "data": [{"a": 1}]\n}\n', None, "single JSON object"),
        ('[{"a": 1},\n {"a": 2', 2, "the JSON is truncated"),
        ('[{"a": 1},\n {"a": "unterminated', 2, "the JSON is truncated"),
        ('[{"a": 1}', 1, "the JSON is truncated"),
        ('[{"a": 1},', 1, "the JSON is truncated"),
        ('[{"a": 1},]', 1, "followed by ']'"),
        ('[{"a": 1}] trailing', 1, "after the closing ']'"),
        ('[{"a": 1}\n {"a": 2}]', 2, "expected ',' or ']' after record 1"),
        (
            '[\n{"a": 1},\n{"a": tru},\n' + '{"b": 2},\n' * 50 + '{"c": 3}]',
            3,
            "invalid JSON in record 2",
        ),
        ("", 1, "empty"),
    ],
)
def test_broken_json_arrays(tmp_path: Path, text: str, line: int | None, words: str) -> None:
    path = write(tmp_path, "bad.json", text)
    with pytest.raises(SourceError) as caught:
        open_source(path).validate()
    assert words in str(caught.value)
    assert caught.value.location == (f"{path}:{line}" if line else str(path))


@pytest.mark.parametrize(
    ("text", "line", "words"),
    [
        ('{"a": 1}\n{"a": 2,}\n', 2, "invalid JSON at column 9"),
        ('{"a": 1}\n\n[1, 2]\n', 3, "record 2 is not an object (it is an array)"),
        ('{"a": 1}\n"x"\n', 2, "not an object (it is a string)"),
        ('{"a": 1}\n{"a": 2', 2, "invalid JSON"),
    ],
)
def test_broken_json_lines(tmp_path: Path, text: str, line: int, words: str) -> None:
    path = write(tmp_path, "bad.jsonl", text)
    with pytest.raises(SourceError) as caught:
        open_source(path)
    assert words in str(caught.value)
    assert caught.value.location == f"{path}:{line}"


def test_a_record_beyond_the_size_bound_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(jsonfile, "MAX_RECORD_CHARS", 50_000)
    monkeypatch.setattr(jsonfile, "_CHUNK", 4096)
    path = write(tmp_path, "huge.json", '[{"a": 1}, {"blob": "' + "x" * 200_000 + '"}]')
    with pytest.raises(SourceError, match="record 2 is larger than 50000 characters"):
        open_source(path)
    lines = write(tmp_path, "huge.jsonl", '{"a": 1}\n{"blob": "' + "x" * 200_000 + '"}\n')
    with pytest.raises(SourceError, match="longer than 50000") as caught:
        open_source(lines)
    assert caught.value.location == f"{lines}:2"


def test_undecodable_json_names_the_line(tmp_path: Path) -> None:
    path = tmp_path / "latin.jsonl"
    path.write_bytes(b'{"a": "ok"}\n{"a": "caf\xe9"}\n')
    with pytest.raises(SourceError, match="not valid UTF-8") as caught:
        open_source(path)
    assert caught.value.location == f"{path}:2"


def test_missing_fields_stay_missing_and_empty_key_is_reported(tmp_path: Path) -> None:
    path = write(tmp_path, "partial.jsonl", '{"id": "a", "x": 1}\n{"x": 2}\n')
    with open_source(path) as source:
        assert [r.values for r in source.rows()] == [{"id": "a", "x": 1}, {"x": 2}]
    with pytest.raises(SourceError, match="row 2: the key column 'id' is empty"):
        open_source(path, key="id").validate()
