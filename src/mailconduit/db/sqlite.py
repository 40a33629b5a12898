"""The one set of SQLite settings for the store's file, whoever opens it (the SQLAlchemy
engine of connections and accounts, the journal's own DB-API connection).

No SQLAlchemy here: the journal, on the export's path, imports this module alone.
"""

from __future__ import annotations

import os
from typing import Any

__all__ = ["BUSY_TIMEOUT_SECONDS", "SYNC_ENV", "apply_settings", "synchronous"]

#: 30 s, not 10: on a loaded machine a run, the console and a worker take turns on one file,
#: and waiting for the lock is better than failing with "database is locked".
BUSY_TIMEOUT_SECONDS = 30.0
#: ``full`` makes every commit wait for the device (documented in the README).
SYNC_ENV = "MAILCONDUIT_JOURNAL_SYNC"


def synchronous() -> str:
    """``NORMAL`` unless the environment asks for ``FULL``.

    NORMAL under WAL: a commit survives a killed process; only an OS crash may lose the latest
    ones (a resend with the same Message-ID, a connection saved again), where FULL would fsync
    every journal group commit on the send path.
    """
    return "FULL" if os.environ.get(SYNC_ENV, "").strip().lower() == "full" else "NORMAL"


def apply_settings(dbapi_conn: Any) -> str:
    """Put a new DB-API connection in WAL mode with the busy timeout, ``synchronous`` and
    foreign keys on; returns the ``synchronous`` mode it set."""
    mode = synchronous()
    cur = dbapi_conn.cursor()
    try:
        cur.execute("PRAGMA journal_mode=WAL")
        cur.execute(f"PRAGMA synchronous={mode}")
        cur.execute(f"PRAGMA busy_timeout={int(BUSY_TIMEOUT_SECONDS * 1000)}")
        cur.execute("PRAGMA foreign_keys=ON")
    finally:
        cur.close()
    return mode
