"""What travels between the runner and its sessions: a Job (one message), the Work both
share (jobs ready, open, in flight), and the Feed the sessions pull messages from."""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol

from mailconduit.delivery.ratelimit import RateLimiter
from mailconduit.errors import RunAbortedError
from mailconduit.journal import RunStatus
from mailconduit.smtp import Envelope

__all__ = ["Feed", "Job", "RunControl", "Work"]


@dataclass(slots=True)
class Job:
    """One message on its way: the row it came from and its envelope and bytes."""

    row_key: str
    seq: int
    row_number: int
    sender: str
    recipients: list[str]
    data: bytes
    smtputf8: bool
    message_id: str
    attempts: int = 0
    first_try: float = 0.0
    uncertain_before: bool = False
    envelope: Envelope | None = None
    refused: tuple[tuple[str, int, str], ...] = ()
    narrowed: bool = False  # later transactions carry only ``owed``
    counted_uncertain: bool = False  # already counted in ``uncertain_resent``
    #: Once narrowed: the recipients still owed the message (``recipients`` keeps them all).
    owed: tuple[str, ...] = ()

    def make_envelope(self) -> Envelope:
        if self.envelope is None:
            # crlf: the data comes from mailconduit.message, which builds CRLF only
            self.envelope = Envelope(
                self.sender, tuple(self.recipients), self.data, self.smtputf8, self, True
            )
        return self.envelope

    def narrow(self, owed: Sequence[str]) -> None:
        """Send only to ``owed`` from now on: the others were served or refused for good."""
        self.owed = tuple(owed)
        self.narrowed = True
        self.envelope = Envelope(self.sender, self.owed, self.data, self.smtputf8, self, True)


def _open_event() -> asyncio.Event:
    event = asyncio.Event()
    event.set()
    return event


@dataclass(eq=False)
class Work:
    """The jobs between the producer, the sessions' feed and the settler; all hold this one
    object. It owns the in-flight bookkeeping: which jobs are claimed and not final yet,
    which are with a session, and whether the producer may claim more (the window)."""

    #: Claimed (durable) jobs waiting for a session, retries first.
    ready: deque[Job] = field(default_factory=deque)
    #: ids of jobs claimed and not finalised yet.
    open: set[int] = field(default_factory=set)
    #: id → job, for the jobs handed to a session and not answered yet.
    in_flight: dict[int, Job] = field(default_factory=dict)
    #: Set when ``ready`` gains a job or the run's state changes.
    wakeup: asyncio.Event = field(default_factory=asyncio.Event)
    #: True once the producer has claimed its last job.
    producer_done: bool = False
    #: Most jobs open at once.
    window: int = 64
    #: The producer, once the window is full, waits until this few are open: it then
    #: builds a batch in one go instead of one message per finished one.
    #: Measured: ~120 -> ~90 us of client CPU per message, with Feed's pull (bench/RESULTS.md).
    low_water: int = 32
    #: Set when the producer may claim again (or the run stops).
    space: asyncio.Event = field(default_factory=_open_event)
    #: Second outcomes for a job already final (the first one is kept).
    duplicates: int = 0

    def finish(self, job: Job) -> bool:
        """``job`` has its final outcome: True, or False when it already had one."""
        key = id(job)
        self.in_flight.pop(key, None)
        open_ = self.open
        if key not in open_:
            self.duplicates += 1
            return False
        open_.discard(key)
        if len(open_) <= self.low_water:
            self.space.set()
        if self.producer_done and not open_:
            self.wakeup.set()
        return True

    def put_back(self, job: Job) -> None:
        """A job due for another attempt: first in line."""
        self.ready.appendleft(job)
        self.wakeup.set()


class RunControl(Protocol):
    """What the feed may ask of the run: is it stopping, and stop it."""

    @property
    def stopping(self) -> bool: ...

    def stop(self, status: RunStatus, message: str) -> None: ...


class Feed:
    """The sessions' message source: claimed jobs, pulled at the pace the rate limiter allows.

    Sessions take the next message from inside their read callback (``get_nowait``), so
    a busy pool hands messages over without a task switch; only an idle session waits
    (``get``). Measured: ~120 -> ~90 us of client CPU per message (bench/RESULTS.md). ``None`` means nothing more will come: the run is stopping, or every row
    is done (a row waiting for a retry still counts as to come).
    """

    def __init__(self, work: Work, limiter: RateLimiter | None, control: RunControl) -> None:
        self._work = work
        self._limiter = limiter
        self._control = control
        self._timer: asyncio.TimerHandle | None = None
        self.ended = False

    def get_nowait(self) -> Envelope | None:
        work = self._work
        if self.ended:
            return None
        if self._control.stopping or (work.producer_done and not work.open):
            self.ended = True
            return None
        if not work.ready or self._timer is not None:
            raise asyncio.QueueEmpty
        limiter = self._limiter
        if limiter is not None:
            try:
                wait = limiter.try_acquire()
            except RunAbortedError as exc:
                self._control.stop(RunStatus.PAUSED, str(exc))
                self.ended = True
                return None
            if wait > 0.0:
                self._timer = asyncio.get_running_loop().call_later(wait, self._tick)
                raise asyncio.QueueEmpty
        job = work.ready.popleft()
        work.in_flight[id(job)] = job
        return job.make_envelope()

    async def get(self) -> Envelope | None:
        """The next message, waiting for one; None once nothing more will come."""
        wakeup = self._work.wakeup
        while True:
            try:
                return self.get_nowait()
            except asyncio.QueueEmpty:
                wakeup.clear()
                await wakeup.wait()

    def put_nowait(self, item: Envelope | None) -> None:
        """Sessions put the end marker back for each other; here the end is a state."""
        if item is not None:
            raise ValueError("the runner's feed takes no messages from sessions")

    def _tick(self) -> None:
        self._timer = None
        self._work.wakeup.set()

    def close(self) -> None:
        self.ended = True
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
