"""The agents' shared state in the journal database (PostgreSQL): frozen runs, chunks with
their leases and fencing epochs, worker heartbeats, and the connection-wide rate limit.

Every host reads the same rows, and every time is PostgreSQL's clock (seconds since the
epoch), so no two machines' clocks are ever compared. A chunk is claimed by bumping its
``epoch``: any later write by an older holder names the old epoch and changes nothing.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import os
import threading
import time
from collections.abc import Iterable, Iterator, Sequence
from typing import Any, ClassVar
from urllib.parse import parse_qsl, quote, urlencode, urlsplit, urlunsplit

from mailconduit.errors import ConfigError, FieldError
from mailconduit.home import database_url

__all__ = [
    "AgentStore",
    "ChunkClaim",
    "ChunkInfo",
    "FrozenRow",
    "FrozenRun",
    "RunStop",
    "WorkerInfo",
    "live_workers",
    "require_shared_journal",
    "sending_slots",
]

#: Chunk states. ``queued``: waiting for a worker; ``running``: leased; the rest are final
#: for this attempt of the run (``stopped`` and ``failed`` chunks go again on resume).
QUEUED, RUNNING, DONE, STOPPED, FAILED = "queued", "running", "done", "stopped", "failed"
ENDED = frozenset({DONE, STOPPED, FAILED})

_NOW = "CAST(EXTRACT(EPOCH FROM clock_timestamp()) AS DOUBLE PRECISION)"

_DDL = (
    """CREATE TABLE IF NOT EXISTS agent_runs (
        run_id VARCHAR(80) PRIMARY KEY,
        connection VARCHAR(64) NOT NULL,
        agent VARCHAR(64) NOT NULL,
        spec TEXT NOT NULL,
        location TEXT NOT NULL,
        columns TEXT NOT NULL,
        total INTEGER NOT NULL,
        chunks INTEGER NOT NULL DEFAULT 0,
        retry_failed BOOLEAN NOT NULL DEFAULT FALSE,
        stop_reason TEXT NOT NULL DEFAULT '',
        stop_status VARCHAR(16) NOT NULL DEFAULT '',
        created_at DOUBLE PRECISION NOT NULL,
        failed_rows INTEGER NOT NULL DEFAULT 0
    )""",
    # Rows failed in this attempt at the run, across its chunks and workers (--max-errors
    # counts the run, not a chunk); a journal made before the column gets it here. (Not
    # ALTER ... IF NOT EXISTS: that locks the table out even when the column is there.)
    """DO $$ BEGIN
        IF NOT EXISTS (SELECT 1 FROM information_schema.columns
                       WHERE table_name = 'agent_runs' AND column_name = 'failed_rows') THEN
            ALTER TABLE agent_runs ADD COLUMN failed_rows INTEGER NOT NULL DEFAULT 0;
        END IF;
    END $$""",
    """CREATE TABLE IF NOT EXISTS agent_rows (
        run_id VARCHAR(80) NOT NULL,
        position INTEGER NOT NULL,
        row_key TEXT NOT NULL,
        row_number INTEGER NOT NULL,
        line INTEGER,
        cells TEXT NOT NULL,
        problem TEXT NOT NULL,
        files TEXT NOT NULL,
        PRIMARY KEY (run_id, position)
    )""",
    """CREATE TABLE IF NOT EXISTS agent_blobs (
        run_id VARCHAR(80) NOT NULL,
        sha VARCHAR(64) NOT NULL,
        data BYTEA NOT NULL,
        PRIMARY KEY (run_id, sha)
    )""",
    """CREATE TABLE IF NOT EXISTS agent_chunks (
        run_id VARCHAR(80) NOT NULL,
        chunk INTEGER NOT NULL,
        first_row INTEGER NOT NULL,
        last_row INTEGER NOT NULL,
        first_seq INTEGER NOT NULL,
        last_seq INTEGER NOT NULL,
        state VARCHAR(12) NOT NULL,
        epoch INTEGER NOT NULL DEFAULT 0,
        owner VARCHAR(255) NOT NULL DEFAULT '',
        expires_at DOUBLE PRECISION NOT NULL DEFAULT 0,
        attempts INTEGER NOT NULL DEFAULT 0,
        claimed_seq INTEGER NOT NULL DEFAULT 0,
        status VARCHAR(16) NOT NULL DEFAULT '',
        reason TEXT NOT NULL DEFAULT '',
        published_at DOUBLE PRECISION NOT NULL DEFAULT 0,
        updated_at DOUBLE PRECISION NOT NULL DEFAULT 0,
        PRIMARY KEY (run_id, chunk)
    )""",
    "CREATE INDEX IF NOT EXISTS ix_agent_chunks_state ON agent_chunks (state, expires_at)",
    """CREATE TABLE IF NOT EXISTS agent_workers (
        worker VARCHAR(255) PRIMARY KEY,
        agent VARCHAR(64) NOT NULL,
        host VARCHAR(255) NOT NULL,
        pid INTEGER NOT NULL,
        concurrency INTEGER NOT NULL,
        started_at DOUBLE PRECISION NOT NULL,
        heartbeat_at DOUBLE PRECISION NOT NULL,
        stopped BOOLEAN NOT NULL DEFAULT FALSE
    )""",
    # One row per (connection, bucket): the GCRA's theoretical arrival time, shared by
    # every worker sending through the connection.
    """CREATE TABLE IF NOT EXISTS agent_rate (
        connection VARCHAR(64) NOT NULL,
        bucket VARCHAR(16) NOT NULL,
        tat DOUBLE PRECISION NOT NULL,
        PRIMARY KEY (connection, bucket)
    )""",
    # The connection's slow-down after a 421 / 4.7.x: one for all its workers.
    """CREATE TABLE IF NOT EXISTS agent_throttle (
        connection VARCHAR(64) PRIMARY KEY,
        rate DOUBLE PRECISION NOT NULL,
        ceiling DOUBLE PRECISION NOT NULL,
        step DOUBLE PRECISION NOT NULL,
        pause DOUBLE PRECISION NOT NULL,
        paused_until DOUBLE PRECISION NOT NULL,
        last_change DOUBLE PRECISION NOT NULL,
        complaints INTEGER NOT NULL
    )""",
    # The daily cap's count (the journal's own table, shared with local runs).
    """CREATE TABLE IF NOT EXISTS daily_usage (
        connection VARCHAR(64) PRIMARY KEY,
        day VARCHAR(10) NOT NULL,
        count INTEGER NOT NULL
    )""",
)


def held_briefly(url: str, seconds: float) -> str:
    """``url`` (a PostgreSQL URL) for a connection that never holds a row lock, or waits for
    one, longer than ``seconds``: a worker frozen in the middle of a transaction (SIGSTOP,
    a paused VM) would otherwise keep the others from taking its chunk over; PostgreSQL ends
    its transaction instead, and what it wanted to write is lost with its lease."""
    ms = max(100, int(seconds * 1000))
    options = f"-c idle_in_transaction_session_timeout={ms} -c lock_timeout={ms}"
    parts = urlsplit(url.replace("+psycopg", ""))
    query = [(k, v) for k, v in parse_qsl(parts.query) if k != "options"]
    query_text = urlencode([*query, ("options", options)], quote_via=quote)
    return urlunsplit(parts._replace(query=query_text))


def require_shared_journal(url: str | None = None) -> str:
    """The journal's URL if every host can share it (PostgreSQL); else one clear ConfigError."""
    url = url or database_url()
    if not url.startswith(("postgresql", "postgres")):
        raise ConfigError.for_fields(
            "agents",
            [FieldError("MAILCONDUIT_DB", "celery exports need a journal every host shares: set "
                        "it to a PostgreSQL URL (SQLite lives on one machine only)")],
        )  # fmt: skip
    return url


@dataclasses.dataclass(frozen=True, slots=True)
class FrozenRun:
    """A run's frozen input header: the spec as sent, where its rows came from."""

    run_id: str
    connection: str
    agent: str
    spec: dict[str, Any]
    location: str
    columns: tuple[str, ...]
    total: int
    chunks: int
    retry_failed: bool
    stop_reason: str
    stop_status: str


@dataclasses.dataclass(frozen=True, slots=True)
class FrozenRow:
    """One source row as the coordinator read it: its key, number, cells (encoded) and the
    attachment files (path, sha256) its message reads."""

    position: int
    key: str
    number: int
    line: int | None
    cells: str
    problem: str
    files: tuple[tuple[str, str], ...] = ()


@dataclasses.dataclass(frozen=True, slots=True)
class ChunkInfo:
    """One chunk's row in the table (for lists and progress)."""

    run_id: str
    chunk: int
    first_row: int
    last_row: int
    first_seq: int
    last_seq: int
    state: str
    epoch: int
    owner: str
    attempts: int
    claimed_seq: int
    status: str
    reason: str
    seconds_left: float


@dataclasses.dataclass(frozen=True, slots=True)
class ChunkClaim:
    """A chunk leased to one worker under ``epoch`` until the lease runs out."""

    run_id: str
    chunk: int
    epoch: int
    owner: str
    attempts: int
    first_row: int
    last_row: int
    first_seq: int
    last_seq: int
    claimed_seq: int


@dataclasses.dataclass(frozen=True, slots=True)
class RunStop:
    """What a fenced write or claim learns of its run: why it was asked to stop (empty
    while it runs), with which status, and how many rows failed in it so far."""

    reason: str
    status: str
    failed_rows: int

    @classmethod
    def of(cls, row: Sequence[Any]) -> RunStop:
        return cls(str(row[0]), str(row[1]), int(row[2]))


@dataclasses.dataclass(frozen=True, slots=True)
class WorkerInfo:
    """A worker's last heartbeat, as the registry holds it."""

    worker: str
    agent: str
    host: str
    pid: int
    concurrency: int
    started_at: float
    heartbeat_age: float
    stopped: bool


def live_workers(workers: Iterable[WorkerInfo], dead_after: float) -> list[WorkerInfo]:
    """The workers not stopped whose last heartbeat is at most ``dead_after`` seconds old."""
    return [w for w in workers if not w.stopped and w.heartbeat_age <= dead_after]


def sending_slots(live: Iterable[WorkerInfo]) -> int:
    """How many chunks ``live`` workers send at once (1 at least: a run waiting for one)."""
    return max(1, sum(w.concurrency for w in live))


class AgentStore:
    """The agents' tables, through one psycopg connection (serialised by a lock).

    One per process: a Celery pool child opens its own after the fork (see :meth:`shared`).
    """

    _shared: ClassVar[dict[int, AgentStore]] = {}
    _shared_lock: ClassVar[threading.Lock] = threading.Lock()

    def __init__(self, url: str | None = None, *, hold_seconds: float | None = None) -> None:
        import psycopg

        self.url = require_shared_journal(url)
        self._lock = threading.RLock()
        try:
            self._conn = psycopg.connect(
                held_briefly(self.url, hold_seconds)
                if hold_seconds
                else self.url.replace("+psycopg", ""),
                autocommit=True,
                connect_timeout=10,
            )
        except psycopg.Error as exc:
            reason = " ".join(str(exc).split()) or type(exc).__name__
            raise ConfigError.for_fields("agents", [FieldError("MAILCONDUIT_DB", reason)]) from None
        with self._lock:
            self._ensure_schema()

    def _ensure_schema(self) -> None:
        """The agents' tables, made when missing: checked first, since the DDL is not free
        (a CREATE INDEX, even of one that exists, waits for the workers' writes to its table)."""
        present = self._conn.execute(
            "SELECT to_regclass('ix_agent_chunks_state') IS NOT NULL AND to_regclass("
            "'agent_throttle') IS NOT NULL AND EXISTS (SELECT 1 FROM information_schema.columns "
            "WHERE table_name = 'agent_runs' AND column_name = 'failed_rows')"
        ).fetchone()
        if not (present and present[0]):
            self._ddl(";\n".join(_DDL))  # one round trip

    @classmethod
    def shared(cls, *, hold_seconds: float | None = None) -> AgentStore:
        """This process's store (a new one after a fork: a connection is never shared)."""
        pid = os.getpid()
        with cls._shared_lock:
            store = cls._shared.get(pid)
            if store is None:
                store = cls._shared[pid] = cls(hold_seconds=hold_seconds)
            return store

    def _ddl(self, statement: str) -> None:
        import psycopg

        for attempt in range(5):
            try:
                self._conn.execute(statement)
                return
            except psycopg.Error:  # two processes creating a table or index at once
                if attempt == 4:
                    raise
                time.sleep(0.1 * (attempt + 1))

    def close(self) -> None:
        with self._lock:
            self._conn.close()

    def _query(self, sql: str, params: Sequence[Any] = ()) -> list[Any]:
        with self._lock:
            return list(self._conn.execute(sql, params).fetchall())

    def _execute(self, sql: str, params: Sequence[Any] = ()) -> int:
        with self._lock:
            return int(self._conn.execute(sql, params).rowcount or 0)

    def now(self) -> float:
        """The shared clock (PostgreSQL's)."""
        return float(self._query(f"SELECT {_NOW}")[0][0])

    # -- frozen input ----------------------------------------------------------------------

    def freeze_run(
        self,
        run: FrozenRun,
        rows: Iterable[FrozenRow],
        blobs: Iterable[tuple[str, bytes]],
    ) -> int:
        """Store a run's input once (rows by COPY, each file's bytes once); returns rows."""
        count = 0
        with self._lock, self._conn.transaction(), self._conn.cursor() as cur:
            cur.execute(
                "INSERT INTO agent_runs (run_id, connection, agent, spec, location, columns, "
                f"total, chunks, retry_failed, created_at) VALUES "
                f"(%s, %s, %s, %s, %s, %s, %s, %s, %s, {_NOW})",
                (run.run_id, run.connection, run.agent, json.dumps(run.spec, default=str),
                 run.location, json.dumps(list(run.columns)), run.total, run.chunks,
                 run.retry_failed),
            )  # fmt: skip
            with cur.copy(
                "COPY agent_rows (run_id, position, row_key, row_number, line, cells, problem, "
                "files) FROM STDIN"
            ) as copy:
                for row in rows:
                    files = json.dumps([list(f) for f in row.files]) if row.files else "[]"
                    copy.write_row(
                        (run.run_id, row.position, row.key, row.number, row.line, row.cells,
                         row.problem, files)
                    )  # fmt: skip
                    count += 1
            for sha, data in blobs:
                cur.execute(
                    "INSERT INTO agent_blobs (run_id, sha, data) VALUES (%s, %s, %s) "
                    "ON CONFLICT DO NOTHING",
                    (run.run_id, sha, data),
                )
        return count

    def frozen_run(self, run_id: str) -> FrozenRun | None:
        rows = self._query(
            "SELECT run_id, connection, agent, spec, location, columns, total, chunks, "
            "retry_failed, stop_reason, stop_status FROM agent_runs WHERE run_id = %s",
            (run_id,),
        )
        if not rows:
            return None
        r = rows[0]
        return FrozenRun(r[0], r[1], r[2], json.loads(r[3]), r[4], tuple(json.loads(r[5])),
                         int(r[6]), int(r[7]), bool(r[8]), r[9], r[10])  # fmt: skip

    def frozen_rows(self, run_id: str, first: int, last: int) -> list[FrozenRow]:
        """The frozen rows at positions ``first`` to ``last`` (1-based, inclusive), in order."""
        rows = self._query(
            "SELECT position, row_key, row_number, line, cells, problem, files FROM agent_rows "
            "WHERE run_id = %s AND position BETWEEN %s AND %s ORDER BY position",
            (run_id, first, last),
        )
        return [
            FrozenRow(r[0], r[1], r[2], r[3], r[4], r[5],
                      () if r[6] == "[]" else tuple(tuple(f) for f in json.loads(r[6])))
            for r in rows
        ]  # fmt: skip

    def blob_count(self, run_id: str) -> int:
        """How many distinct files the run's input holds."""
        return int(
            self._query("SELECT COUNT(*) FROM agent_blobs WHERE run_id = %s", (run_id,))[0][0]
        )

    def blobs(self, run_id: str, shas: Sequence[str]) -> Iterator[tuple[str, bytes]]:
        for sha, data in self._query(
            "SELECT sha, data FROM agent_blobs WHERE run_id = %s AND sha = ANY(%s)",
            (run_id, list(shas)),
        ):
            yield str(sha), bytes(data)

    # -- chunks ----------------------------------------------------------------------------

    def add_chunks(self, run_id: str, chunks: Sequence[tuple[int, int, int, int]]) -> None:
        """Queue the run's chunks: (first row, last row, first seq, last seq) each."""
        with self._lock, self._conn.transaction(), self._conn.cursor() as cur:
            cur.executemany(
                "INSERT INTO agent_chunks (run_id, chunk, first_row, last_row, first_seq, "
                f"last_seq, state, updated_at) VALUES (%s, %s, %s, %s, %s, %s, 'queued', {_NOW})",
                [(run_id, n, *c) for n, c in enumerate(chunks, 1)],
            )
            cur.execute(
                "UPDATE agent_runs SET chunks = %s WHERE run_id = %s", (len(chunks), run_id)
            )

    def mark_published(self, run_id: str, chunks: Sequence[int]) -> None:
        self._execute(
            f"UPDATE agent_chunks SET published_at = {_NOW} WHERE run_id = %s AND chunk = ANY(%s)",
            (run_id, list(chunks)),
        )

    _CLAIM_SET = (
        f"UPDATE agent_chunks c SET epoch = c.epoch + 1, owner = %s, expires_at = {_NOW} + %s, "
        f"state = 'running', attempts = c.attempts + 1, updated_at = {_NOW} "
        "FROM agent_runs r WHERE c.run_id = %s AND r.run_id = c.run_id AND r.stop_reason = '' "
    )
    _CLAIM_RETURNING = (
        "RETURNING c.chunk, c.epoch, c.attempts, c.first_row, c.last_row, c.first_seq, "
        "c.last_seq, c.claimed_seq"
    )

    def claim(self, run_id: str, chunk: int, *, owner: str, ttl: float) -> ChunkClaim | None:
        """Lease the chunk to ``owner`` under a new epoch; None when it is done, stopped, or
        leased by a live worker (a duplicated or redelivered task then does nothing)."""
        rows = self._query(
            self._CLAIM_SET + "AND c.chunk = %s "
            f"AND (c.state = 'queued' OR (c.state = 'running' AND c.expires_at <= {_NOW})) "
            + self._CLAIM_RETURNING,
            (owner, float(ttl), run_id, chunk),
        )
        return self._claimed(run_id, owner, rows)

    def claim_next(
        self, run_id: str, *, owner: str, ttl: float, max_rows: int = 0, workers: int = 1
    ) -> ChunkClaim | None:
        """Lease the run's first queued chunk to ``owner`` (a worker that has just ended a
        chunk goes on with the next one, its task message then finds it taken); None when
        no chunk is queued or the run was asked to stop.

        With ``max_rows``, the queued chunks right after it that no worker has tried yet are
        merged into it while the whole holds at most ``max_rows`` rows and at most a half of
        an even share of the rows still queued among ``workers`` (guided self-scheduling: the
        chunks taken shrink as the run nears its end, so the workers end together). Their
        own task messages then find no chunk and return.
        """
        with self._lock, self._conn.transaction(), self._conn.cursor() as cur:
            queued = cur.execute(
                "SELECT c.chunk, c.first_row, c.last_row, c.first_seq, c.last_seq, c.attempts "
                "FROM agent_chunks c JOIN agent_runs r ON r.run_id = c.run_id "
                "WHERE c.run_id = %s AND c.state = 'queued' AND r.stop_reason = '' "
                "ORDER BY c.chunk FOR UPDATE OF c SKIP LOCKED",
                (run_id,),
            ).fetchall()
            if not queued:
                return None
            first = queued[0]
            left = sum(int(q[2]) - int(q[1]) + 1 for q in queued)
            most = min(max_rows, -(-left // (2 * max(1, workers))))
            last, rows, merged = first, int(first[2]) - int(first[1]) + 1, []
            for q in queued[1:]:
                size = int(q[2]) - int(q[1]) + 1
                contiguous = int(q[1]) == int(last[2]) + 1 and int(q[3]) == int(last[4]) + 1
                if not contiguous or int(q[5]) or rows + size > most:
                    break
                merged.append(int(q[0]))
                last, rows = q, rows + size
            if merged:
                cur.execute(
                    "DELETE FROM agent_chunks WHERE run_id = %s AND chunk = ANY(%s)",
                    (run_id, merged),
                )
                cur.execute(
                    "UPDATE agent_chunks SET last_row = %s, last_seq = %s "
                    "WHERE run_id = %s AND chunk = %s",
                    (last[2], last[4], run_id, first[0]),
                )
                cur.execute(
                    "UPDATE agent_runs SET chunks = chunks - %s WHERE run_id = %s",
                    (len(merged), run_id),
                )
            claimed = cur.execute(
                self._CLAIM_SET + "AND c.chunk = %s AND c.state = 'queued' "
                + self._CLAIM_RETURNING,
                (owner, float(ttl), run_id, first[0]),
            ).fetchall()
        return self._claimed(run_id, owner, claimed)

    @staticmethod
    def _claimed(run_id: str, owner: str, rows: list[Any]) -> ChunkClaim | None:
        if not rows:
            return None
        n, e, a, fr, lr, fs, ls, cs = rows[0]
        return ChunkClaim(run_id, int(n), int(e), owner, int(a), int(fr), int(lr), int(fs),
                          int(ls), int(cs))  # fmt: skip

    def renew(self, claim: ChunkClaim, *, ttl: float) -> tuple[bool, str]:
        """Extend the lease; (False, "") once another epoch holds the chunk. The second item
        is the run's stop reason, when someone asked it to stop."""
        rows = self._query(
            f"UPDATE agent_chunks c SET expires_at = {_NOW} + %s FROM agent_runs r "
            "WHERE c.run_id = %s AND c.chunk = %s AND c.epoch = %s AND c.state = 'running' "
            "AND r.run_id = c.run_id RETURNING r.stop_reason",
            (float(ttl), claim.run_id, claim.chunk, claim.epoch),
        )
        if not rows:
            return False, ""
        return True, str(rows[0][0])

    def record_claimed(self, claim: ChunkClaim, seq: int) -> RunStop | None:
        """Rows of the chunk up to ``seq`` are handed towards a session (fenced); None once
        another epoch holds the chunk, else whether the run was asked to stop."""
        rows = self._query(
            "UPDATE agent_chunks c SET claimed_seq = GREATEST(c.claimed_seq, %s) "
            "FROM agent_runs r WHERE c.run_id = %s AND c.chunk = %s AND c.epoch = %s "
            "AND c.state = 'running' AND r.run_id = c.run_id "
            "RETURNING r.stop_reason, r.stop_status, r.failed_rows",
            (seq, claim.run_id, claim.chunk, claim.epoch),
        )
        return RunStop.of(rows[0]) if rows else None

    def end_chunk(self, claim: ChunkClaim, *, state: str, status: str, reason: str) -> bool:
        """Record how this attempt at the chunk ended (fenced: only the lease holder can)."""
        return bool(
            self._execute(
                f"UPDATE agent_chunks SET state = %s, status = %s, reason = %s, expires_at = 0, "
                f"updated_at = {_NOW} WHERE run_id = %s AND chunk = %s AND epoch = %s "
                "AND state = 'running'",
                (state, status, reason[:2000], claim.run_id, claim.chunk, claim.epoch),
            )
        )

    def fail_chunk(self, run_id: str, chunk: int, *, epoch: int, reason: str) -> bool:
        """Give a chunk up for good (it kept killing workers)."""
        return bool(
            self._execute(
                "UPDATE agent_chunks SET state = 'failed', status = 'failed', reason = %s, "
                f"expires_at = 0, updated_at = {_NOW} WHERE run_id = %s AND chunk = %s "
                "AND epoch = %s",
                (reason[:2000], run_id, chunk, epoch),
            )
        )

    def chunks(self, run_id: str) -> list[ChunkInfo]:
        rows = self._query(
            "SELECT run_id, chunk, first_row, last_row, first_seq, last_seq, state, epoch, owner, "
            f"attempts, claimed_seq, status, reason, GREATEST(0, expires_at - {_NOW}) "
            "FROM agent_chunks WHERE run_id = %s ORDER BY chunk",
            (run_id,),
        )
        return [
            ChunkInfo(str(r[0]), int(r[1]), int(r[2]), int(r[3]), int(r[4]), int(r[5]), str(r[6]),
                      int(r[7]), str(r[8]), int(r[9]), int(r[10]), str(r[11]), str(r[12]),
                      float(r[13]))
            for r in rows
        ]  # fmt: skip

    def chunk_outcomes(self, run_id: str) -> dict[int, dict[str, int]]:
        """chunk → row count by journal state, for the rows each chunk holds."""
        out: dict[int, dict[str, int]] = {}
        for chunk, state, n in self._query(
            "SELECT c.chunk, r.state, COUNT(*) FROM agent_chunks c JOIN run_rows r "
            "ON r.run_id = c.run_id AND r.seq BETWEEN c.first_seq AND c.last_seq "
            "WHERE c.run_id = %s GROUP BY c.chunk, r.state",
            (run_id,),
        ):
            out.setdefault(int(chunk), {})[str(state)] = int(n)
        return out

    def fence_sql(self, claim: ChunkClaim, *, failed: int = 0) -> tuple[str, tuple[Any, ...]]:
        """A statement returning one row while ``claim`` still holds its chunk: the run's
        stop reason and status and its failed rows (see :class:`RunStop`). It locks the
        chunk's row, so a takeover waits for a write guarded by it to commit, or fences it.

        ``failed``: rows failed in the write it guards, added to the run's count in the
        same transaction (so a fenced-out write counts nothing)."""
        fence = (
            "SELECT 1 FROM agent_chunks WHERE run_id = %s AND chunk = %s AND epoch = %s "
            "AND state = 'running' FOR UPDATE"
        )
        key = (claim.run_id, claim.chunk, claim.epoch)
        if not failed:
            return (
                "SELECT r.stop_reason, r.stop_status, r.failed_rows FROM agent_runs r "
                f"WHERE r.run_id = %s AND EXISTS ({fence})",
                (claim.run_id, *key),
            )
        return (
            f"WITH held AS ({fence}) UPDATE agent_runs SET failed_rows = failed_rows + %s "
            "WHERE run_id = %s AND EXISTS (SELECT 1 FROM held) "
            "RETURNING stop_reason, stop_status, failed_rows",
            (*key, int(failed), claim.run_id),
        )

    def expired_chunks(self, *, lease: float, lost: float) -> list[tuple[str, int, str]]:
        """(run id, chunk, agent) of chunks to publish again, in runs not stopped: leased
        and expired (not published again for ``lease`` seconds), or queued and not
        published for ``lost`` seconds (a message the broker lost). Each is marked
        published now, so one reaper publishes it once."""
        return [
            (str(r[0]), int(r[1]), str(r[2]))
            for r in self._query(
                f"UPDATE agent_chunks c SET published_at = {_NOW} FROM agent_runs r "
                "WHERE r.run_id = c.run_id AND r.stop_reason = '' AND ("
                f"(c.state = 'running' AND c.expires_at <= {_NOW} "
                f"AND c.published_at <= {_NOW} - %s) "
                f"OR (c.state = 'queued' AND c.published_at <= {_NOW} - %s)) "
                "RETURNING c.run_id, c.chunk, r.agent",
                (float(lease), float(lost)),
            )
        ]

    def unheard_chunks(self, agent: str, *, quiet: float) -> list[tuple[str, int]]:
        """(run id, chunk) of ``agent``'s chunks queued and published more than ``quiet``
        seconds ago, in runs not stopped (asked when its queue is empty: their messages
        are lost). Each is marked published now, so one worker publishes it once."""
        return [
            (str(r[0]), int(r[1]))
            for r in self._query(
                f"UPDATE agent_chunks c SET published_at = {_NOW} FROM agent_runs r "
                "WHERE r.run_id = c.run_id AND r.agent = %s AND r.stop_reason = '' "
                f"AND c.state = 'queued' AND c.published_at > 0 AND c.published_at <= {_NOW} - %s "
                "RETURNING c.run_id, c.chunk",
                (agent, float(quiet)),
            )
        ]

    def stop_expired(self) -> list[str]:
        """Chunks of stopped runs whose holder died: stopped too. Returns their runs."""
        rows = self._query(
            "UPDATE agent_chunks c SET state = 'stopped', status = r.stop_status, "
            f"reason = r.stop_reason, updated_at = {_NOW} FROM agent_runs r "
            "WHERE r.run_id = c.run_id AND r.stop_reason <> '' AND c.state = 'running' "
            f"AND c.expires_at <= {_NOW} RETURNING c.run_id"
        )
        return sorted({str(r[0]) for r in rows})

    def requeue(self, run_id: str, *, with_failed_rows: bool) -> list[int]:
        """Resume: every chunk not done goes back to the queue (and, for --retry-failed,
        done chunks too: their failed rows go again). Returns the chunks queued."""
        states = (
            "('stopped', 'failed', 'queued', 'running', 'done')"
            if with_failed_rows
            else ("('stopped', 'failed', 'queued', 'running')")
        )
        with self._lock, self._conn.transaction():
            self._conn.execute(
                "UPDATE agent_runs SET stop_reason = '', stop_status = '', retry_failed = %s, "
                "failed_rows = 0 WHERE run_id = %s",
                (with_failed_rows, run_id),
            )
            rows = self._conn.execute(
                "UPDATE agent_chunks SET state = 'queued', status = '', reason = '', "
                f"attempts = 0, epoch = epoch + 1, expires_at = 0, updated_at = {_NOW} "
                f"WHERE run_id = %s AND state IN {states} RETURNING chunk",
                (run_id,),
            ).fetchall()
        return sorted(int(r[0]) for r in rows)

    def set_spec_option(self, run_id: str, name: str, value: Any) -> None:
        """Change one setting of a frozen run (a resume's --[no-]resend-uncertain)."""
        with self._lock, self._conn.transaction():
            row = self._conn.execute(
                "SELECT spec FROM agent_runs WHERE run_id = %s FOR UPDATE", (run_id,)
            ).fetchone()
            if row is None:
                return
            spec = json.loads(row[0])
            spec[name] = value
            self._conn.execute(
                "UPDATE agent_runs SET spec = %s WHERE run_id = %s",
                (json.dumps(spec, default=str), run_id),
            )

    def request_stop(self, run_id: str, *, status: str, reason: str) -> bool:
        """Ask every worker of the run to stop (first reason wins); queued chunks stop now."""
        with self._lock, self._conn.transaction():
            changed = self._conn.execute(
                "UPDATE agent_runs SET stop_reason = %s, stop_status = %s "
                "WHERE run_id = %s AND stop_reason = ''",
                (reason, status, run_id),
            ).rowcount
            self._conn.execute(
                "UPDATE agent_chunks SET state = 'stopped', status = %s, reason = %s, "
                f"updated_at = {_NOW} WHERE run_id = %s AND state = 'queued'",
                (status, reason, run_id),
            )
        return bool(changed)

    # -- workers ---------------------------------------------------------------------------

    def heartbeat(self, *, worker: str, agent: str, host: str, pid: int, concurrency: int) -> None:
        self._execute(
            "INSERT INTO agent_workers (worker, agent, host, pid, concurrency, started_at, "
            f"heartbeat_at, stopped) VALUES (%s, %s, %s, %s, %s, {_NOW}, {_NOW}, FALSE) "
            "ON CONFLICT (worker) DO UPDATE SET heartbeat_at = excluded.heartbeat_at, "
            "stopped = FALSE",
            (worker, agent, host, pid, concurrency),
        )

    def worker_stopped(self, worker: str) -> None:
        self._execute("UPDATE agent_workers SET stopped = TRUE WHERE worker = %s", (worker,))

    def workers(self, agent: str | None = None) -> list[WorkerInfo]:
        sql = (
            "SELECT worker, agent, host, pid, concurrency, started_at, "
            f"{_NOW} - heartbeat_at, stopped FROM agent_workers"
        )
        params: tuple[Any, ...] = ()
        if agent is not None:
            sql += " WHERE agent = %s"
            params = (agent,)
        rows = self._query(sql + " ORDER BY agent, host, worker", params)
        return [WorkerInfo(r[0], r[1], r[2], int(r[3]), int(r[4]), float(r[5]), float(r[6]),
                           bool(r[7])) for r in rows]  # fmt: skip

    def chunk_counts(self) -> dict[str, dict[str, int]]:
        """agent → {queued, running} chunks, over runs not stopped."""
        out: dict[str, dict[str, int]] = {}
        for agent, state, n in self._query(
            "SELECT r.agent, c.state, COUNT(*) FROM agent_chunks c JOIN agent_runs r "
            "ON r.run_id = c.run_id WHERE c.state IN ('queued', 'running') "
            "GROUP BY r.agent, c.state"
        ):
            out.setdefault(str(agent), {})[str(state)] = int(n)
        return out

    # -- connection-wide rate ----------------------------------------------------------------

    def acquire(
        self,
        connection: str,
        buckets: Sequence[tuple[str, float, float]],
        *,
        daily_cap: int,
        min_rate: float,
        recovery_interval: float,
    ) -> tuple[float, bool]:
        """One message through the connection's shared limit, atomically for all workers.

        ``buckets``: (name, interval between messages, tolerance) each, a GCRA per bucket;
        the slow-down after a 421 adds its own. Returns (seconds to wait, 0 when granted;
        True when the daily cap is used up). Nothing is taken unless everything grants.
        """
        day = dt.datetime.now(dt.UTC).date().isoformat()
        with self._lock, self._conn.transaction(), self._conn.cursor() as cur:
            now = float(cur.execute(f"SELECT {_NOW}").fetchone()[0])  # type: ignore[index]
            wanted = list(buckets)
            throttle = cur.execute(
                "SELECT rate, ceiling, step, paused_until, last_change FROM agent_throttle "
                "WHERE connection = %s FOR UPDATE",
                (connection,),
            ).fetchone()
            if throttle is not None:
                rate, ceiling, step, paused_until, last_change = (float(v) for v in throttle)
                if now < paused_until:
                    return paused_until - now, False
                if now - last_change >= recovery_interval:
                    steps = int((now - last_change) // recovery_interval)
                    rate = min(ceiling, rate + steps * step)
                    last_change += steps * recovery_interval
                    if rate >= ceiling:
                        cur.execute(
                            "DELETE FROM agent_throttle WHERE connection = %s", (connection,)
                        )
                    else:
                        cur.execute(
                            "UPDATE agent_throttle SET rate = %s, last_change = %s "
                            "WHERE connection = %s",
                            (rate, last_change, connection),
                        )
                if rate < ceiling:
                    wanted.append(("adaptive", 1.0 / max(rate, min_rate), 0.0))
            if not wanted and not daily_cap:
                return 0.0, False
            names = [b[0] for b in wanted]
            cur.executemany(
                "INSERT INTO agent_rate (connection, bucket, tat) VALUES (%s, %s, 0) "
                "ON CONFLICT DO NOTHING",
                [(connection, n) for n in names],
            )
            tats: dict[str, float] = dict(
                cur.execute(
                    "SELECT bucket, tat FROM agent_rate WHERE connection = %s "
                    "AND bucket = ANY(%s) ORDER BY bucket FOR UPDATE",
                    (connection, names),
                ).fetchall()
            )
            wait = 0.0
            new: list[tuple[float, str]] = []
            for name, interval, tolerance in wanted:
                tat = max(float(tats.get(name, 0.0)), now)
                wait = max(wait, tat - tolerance - now)
                new.append((tat + interval, name))
            if wait > 0:
                return wait, False
            if daily_cap:
                counted = cur.execute(
                    "INSERT INTO daily_usage (connection, day, count) VALUES (%s, %s, 1) "
                    "ON CONFLICT (connection) DO UPDATE SET "
                    "count = CASE WHEN daily_usage.day = excluded.day THEN daily_usage.count + 1 "
                    "ELSE 1 END, day = excluded.day "
                    "WHERE daily_usage.day <> excluded.day OR daily_usage.count < %s "
                    "RETURNING count",
                    (connection, day, daily_cap),
                ).fetchone()
                if counted is None:
                    return 0.0, True
            cur.executemany(
                "UPDATE agent_rate SET tat = %s WHERE bucket = %s AND connection = %s",
                [(tat, name, connection) for tat, name in new],
            )
        return 0.0, False

    def throttle(
        self,
        connection: str,
        *,
        base_rate: float,
        pause: float,
        max_pause: float,
        decrease: float,
        min_rate: float,
        recovery_fraction: float,
    ) -> bool:
        """The server asked the connection to slow down: halve its shared rate and pause it,
        once for every complaint heard during a pause in force. True if this cut it."""
        with self._lock, self._conn.transaction(), self._conn.cursor() as cur:
            now = float(cur.execute(f"SELECT {_NOW}").fetchone()[0])  # type: ignore[index]
            row = cur.execute(
                "SELECT rate, pause, paused_until FROM agent_throttle WHERE connection = %s "
                "FOR UPDATE",
                (connection,),
            ).fetchone()
            if row is not None and now < float(row[2]):
                cur.execute(
                    "UPDATE agent_throttle SET complaints = complaints + 1 WHERE connection = %s",
                    (connection,),
                )
                return False
            if row is None:
                rate = max(base_rate * decrease, min(min_rate, base_rate))
                cur.execute(
                    "INSERT INTO agent_throttle (connection, rate, ceiling, step, pause, "
                    "paused_until, last_change, complaints) VALUES (%s, %s, %s, %s, %s, %s, %s, 1) "
                    "ON CONFLICT (connection) DO NOTHING",
                    (connection, rate, base_rate, max(base_rate * recovery_fraction, min_rate),
                     pause, now + pause, now + pause),
                )  # fmt: skip
                return True
            rate = max(float(row[0]) * decrease, min_rate)
            current = min(float(row[1]) * 2.0, max_pause)
            cur.execute(
                "UPDATE agent_throttle SET rate = %s, pause = %s, paused_until = %s, "
                "last_change = %s, complaints = complaints + 1 WHERE connection = %s",
                (rate, current, now + current, now + current, connection),
            )
            return True

    def throttle_state(self, connection: str) -> tuple[float, int] | None:
        """The connection's slowed-down rate and how many complaints it heard, if slowed."""
        rows = self._query(
            "SELECT rate, complaints FROM agent_throttle WHERE connection = %s", (connection,)
        )
        return (float(rows[0][0]), int(rows[0][1])) if rows else None

    def throttled_until(self, connection: str) -> float | None:
        """Seconds the connection's slow-down still lasts (0 past its pause), None if none."""
        rows = self._query(
            f"SELECT GREATEST(0, paused_until - {_NOW}) FROM agent_throttle WHERE connection = %s",
            (connection,),
        )
        return float(rows[0][0]) if rows else None
