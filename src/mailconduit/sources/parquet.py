"""Parquet files, streamed through DuckDB's ``read_parquet`` in batches; values keep their types."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from mailconduit.errors import SourceError
from mailconduit.sources.base import FileSource, ReadOptions, Record, SourceKind, check_column_names
from mailconduit.sources.duck import connect, tidy_error

__all__ = ["ParquetSource"]

_BATCH = 2048


class ParquetSource(FileSource):
    """A Parquet file; ``count()`` comes from the file's metadata."""

    kind = SourceKind.PARQUET

    def _read_columns(self, options: ReadOptions) -> tuple[str, ...]:
        described = self._query(
            "DESCRIBE SELECT * FROM read_parquet(?)", lambda cur: cur.fetchall()
        )
        names = [str(row[0]) for row in described]
        return check_column_names(names, self.location, what="schema")

    def _query(self, sql: str, consume: Any) -> Any:
        """Run ``sql`` with the file as its one parameter; DuckDB errors become SourceError."""
        import duckdb

        con = connect()
        try:
            return consume(con.execute(sql, [str(self.path)]))
        except duckdb.Error as exc:
            raise SourceError(
                f"cannot read the Parquet file: {tidy_error(exc)}", self.location
            ) from None
        finally:
            con.close()

    def _records(self) -> Iterator[Record]:
        import duckdb

        con = connect()
        try:
            try:
                cursor = con.execute("SELECT * FROM read_parquet(?)", [str(self.path)])
            except duckdb.Error as exc:
                raise SourceError(
                    f"cannot read the Parquet file: {tidy_error(exc)}", self.location
                ) from None
            number = 0
            while True:
                try:
                    batch = cursor.fetchmany(_BATCH)
                except duckdb.Error as exc:
                    raise SourceError(
                        f"cannot read the Parquet file after row {number}: {tidy_error(exc)}",
                        self.location,
                    ) from None
                if not batch:
                    return
                for cells in batch:
                    number += 1
                    yield self._record(number, None, cells)
        finally:
            con.close()

    def count(self) -> int:
        if self._count is None:
            self._count = int(
                self._query("SELECT count(*) FROM read_parquet(?)", lambda cur: cur.fetchone()[0])
            )
        return self._count

    def _describe_kind(self) -> str:
        return f"Parquet file {self.location}"
