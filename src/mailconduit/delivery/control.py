"""Whether a run goes on: the first reason it stops, and the limits that stop it.

:class:`Control` is asked by every part of a run (producer, feed, sessions, settler)
whether to go on; :class:`ErrorBudget` stops the run as outcomes are known
(``--max-errors``, ``--fail-fast``).
"""

from __future__ import annotations

import asyncio
import contextlib

from mailconduit.config import ExportSpec
from mailconduit.delivery.feed import Work
from mailconduit.journal import RowState, RowStatus, RunStatus

__all__ = ["Control", "ErrorBudget"]


class Control:
    """Owns a run's stop state: why it stops (first reason wins), whether the producer may
    claim more rows, and the events the run's tasks wait on."""

    def __init__(self, work: Work) -> None:
        self._work = work
        self._reason: tuple[RunStatus, str] | None = None
        self._no_more = ""  # set: produce nothing more, let claimed rows finish
        #: Set by the first :meth:`stop`.
        self.halted = asyncio.Event()
        #: Set by a second Ctrl-C: stop waiting for the server.
        self.forced = asyncio.Event()

    def stop(self, status: RunStatus, message: str) -> None:
        """Stop taking new rows; first reason wins. In-flight transactions still finish."""
        if self._reason is None:
            self._reason = (status, message)
        self.halted.set()
        self._work.wakeup.set()
        self._work.space.set()

    @property
    def stopping(self) -> bool:
        return self._reason is not None

    def refused_credentials(self, error: Exception) -> None:
        """The server refused the login: abort the run, nothing more goes out."""
        self.stop(
            RunStatus.ABORTED,
            f"the server refused the credentials: {error}; nothing more was sent",
        )

    def claim_no_more(self, message: str) -> None:
        """Claim no more rows, but let the rows already claimed go out; the run then ends
        aborted with ``message`` (unless it was stopped for another reason)."""
        self._no_more = message
        self._work.space.set()

    @property
    def ending(self) -> bool:
        """True once the producer must claim nothing more."""
        return self._reason is not None or bool(self._no_more)

    def result(self) -> tuple[RunStatus, str]:
        """How the run ended, and why (empty when it finished)."""
        if self._reason is not None:
            return self._reason
        if self._no_more:
            return RunStatus.ABORTED, self._no_more
        return RunStatus.FINISHED, ""

    async def pause(self, seconds: float) -> None:
        """Sleep, but no longer than until the run stops."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.halted.wait(), seconds)

    async def until(self, event: asyncio.Event) -> bool:
        """Wait for ``event``; False if the run stopped first."""
        if not event.is_set():
            waiters = {
                asyncio.ensure_future(event.wait()),
                asyncio.ensure_future(self.halted.wait()),
            }
            try:
                await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
            finally:
                for waiter in waiters:
                    waiter.cancel()
        return event.is_set() and not self.stopping


class ErrorBudget:
    """Owns ``--max-errors`` and ``--fail-fast``: counts failed and skipped rows as their
    outcomes are known, and stops the run when the spec says so."""

    def __init__(self, spec: ExportSpec, control: Control) -> None:
        self._spec = spec
        self._control = control
        self._failed = 0

    def check(self, row: RowState) -> None:
        """Called for every failed or skipped row, as soon as its outcome is known."""
        if row.state == RowStatus.FAILED:
            self._failed += 1
        # Checked as each outcome is known, not at the next flush: a broken server must not
        # get a whole pipeline's worth of rows more than --max-errors allows.
        max_errors = self._spec.max_errors
        if max_errors and self._failed >= max_errors:
            self._control.stop(
                RunStatus.PAUSED,
                f"{self._failed} rows failed (--max-errors {max_errors}); "
                "fix the cause and resume",
            )
        fail_fast = self._spec.fail_fast
        if fail_fast and row.state == RowStatus.SKIPPED:
            # A row that cannot be built: take no more rows, but the rows before it
            # (already claimed) still go out, so the run stops exactly at this row.
            self._control.claim_no_more(
                f"stopped at row {row.row_number}, which cannot be sent (--fail-fast)"
            )
        elif fail_fast:
            self._control.stop(RunStatus.ABORTED, "stopped at the first failed row (--fail-fast)")
