"""What every data container shares: the ``Row``, the ``Source`` interface, row keys.

A source yields records in their original order; the base class turns them into
``Row`` objects with a stable key (a named key column, or position + content hash)
and gives every kind the same ``validate``/``count``/``fingerprint`` behaviour. A
record holding a character data may not hold (see :mod:`mailconduit.sources.cells`)
carries the problem, so the row is rejected on its own while the others go on.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import weakref
from abc import ABC, abstractmethod
from array import array
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any

from mailconduit.config.export import SourceKind
from mailconduit.config.text import char_name
from mailconduit.errors import SourceError
from mailconduit.sources.cells import CellProblem, cell_problem, escape_forbidden

__all__ = [
    "CellProblem",
    "FileSource",
    "ReadOptions",
    "Record",
    "Row",
    "Source",
    "SourceKind",
    "canonical_digest",
    "check_column_names",
    "file_sha256",
    "text_digest",
]

#: (record number, file line or None, values, the first forbidden character or None) as a
#: kind yields it, before keying.
Record = tuple[int, int | None, dict[str, Any], CellProblem | None]

_DUPLICATES_NAMED = 5


@dataclass(slots=True)
class Row:
    """One record: its stable ``key``, 1-based ``number`` in the original order, values.

    ``line`` is where the record starts in the file (CSV, JSON, JSON Lines; the sheet
    row for Excel), ``None`` where a file line means nothing (SQL, Parquet, iterables).
    ``problem`` is set when a cell holds a character data may not hold: the row is
    rejected and never sent (its key then shows such characters escaped).
    """

    key: str
    number: int
    line: int | None
    values: dict[str, Any]
    problem: CellProblem | None = None


def text_digest(fields: Iterator[str] | list[str] | tuple[str, ...]) -> str:
    """A 10-hex-digit digest of text fields (CSV values), cheap enough to run per row."""
    joined = "\x1f".join(fields).encode("utf-8", "surrogatepass")
    return hashlib.blake2b(joined, digest_size=5).hexdigest()


def canonical_digest(values: Mapping[str, Any]) -> str:
    """A 10-hex-digit digest of typed values (JSON, Excel, SQL...), stable across runs."""
    text = json.dumps(values, sort_keys=True, default=str, separators=(",", ":"))
    return hashlib.blake2b(text.encode("ascii"), digest_size=5).hexdigest()


def file_sha256(path: Path, *parts: str) -> str:
    """``sha256:`` of the file's bytes (streamed) and of the parse options in ``parts``."""
    digest = hashlib.sha256()
    for part in parts:
        digest.update(part.encode("utf-8") + b"\0")
    with path.open("rb") as fh:
        while chunk := fh.read(1 << 20):
            digest.update(chunk)
    return "sha256:" + digest.hexdigest()


def check_column_names(names: list[str], location: str, *, what: str = "header") -> tuple[str, ...]:
    """The names as a tuple, or SourceError for an empty or a repeated name, or one holding
    a control character (a file whose header does is not text, or not in this encoding)."""
    seen: set[str] = set()
    for position, name in enumerate(names, start=1):
        if not name:
            raise SourceError(f"column {position} of the {what} has no name", location)
        problem = cell_problem({name: name})
        if problem is not None:
            raise SourceError(
                f"the name of column {position} of the {what} holds {char_name(problem.char)}: "
                "this does not look like text (for a text file, check its --encoding: "
                "UTF-16 without a byte-order mark, for one, needs --encoding utf-16)",
                location,
            )
        if name in seen:
            raise SourceError(
                f"column name {name!r} appears more than once in the {what}; "
                "column names must be unique",
                location,
            )
        seen.add(name)
    return tuple(names)


class Source(ABC):
    """A data container opened for reading: columns up front, then rows, as often as asked.

    Subclasses implement :meth:`_records` (every record in original order, raising
    :class:`SourceError` with file and line at the first structural problem) and
    :meth:`_fingerprint`; they may override :meth:`_digest` and :meth:`count`.
    """

    kind: SourceKind
    _cleanups: list[weakref.finalize[Any, Any]]
    #: How many rows there are, once known (a kind may learn it while reading its columns).
    _count: int | None = None

    def __init__(self, *, location: str, columns: tuple[str, ...], key_column: str | None) -> None:
        self.location = location
        self.columns = columns
        self.key_column = key_column
        if key_column is not None and key_column not in columns:
            shown = ", ".join(columns) if columns else "(none)"
            raise SourceError(
                f"key column {key_column!r} is not in the data; its columns are: {shown}",
                location,
            )

    # -- what a kind provides ------------------------------------------------------------
    @abstractmethod
    def _records(self) -> Iterator[Record]:
        """Every record in the original order, structure checked, nothing kept."""

    @abstractmethod
    def _fingerprint(self) -> str:
        """Stable identity of the data (not of the filter or order)."""

    def _read(self) -> Iterator[Record]:
        """:meth:`_records`, with operating-system errors (file gone, unreadable) as SourceError."""
        try:
            yield from self._records()
        except OSError as exc:
            raise SourceError(
                f"cannot read the data: {exc.strerror or exc}", self.location
            ) from None

    def _digest(self, values: dict[str, Any]) -> str:
        """Content hash used in position-based keys; CSV overrides it with a cheaper one."""
        return canonical_digest(values)

    def _describe_kind(self) -> str:
        return f"{self.kind.value} source {self.location}"

    # -- the public interface ------------------------------------------------------------
    def describe(self) -> str:
        """One line for messages: kind, location, options and columns."""
        shown = ", ".join(self.columns[:8]) + (", ..." if len(self.columns) > 8 else "")
        key = f"; key column {self.key_column!r}" if self.key_column else ""
        return f"{self._describe_kind()}; {len(self.columns)} columns: {shown}{key}"

    def rows(self) -> Iterator[Row]:
        """Every row, keyed, in the source order (or the order asked for)."""
        make_key = self._key_function()
        for number, line, values, problem in self._read():
            key = make_key(number, values)
            if problem is not None:
                key = escape_forbidden(key)
            yield Row(key, number, line, values, problem)

    def count(self) -> int:
        """How many rows :meth:`rows` yields; a scan the first time for most kinds."""
        if self._count is None:
            total = 0
            for _ in self._read():
                total += 1
            self._count = total
        return self._count

    def validate(self) -> int:
        """Scan every row without keeping it; SourceError at the first problem.

        Checks structure (through :meth:`_records`) and, with a key column, that every
        key is present and unique. Returns the number of rows.
        """
        if self.key_column is None:
            total = 0
            for _record in self._read():
                total += 1
            self._count = total
            return total
        make_key = self._key_function()
        hashes: array[int] = array("Q")
        for number, _line, values, problem in self._read():
            key = make_key(number, values)
            hashes.append(_key_hash(escape_forbidden(key) if problem is not None else key))
        self._count = len(hashes)
        repeated = _repeated(hashes)
        if repeated:
            self._raise_duplicate_keys(repeated)
        return len(hashes)

    def fingerprint(self) -> str:
        """Stable identity of the data, for resuming a run: same data, same fingerprint."""
        return self._fingerprint()

    def close(self) -> None:
        """Release temporary files, connections and databases this source holds."""
        for cleanup in getattr(self, "_cleanups", ()):
            cleanup()

    def __enter__(self) -> Source:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.location}>"

    # -- helpers for subclasses ------------------------------------------------------------
    def _record(self, number: int, line: int | None, cells: Sequence[Any]) -> Record:
        """The record of a row that comes as cells in column order (Excel, Parquet, SQL), with
        the first character in it that data may not hold."""
        values = dict(zip(self.columns, cells, strict=False))
        return number, line, values, cell_problem(values)

    def _on_close(self, func: Callable[..., Any], *args: Any) -> None:
        """Run ``func(*args)`` on close or when this source is garbage-collected.

        Usable before ``Source.__init__`` runs, so a kind can register what it opened first.
        """
        if not hasattr(self, "_cleanups"):
            self._cleanups = []
        self._cleanups.append(weakref.finalize(self, func, *args))

    def _key_function(self) -> Callable[[int, dict[str, Any]], str]:
        column = self.key_column
        location = self.location
        if column is None:
            digest = self._digest

            def position_key(number: int, values: dict[str, Any]) -> str:
                return f"{number}-{digest(values)}"

            return position_key

        def column_key(number: int, values: dict[str, Any]) -> str:
            value = values.get(column)
            text = value if type(value) is str else ("" if value is None else str(value))
            if not text.strip():
                raise SourceError(
                    f"row {number}: the key column {column!r} is empty; "
                    "every row needs a key value",
                    location,
                )
            return text

        return column_key

    def _raise_duplicate_keys(self, repeated: set[int]) -> None:
        """Second pass, only when hashes repeat: name the rows sharing the first repeated key."""
        make_key = self._key_function()
        first_seen: dict[int, tuple[int, str]] = {}
        duplicate: str | None = None
        numbers: list[int] = []
        for number, _line, values, problem in self._read():
            key = make_key(number, values)
            if problem is not None:
                key = escape_forbidden(key)
            if duplicate is not None:
                if key == duplicate:
                    numbers.append(number)
                    if len(numbers) >= _DUPLICATES_NAMED:
                        break
                continue
            hashed = _key_hash(key)
            if hashed not in repeated:
                continue
            earlier = first_seen.get(hashed)
            if earlier is not None and earlier[1] == key:
                duplicate = key
                numbers = [earlier[0], number]
            elif earlier is None:
                first_seen[hashed] = (number, key)
        if duplicate is None:
            return  # only a 64-bit hash collision between different keys
        others = len(repeated) - 1
        more = f"; {others} other key values are repeated too" if others else ""
        listed = ", ".join(str(n) for n in numbers)
        raise SourceError(
            f"key {duplicate!r} in column {self.key_column!r} is in more than one row "
            f"(rows {listed}){more}; keys must be unique",
            self.location,
        )


@dataclass(frozen=True, slots=True)
class ReadOptions:
    """How to read a data container, as the user gave it (None: detected, or the default):
    a text file's encoding and CSV delimiter, the Excel sheet, the column keying the rows."""

    encoding: str | None = None
    delimiter: str | None = None
    sheet: str | int | None = None
    key_column: str | None = None


class FileSource(Source):
    """A data container in a file: ``path`` is read, ``location`` names it in messages (the
    path as the user wrote it, or standard input's name for its spooled copy).

    A kind reads what comes before its rows (encoding, delimiter, sheet, header) in
    :meth:`_read_columns`, which the constructor calls before keying is set up.
    """

    def __init__(
        self, path: Path, *, location: str | None = None, options: ReadOptions = ReadOptions()
    ) -> None:
        self.path = path
        self.location = location or str(path)
        columns = self._read_columns(options)
        super().__init__(location=self.location, columns=columns, key_column=options.key_column)

    @abstractmethod
    def _read_columns(self, options: ReadOptions) -> tuple[str, ...]:
        """The column names, once the settings the rows need are read from the file."""

    def _read_with(self) -> tuple[str, ...]:
        """The settings the rows are read with (encoding, delimiter, sheet): part of the
        fingerprint, since the same bytes read otherwise are other data."""
        return ()

    def _fingerprint(self) -> str:
        return file_sha256(self.path, self.kind.value, *self._read_with())


def _key_hash(key: str) -> int:
    return int.from_bytes(
        hashlib.blake2b(key.encode("utf-8", "surrogatepass"), digest_size=8).digest(), "little"
    )


def _repeated(hashes: array[int]) -> set[int]:
    """Hashes present more than once (8 bytes a row while scanning, one sort at the end)."""
    ordered = sorted(hashes)
    return {a for a, b in itertools.pairwise(ordered) if a == b}
