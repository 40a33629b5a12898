"""The store's engine: SQLite (WAL) under MAILCONDUIT_HOME by default, PostgreSQL by URL.

Connections and console accounts use it (the journal, in the per-message hot path, talks
DB-API directly: see ``journal/store.py``). One engine per URL per process; the schema
(:mod:`mailconduit.db.tables`) is created on first use.
"""

from __future__ import annotations

import threading
from typing import Any

from sqlalchemy import Engine, Table, create_engine, event, insert
from sqlalchemy.exc import IntegrityError, OperationalError, SQLAlchemyError

from mailconduit.db.sqlite import BUSY_TIMEOUT_SECONDS, apply_settings
from mailconduit.db.tables import metadata
from mailconduit.errors import ConfigError, FieldError
from mailconduit.home import database_url, redact_url

__all__ = ["dispose_all", "engine", "insert_new"]

_engines: dict[str, Engine] = {}
_lock = threading.Lock()


def engine(url: str | None = None) -> Engine:
    """The engine for ``url`` (default: :func:`mailconduit.home.database_url`), schema ready."""
    url = url or database_url()
    with _lock:
        eng = _engines.get(url)
        if eng is not None:
            return eng
        try:
            if url.startswith("sqlite"):
                eng = create_engine(
                    url,
                    connect_args={"timeout": BUSY_TIMEOUT_SECONDS, "check_same_thread": False},
                )
                event.listen(eng, "connect", lambda dbapi_conn, _record: apply_settings(dbapi_conn))
            else:
                eng = create_engine(url, pool_pre_ping=True)
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


def insert_new(table: Table, **values: Any) -> bool:
    """Insert one row into the store; False, and nothing written, when its key is taken."""
    try:
        with engine().begin() as db:
            db.execute(insert(table).values(**values))
    except IntegrityError:
        return False
    return True


def dispose_all() -> None:
    """Close every pooled connection (tests and long-lived servers switching homes)."""
    with _lock:
        for eng in _engines.values():
            eng.dispose()
        _engines.clear()
