"""What becomes of a job once its session has answered: a final row state, or another try.

The retry and slow-down policy of a run: transient failures go again after a back-off
(:func:`~mailconduit.delivery.retry.next_delay`), the accepted recipients of a partly
deferred message are not sent to twice, a throttling reply slows the rate limiter down,
and a row one of whose attempts may have been delivered is never journaled as failed.
"""

from __future__ import annotations

import asyncio
import time

from mailconduit.config import ExportSpec
from mailconduit.delivery.feed import Job
from mailconduit.delivery.outcome import Outcome, outcome_of, pending_state, row_state
from mailconduit.delivery.parts import RunParts
from mailconduit.delivery.retry import next_delay
from mailconduit.errors import AuthenticationError
from mailconduit.journal import RowState, RowStatus
from mailconduit.smtp import DeliveryStatus, RecipientStatus, SendOutcome

__all__ = ["Settler"]


class Settler:
    """Owns the decision on each answered job (final, or tried again) and the retry timers;
    final row states go to the :class:`~mailconduit.delivery.recorder.Recorder`."""

    def __init__(self, spec: ExportSpec, parts: RunParts, *, resend_uncertain: bool) -> None:
        self._spec = spec
        self._parts = parts
        self._work = parts.work  # read for every message, as is the recorder
        self._recorder = parts.recorder
        self._resend_uncertain = resend_uncertain
        self._retry_handles: dict[asyncio.TimerHandle, Job] = {}

    def on_send(self, outcome: SendOutcome) -> None:
        """The sessions' outcome callback (called from inside the read callback: short)."""
        job = outcome.token
        assert isinstance(job, Job)
        if isinstance(outcome.error, AuthenticationError):
            self._parts.control.refused_credentials(outcome.error)
        if (
            outcome.status is DeliveryStatus.SENT
            and not job.refused
            and all(r.status is RecipientStatus.ACCEPTED for r in outcome.recipients)
        ):  # the common case: no refused or deferred recipient to sort out
            # Measured: 0.55-0.8 us against 5.6-8 us through outcome_of (bench/delivery_bench.py).
            self.finish(job, row_state(job, RowStatus.SENT, Outcome(DeliveryStatus.SENT, outcome.code, outcome.enhanced, outcome.text)))
            return
        self.on_outcome(job, outcome_of(outcome))

    def finish(self, job: Job, state: RowState) -> None:
        """``job`` is final in ``state`` (a second outcome for the same job is dropped)."""
        if not self._work.finish(job):
            return
        # Job and envelope refer to each other: unlinked, the message's bytes are freed now,
        # not at the next full garbage collection (hundreds of messages later: 100 MB of
        # invoices with their PDFs).
        job.envelope = None
        self._recorder.record(state)

    def on_outcome(self, job: Job, outcome: Outcome) -> None:
        """Sort out any outcome but a plain success: final, or another try."""
        status = outcome.status
        if outcome.refused:
            # Refused in this transaction for good; a later one (452 deferrals) must not drop them.
            known = {r[0] for r in outcome.refused}
            job.refused = tuple(r for r in job.refused if r[0] not in known) + outcome.refused
        if status is DeliveryStatus.SENT:
            if outcome.deferred:
                # 452 for some recipients: the accepted ones got it; the rest go again alone.
                self.retry(job, outcome, recipients=list(outcome.deferred))
                return
            self.finish(job, row_state(job, RowStatus.SENT, outcome))
            return
        if status is DeliveryStatus.FAILED:
            self.finish(job, row_state(job, RowStatus.FAILED, outcome))
            return
        limiter = self._parts.limiter
        if outcome.throttled and limiter is not None:
            limiter.throttle()
        if status is DeliveryStatus.UNCERTAIN and not self._resend_uncertain:
            self.finish(job, row_state(job, RowStatus.UNCERTAIN, outcome))
            return
        if status is DeliveryStatus.UNCERTAIN:
            job.uncertain_before = True
            # Not resent in this run: the journal must say uncertain.
            if self._parts.control.stopping:
                self.finish(job, row_state(job, RowStatus.UNCERTAIN, outcome))
                return
        if outcome.refused and outcome.deferred:
            # Some refused for good, the rest deferred: only the deferred ones go again.
            self.retry(job, outcome, recipients=list(outcome.deferred))
            return
        self.retry(job, outcome)

    def retry(self, job: Job, outcome: Outcome, *, recipients: list[str] | None = None) -> None:
        """Try the job again after a back-off, or give up on it (failed) when the policy says so.

        ``recipients``: only these are tried again (the others were served or refused); the
        journal learns it at once, so a run stopped or killed before they are served
        resends to them only.
        """
        if recipients is not None:
            job.narrow(recipients)
        delay = next_delay(self._spec.retry, job.attempts, elapsed=time.monotonic() - job.first_try)
        if delay is None:
            self._give_up(job, outcome)
            return
        # Not final: resume sends it (to the recipients still owed).
        if self._parts.control.stopping:
            self.finish(job, row_state(job, pending_state(job, RowStatus.RETRY), outcome))
            return
        if recipients is not None and self._recorder.journaled:
            # Partly delivered: journaled as in progress with the recipients still owed (one
            # more write, for such rows only), overwritten by the row's outcome later.
            self._recorder.note(row_state(job, RowStatus.CLAIMED, outcome))
        counters = self._parts.counters
        if job.uncertain_before and not job.counted_uncertain:
            job.counted_uncertain = True
            counters.uncertain_resent += 1
        self._work.in_flight.pop(id(job), None)
        if not job.narrowed:
            job.envelope = None
        counters.retrying += 1
        loop = asyncio.get_running_loop()

        def again() -> None:
            self._retry_handles.pop(handle, None)
            counters.retrying -= 1
            job.attempts += 1
            self._work.put_back(job)

        handle = loop.call_later(delay, again)
        self._retry_handles[handle] = job

    def _give_up(self, job: Job, outcome: Outcome) -> None:
        """The retry policy says no more attempts: the row's final state."""
        text = f"gave up after {job.attempts} attempt(s): {outcome.text}".strip()
        if job.uncertain_before and outcome.status is not DeliveryStatus.UNCERTAIN:
            text += "; an earlier attempt may have been delivered"
        # When other recipients already had their answer, the ones still deferred
        # are listed too: the row's detail then accounts for every recipient.
        answered = {r[0] for r in outcome.refused}
        left = tuple(r for r in (job.owed if job.narrowed else job.recipients) if r not in answered)
        gave_up = tuple((r, outcome.code, outcome.text) for r in left) if job.narrowed else ()
        final = Outcome(outcome.status, outcome.code, outcome.enhanced, text, outcome.refused + gave_up)
        # A row one of whose attempts may have been delivered is not "failed": it
        # stays uncertain (resume resends it with the same Message-ID, or holds it).
        state = pending_state(job, RowStatus.FAILED)
        self.finish(job, row_state(job, state, final, owed=left))

    def cancel_retries(self) -> None:
        """The run ends: jobs waiting for their next attempt go back to the ready queue."""
        for handle, job in list(self._retry_handles.items()):
            handle.cancel()
            self._work.ready.append(job)
        self._retry_handles.clear()

    def settle_leftovers(self) -> None:
        """Rows never written to a server go back to pending; in-flight ones are uncertain."""
        work = self._work
        for job in list(work.ready):
            self._recorder.record(
                row_state(
                    job,
                    pending_state(job, RowStatus.RETRY),
                    Outcome(DeliveryStatus.RETRY, text="not sent before the run stopped"),
                )
            )
        work.ready.clear()
        for job in list(work.in_flight.values()):
            self._recorder.record(
                row_state(
                    job,
                    RowStatus.UNCERTAIN,
                    Outcome(
                        DeliveryStatus.UNCERTAIN,
                        text="the run stopped while this message was with the server",
                    ),
                )
            )
        work.in_flight.clear()
