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

import datetime as dt
import json
import pickle
import shutil
import tempfile
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

from mailconduit.errors import SourceError
from mailconduit.sources.base import Record, Source
from mailconduit.sources.csvfile import CsvSource
from mailconduit.sources.duck import connect, quote_identifier, tidy_error
from mailconduit.sources.parquet import ParquetSource

__all__ = ["MEMORY_LIMIT", "FilteredSource"]

#: DuckDB's memory budget; beyond it, sorts and tables spill to the temporary directory.
MEMORY_LIMIT = "100MB"
_BATCH = 5000
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


def _as_text(value: Any) -> str | None:
    """A typed value as the text the filter sees (its type is inferred again from it)."""
    if value is None or type(value) is str:
        return value
    if type(value) is bool:
        return "true" if value else "false"
    if isinstance(value, int | float | Decimal):
        return str(value)
    if isinstance(value, dt.datetime):
        return value.isoformat(sep=" ")
    if isinstance(value, dt.date | dt.time):
        return value.isoformat()
    if isinstance(value, bytes):
        return value.hex()
    if isinstance(value, dict | list | tuple):
        return json.dumps(value, ensure_ascii=False, default=str)
    return str(value)


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
        if "Cannot compare values of type VARCHAR" in message or "No function matches" in message:
            message += (
                " (a column is compared as a number or date only when every non-empty value "
                "is one; otherwise quote the value or use TRY_CAST(column AS DOUBLE))"
            )
        return SourceError(message, self.location)

    # -- reading -------------------------------------------------------------------------------
    def _stage(self) -> _Staging:
        if self._staged is None:
            staging = _Staging(self.inner)
            try:
                staging.load()
            except BaseException:
                staging.discard()
                raise
            self._on_close(staging.discard)
            self._staged = staging
        return self._staged

    def _records(self) -> Iterator[Record]:
        import duckdb

        staging = self._stage()
        cursor = staging.con.cursor()
        try:
            try:
                cursor.execute(self._relation(staging.con).sql_query())
                batch = cursor.fetchmany(_BATCH)
            except duckdb.Error as exc:
                raise self._error(exc) from None
            decode = staging.decode
            while batch:
                for row in batch:
                    yield decode(row)
                batch = cursor.fetchmany(_BATCH)
        finally:
            cursor.close()

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

    def __init__(self, inner: Source) -> None:
        self.inner = inner
        self.directory = Path(tempfile.mkdtemp(prefix="mailconduit-rows-"))
        self.con = connect(
            str(self.directory / "rows.duckdb"),
            temp_directory=str(self.directory / "spill"),
            memory_limit=MEMORY_LIMIT,
        )
        self.width = len(inner.columns)
        self.text_only = isinstance(inner, CsvSource)
        self.native = isinstance(inner, ParquetSource) and "file_row_number" not in inner.columns

    def discard(self) -> None:
        try:
            self.con.close()
        finally:
            shutil.rmtree(self.directory, ignore_errors=True)

    def load(self) -> None:
        if self.native:
            self._load_parquet()
        else:
            self._load_records()
        self.con.execute("SET enable_external_access = false")
        self.con.execute("SET lock_configuration = true")

    def _load_parquet(self) -> None:
        """DuckDB reads the file itself; its types are kept, its row number recorded."""
        import duckdb

        assert isinstance(self.inner, ParquetSource)
        try:
            self.con.execute(
                f"CREATE TABLE records AS SELECT * EXCLUDE (file_row_number), "  # noqa: S608
                f"file_row_number + 1 AS {_NUMBER} FROM read_parquet(?, file_row_number = true)",
                [str(self.inner.path)],
            )
        except duckdb.Error as exc:
            raise SourceError(
                f"cannot read the Parquet file: {tidy_error(exc)}", self.inner.location
            ) from None
        user = ", ".join(quote_identifier(c) for c in self.inner.columns)
        self.con.execute(
            f"CREATE VIEW source AS SELECT {user}{', ' if user else ''}{_NUMBER} FROM records"  # noqa: S608
        )

    def _load_records(self) -> None:
        """The source's parsed rows in batches: number, line, original values, text columns."""
        texts = [f"{_HIDDEN}t{i}" for i in range(self.width)]
        hidden = [f"{_NUMBER} BIGINT", f"{_LINE} BIGINT"]
        if not self.text_only:
            hidden.append(f"{_PAYLOAD} BLOB")
        declared = ", ".join(hidden + [f"{t} VARCHAR" for t in texts])
        self.con.execute(f"CREATE TABLE records ({declared})")
        types = (
            ["BIGINT", "BIGINT"] + ([] if self.text_only else ["BLOB"]) + ["VARCHAR"] * self.width
        )
        insert = "INSERT INTO records SELECT " + ", ".join(f"unnest(?::{t}[])" for t in types)
        batch: list[Record] = []
        for record in self.inner._read():
            batch.append(record)
            if len(batch) >= _BATCH:
                self.con.execute(insert, self._columns_of(batch))
                batch = []
        if batch:
            self.con.execute(insert, self._columns_of(batch))
        self._create_view(texts)

    def _columns_of(self, batch: list[Record]) -> list[list[Any]]:
        names = self.inner.columns
        params: list[list[Any]] = [[r[0] for r in batch], [r[1] for r in batch]]
        if self.text_only:
            params.extend([r[2][name] for r in batch] for name in names)
        else:
            params.append([pickle.dumps(r[2], protocol=pickle.HIGHEST_PROTOCOL) for r in batch])
            params.extend([_as_text(r[2].get(name)) for r in batch] for name in names)
        return params

    def _create_view(self, texts: list[str]) -> None:
        """Infer each text column's type in one scan, then expose typed columns by name."""
        aggregates = []
        for text in texts:
            value = f"trim({text})"
            aggregates.append(f"count(*) FILTER (WHERE {value} <> '')")
            for _type, misfit in _TYPE_TESTS:
                test = misfit.format(v=value)
                aggregates.append(f"count(*) FILTER (WHERE {value} <> '' AND ({test}))")
        counts = (
            self.con.execute(f"SELECT {', '.join(aggregates)} FROM records").fetchone()  # noqa: S608
            if texts
            else ()
        )
        step = len(_TYPE_TESTS) + 1
        select = []
        for i, (name, text) in enumerate(zip(self.inner.columns, texts, strict=True)):
            filled, misfits = counts[i * step], counts[i * step + 1 : (i + 1) * step]
            chosen = next(
                (t for (t, _), bad in zip(_TYPE_TESTS, misfits, strict=True) if filled and not bad),
                None,
            )
            if chosen is None:
                select.append(f"{text} AS {quote_identifier(name)}")
            else:
                select.append(
                    f"TRY_CAST(NULLIF(trim({text}), '') AS {chosen}) AS {quote_identifier(name)}"
                )
        hidden = [_NUMBER, _LINE] + ([] if self.text_only else [_PAYLOAD]) + texts
        view = f"CREATE VIEW source AS SELECT {', '.join(select + hidden)} FROM records"  # noqa: S608
        self.con.execute(view)

    def decode(self, row: tuple[Any, ...]) -> Record:
        """A result row (typed columns first, then ours) back into the source's own record."""
        width = self.width
        if self.native:
            return row[width], None, dict(zip(self.inner.columns, row[:width], strict=True))
        number, line = row[width], row[width + 1]
        if self.text_only:
            return number, line, dict(zip(self.inner.columns, row[width + 2 :], strict=True))
        # Our own bytes, written by _columns_of into a private temporary database.
        return number, line, pickle.loads(row[width + 2])  # noqa: S301
