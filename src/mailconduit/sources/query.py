"""``where`` and ``order_by``: DuckDB selects and orders the rows of any source.

The source's own parsed rows are loaded into a DuckDB database in a temporary
directory (so large sorts spill to disk), with their original record numbers. Text
columns get a typed shadow for comparisons: a column whose every non-empty value is an
integer, a number, a date, a timestamp or true/false is compared as one, while the rows
handed on keep their original values. Only then is the user's text evaluated, with
DuckDB locked down: no file, network or extension access, no setting can be changed.
Never a Python ``eval``. Our own SQL is built from quoted identifiers and constants
only; the user's text goes through DuckDB's expression parser (relation filter/order).
"""

from __future__ import annotations

import base64
import csv
import datetime as dt
import json
import mmap
import os
import pickle
import re
import shutil
import tempfile
from array import array
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from mailconduit.errors import SourceError
from mailconduit.sources.base import Record, Source
from mailconduit.sources.cells import cell_problem
from mailconduit.sources.csvfile import CsvSource
from mailconduit.sources.duck import connect, quote_identifier, tidy_error
from mailconduit.sources.parquet import ParquetSource

__all__ = ["MEMORY_LIMIT", "FilteredSource"]

#: DuckDB's memory budget; beyond it, sorts and tables spill to the temporary directory.
MEMORY_LIMIT = "100MB"
_BATCH = 5000
_DUCKDB_LINE_DEFAULT = 2 * 1024 * 1024
_HIDDEN = "__mc_"
_NUMBER = f"{_HIDDEN}n"
_LINE = f"{_HIDDEN}line"
_PAYLOAD = f"{_HIDDEN}payload"

#: Candidate types for a text column, tried in this order; each with its "does not fit" test.
#: Integers and numbers with a leading zero ("007", zip codes) stay text.
_TYPE_TESTS: tuple[tuple[str, str], ...] = (
    (
        "BIGINT",
        "NOT (regexp_full_match({v}, '[-+]?(0|[1-9][0-9]*)') "
        "AND TRY_CAST({v} AS BIGINT) IS NOT NULL)",
    ),
    ("DOUBLE", "TRY_CAST({v} AS DOUBLE) IS NULL OR regexp_matches({v}, '^[-+]?0[0-9]')"),
    (
        "DATE",
        "NOT (regexp_full_match({v}, '[0-9]{{4}}-[0-9]{{2}}-[0-9]{{2}}') "
        "AND TRY_CAST({v} AS DATE) IS NOT NULL)",
    ),
    ("TIMESTAMP", "TRY_CAST({v} AS TIMESTAMP) IS NULL"),
    ("BOOLEAN", "lower({v}) NOT IN ('true', 'false')"),
)


def _text_column(index: int) -> str:
    """The staging table's text column for the source's column ``index``."""
    return f"{_HIDDEN}t{index}"


def _as_text(value: Any) -> str:
    """A typed value as the text the filter sees (its type is inferred again from it).

    ``None`` becomes NUL, the NULL marker of the staging file; NUL in a text becomes U+FFFD.
    """
    if value is None:
        return "\x00"
    if type(value) is str:
        text = value
    elif type(value) is bool:
        text = "true" if value else "false"
    elif isinstance(value, dt.datetime):
        text = value.isoformat(sep=" ")
    elif isinstance(value, dt.date | dt.time):
        text = value.isoformat()
    elif isinstance(value, bytes):
        text = value.hex()
    elif isinstance(value, dict | list | tuple):
        text = json.dumps(value, ensure_ascii=False, default=str)
    else:
        text = str(value)
    return text.replace("\x00", "\ufffd") if "\x00" in text else text


class FilteredSource(Source):
    """The rows of ``inner`` that satisfy ``where``, in ``order_by`` order (else source order).

    Row numbers and keys are those of ``inner``, so they do not depend on the filter.
    Syntax errors and unknown columns are raised when the source is opened; other
    errors before the first row is yielded.
    """

    def __init__(
        self, inner: Source, *, where: str | None = None, order_by: str | None = None
    ) -> None:
        self.inner = inner
        self.kind = inner.kind
        self.where = where.strip() if where and where.strip() else None
        self.order_by = order_by.strip() if order_by and order_by.strip() else None
        super().__init__(
            location=inner.location, columns=inner.columns, key_column=inner.key_column
        )
        self._check_columns()
        self._staged: _Staging | None = None
        self._check_expressions()

    # -- checks before any data is read ------------------------------------------------------
    def _check_columns(self) -> None:
        folded: dict[str, str] = {}
        for name in self.columns:
            if name.startswith(_HIDDEN):
                raise SourceError(
                    f"column {name!r}: names starting with {_HIDDEN!r} are reserved when filtering",
                    self.location,
                )
            other = folded.setdefault(name.lower(), name)
            if other != name:
                raise SourceError(
                    f"columns {other!r} and {name!r} differ only in case, which SQL cannot "
                    "tell apart; rename one to use where/order_by",
                    self.location,
                )

    def _check_expressions(self) -> None:
        """Parse both texts as expressions over the columns (all as text) in a locked DuckDB."""
        import duckdb

        con = connect(enable_external_access=False, lock_configuration=True)
        try:
            columns = ", ".join(f"{quote_identifier(c)} VARCHAR" for c in self.columns)
            con.execute(f"CREATE TABLE source ({columns}{', ' if columns else ''}{_NUMBER} BIGINT)")
            try:
                self._relation(con)
            except (duckdb.ParserException, duckdb.PermissionException) as exc:
                raise self._error(exc) from None
            except (duckdb.BinderException, duckdb.CatalogException) as exc:
                # Type mismatches are judged later, once the columns' types are known.
                # DuckDB has no type for "no such column": its own text is all there is.
                if "not found" in str(exc) or "does not exist" in str(exc):
                    raise self._error(exc) from None
        finally:
            con.close()

    def _relation(self, con: Any) -> Any:
        relation = con.table("source")
        if self.where is not None:
            relation = relation.filter(self.where)
        order = f"{self.order_by}, {_NUMBER}" if self.order_by else _NUMBER
        return relation.order(order)

    def _error(self, exc: BaseException) -> SourceError:
        parts = []
        if self.where is not None:
            parts.append(f"where {self.where!r}")
        if self.order_by is not None:
            parts.append(f"order by {self.order_by!r}")
        message = f"cannot apply {' and '.join(parts)}: {tidy_error(exc)}"
        # A type mismatch has no DuckDB exception type of its own: its text tells it.
        if "Cannot compare values of type VARCHAR" in message or "No function matches" in message:
            message += (
                " (a column is compared as a number or date only when every non-empty value "
                "is one; otherwise quote the value or use TRY_CAST(column AS DOUBLE))"
            )
        return SourceError(message, self.location)

    # -- reading -------------------------------------------------------------------------------
    def _stage(self) -> _Staging:
        if self._staged is None:
            staging = _Staging(self.inner, where=self.where, order_by=self.order_by)
            try:
                staging.load()
            except BaseException:
                staging.discard()
                raise
            self._on_close(staging.discard)
            self._staged = staging
        return self._staged

    def _selected_numbers(self) -> array[int]:
        """The record numbers that pass ``where``, in ``order_by`` order (a narrow sort).

        Sorting just the keys and numbers keeps DuckDB's sort small however wide the
        rows are; every error in the user's text is raised here, before any row.
        """
        import duckdb

        staging = self._stage()
        order: array[int] = array("q")
        cursor = staging.con.cursor()
        try:
            cursor.execute(self._relation(staging.con).project(_NUMBER).sql_query())
            while batch := cursor.fetchmany(_BATCH * 10):
                order.extend(number for (number,) in batch)
        except duckdb.Error as exc:
            raise self._error(exc) from None
        finally:
            cursor.close()
        return order

    def _records(self) -> Iterator[Record]:
        order = self._selected_numbers()
        assert self._staged is not None
        yield from self._staged.rows_in_order(order)

    def validate(self) -> int:
        """Loading checks the source's structure; keys are checked among the selected rows."""
        if self.key_column is not None:
            return super().validate()
        self._count = len(self._selected_numbers())
        return self._count

    def count(self) -> int:
        if self._count is None:
            import duckdb

            staging = self._stage()
            try:
                relation = staging.con.table("source")
                if self.where is not None:
                    relation = relation.filter(self.where)
                self._count = int(relation.aggregate("count(*)").fetchall()[0][0])
            except duckdb.Error as exc:
                raise self._error(exc) from None
        return self._count

    def _digest(self, values: dict[str, Any]) -> str:
        return self.inner._digest(values)

    def _fingerprint(self) -> str:
        return self.inner.fingerprint()

    def describe(self) -> str:
        text = self.inner.describe()
        if self.where is not None:
            text += f"; where {self.where}"
        if self.order_by is not None:
            text += f"; order by {self.order_by}"
        return text

    def close(self) -> None:
        super().close()
        self.inner.close()


class _Staging:
    """The temporary DuckDB database holding one source's rows, and how to read them back."""

    def __init__(self, inner: Source, *, where: str | None, order_by: str | None) -> None:
        self.inner = inner
        positional = order_by is not None and re.search(r"(^|,)\s*\d+\b", order_by)
        #: The lowered expression text, or None when a positional ORDER BY may use any column.
        self.mentioned: str | None = (
            None if positional else f"{where or ''} {order_by or ''}".lower()
        )
        self.directory = Path(tempfile.mkdtemp(prefix="mailconduit-rows-"))
        self.con = connect(
            str(self.directory / "rows.duckdb"),
            temp_directory=str(self.directory / "spill"),
            memory_limit=MEMORY_LIMIT,
            # One thread: with more, a sort of long text overruns the limit instead of spilling.
            threads=1,
            preserve_insertion_order=False,
        )
        self.width = len(inner.columns)
        self.text_only = isinstance(inner, CsvSource)
        self.native = isinstance(inner, ParquetSource) and "file_row_number" not in inner.columns
        self.last_number = 0
        texts = [_text_column(i) for i in range(self.width)]
        #: What :meth:`decode` reads: the number first, then the line and the values.
        self.scan_columns = (
            [_NUMBER, *(quote_identifier(c) for c in inner.columns)]
            if self.native
            else [_NUMBER, _LINE, *(texts if self.text_only else [_PAYLOAD])]
        )

    def discard(self) -> None:
        try:
            self.con.close()
        finally:
            shutil.rmtree(self.directory, ignore_errors=True)

    def load(self) -> None:
        """Fill the database, then lock it down before any user text is evaluated."""
        import duckdb

        try:
            if self.native:
                self._load_parquet()
            else:
                self._load_records()
            found = self.con.execute(f"SELECT max({_NUMBER}) FROM records").fetchone()
            self.last_number = int(found[0] or 0)
            self.con.execute("SET enable_external_access = false")
            self.con.execute("SET lock_configuration = true")
        except duckdb.Error as exc:
            raise SourceError(
                f"cannot prepare the rows for where/order_by: {tidy_error(exc)}",
                self.inner.location,
            ) from None

    def _load_parquet(self) -> None:
        """DuckDB reads the file itself; its types are kept, its row number recorded."""
        import duckdb

        assert isinstance(self.inner, ParquetSource)
        try:
            self.con.execute(
                f"CREATE TABLE records AS SELECT * EXCLUDE (file_row_number), "
                f"file_row_number + 1 AS {_NUMBER} FROM read_parquet(?, file_row_number = true)",
                [str(self.inner.path)],
            )
        except duckdb.Error as exc:
            raise SourceError(
                f"cannot read the Parquet file: {tidy_error(exc)}", self.inner.location
            ) from None
        user = ", ".join(quote_identifier(c) for c in self.inner.columns)
        self.con.execute(
            f"CREATE VIEW source AS SELECT {user}{', ' if user else ''}{_NUMBER} FROM records"
        )

    def _load_records(self) -> None:
        """The source's parsed rows, through a staging CSV file that DuckDB reads in one go.

        Written by the ``csv`` module with every field quoted, read back by DuckDB with
        the same dialect, so text arrives exactly as parsed. Columns: record number,
        line (0 for none), for typed kinds the pickled values, then one text per column
        (NUL, which no text form contains, stands for NULL).
        """
        staged = self.directory / "rows.csv"
        longest = 0
        with staged.open("w", encoding="utf-8", errors="replace", newline="") as out:
            write = csv.writer(out, quoting=csv.QUOTE_ALL, lineterminator="\n").writerow
            if self.text_only:
                for number, line, values, _problem in self.inner._read():
                    fields = list(values.values())
                    longest = max(longest, sum(map(len, fields)))
                    write((number, line or 0, *fields))
            else:
                names = self.inner.columns
                for number, line, values, _problem in self.inner._read():
                    pickled = pickle.dumps(values, protocol=pickle.HIGHEST_PROTOCOL)
                    payload = base64.b64encode(pickled).decode("ascii")
                    fields = [_as_text(values.get(name)) for name in names]
                    longest = max(longest, len(payload) + sum(map(len, fields)))
                    write((number, line or 0, payload, *fields))
        texts = [_text_column(i) for i in range(self.width)]
        declared = {_NUMBER: "BIGINT", _LINE: "BIGINT"}
        if not self.text_only:
            declared[_PAYLOAD] = "VARCHAR"
        declared.update(dict.fromkeys(texts, "VARCHAR"))
        spec = ", ".join(f"'{name}': '{kind}'" for name, kind in declared.items())
        unnull = "{0}" if self.text_only else "NULLIF({0}, chr(0)) AS {0}"
        select = [_NUMBER, f"NULLIF({_LINE}, 0) AS {_LINE}"]
        select += [] if self.text_only else [_PAYLOAD]
        select += [unnull.format(t) for t in texts]
        max_line = max(_DUCKDB_LINE_DEFAULT, 8 * longest + 4 * len(declared) + 64)
        self.con.execute(
            f"CREATE TABLE records AS SELECT {', '.join(select)} FROM read_csv(?, "
            f"columns = {{{spec}}}, header = false, delim = ',', quote = '\"', escape = '\"', "
            # rows end at LF, as written: a CR in a cell must not make DuckDB guess CR
            "new_line = '\\n', "
            "auto_detect = false, strict_mode = true, allow_quoted_nulls = false, "
            f"parallel = false, max_line_size = {max_line}, buffer_size = {2 * max_line})",
            [str(staged)],
        )
        staged.unlink()
        self._create_view(texts)

    def _create_view(self, texts: list[str]) -> None:
        """Infer the types of the columns the expressions may use, in one scan; expose all.

        A column whose name does not occur in the where/order_by text cannot be used by
        it, so it stays text without being scanned (positional ORDER BY scans them all).
        A used column without any value (or a file without rows) is NULL: a comparison
        selects nothing instead of failing on a type it cannot know.
        """
        columns = self.inner.columns
        candidates = [
            i
            for i, name in enumerate(columns)
            if self.mentioned is None or name.lower() in self.mentioned
        ]
        aggregates = []
        for i in candidates:
            value = f"trim({texts[i]})"
            aggregates.append(f"count(*) FILTER (WHERE {value} <> '')")
            for _type, misfit in _TYPE_TESTS:
                test = misfit.format(v=value)
                aggregates.append(f"count(*) FILTER (WHERE {value} <> '' AND ({test}))")
        counts = (
            self.con.execute(f"SELECT {', '.join(aggregates)} FROM records").fetchone()
            if aggregates
            else ()
        )
        step = len(_TYPE_TESTS) + 1
        chosen: dict[int, str | None] = {}
        for position, i in enumerate(candidates):
            filled = counts[position * step]
            misfits = counts[position * step + 1 : (position + 1) * step]
            if not filled:
                chosen[i] = None  # nothing to infer from: NULL, which compares with anything
                continue
            for (kind, _test), bad in zip(_TYPE_TESTS, misfits, strict=True):
                if not bad:
                    chosen[i] = kind
                    break
        select = []
        for i, (name, text) in enumerate(zip(columns, texts, strict=True)):
            if i not in chosen:
                select.append(f"{text} AS {quote_identifier(name)}")
            elif chosen[i] is None:
                select.append(f"NULL AS {quote_identifier(name)}")
            else:
                cast = f"TRY_CAST(NULLIF(trim({text}), '') AS {chosen[i]})"
                select.append(f"{cast} AS {quote_identifier(name)}")
        hidden = [_NUMBER, _LINE] + ([] if self.text_only else [_PAYLOAD]) + texts
        view = f"CREATE VIEW source AS SELECT {', '.join(select + hidden)} FROM records"
        self.con.execute(view)

    def rows_in_order(self, order: array[int]) -> Iterator[Record]:
        """The records numbered in ``order``, in that order, from one scan of the table.

        A row arriving when it is next is passed on at once (so a filter without a sort
        spools nothing); others wait in a spool file and are read back by offset.
        """
        if not order:
            return
        rank = array("i", [-1]) * (self.last_number + 1)
        for position, number in enumerate(order):
            rank[number] = position
        offsets = array("q", [-1]) * len(order)
        sizes = array("i", [0]) * len(order)
        wanted = 0
        spool_end = 0
        spool_fd, spool_name = tempfile.mkstemp(prefix="order-", dir=self.directory)
        cursor = self.con.cursor()
        try:
            cursor.execute(f"SELECT {', '.join(self.scan_columns)} FROM records")
            while batch := cursor.fetchmany(_BATCH):
                for row in batch:
                    position = rank[row[0]]
                    if position < 0:
                        continue
                    if position != wanted:
                        data = pickle.dumps(row, protocol=pickle.HIGHEST_PROTOCOL)
                        os.pwrite(spool_fd, data, spool_end)
                        offsets[position], sizes[position] = spool_end, len(data)
                        spool_end += len(data)
                        continue
                    yield self.decode(row)
                    wanted += 1
                    while wanted < len(order) and offsets[wanted] >= 0:
                        yield self.decode(_unspool(spool_fd, offsets[wanted], sizes[wanted]))
                        wanted += 1
            cursor.close()
            if wanted < len(order):
                with mmap.mmap(spool_fd, spool_end, access=mmap.ACCESS_READ) as spooled:
                    while wanted < len(order):
                        start = offsets[wanted]
                        row = pickle.loads(spooled[start : start + sizes[wanted]])  # noqa: S301
                        yield self.decode(row)
                        wanted += 1
        finally:
            cursor.close()
            os.close(spool_fd)
            os.unlink(spool_name)

    def decode(self, row: tuple[Any, ...]) -> Record:
        """A row of :attr:`scan_columns` back into the source's own record (its cells
        checked again: the staging database keeps them exactly as read)."""
        if self.native:
            values = dict(zip(self.inner.columns, row[1:], strict=True))
            return row[0], None, values, cell_problem(values)
        if self.text_only:
            values = dict(zip(self.inner.columns, row[2:], strict=True))
            return row[0], row[1], values, cell_problem(values)
        # Our own bytes, pickled by _load_records into a private temporary database.
        values = pickle.loads(base64.b64decode(row[2]))  # noqa: S301
        return row[0], row[1], values, cell_problem(values)


def _unspool(fd: int, offset: int, size: int) -> tuple[Any, ...]:
    """A row written to the spool by :meth:`_Staging.rows_in_order` (our own bytes)."""
    row: tuple[Any, ...] = pickle.loads(os.pread(fd, size, offset))  # noqa: S301
    return row
