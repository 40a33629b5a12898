"""Run and row state in the store, so a run can be resumed without loss.

A row is written as ``claimed`` (durably) before its message is handed to a session,
and as ``sent`` only after the server's 250 to the final ".". After a crash, rows still
``claimed`` are the ones whose fate is unknown (``uncertain``). Writes are batched
(group commit) and go through the DB-API's executemany: one statement shape for
SQLite and PostgreSQL (``INSERT ... ON CONFLICT DO UPDATE``). A run's lease
(``run_leases``) names the one process sending it now, whichever host it runs on.
"""

from __future__ import annotations

import datetime as dt
import json
import sqlite3
import threading
import time
from collections.abc import Iterable, Iterator, Sequence
from typing import Any, Self

from mailconduit.db.sqlite import BUSY_TIMEOUT_SECONDS
from mailconduit.db.sqlite import apply_settings as apply_sqlite_settings
from mailconduit.errors import ConfigError, FieldError, NotFoundError
from mailconduit.home import database_url, redact_url
from mailconduit.journal.records import (
    DailyUsage,
    Lease,
    RowState,
    RowStatus,
    RunInfo,
    RunStatus,
)

__all__ = ["Journal"]

_DDL = (
    """CREATE TABLE IF NOT EXISTS runs (
        run_id VARCHAR(80) PRIMARY KEY,
        created_at DOUBLE PRECISION NOT NULL,
        updated_at DOUBLE PRECISION NOT NULL,
        finished_at DOUBLE PRECISION,
        status VARCHAR(16) NOT NULL,
        connection VARCHAR(64) NOT NULL,
        mode VARCHAR(8) NOT NULL,
        spec TEXT NOT NULL,
        fingerprint TEXT NOT NULL,
        total INTEGER,
        message TEXT NOT NULL DEFAULT '',
        claimed_seq INTEGER NOT NULL DEFAULT 0
    )""",
    """CREATE TABLE IF NOT EXISTS run_rows (
        run_id VARCHAR(80) NOT NULL,
        row_key VARCHAR(255) NOT NULL,
        seq INTEGER NOT NULL,
        row_number INTEGER NOT NULL,
        state VARCHAR(12) NOT NULL,
        attempts INTEGER NOT NULL,
        recipients TEXT NOT NULL,
        message_id TEXT NOT NULL,
        code INTEGER NOT NULL,
        enhanced VARCHAR(16) NOT NULL,
        reply TEXT NOT NULL,
        col VARCHAR(255) NOT NULL,
        detail TEXT NOT NULL,
        updated_at DOUBLE PRECISION NOT NULL,
        PRIMARY KEY (run_id, row_key)
    )""",
    # No index on state: counting a run by state scans its rows once (fast enough at the
    # end of a run), while an index would cost every outcome written one more B-tree insert.
    # Measured: journal cost +14 % -> +9 % of an export, with the shortcuts (bench/RESULTS.md).
    "DROP INDEX IF EXISTS ix_run_rows_state",
    "CREATE INDEX IF NOT EXISTS ix_run_rows_seq ON run_rows (run_id, seq)",
    """CREATE TABLE IF NOT EXISTS daily_usage (
        connection VARCHAR(64) PRIMARY KEY,
        day VARCHAR(10) NOT NULL,
        count INTEGER NOT NULL
    )""",
    # Who is sending a run right now, whatever machine it runs on (see Journal.take_lease).
    """CREATE TABLE IF NOT EXISTS run_leases (
        run_id VARCHAR(80) PRIMARY KEY,
        owner VARCHAR(255) NOT NULL,
        home VARCHAR(64) NOT NULL,
        expires_at DOUBLE PRECISION NOT NULL
    )""",
)
#: Columns added after a table was first released: (table, column, definition). A store
#: created by an older version gets them with ALTER TABLE ... ADD COLUMN when opened.
_ADDED_COLUMNS = (
    # The recipients a partly delivered row still owes its message to (JSON; '' = all).
    ("run_rows", "owed", "TEXT NOT NULL DEFAULT ''"),
)
_RUN_COLUMNS = (
    "run_id, created_at, updated_at, finished_at, status, connection, mode, spec, "
    "fingerprint, total, message, claimed_seq"
)
_ROW_COLUMNS = (
    "run_id",
    "row_key",
    "seq",
    "row_number",
    "state",
    "attempts",
    "recipients",
    "message_id",
    "code",
    "enhanced",
    "reply",
    "col",
    "detail",
    "updated_at",
    "owed",
)
#: What a later write of a row replaces: its key, place and recipients stay as first written.
_UPSERT_SET = tuple(
    c for c in _ROW_COLUMNS if c not in ("run_id", "row_key", "seq", "row_number", "recipients")
)



def _row_from_db(r: Sequence[Any]) -> RowState:
    (row_key, seq, row_number, state, attempts, recipients, message_id, code, enhanced, reply, col,
     detail_text, updated_at, owed) = r  # fmt: skip
    detail: tuple[tuple[str, int, str], ...] = ()
    if detail_text:
        detail = tuple((str(a), int(b), str(c)) for a, b, c in json.loads(detail_text))
    return RowState(
        row_key=row_key,
        seq=seq,
        row_number=row_number,
        state=RowStatus(state),
        attempts=attempts,
        recipients=tuple(json.loads(recipients)),
        message_id=message_id,
        code=code,
        enhanced=enhanced,
        reply=reply,
        column=col,
        detail=detail,
        updated_at=updated_at,
        owed=tuple(json.loads(owed)) if owed else (),
    )


_ROW_SELECT = (
    "SELECT row_key, seq, row_number, state, attempts, recipients, message_id, code, enhanced, "
    "reply, col, detail, updated_at, owed FROM run_rows"
)



class Journal:
    """Runs and row states in the store, through the plain DB-API (sqlite3 or psycopg).

    The journal sits in the per-message hot path, so it skips the ORM layer: one
    statement shape per operation, parameters bound by the driver, executemany for
    batches. One connection, serialised by a lock (one writer thread plus readers).
    """

    def __init__(self, url: str | None = None) -> None:
        self.url = url or database_url()
        self._lock = threading.RLock()
        self._conn: Any = None
        self._sqlite = self.url.startswith("sqlite")
        self._mark = "?" if self._sqlite else "%s"
        #: True when a commit costs CPU only (SQLite without an fsync per commit): the
        #: runner then writes from the event loop itself. A commit that waits on a device
        #: or on the network (synchronous=FULL, PostgreSQL) goes to a writer thread.
        self.commits_are_cheap = False
        self._connect()
        cols = ", ".join(_ROW_COLUMNS)
        marks = ", ".join([self._mark] * len(_ROW_COLUMNS))
        sets = ", ".join(f"{c} = excluded.{c}" for c in _UPSERT_SET)
        self._upsert_sql = (
            f"INSERT INTO run_rows ({cols}) VALUES ({marks}) "
            f"ON CONFLICT (run_id, row_key) DO UPDATE SET {sets}"
        )

    # -- connection -----------------------------------------------------------------------

    def _connect(self) -> None:
        conn: Any
        try:
            if self._sqlite:
                path = self.url.split(":///", 1)[1] if ":///" in self.url else ":memory:"
                conn = sqlite3.connect(
                    path,
                    timeout=BUSY_TIMEOUT_SECONDS,
                    check_same_thread=False,
                    isolation_level=None,
                )
                # The store's one set of settings (db/sqlite.py): WAL, NORMAL unless
                # MAILCONDUIT_JOURNAL_SYNC=full; a lost "sent" mark after an OS crash means
                # a resend with the same Message-ID, never a lost row.
                sync = apply_sqlite_settings(conn)
                self.commits_are_cheap = sync == "NORMAL" and path != ":memory:"
            else:
                import psycopg

                conn = psycopg.connect(
                    self.url.replace("+psycopg", ""), autocommit=True, connect_timeout=10
                )
        except Exception as exc:  # sqlite3.Error, psycopg.Error, OSError
            reason = " ".join(str(exc).split()) or type(exc).__name__
            raise ConfigError.for_fields(
                "database", [FieldError("MAILCONDUIT_DB", f"{redact_url(self.url)}: {reason}")]
            ) from None
        self._conn = conn
        if not self._sqlite and self._schema_is_current():
            return
        for statement in _DDL:
            self._ddl(statement)
        for table, column, definition in _ADDED_COLUMNS:
            if column not in self._columns(table):
                self._ddl(f"ALTER TABLE {table} ADD COLUMN {column} {definition}", (table, column))

    def _schema_is_current(self) -> bool:
        """PostgreSQL: every table, index and added column there already. Checked before any
        DDL, which is not free there: CREATE INDEX IF NOT EXISTS takes its table's SHARE lock
        before it looks, so it waits for every open write to run_rows and holds up the
        next ones (agents' workers writing while a coordinator or a worker opens a Journal)."""
        added = ", ".join(f"('{table}', '{column}')" for table, column, _ in _ADDED_COLUMNS)
        row = self._conn.execute(
            "SELECT to_regclass('ix_run_rows_seq') IS NOT NULL "
            "AND to_regclass('ix_run_rows_state') IS NULL AND to_regclass('run_leases') IS NOT NULL "
            "AND to_regclass('daily_usage') IS NOT NULL AND (SELECT COUNT(*) FROM "
            "information_schema.columns WHERE table_schema = current_schema() AND "
            f"(table_name, column_name) IN ({added})) = %s",
            (len(_ADDED_COLUMNS),),
        ).fetchone()
        return bool(row and row[0])

    def _ddl(self, statement: str, adds: tuple[str, str] | None = None) -> None:
        for attempt in range(3):
            try:
                self._conn.execute(statement)
                return
            except Exception:  # two processes creating the schema at once
                if adds is not None and adds[1] in self._columns(adds[0]):
                    return  # the other one added the column
                if attempt == 2:
                    raise
                time.sleep(0.1)

    def _columns(self, table: str) -> set[str]:
        if self._sqlite:
            return {str(r[1]) for r in self._conn.execute(f"PRAGMA table_info({table})")}
        rows = self._conn.execute(
            "SELECT column_name FROM information_schema.columns "
            "WHERE table_schema = current_schema() AND table_name = %s",
            (table,),
        ).fetchall()
        return {str(r[0]) for r in rows}

    @property
    def _now(self) -> str:
        """SQL for the store's clock, in seconds since the epoch."""
        if self._sqlite:
            return "((julianday('now') - 2440587.5) * 86400.0)"
        return "CAST(EXTRACT(EPOCH FROM clock_timestamp()) AS DOUBLE PRECISION)"

    def _sql(self, sql: str) -> str:
        return sql if self._sqlite else sql.replace("?", "%s")

    def _query(self, sql: str, params: Sequence[Any] = ()) -> list[Any]:
        with self._lock:
            return list(self._conn.execute(self._sql(sql), params).fetchall())

    def _execute(self, sql: str, params: Sequence[Any] = ()) -> int:
        with self._lock:
            if self._sqlite:
                self._conn.execute("BEGIN IMMEDIATE")
                try:
                    cur = self._conn.execute(sql, params)
                    self._conn.execute("COMMIT")
                except BaseException:
                    self._conn.execute("ROLLBACK")
                    raise
                return int(cur.rowcount or 0)
            with self._conn.transaction():
                cur = self._conn.execute(self._sql(sql), params)
            return int(cur.rowcount or 0)

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Close the store connection; the journal cannot be used after."""
        with self._lock:
            if self._conn is not None:
                self._conn.close()
                self._conn = None

    # -- runs ---------------------------------------------------------------------------

    def create_run(
        self,
        run_id: str,
        *,
        connection: str,
        mode: str,
        spec: dict[str, Any],
        fingerprint: str,
        total: int | None,
    ) -> None:
        now = time.time()
        if self.run_exists(run_id):
            raise ConfigError.for_fields(
                "export", [FieldError("run_id", f"a run named {run_id!r} already exists")]
            )
        self._execute(
            f"INSERT INTO runs ({_RUN_COLUMNS}) VALUES (?, ?, ?, NULL, 'running', ?, ?, ?, ?, ?, '', 0)",
            (run_id, now, now, connection, mode, json.dumps(spec, default=str), fingerprint, total),
        )

    def run_exists(self, run_id: str) -> bool:
        return bool(self._query("SELECT 1 FROM runs WHERE run_id = ?", (run_id,)))

    def run_status(self, run_id: str) -> str:
        """The run's status alone: one indexed read, where :meth:`get_run` counts its rows."""
        rows = self._query("SELECT status FROM runs WHERE run_id = ?", (run_id,))
        if not rows:
            raise NotFoundError("run", run_id)
        return str(rows[0][0])

    def get_run(self, run_id: str) -> RunInfo:
        rows = self._query(f"SELECT {_RUN_COLUMNS} FROM runs WHERE run_id = ?", (run_id,))
        if not rows:
            raise NotFoundError("run", run_id)
        counts = self._query(
            "SELECT state, COUNT(*) FROM run_rows WHERE run_id = ? GROUP BY state", (run_id,)
        )
        by_state = {str(k): int(v) for k, v in counts}
        claimed_seq = int(rows[0][11] or 0)
        if claimed_seq:
            ((recorded,),) = self._query(
                "SELECT COUNT(DISTINCT seq) FROM run_rows WHERE run_id = ? AND seq <= ?",
                (run_id, claimed_seq),
            )
            unrecorded = claimed_seq - int(recorded)
            if unrecorded > 0:  # claimed, outcome never written: fate unknown
                claimed = RowStatus.CLAIMED.value
                by_state[claimed] = by_state.get(claimed, 0) + unrecorded
        return self._info(rows[0], by_state)

    def list_runs(self, *, limit: int = 50) -> list[RunInfo]:
        rows = self._query(
            f"SELECT {_RUN_COLUMNS} FROM runs ORDER BY created_at DESC LIMIT ?", (int(limit),)
        )
        counts: dict[str, dict[str, int]] = {r[0]: {} for r in rows}
        if rows:
            marks = ", ".join("?" for _ in rows)
            for run_id, state, n in self._query(
                f"SELECT run_id, state, COUNT(*) FROM run_rows WHERE run_id IN ({marks}) GROUP BY run_id, state",
                [r[0] for r in rows],
            ):
                counts[run_id][state] = int(n)
        return [self._info(r, counts[r[0]]) for r in rows]

    @staticmethod
    def _info(r: Sequence[Any], counts: dict[str, int]) -> RunInfo:
        (
            run_id,
            created,
            updated,
            finished,
            status,
            connection,
            mode,
            spec,
            fingerprint,
            total,
            message,
            claimed_seq,
        ) = r
        return RunInfo(
            run_id=run_id,
            status=RunStatus(status),
            connection=connection,
            mode=mode,
            created_at=created,
            updated_at=updated,
            finished_at=finished,
            total=total,
            message=message or "",
            spec=json.loads(spec),
            fingerprint=fingerprint,
            counts=counts,
            claimed_seq=int(claimed_seq or 0),
        )

    def set_status(
        self,
        run_id: str,
        status: RunStatus,
        *,
        message: str = "",
        total: int | None = None,
        finished: bool = False,
    ) -> None:
        now = time.time()
        sets = "status = ?, updated_at = ?, message = ?"
        params: list[Any] = [status, now, message]
        if total is not None:
            sets += ", total = ?"
            params.append(total)
        if finished:
            sets += ", finished_at = ?"
            params.append(now)
        params.append(run_id)
        self._execute(self._sql(f"UPDATE runs SET {sets} WHERE run_id = ?"), params)

    # -- rows ---------------------------------------------------------------------------

    def write_rows(self, run_id: str, rows: Sequence[RowState]) -> None:
        """Upsert row states in one transaction (one fsync); durable when this returns."""
        if not rows:
            return
        params = [r.as_params(run_id) for r in rows]
        with self._lock:
            if self._sqlite:
                self._conn.execute("BEGIN IMMEDIATE")
                try:
                    self._conn.executemany(self._upsert_sql, params)
                    self._conn.execute("COMMIT")
                except BaseException:
                    self._conn.execute("ROLLBACK")
                    raise
            else:
                with self._conn.transaction(), self._conn.cursor() as cur:
                    cur.executemany(self._upsert_sql, params)

    def claim_through(self, run_id: str, seq: int) -> None:
        """Record that every row up to ``seq`` is claimed: one small write per batch.

        Rows past the mark were never handed to a session; rows up to it without an
        outcome may have been delivered (they are resent with the same Message-ID).
        """
        self._execute(
            self._sql("UPDATE runs SET claimed_seq = ? WHERE run_id = ? AND claimed_seq < ?"),
            (seq, run_id, seq),
        )

    def states(self, run_id: str) -> dict[str, tuple[RowStatus, int]]:
        """row_key → (state, attempts) for every journaled row of the run."""
        rows = self._query(
            "SELECT row_key, state, attempts FROM run_rows WHERE run_id = ?", (run_id,)
        )
        return {k: (RowStatus(s), a) for k, s, a in rows}

    def partial_rows(self, run_id: str) -> dict[str, RowState]:
        """row_key → entry, for the rows of the run that still owe their message to only
        some of their recipients (see :attr:`RowState.owed`)."""
        rows = self._query(f"{_ROW_SELECT} WHERE run_id = ? AND owed <> ''", (run_id,))
        return {r[0]: _row_from_db(r) for r in rows}

    def rows(self, run_id: str, *, states: Iterable[str] | None = None) -> Iterator[RowState]:
        """Rows of a run in processing order (optionally only some states), read in pages."""
        wanted = list(states) if states is not None else None
        last: tuple[int, str] = (-1, "")
        while True:
            sql = f"{_ROW_SELECT} WHERE run_id = ? AND (seq > ? OR (seq = ? AND row_key > ?))"
            params: list[Any] = [run_id, last[0], last[0], last[1]]
            if wanted is not None:
                sql += f" AND state IN ({', '.join('?' for _ in wanted)})"
                params += wanted
            sql += " ORDER BY seq, row_key LIMIT 1000"
            page = self._query(sql, params)
            for r in page:
                yield _row_from_db(r)
            if len(page) < 1000:
                return
            last = (page[-1][1], page[-1][0])

    # -- leases -------------------------------------------------------------------------

    def take_lease(self, run_id: str, *, owner: str, home: str, ttl: float) -> Lease | None:
        """Take the run's lease for ``ttl`` seconds, atomically; None when taken, else the
        lease that someone else holds.

        Taken when nobody holds it, when it has expired, when ``owner`` already holds it,
        or when it was taken from the same ``home``: a caller holds that home's own lock
        on the run, so a holder there is gone (killed before it could let go).
        """
        now = self._now
        sql = self._sql(
            f"INSERT INTO run_leases (run_id, owner, home, expires_at) VALUES (?, ?, ?, {now} + ?) "
            "ON CONFLICT (run_id) DO UPDATE SET owner = excluded.owner, home = excluded.home, "
            "expires_at = excluded.expires_at "
            "WHERE run_leases.owner = excluded.owner OR run_leases.home = excluded.home "
            f"OR run_leases.expires_at <= {now}"
        )
        while True:
            if self._execute(sql, (run_id, owner, home, float(ttl))):
                return None
            holder = self.lease(run_id)
            if holder is not None:
                return holder
            # let go between the two statements: try again

    def renew_lease(self, run_id: str, *, owner: str, ttl: float) -> bool:
        """Push the lease's expiry to ``ttl`` seconds from now; False if ``owner`` lost it."""
        return bool(
            self._execute(
                self._sql(
                    f"UPDATE run_leases SET expires_at = {self._now} + ? "
                    "WHERE run_id = ? AND owner = ?"
                ),
                (float(ttl), run_id, owner),
            )
        )

    def release_lease(self, run_id: str, *, owner: str) -> None:
        """Let the lease go (only if ``owner`` still holds it)."""
        self._execute(
            self._sql("DELETE FROM run_leases WHERE run_id = ? AND owner = ?"), (run_id, owner)
        )

    def lease(self, run_id: str) -> Lease | None:
        """The run's lease as stored (possibly expired), or None when nobody holds it."""
        rows = self._query(
            f"SELECT owner, home, expires_at, {self._now} FROM run_leases WHERE run_id = ?",
            (run_id,),
        )
        if not rows:
            return None
        owner, home, expires_at, now = rows[0]
        return Lease(run_id, str(owner), str(home), float(expires_at), float(now))

    # -- statistics (the console's charts) -----------------------------------------------

    def outcomes_by_day(
        self, *, since: float, connection: str | None = None
    ) -> list[tuple[int, str, int]]:
        """Rows sent or failed since ``since`` (epoch seconds), counted per UTC day (days
        since the epoch) and state; with ``connection``, only its runs'."""
        day = (
            "CAST(r.updated_at / 86400 AS INTEGER)"
            if self._sqlite
            else "CAST(FLOOR(r.updated_at / 86400) AS INTEGER)"
        )
        sql = f"SELECT {day} AS day, r.state, COUNT(*) FROM run_rows r"
        params: list[Any] = [since]
        if connection is not None:
            sql += " JOIN runs u ON u.run_id = r.run_id"
        sql += " WHERE r.updated_at >= ? AND r.state IN ('sent', 'failed')"
        if connection is not None:
            sql += " AND u.connection = ?"
            params.append(connection)
        rows = self._query(sql + f" GROUP BY {day}, r.state", params)
        return [(int(d), str(state), int(n)) for d, state, n in rows]

    # -- daily cap ----------------------------------------------------------------------

    def daily_usage(self, connection: str) -> DailyUsage | None:
        """Messages counted against the connection's daily cap on the stored day."""
        rows = self._query("SELECT day, count FROM daily_usage WHERE connection = ?", (connection,))
        if not rows:
            return None
        return DailyUsage(dt.date.fromisoformat(rows[0][0]), int(rows[0][1]))

    def save_daily_usage(self, connection: str, usage: DailyUsage) -> None:
        self._execute(
            self._sql(
                "INSERT INTO daily_usage (connection, day, count) VALUES (?, ?, ?) "
                "ON CONFLICT (connection) DO UPDATE SET day = excluded.day, count = excluded.count"
            ),
            (connection, usage.day.isoformat(), usage.count),
        )

    # -- guarded writes and chunks (agents) ---------------------------------------------

    def write_rows_guarded(
        self, run_id: str, rows: Sequence[RowState], guard: tuple[str, Sequence[Any]]
    ) -> tuple[Any, ...] | None:
        """:meth:`write_rows`, only if the ``guard`` statement (run first, in the same
        transaction) returns a row; returns that row, or None, with nothing written, when
        it returns none.

        A worker's outcomes go through its chunk's fence this way: once another worker
        holds the chunk, nothing the first one learns is recorded.
        """
        sql, params = guard
        values = [r.as_params(run_id) for r in rows]
        with self._lock:
            if self._sqlite:
                self._conn.execute("BEGIN IMMEDIATE")
                try:
                    held = self._conn.execute(sql, params).fetchone()
                    if held is not None and values:
                        self._conn.executemany(self._upsert_sql, values)
                    self._conn.execute("COMMIT")
                except BaseException:
                    self._conn.execute("ROLLBACK")
                    raise
                return None if held is None else tuple(held)
            with self._conn.transaction(), self._conn.cursor() as cur:
                found = cur.execute(self._sql(sql), params).fetchone()
                if found is not None and values:
                    cur.executemany(self._upsert_sql, values)
            return None if found is None else tuple(found)

    def rows_between(self, run_id: str, first_seq: int, last_seq: int) -> list[RowState]:
        """The journaled rows of the run whose position is in ``first_seq..last_seq``."""
        rows = self._query(
            f"{_ROW_SELECT} WHERE run_id = ? AND seq BETWEEN ? AND ? ORDER BY seq, row_key",
            (run_id, first_seq, last_seq),
        )
        return [_row_from_db(r) for r in rows]
