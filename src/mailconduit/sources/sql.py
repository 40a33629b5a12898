"""A SQL query against a database URL (SQLAlchemy Core), streamed with a server-side cursor.

The query runs in a read-only transaction that is always rolled back, so reading the
data container never changes the database. ``postgresql://`` URLs use psycopg 3.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from mailconduit.errors import SourceError
from mailconduit.sources.base import Record, Source, SourceKind, check_column_names

__all__ = ["SqlSource", "sqlalchemy_url"]

_BATCH = 1000
_CONNECT_TIMEOUT_S = 10
#: A ``:name`` that SQLAlchemy's text() would take for a bind parameter.
_BIND_LIKE = re.compile(r"(?<![:\w\\]):(?=\w)")
_READS_ROWS = re.compile(r"^[\s(]*(select|with|values|table)\b", re.IGNORECASE)


def sqlalchemy_url(url: str) -> str:
    """``url`` with PostgreSQL pointed at the psycopg 3 driver, which is the one installed."""
    for prefix in ("postgresql://", "postgres://"):
        if url.startswith(prefix):
            return "postgresql+psycopg://" + url[len(prefix) :]
    return url


class SqlSource(Source):
    """The rows of one SQL query; column names are the query's result columns."""

    kind = SourceKind.SQL

    def __init__(self, query: str, *, database_url: str, key_column: str | None = None) -> None:
        from sqlalchemy import create_engine
        from sqlalchemy.engine import make_url
        from sqlalchemy.exc import ArgumentError, NoSuchModuleError
        from sqlalchemy.pool import NullPool

        self.query = query.strip().rstrip(";").strip()
        url = sqlalchemy_url(database_url.strip())
        try:
            parsed = make_url(url)
        except ArgumentError:
            # SQLAlchemy's message repeats the URL, password included: never show it.
            raise SourceError(
                "not a usable database URL; expected dialect://user@host/database",
                "<database URL>",
            ) from None
        self.location = parsed.render_as_string(hide_password=True)
        self._password = None if parsed.password is None else str(parsed.password)
        if not self.query:
            raise SourceError("the SQL query is empty", self.location)
        connect_args: dict[str, Any] = {}
        if parsed.get_backend_name() == "postgresql":
            connect_args["connect_timeout"] = _CONNECT_TIMEOUT_S
        elif parsed.get_backend_name() == "sqlite":
            self._check_sqlite_file(parsed.database)
        try:
            self._engine = create_engine(parsed, poolclass=NullPool, connect_args=connect_args)
        except (ArgumentError, NoSuchModuleError, ValueError) as exc:
            raise SourceError(
                f"not a usable database URL: {self._scrub(str(exc))}", self.location
            ) from None
        self._on_close(self._engine.dispose)
        self._statement = _BIND_LIKE.sub(r"\\:", self.query)
        with self._result(self._statement) as result:
            names = [str(name) for name in result.keys()]  # noqa: SIM118 - a Result, not a dict
        columns = check_column_names(names, self.location, what="query's result columns")
        super().__init__(location=self.location, columns=columns, key_column=key_column)

    def _check_sqlite_file(self, database: str | None) -> None:
        """Connecting would silently create a missing SQLite file; say it is missing instead."""
        local = database and database != ":memory:" and not database.startswith("file:")
        if local and not Path(str(database)).is_file():
            raise SourceError(f"no SQLite database file {database!r}", self.location)

    def _scrub(self, text: str) -> str:
        """One line, and never the password, even if a driver echoes it."""
        line = text.strip().splitlines()[0] if text.strip() else "unknown error"
        if self._password:
            line = line.replace(self._password, "***")
        return line

    @contextmanager
    def _result(self, statement: str) -> Iterator[Any]:
        """Execute ``statement`` read-only, streaming; errors become SourceError."""
        from sqlalchemy import text
        from sqlalchemy.exc import DBAPIError, SQLAlchemyError

        try:
            connection = self._engine.connect()
        except DBAPIError as exc:
            reason = self._scrub(str(exc.orig))
            raise SourceError(f"cannot connect to the database: {reason}", self.location) from None
        except SQLAlchemyError as exc:
            raise SourceError(
                f"cannot connect to the database: {self._scrub(str(exc))}", self.location
            ) from None
        with connection:
            try:
                backend = self._engine.dialect.name
                if backend == "postgresql":
                    connection.exec_driver_sql("SET TRANSACTION READ ONLY")
                elif backend == "sqlite":
                    connection.exec_driver_sql("PRAGMA query_only = ON")
                result = connection.execution_options(yield_per=_BATCH).execute(text(statement))
                yield result
            except DBAPIError as exc:
                reason = self._scrub(str(exc.orig)) + self._hint()
                raise SourceError(f"the query failed: {reason}", self.location) from None
            except SQLAlchemyError as exc:
                raise SourceError(
                    f"the query failed: {self._scrub(str(exc))}{self._hint()}", self.location
                ) from None

    def _hint(self) -> str:
        if _READS_ROWS.match(self.query):
            return ""
        return " (a data container is a query that returns rows: SELECT, WITH or VALUES)"

    def _records(self) -> Iterator[Record]:
        with self._result(self._statement) as result:
            for number, row in enumerate(result, start=1):
                yield self._record(number, None, row)

    def count(self) -> int:
        """``SELECT count(*)`` around the query; a scan when the database refuses that."""
        if self._count is None:
            wrapped = f"SELECT count(*) FROM (\n{self._statement}\n) AS mailconduit_rows"
            try:
                with self._result(wrapped) as result:
                    self._count = int(result.scalar_one())
            except SourceError:
                return super().count()
        return self._count

    def _describe_kind(self) -> str:
        query = " ".join(self.query.split())
        shown = query if len(query) <= 60 else query[:57] + "..."
        return f"SQL query {shown!r} on {self.location}"

    def _fingerprint(self) -> str:
        digest = hashlib.sha256(f"sql\0{self.location}\0{self.query}".encode())
        return "sha256:" + digest.hexdigest()
