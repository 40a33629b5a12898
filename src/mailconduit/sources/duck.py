"""DuckDB plumbing shared by the Parquet reader and the filter/sort engine.

Imported only when a Parquet file or a where/order_by is used, so plain CSV streaming
never pays for DuckDB. Extensions are never downloaded or loaded behind our back.
"""

from __future__ import annotations

import re
from typing import Any

__all__ = ["connect", "quote_identifier", "tidy_error"]

_LINE_MARKER = re.compile(r"\n\s*\nLINE \d+:.*", re.DOTALL)


def connect(database: str = ":memory:", **settings: Any) -> Any:
    """A DuckDB connection that never installs or auto-loads an extension."""
    import duckdb

    config: dict[str, Any] = {
        "autoinstall_known_extensions": False,
        "autoload_known_extensions": False,
        "allow_community_extensions": False,
        **settings,
    }
    return duckdb.connect(database, config=config)


def quote_identifier(name: str) -> str:
    """``name`` as a SQL identifier, whatever characters it holds."""
    return '"' + name.replace('"', '""') + '"'


def tidy_error(exc: BaseException) -> str:
    """DuckDB's message on one line, without the echo of our own SQL text."""
    text = _LINE_MARKER.sub("", str(exc)).strip()
    return "; ".join(part.strip() for part in text.splitlines() if part.strip())
