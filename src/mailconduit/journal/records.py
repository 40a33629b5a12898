"""What the journal records: row and run states, a row's entry, a run's header, a run's
lease and the daily cap's count; plain values, free of any store."""

from __future__ import annotations

import datetime as dt
import enum
import json
import re
import time
from dataclasses import dataclass, field
from typing import Any, ClassVar

from mailconduit.view import Record, Shown

__all__ = [
    "FINAL_STATES",
    "DailyUsage",
    "Lease",
    "RowState",
    "RowStatus",
    "RunInfo",
    "RunStatus",
]


class RowStatus(enum.StrEnum):
    """A row's state; the value is what the journal stores."""

    CLAIMED = "claimed"  # handed to a session, outcome not yet known
    SENT = "sent"
    FAILED = "failed"
    SKIPPED = "skipped"
    UNCERTAIN = "uncertain"
    RETRY = "retry"
    #: Never stored: done by an earlier attempt of the run, so not sent again.
    RESUMED = "resumed"
    #: Never stored: a dry run wrote the message to a file.
    WRITTEN = "written"


class RunStatus(enum.StrEnum):
    """A run's state; the value is what the journal stores."""

    RUNNING = "running"
    FINISHED = "finished"
    PAUSED = "paused"
    INTERRUPTED = "interrupted"
    ABORTED = "aborted"
    FAILED = "failed"


FINAL_STATES = frozenset({RowStatus.SENT, RowStatus.FAILED, RowStatus.SKIPPED})


@dataclass(frozen=True, slots=True)
class DailyUsage:
    """How many sends the daily cap has counted on one UTC calendar day."""

    day: dt.date
    count: int


#: Not frozen: one is built per message, and a frozen dataclass sets each field through
#: object.__setattr__. Measured: 1.0-2.5 us against 6-10 us frozen (bench/delivery_bench.py, load 10-16).
#: Treat it as read-only all the same (so are the runner's Job and Outcome, for this reason).
@dataclass(slots=True)
class RowState:
    """One row's journal entry; also the per-row line of a report."""

    row_key: str
    seq: int
    row_number: int
    state: RowStatus
    attempts: int = 0
    recipients: tuple[str, ...] = ()
    message_id: str = ""
    code: int = 0
    enhanced: str = ""
    reply: str = ""
    column: str = ""
    detail: tuple[tuple[str, int, str], ...] = ()
    updated_at: float = 0.0
    #: Set only for a row some of whose recipients already have their answer (accepted, or
    #: refused for good): the ones a later attempt sends to. A failed row's are all those
    #: not served (what --retry-failed sends to). Empty: a later attempt sends to all.
    owed: tuple[str, ...] = ()

    def as_params(self, run_id: str) -> tuple[Any, ...]:
        return (
            run_id,
            self.row_key,
            self.seq,
            self.row_number,
            self.state,
            self.attempts,
            _json_strings(self.recipients),
            self.message_id,
            self.code,
            self.enhanced,
            self.reply[:4000],
            self.column,
            json.dumps([list(d) for d in self.detail]) if self.detail else "",
            self.updated_at or time.time(),
            _json_strings(self.owed) if self.owed else "",
        )


#: A string JSON writes as it is between two quotes (printable ASCII, no quote, no backslash).
_JSON_PLAIN = re.compile(r'[ !#-\[\]-~]*').fullmatch


def _json_strings(items: tuple[str, ...]) -> str:
    """``json.dumps(list(items))``, with a shortcut for the usual one plain address.

    Measured: 1.0-1.6 us against 4.6-9.8 us for json.dumps (bench/delivery_bench.py).
    """
    if len(items) == 1 and _JSON_PLAIN(items[0]):
        return f'["{items[0]}"]'
    return json.dumps(list(items))


@dataclass(frozen=True, slots=True)
class RunInfo(Record):
    """A run's header and its row counts by state."""

    run_id: str
    status: RunStatus
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
    #: Every row up to this position was claimed (handed towards a session); those with
    #: no outcome in the journal may or may not have been delivered.
    claimed_seq: int = 0

    @property
    def done(self) -> int:
        return sum(self.counts.get(s, 0) for s in FINAL_STATES)

    #: What a run list shows (not its spec, fingerprint or claimed position).
    _SHOWN: ClassVar[Shown] = (
        "run_id",
        "status",
        "connection",
        "mode",
        "created_at",
        "updated_at",
        "finished_at",
        "total",
        "message",
        "counts",
    )


@dataclass(frozen=True, slots=True)
class Lease:
    """Who holds a run's lease (``owner``, from which ``home``) and until when.

    Times are seconds since the epoch on the store's clock (PostgreSQL's, shared by every
    host); ``now`` is that clock when the lease was read.
    """

    run_id: str
    owner: str
    home: str
    expires_at: float
    now: float

    @property
    def seconds_left(self) -> float:
        return max(0.0, self.expires_at - self.now)

