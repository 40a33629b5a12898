"""Run and row state in the store, so a run can be resumed without loss.

A row is written as ``claimed`` (durably) before its message is handed to a session,
and as ``sent`` only after the server's 250 to the final ".". After a crash, rows still
``claimed`` are the ones whose fate is unknown (``uncertain``). Writes are batched
(group commit) and go through the DB-API's executemany: one statement shape for
SQLite and PostgreSQL (``INSERT ... ON CONFLICT DO UPDATE``).
"""

from __future__ import annotations

import datetime as dt
import json
import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from sqlalchemy import (
    Column,
    Float,
    Index,
    Integer,
    PrimaryKeyConstraint,
    String,
    Table,
    Text,
    func,
    insert,
    select,
    update,
)
from sqlalchemy.exc import IntegrityError

from mailconduit.db import engine, metadata

if TYPE_CHECKING:
    from mailconduit.delivery.ratelimit import DailyUsage
from mailconduit.errors import ConfigError, FieldError, NotFoundError

__all__ = [
    "FINAL_STATES",
    "Journal",
    "RowState",
    "RunInfo",
]

#: States a row can be in. ``claimed``: handed to a session, outcome not yet known.
CLAIMED, SENT, FAILED, SKIPPED, UNCERTAIN, RETRY = (
    "claimed",
    "sent",
    "failed",
    "skipped",
    "uncertain",
    "retry",
)
FINAL_STATES = frozenset({SENT, FAILED, SKIPPED})
RUN_STATES = ("running", "finished", "paused", "interrupted", "aborted", "failed")

runs_table = Table(
    "runs",
    metadata,
    Column("run_id", String(80), primary_key=True),
    Column("created_at", Float, nullable=False),
    Column("updated_at", Float, nullable=False),
    Column("finished_at", Float, nullable=True),
    Column("status", String(16), nullable=False),
    Column("connection", String(64), nullable=False),
    Column("mode", String(8), nullable=False),
    Column("spec", Text, nullable=False),
    Column("fingerprint", Text, nullable=False),
    Column("total", Integer, nullable=True),
    Column("message", Text, nullable=False, default=""),
)

rows_table = Table(
    "run_rows",
    metadata,
    Column("run_id", String(80), nullable=False),
    Column("row_key", String(255), nullable=False),
    Column("seq", Integer, nullable=False),
    Column("row_number", Integer, nullable=False),
    Column("state", String(12), nullable=False),
    Column("attempts", Integer, nullable=False),
    Column("recipients", Text, nullable=False),
    Column("message_id", Text, nullable=False),
    Column("code", Integer, nullable=False),
    Column("enhanced", String(16), nullable=False),
    Column("reply", Text, nullable=False),
    Column("col", String(255), nullable=False),
    Column("detail", Text, nullable=False),
    Column("updated_at", Float, nullable=False),
    PrimaryKeyConstraint("run_id", "row_key"),
    Index("ix_run_rows_state", "run_id", "state"),
    Index("ix_run_rows_seq", "run_id", "seq"),
)

daily_table = Table(
    "daily_usage",
    metadata,
    Column("connection", String(64), primary_key=True),
    Column("day", String(10), nullable=False),
    Column("count", Integer, nullable=False),
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
)
_UPSERT_SET = (
    "state",
    "attempts",
    "code",
    "enhanced",
    "reply",
    "col",
    "detail",
    "updated_at",
    "message_id",
)


@dataclass(frozen=True, slots=True)
class RowState:
    """One row's journal entry; also the per-row line of a report."""

    row_key: str
    seq: int
    row_number: int
    state: str
    attempts: int = 0
    recipients: tuple[str, ...] = ()
    message_id: str = ""
    code: int = 0
    enhanced: str = ""
    reply: str = ""
    column: str = ""
    detail: tuple[tuple[str, int, str], ...] = ()
    updated_at: float = 0.0

    def as_params(self, run_id: str) -> tuple[Any, ...]:
        return (
            run_id,
            self.row_key,
            self.seq,
            self.row_number,
            self.state,
            self.attempts,
            json.dumps(list(self.recipients)),
            self.message_id,
            self.code,
            self.enhanced,
            self.reply[:4000],
            self.column,
            json.dumps([list(d) for d in self.detail]) if self.detail else "",
            self.updated_at or time.time(),
        )


@dataclass(frozen=True, slots=True)
class RunInfo:
    """A run's header and its row counts by state."""

    run_id: str
    status: str
    connection: str
    mode: str
    created_at: float
    updated_at: float
    finished_at: float | None
    total: int | None
    message: str
    spec: dict[str, Any]
    fingerprint: str
    counts: dict[str, int] = field(default_factory=dict)

    @property
    def done(self) -> int:
        return sum(self.counts.get(s, 0) for s in FINAL_STATES)

    def to_dict(self) -> dict[str, Any]:
        return {
            "run_id": self.run_id,
            "status": self.status,
            "connection": self.connection,
            "mode": self.mode,
            "created_at": self.created_at,
            "updated_at": self.updated_at,
            "finished_at": self.finished_at,
            "total": self.total,
            "message": self.message,
            "counts": dict(self.counts),
        }


def _row_from_db(r: Any) -> RowState:
    detail: tuple[tuple[str, int, str], ...] = ()
    if r.detail:
        detail = tuple((str(a), int(b), str(c)) for a, b, c in json.loads(r.detail))
    return RowState(
        row_key=r.row_key,
        seq=r.seq,
        row_number=r.row_number,
        state=r.state,
        attempts=r.attempts,
        recipients=tuple(json.loads(r.recipients)),
        message_id=r.message_id,
        code=r.code,
        enhanced=r.enhanced,
        reply=r.reply,
        column=r.col,
        detail=detail,
        updated_at=r.updated_at,
    )


class Journal:
    """The store's view of runs. Thread-safe for one writer thread plus readers."""

    def __init__(self, url: str | None = None) -> None:
        self._engine = engine(url)
        paramstyle = self._engine.dialect.paramstyle
        mark = "?" if paramstyle == "qmark" else "%s"
        cols = ", ".join(_ROW_COLUMNS)
        marks = ", ".join([mark] * len(_ROW_COLUMNS))
        sets = ", ".join(f"{c} = excluded.{c}" for c in _UPSERT_SET)
        self._upsert_sql = (
            f"INSERT INTO run_rows ({cols}) VALUES ({marks}) "
            f"ON CONFLICT (run_id, row_key) DO UPDATE SET {sets}"
        )

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
        try:
            with self._engine.begin() as db:
                db.execute(
                    insert(runs_table).values(
                        run_id=run_id,
                        created_at=now,
                        updated_at=now,
                        status="running",
                        connection=connection,
                        mode=mode,
                        spec=json.dumps(spec, default=str),
                        fingerprint=fingerprint,
                        total=total,
                        message="",
                    )
                )
        except IntegrityError:
            raise ConfigError.for_fields(
                "export", [FieldError("run_id", f"a run named {run_id!r} already exists")]
            ) from None

    def run_exists(self, run_id: str) -> bool:
        with self._engine.connect() as db:
            return (
                db.execute(select(runs_table.c.run_id).where(runs_table.c.run_id == run_id)).first()
                is not None
            )

    def get_run(self, run_id: str) -> RunInfo:
        with self._engine.connect() as db:
            r = db.execute(select(runs_table).where(runs_table.c.run_id == run_id)).first()
            if r is None:
                raise NotFoundError("run", run_id)
            counts = dict(
                db.execute(
                    select(rows_table.c.state, func.count())
                    .where(rows_table.c.run_id == run_id)
                    .group_by(rows_table.c.state)
                ).all()
            )
        return self._info(r, {str(k): int(v) for k, v in counts.items()})

    def list_runs(self, *, limit: int = 50) -> list[RunInfo]:
        with self._engine.connect() as db:
            rows = db.execute(
                select(runs_table).order_by(runs_table.c.created_at.desc()).limit(limit)
            ).all()
            ids = [r.run_id for r in rows]
            counts: dict[str, dict[str, int]] = {i: {} for i in ids}
            if ids:
                for run_id, state, n in db.execute(
                    select(rows_table.c.run_id, rows_table.c.state, func.count())
                    .where(rows_table.c.run_id.in_(ids))
                    .group_by(rows_table.c.run_id, rows_table.c.state)
                ):
                    counts[run_id][state] = int(n)
        return [self._info(r, counts[r.run_id]) for r in rows]

    @staticmethod
    def _info(r: Any, counts: dict[str, int]) -> RunInfo:
        return RunInfo(
            run_id=r.run_id,
            status=r.status,
            connection=r.connection,
            mode=r.mode,
            created_at=r.created_at,
            updated_at=r.updated_at,
            finished_at=r.finished_at,
            total=r.total,
            message=r.message or "",
            spec=json.loads(r.spec),
            fingerprint=r.fingerprint,
            counts=counts,
        )

    def set_status(
        self,
        run_id: str,
        status: str,
        *,
        message: str = "",
        total: int | None = None,
        finished: bool = False,
    ) -> None:
        values: dict[str, Any] = {"status": status, "updated_at": time.time(), "message": message}
        if total is not None:
            values["total"] = total
        if finished:
            values["finished_at"] = time.time()
        with self._engine.begin() as db:
            db.execute(update(runs_table).where(runs_table.c.run_id == run_id).values(**values))

    # -- rows ---------------------------------------------------------------------------

    def write_rows(self, run_id: str, rows: Sequence[RowState]) -> None:
        """Upsert row states in one transaction (one fsync); durable when this returns."""
        if not rows:
            return
        params = [r.as_params(run_id) for r in rows]
        with self._engine.begin() as db:
            db.exec_driver_sql(self._upsert_sql, params)

    def states(self, run_id: str) -> dict[str, tuple[str, int]]:
        """row_key → (state, attempts) for every journaled row of the run."""
        with self._engine.connect() as db:
            result = db.execute(
                select(rows_table.c.row_key, rows_table.c.state, rows_table.c.attempts).where(
                    rows_table.c.run_id == run_id
                )
            )
            return {k: (s, a) for k, s, a in result}

    def rows(self, run_id: str, *, states: Iterable[str] | None = None) -> Iterator[RowState]:
        """Rows of a run in processing order (optionally only some states)."""
        query = select(rows_table).where(rows_table.c.run_id == run_id)
        if states is not None:
            query = query.where(rows_table.c.state.in_(list(states)))
        query = query.order_by(rows_table.c.seq, rows_table.c.row_number)
        with self._engine.connect() as db:
            for r in db.execute(query).yield_per(1000):
                yield _row_from_db(r)

    # -- daily cap ----------------------------------------------------------------------

    def daily_usage(self, connection: str) -> DailyUsage | None:
        """Messages counted against the connection's daily cap on the stored day."""
        from mailconduit.delivery.ratelimit import DailyUsage

        with self._engine.connect() as db:
            r = db.execute(
                select(daily_table).where(daily_table.c.connection == connection)
            ).first()
        if r is None:
            return None
        return DailyUsage(dt.date.fromisoformat(r.day), int(r.count))

    def save_daily_usage(self, connection: str, usage: DailyUsage) -> None:
        with self._engine.begin() as db:
            done = db.execute(
                update(daily_table)
                .where(daily_table.c.connection == connection)
                .values(day=usage.day.isoformat(), count=usage.count)
            )
            if not done.rowcount:
                db.execute(
                    insert(daily_table).values(
                        connection=connection, day=usage.day.isoformat(), count=usage.count
                    )
                )

    def mark_claimed_uncertain(self, run_id: str) -> int:
        """After an interruption: rows still ``claimed`` may or may not have been delivered."""
        with self._engine.begin() as db:
            result = db.execute(
                update(rows_table)
                .where(rows_table.c.run_id == run_id, rows_table.c.state == CLAIMED)
                .values(
                    state=UNCERTAIN,
                    reply="interrupted after the message was handed to the server; delivery unknown",
                    updated_at=time.time(),
                )
            )
        return int(result.rowcount or 0)
