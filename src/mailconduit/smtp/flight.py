"""The transactions of one connection that are written and not answered yet, and the
report of each one's outcome, exactly once."""

from __future__ import annotations

import asyncio
import collections
import contextlib
from collections.abc import Callable

from mailconduit.errors import SMTPError, TransientSMTPError
from mailconduit.smtp.outcome import SendOutcome
from mailconduit.smtp.protocol import ReplyStream
from mailconduit.smtp.replies import Reply
from mailconduit.smtp.transaction import Transaction, decide_outcome

__all__ = ["Flight"]


class Flight:
    """Owns the transactions in flight on one connection and the outcome callback of the
    stream in progress: each transaction's outcome is decided and reported once, and a
    caller waiting for the connection to go idle is woken when the last one ends."""

    def __init__(self, protocol: ReplyStream, *, host: str) -> None:
        self._protocol = protocol
        self._host = host
        self._transactions: collections.deque[Transaction] = collections.deque()
        self._idle: asyncio.Future[None] | None = None
        self._on_outcome: Callable[[SendOutcome], None] | None = None
        #: The first exception the outcome callback raised in the stream in progress.
        self.callback_error: BaseException | None = None

    def __bool__(self) -> bool:
        """True while a transaction is in flight."""
        return bool(self._transactions)

    def open(self, on_outcome: Callable[[SendOutcome], None]) -> None:
        """A stream starts: its outcomes go to ``on_outcome``."""
        self._on_outcome = on_outcome
        self.callback_error = None

    def close(self) -> None:
        """The stream is over: later outcomes (none are expected) go nowhere."""
        self._on_outcome = None

    def add(self, txn: Transaction) -> None:
        """``txn``'s commands are written (or about to be)."""
        self._transactions.append(txn)

    def end(self, txn: Transaction, final: Reply | None, lost: SMTPError | None = None) -> None:
        """Decide and report the outcome of ``txn`` (once) from what the server said."""
        if txn.done:
            return
        txn.done = True
        transactions = self._transactions
        if transactions and transactions[0] is txn:
            transactions.popleft()
        else:
            with contextlib.suppress(ValueError):
                transactions.remove(txn)
        if not transactions and self._idle is not None and not self._idle.done():
            self._idle.set_result(None)
        self.emit(decide_outcome(txn, final, lost, host=self._host))

    def emit(self, outcome: SendOutcome) -> None:
        """Hand ``outcome`` to the stream's callback; a callback that raises ends the session."""
        callback = self._on_outcome
        if callback is None:
            return
        try:
            callback(outcome)
        except Exception as exc:  # the caller's bug must not leave messages without outcome
            if self.callback_error is None:
                self.callback_error = exc
            self._on_outcome = None
            self._protocol.fail(
                TransientSMTPError(0, "the outcome callback failed", host=self._host)
            )

    def lose(self, error: SMTPError) -> None:
        """The connection ended: every transaction in flight ends with ``error``."""
        for txn in list(self._transactions):
            self.end(txn, None, error)

    def wake(self) -> None:
        """Wake whoever waits for the connection to go idle (it ended)."""
        if self._idle is not None and not self._idle.done():
            self._idle.set_result(None)

    async def wait_idle(self, loop: asyncio.AbstractEventLoop) -> None:
        """Wait until no transaction is in flight (or the connection ended)."""
        if not self._transactions:
            return
        self._idle = loop.create_future()
        await self._idle
        self._idle = None
