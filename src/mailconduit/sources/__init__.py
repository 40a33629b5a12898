"""Data containers: CSV/TSV, JSON, JSON Lines, Excel, Parquet, a SQL query, stdin, Python data.

:func:`open_source` is the one entry point. Every source streams its rows (memory does
not grow with their number), gives each a stable key, and reports malformed input as
:class:`~mailconduit.errors.SourceError` naming file and line. ``where``/``order_by``
are SQL evaluated by DuckDB (see :mod:`mailconduit.sources.query`).
"""

from __future__ import annotations

import os
import re
import shutil
from collections.abc import Mapping
from dataclasses import replace
from pathlib import Path
from typing import Any

from mailconduit.config.export import SourceKind, parse_source_kind
from mailconduit.config.text import is_database_url, url_scheme
from mailconduit.errors import ConfigError, FieldError, SourceError
from mailconduit.home import redact_url
from mailconduit.sources.base import ReadOptions, Row, Source

__all__ = ["Row", "Source", "SourceKind", "open_source"]

_SUFFIX_KINDS: dict[str, SourceKind] = {
    ".csv": SourceKind.CSV,
    ".tsv": SourceKind.CSV,
    ".tab": SourceKind.CSV,
    ".txt": SourceKind.CSV,
    ".json": SourceKind.JSON,
    ".jsonl": SourceKind.JSONL,
    ".ndjson": SourceKind.JSONL,
    ".xlsx": SourceKind.XLSX,
    ".xlsm": SourceKind.XLSX,
    ".parquet": SourceKind.PARQUET,
    ".pq": SourceKind.PARQUET,
}
_LOOKS_LIKE_SQL = re.compile(r"^\s*(select|with|values|table)\b", re.IGNORECASE)


def _options_error(field: str, message: str) -> ConfigError:
    return ConfigError.for_fields("source options", [FieldError(field, message)])


def _parse_kind(kind: SourceKind | str | None) -> tuple[SourceKind | None, str | None]:
    """The kind, and the delimiter it implies (``tsv`` is CSV with tabs)."""
    if kind is None:
        return None, None
    if not isinstance(kind, SourceKind):
        try:
            kind = parse_source_kind(kind)
        except ValueError as exc:
            raise _options_error("kind", str(exc)) from None
    if kind is SourceKind.TSV:
        return SourceKind.CSV, "\t"
    return kind, None


#: The options that mean something for a kind, past its key column.
_APPLIES: Mapping[str, frozenset[SourceKind]] = {
    "encoding": frozenset({SourceKind.CSV, SourceKind.JSON, SourceKind.JSONL}),
    "delimiter": frozenset({SourceKind.CSV}),
    "sheet": frozenset({SourceKind.XLSX}),
    "database_url": frozenset({SourceKind.SQL}),
}


def _check_options(kind: SourceKind, options: ReadOptions, database_url: str | None = None) -> None:
    """Refuse an option that means nothing for this kind, rather than ignore it."""
    given = {"encoding": options.encoding, "delimiter": options.delimiter,
             "sheet": options.sheet, "database_url": database_url}  # fmt: skip
    errors = [
        FieldError(name, f"does not apply to a {kind.value} source")
        for name, value in given.items()
        if value is not None and kind not in _APPLIES[name]
    ]
    if errors:
        raise ConfigError.for_fields("source options", errors)


def open_source(
    source: str | os.PathLike[str] | Any,
    /,
    *,
    kind: SourceKind | str | None = None,
    encoding: str | None = None,
    delimiter: str | None = None,
    sheet: str | int | None = None,
    where: str | None = None,
    order_by: str | None = None,
    key: str | None = None,
    database_url: str | None = None,
) -> Source:
    """Open a data container for reading; nothing is sent, nothing is kept in memory.

    ``source`` is a file path (the kind comes from its extension unless ``kind`` is
    given), ``"-"`` for standard input (CSV, JSON Lines or a JSON array, detected), a
    SQL query with ``database_url`` (a SQLAlchemy URL), or an iterable of mappings or a
    pandas DataFrame. ``key`` names the column holding each row's unique key; without
    it a row's key is its position plus a hash of its content. ``where`` and
    ``order_by`` are SQL (a boolean expression, an ORDER BY list) run by DuckDB.
    Raises SourceError for unreadable or malformed data, ConfigError for bad options.
    """
    parsed_kind, implied_delimiter = _parse_kind(kind)
    if delimiter is None:
        delimiter = implied_delimiter
    options = ReadOptions(encoding=encoding, delimiter=delimiter, sheet=sheet, key_column=key)
    base = _open_unfiltered(source, parsed_kind, options, database_url)
    if not (where and where.strip()) and not (order_by and order_by.strip()):
        return base
    from mailconduit.sources.query import FilteredSource

    try:
        return FilteredSource(base, where=where, order_by=order_by)
    except BaseException:
        base.close()
        raise


def _open_unfiltered(
    source: Any, kind: SourceKind | None, options: ReadOptions, database_url: str | None
) -> Source:
    if isinstance(source, Source):
        return source  # opened already (an agent's frozen rows): read as it is
    if isinstance(source, str | os.PathLike):
        text = os.fspath(source)
        if kind is SourceKind.SQL or (kind is None and database_url is not None):
            _check_options(SourceKind.SQL, options)
            if not database_url:
                raise _options_error("database_url", "a SQL query needs a database URL")
            from mailconduit.sources.sql import SqlSource

            return SqlSource(str(text), database_url=database_url, key_column=options.key_column)
        if text == "-":
            return _open_stdin(kind, options)
        return _open_file(Path(text).expanduser(), str(text), kind, options, database_url)
    if isinstance(source, bytes | bytearray | Mapping):
        raise SourceError(
            f"a {type(source).__name__} is not a data container; pass a path, a SQL query, "
            "an iterable of mappings or a DataFrame",
            "<data>",
        )
    from mailconduit.sources.iterable import IterableSource, is_dataframe

    if is_dataframe(source) or hasattr(source, "__iter__"):
        if kind not in (None, SourceKind.ITERABLE):
            raise _options_error("kind", f"Python data cannot be read as {kind.value}")
        _check_options(SourceKind.ITERABLE, options, database_url)
        return IterableSource(source, key_column=options.key_column)
    raise SourceError(f"cannot read data from a {type(source).__name__}", "<data>")


def _open_file(
    path: Path,
    location: str,
    kind: SourceKind | None,
    options: ReadOptions,
    database_url: str | None,
) -> Source:
    if not path.exists():
        if kind is None and _LOOKS_LIKE_SQL.match(location):
            raise _options_error(
                "database_url", "this looks like a SQL query; give database_url to run it"
            )
        _refuse_url(location)
        raise SourceError("no such file", location)
    if path.is_dir():
        raise SourceError("this is a directory, not a file", location)
    if kind is None:
        suffix = path.suffix.lower()
        if suffix == ".xls":
            raise SourceError(
                "the old .xls format is not supported; save the workbook as .xlsx", location
            )
        if suffix not in _SUFFIX_KINDS:
            known = " ".join(sorted(_SUFFIX_KINDS))
            raise _options_error(
                "kind",
                f"cannot tell the kind of {location!r} from its extension ({known}); name the kind",
            )
        kind = _SUFFIX_KINDS[suffix]
        if suffix in (".tsv", ".tab") and options.delimiter is None:
            options = replace(options, delimiter="\t")
    if kind is SourceKind.ITERABLE:
        raise _options_error("kind", "a file cannot be read as Python data")
    _check_options(kind, options, database_url)
    try:
        return _open_path(path, location, kind, options)
    except OSError as exc:
        raise SourceError(f"cannot read the file: {exc.strerror or exc}", location) from None


def _refuse_url(text: str) -> None:
    """A URL given where a file is expected: say how to pass a database, or that URLs of
    files elsewhere are not fetched (the password of a URL is never shown)."""
    scheme = url_scheme(text)
    if not scheme:
        return
    shown = redact_url(text.strip())
    if is_database_url(text):
        raise ConfigError.for_fields(
            "export",
            [FieldError("source", f"{shown!r} is a database URL, not a file; to read rows from "
                        "it, give a query with it: mailconduit export URL --query 'SELECT ...' "
                        "(or --query 'SELECT ...' --database-url URL; from Python or a file of "
                        "settings, the query as source and the URL as database_url)")],
        )  # fmt: skip
    raise ConfigError.for_fields(
        "export",
        [FieldError("source", f"{shown!r} is a URL ({scheme}); data is read from local files "
                    "only: download it, then give the file")],
    )  # fmt: skip


def _open_path(path: Path, location: str, kind: SourceKind, options: ReadOptions) -> Source:
    """The reader for one kind of file (the kind is known and its options checked)."""
    if kind is SourceKind.CSV:
        from mailconduit.sources.csvfile import CsvSource

        return CsvSource(path, location=location, options=options)
    if kind in (SourceKind.JSON, SourceKind.JSONL):
        from mailconduit.sources.jsonfile import open_json_file

        lines = True if kind is SourceKind.JSONL else None
        return open_json_file(path, location=location, options=options, lines=lines)
    if kind is SourceKind.XLSX:
        from mailconduit.sources.excel import ExcelSource

        return ExcelSource(path, location=location, options=options)
    if kind is SourceKind.PARQUET:
        from mailconduit.sources.parquet import ParquetSource

        return ParquetSource(path, location=location, options=options)
    raise _options_error("kind", f"a file cannot be read as {kind.value}")


def _open_stdin(kind: SourceKind | None, options: ReadOptions) -> Source:
    from mailconduit.sources.stdin import STDIN_LOCATION, detect_kind, spool_stdin

    if kind not in (None, SourceKind.CSV, SourceKind.JSON, SourceKind.JSONL):
        raise _options_error("kind", "standard input is read as csv, json or jsonl")
    path = spool_stdin()
    try:
        chosen = kind or detect_kind(path, options.encoding)
        _check_options(chosen, options)
        source = _open_path(path, STDIN_LOCATION, chosen, options)
    except BaseException:
        shutil.rmtree(path.parent, ignore_errors=True)
        raise
    source._on_close(shutil.rmtree, path.parent, True)
    return source
