"""JSON files: an array of objects (streamed, never loaded whole) and JSON Lines.

Columns are the union of the records' keys in order of first appearance, found by one
streaming pass at open (which also checks the structure). A record's ``values`` holds
exactly the fields it has; nested values stay Python objects. Control characters inside
strings, escaped or not, are read (not refused as bad JSON): the record then carries the
problem and is rejected alone.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any, TextIO

from mailconduit.errors import SourceError
from mailconduit.sources.base import FileSource, ReadOptions, Record, SourceKind, check_column_names
from mailconduit.sources.cells import cell_problem
from mailconduit.sources.text import decode_error, read_head, refuse_binary, resolve_encoding

__all__ = ["MAX_RECORD_CHARS", "JsonArraySource", "JsonLinesSource", "open_json_file"]

#: A single record (or JSON Lines line) larger than this is refused, so memory stays bounded.
MAX_RECORD_CHARS = 64 * 1024 * 1024
_CHUNK = 1 << 16
_WHITESPACE = re.compile(r"[ \t\n\r]*")
_SCALAR_END = frozenset('}]"')


class _DuplicateKeys(dict[str, Any]):
    """An object in which a key appears more than once (JSON allows it; readers disagree on
    which value wins, so such a record is ambiguous)."""

    duplicate = ""


def _object(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    value = dict(pairs)
    if len(value) == len(pairs):
        return value
    marked = _DuplicateKeys(value)
    seen: set[str] = set()
    for key, _ in pairs:
        if key in seen:
            marked.duplicate = key
            break
        seen.add(key)
    return marked


def _decoder() -> json.JSONDecoder:
    return json.JSONDecoder(strict=False, object_pairs_hook=_object)


def _type_name(value: Any) -> str:
    names = {list: "an array", str: "a string", bool: "a boolean", type(None): "null"}
    return names.get(type(value), "a number")


class _JsonFileSource(FileSource):
    """Shared by both layouts: encoding, column discovery, fingerprint."""

    def _read_columns(self, options: ReadOptions) -> tuple[str, ...]:
        head = read_head(self.path)
        refuse_binary(head, self.location)
        self.encoding = resolve_encoding(options.encoding, head)
        seen: dict[str, None] = {}
        total = 0
        for _number, _line, values, _problem in self._records():
            total += 1
            for name in values:
                if name not in seen:
                    seen[name] = None
        self._count = total
        return check_column_names(list(seen), self.location, what="record keys")

    def _open(self) -> TextIO:
        return self.path.open(encoding=self.encoding, newline="")

    def _not_an_object(self, number: int, value: Any, line: int) -> SourceError:
        return SourceError(
            f"record {number} is not an object (it is {_type_name(value)}); "
            "every record must be an object of column names and values",
            f"{self.location}:{line}",
        )

    def _check_record(self, number: int, value: Any, line: int) -> dict[str, Any]:
        """``value`` as a record: an object whose keys are unique, else the file is refused
        (as a CSV header naming a column twice is)."""
        if type(value) is _DuplicateKeys:
            raise SourceError(
                f"record {number} has the key {value.duplicate!r} more than once; "
                "keys must be unique (which value is meant is ambiguous)",
                f"{self.location}:{line}",
            )
        if type(value) is not dict:
            raise self._not_an_object(number, value, line)
        return value

    def _read_with(self) -> tuple[str, ...]:
        return (self.encoding,)

    def _describe_kind(self) -> str:
        layout = "JSON array" if self.kind is SourceKind.JSON else "JSON Lines"
        return f"{layout} file {self.location} (encoding {self.encoding})"


class JsonArraySource(_JsonFileSource):
    """A file holding one JSON array of objects: ``[{...}, {...}]``."""

    kind = SourceKind.JSON

    def _records(self) -> Iterator[Record]:
        try:
            with self._open() as fh:
                reader = _ArrayReader(fh, self.location)
                for number, (line, value) in enumerate(reader, start=1):
                    record = self._check_record(number, value, line)
                    yield number, line, record, cell_problem(record)
        except UnicodeDecodeError:
            raise decode_error(self.path, self.encoding, self.location) from None


class JsonLinesSource(_JsonFileSource):
    """One JSON object per line (JSON Lines, NDJSON); blank lines are skipped."""

    kind = SourceKind.JSONL

    def _records(self) -> Iterator[Record]:
        decoder = _decoder()
        number = 0
        try:
            # Lines end at LF only: a CR inside a string is data, not the end of a record.
            with self.path.open(encoding=self.encoding, newline="\n") as fh:
                for line_number, text in enumerate(
                    iter(lambda: fh.readline(MAX_RECORD_CHARS + 1), ""), 1
                ):
                    if len(text) > MAX_RECORD_CHARS:
                        raise SourceError(
                            f"the line is longer than {MAX_RECORD_CHARS} characters",
                            f"{self.location}:{line_number}",
                        )
                    if not text.strip():
                        continue
                    try:
                        value = decoder.decode(text)
                    except json.JSONDecodeError as exc:
                        raise SourceError(
                            f"invalid JSON at column {exc.colno}: {exc.msg}",
                            f"{self.location}:{line_number}",
                        ) from None
                    number += 1
                    record = self._check_record(number, value, line_number)
                    yield number, line_number, record, cell_problem(record)
        except UnicodeDecodeError:
            raise decode_error(self.path, self.encoding, self.location) from None


class _ArrayReader:
    """Yields ``(line, value)`` for each element of a top-level JSON array, incrementally.

    ``raw_decode`` runs over a buffer that grows by 64 KB reads (doubling while a
    single element is incomplete) and drops what it has consumed; an element larger
    than :data:`MAX_RECORD_CHARS` is refused.
    """

    def __init__(self, fh: TextIO, location: str) -> None:
        self._fh = fh
        self._location = location
        self._decoder = _decoder()
        self._buf = ""
        self._pos = 0
        self._line = 1
        self._eof = False

    def _read_more(self, size: int = _CHUNK) -> bool:
        chunk = self._fh.read(size)
        if not chunk:
            self._eof = True
            return False
        self._buf = self._buf[self._pos :] + chunk
        self._pos = 0
        return True

    def _advance(self, end: int) -> None:
        self._line += self._buf.count("\n", self._pos, end)
        self._pos = end

    def _next_char(self) -> str:
        """The next non-blank character ('' at end of file), without consuming it."""
        while True:
            end = _WHITESPACE.match(self._buf, self._pos).end()  # type: ignore[union-attr]
            self._advance(end)
            if end < len(self._buf):
                return self._buf[end]
            if not self._read_more():
                return ""

    def _error(self, message: str, pos: int | None = None) -> SourceError:
        line = self._line
        if pos is not None:
            line += self._buf.count("\n", self._pos, pos)
        return SourceError(message, f"{self._location}:{line}")

    def __iter__(self) -> Iterator[tuple[int, Any]]:
        first = self._next_char()
        if first == "":
            raise self._error("the file is empty; expected a JSON array of objects")
        if first != "[":
            raise self._error(
                f"expected a JSON array of objects ([{{...}}, ...]) or JSON Lines; "
                f"the file starts with {first!r}"
            )
        self._advance(self._pos + 1)
        number = 0
        if self._next_char() == "]":
            self._advance(self._pos + 1)
        else:
            while True:
                number += 1
                line = self._line
                yield line, self._decode(number)
                separator = self._next_char()
                if separator == "]":
                    self._advance(self._pos + 1)
                    break
                if separator == "":
                    raise self._error(f"the file ends after record {number}: the JSON is truncated")
                if separator != ",":
                    raise self._error(
                        f"expected ',' or ']' after record {number}, found {separator!r}"
                    )
                self._advance(self._pos + 1)
                following = self._next_char()
                if following == "]":
                    raise self._error(f"a comma after record {number} is followed by ']'")
                if following == "":
                    raise self._error(f"the file ends after record {number}: the JSON is truncated")
        trailing = self._next_char()
        if trailing:
            raise self._error(f"unexpected {trailing!r} after the closing ']' of the array")

    def _decode(self, number: int) -> Any:
        size = _CHUNK
        while True:
            buf = self._buf
            try:
                value, end = self._decoder.raw_decode(buf, self._pos)
            except json.JSONDecodeError as exc:
                incomplete = exc.pos + 16 >= len(buf) or exc.msg.startswith("Unterminated string")
                if not incomplete:
                    raise self._error(
                        f"invalid JSON in record {number}: {exc.msg}", exc.pos
                    ) from None
                if self._eof:
                    raise self._error(
                        f"the file ends inside record {number}: the JSON is truncated"
                    ) from None
            else:
                if end < len(buf) or self._eof or buf[end - 1] in _SCALAR_END:
                    self._advance(end)
                    return value
            if len(self._buf) - self._pos > MAX_RECORD_CHARS:
                raise self._error(f"record {number} is larger than {MAX_RECORD_CHARS} characters")
            self._read_more(size)
            size = min(size * 2, MAX_RECORD_CHARS)


def open_json_file(
    path: Path, *, location: str, options: ReadOptions, lines: bool | None = None
) -> _JsonFileSource:
    """A JSON array or JSON Lines source; ``lines=None`` decides from the first character.

    A ``.json`` file whose first line is a complete object is read as JSON Lines.
    """
    if lines is None:
        head = read_head(path)
        refuse_binary(head, location)
        lines = _looks_like_json_lines(path, resolve_encoding(options.encoding, head), location)
    cls = JsonLinesSource if lines else JsonArraySource
    return cls(path, location=location, options=options)


def _looks_like_json_lines(path: Path, encoding: str, location: str) -> bool:
    try:
        with path.open(encoding=encoding) as fh:
            for text in iter(lambda: fh.readline(MAX_RECORD_CHARS + 1), ""):
                if not text.strip():
                    continue
                if not text.lstrip().startswith("{"):
                    return False
                try:
                    first = json.loads(text, strict=False)
                except json.JSONDecodeError:
                    raise SourceError(
                        "the file holds a single JSON object, not an array of objects; "
                        "give an array ([{...}, {...}]) or JSON Lines (one object per line)",
                        location,
                    ) from None
                return type(first) is dict
    except UnicodeDecodeError:
        raise decode_error(path, encoding, location) from None
    return False
