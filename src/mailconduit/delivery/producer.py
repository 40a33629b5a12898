"""Claiming rows: jobs built from the row source, claimed in the journal in batches, and
handed to the sessions once their claim is durable."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Iterator

from mailconduit.delivery.feed import Job
from mailconduit.delivery.parts import RunParts
from mailconduit.journal import RowState, RowStatus

__all__ = ["CLAIM_BATCH", "YIELD_BYTES", "Producer"]

#: Most rows claimed in one journal transaction.
CLAIM_BATCH = 512
#: The producer lets the sessions write after building this many bytes of messages (or 64
#: messages), so a batch of large messages does not hold the loop while the server waits.
#: Receipt (2,000 invoices of 135 KB, 4 runs each, bench/RESULTS.md): 2.68 s -> 2.15 s wall.
YIELD_BYTES = 256 * 1024


class Producer:
    """Owns the claiming of a run's rows: a batch's claim is written while the next batch
    is being built, its jobs reach the sessions once it is durable, and no more than the
    window of jobs is open at once. Rows that need no sending (resumed, skipped, held
    uncertain) go straight to the recorder."""

    def __init__(self, jobs: Iterator[Job | RowState], parts: RunParts) -> None:
        self._jobs = jobs
        self._parts = parts
        self._work = parts.work  # read for every row
        self._claims: list[int] = []  # seqs of the jobs built since the last claim
        self._built: list[Job] = []  # those jobs
        self._writing: asyncio.Future[None] | None = None  # the claim being written
        self._written: list[Job] = []  # its jobs

    async def run(self) -> None:
        """Claim every row of the source, or until the run stops."""
        work, control = self._work, self._parts.control
        counters, recorder = self._parts.counters, self._parts.recorder
        count = 0
        built = 0  # bytes built since the loop last ran the sessions
        try:
            for item in self._jobs:
                if control.ending:
                    break
                if isinstance(item, RowState):
                    if item.state is RowStatus.RESUMED:
                        counters.resumed += 1
                    else:
                        recorder.record(item)  # skipped (invalid) or held uncertain
                    continue
                self._open(item)
                count += 1
                writing = self._writing
                idle = not work.ready and (writing is None or writing.done())
                if len(self._claims) >= CLAIM_BATCH or (idle and len(self._claims) >= 8):
                    await self._hand_over()
                    self._start_claim()
                elif writing is not None and writing.done():
                    await self._hand_over()
                if len(work.open) >= work.window:
                    await self._wait_for_room()
                built += len(item.data)
                if count % 64 == 0 or built >= YIELD_BYTES:
                    built = 0
                    await asyncio.sleep(0)
            await self._hand_over()
            if self._claims and not control.stopping:
                self._start_claim()
                await self._hand_over()
        finally:
            # A batch whose claim was being written when the run stopped is journaled as
            # claimed: hand it over so the run's end records it as not sent (retry).
            if self._writing is not None:
                with contextlib.suppress(Exception):
                    await self._writing
                work.ready.extend(self._written)
            work.producer_done = True
            work.wakeup.set()

    def _open(self, job: Job) -> None:
        """One more attempt of ``job``, in the next claim."""
        if job.uncertain_before:
            self._parts.counters.uncertain_resent += 1
            job.counted_uncertain = True
        job.attempts += 1
        job.first_try = time.monotonic()
        self._claims.append(job.seq)
        self._built.append(job)
        self._work.open.add(id(job))

    def _start_claim(self) -> None:
        """Start writing the claim of the jobs built so far (after :meth:`_hand_over`)."""
        self._writing, self._written = self._parts.recorder.claim(self._claims), self._built
        self._claims, self._built = [], []

    async def _hand_over(self) -> None:
        """Once the claim being written is durable, its jobs are ready for the sessions."""
        if self._writing is not None:
            await self._writing
            self._work.ready.extend(self._written)
            self._work.wakeup.set()
            self._writing, self._written = None, []

    async def _wait_for_room(self) -> None:
        """The window is full: claim what is built, then wait until the open jobs are few."""
        work, control = self._work, self._parts.control
        await self._hand_over()
        if self._claims:
            self._start_claim()
            await self._hand_over()
        while len(work.open) > work.low_water and not control.ending:
            work.space.clear()
            await work.space.wait()
