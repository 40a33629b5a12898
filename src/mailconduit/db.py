"""The store's engine: SQLite (WAL) under MAILCONDUIT_HOME by default, PostgreSQL by URL.

Only ``connections/`` and the web's user table use it (the journal, in the
per-message hot path, talks DB-API directly: see ``journal/store.py``). One engine per URL
per process; schema is created on first use.
"""

from __future__ import annotations

import threading
from typing import Any

from sqlalchemy import Engine, MetaData, create_engine, event
from sqlalchemy.exc import OperationalError, SQLAlchemyError

from mailconduit.errors import ConfigError, FieldError
from mailconduit.home import database_url

__all__ = ["engine", "metadata", "redact_url"]

metadata = MetaData()
_engines: dict[str, Engine] = {}
_lock = threading.Lock()


def redact_url(url: str) -> str:
    """The URL with any password replaced by ***, for messages."""
    from sqlalchemy.engine import make_url

    try:
        return make_url(url).render_as_string(hide_password=True)
    except Exception:
        return "<unparseable database URL>"


def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
    cur = dbapi_conn.cursor()
    cur.execute("PRAGMA journal_mode=WAL")
    cur.execute("PRAGMA synchronous=FULL")
    cur.execute("PRAGMA busy_timeout=10000")
    cur.execute("PRAGMA foreign_keys=ON")
    cur.close()


def engine(url: str | None = None) -> Engine:
    """The engine for ``url`` (default: :func:`mailconduit.home.database_url`), schema ready."""
    url = url or database_url()
    with _lock:
        eng = _engines.get(url)
        if eng is not None:
            return eng
        try:
            if url.startswith("sqlite"):
                eng = create_engine(url, connect_args={"timeout": 10, "check_same_thread": False})
                event.listen(eng, "connect", _sqlite_pragmas)
            else:
                eng = create_engine(url, pool_pre_ping=True)
            # Import the table definitions so create_all knows them.
            import mailconduit.connections.store
            import mailconduit.web.signin
            import mailconduit.web.users  # noqa: F401

            metadata.create_all(eng)
        except (OperationalError, SQLAlchemyError) as exc:
            reason = str(getattr(exc, "orig", exc)).strip().splitlines()[0]
            raise ConfigError.for_fields(
                "database", [FieldError("MAILCONDUIT_DB", f"{redact_url(url)}: {reason}")]
            ) from None
        except Exception as exc:  # e.g. unknown dialect from a mistyped URL
            raise ConfigError.for_fields(
                "database", [FieldError("MAILCONDUIT_DB", f"{redact_url(url)}: {exc}")]
            ) from None
        _engines[url] = eng
        return eng


def dispose_all() -> None:
    """Close every pooled connection (tests and long-lived servers switching homes)."""
    with _lock:
        for eng in _engines.values():
            eng.dispose()
        _engines.clear()
