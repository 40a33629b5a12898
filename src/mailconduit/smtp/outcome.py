"""What became of each message (:class:`SendOutcome`) and of a whole stream (:class:`StreamResult`).

Data, never exceptions: a session reports every message it took through one of these.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import NamedTuple

from mailconduit.errors import MailconduitError, SMTPError, TransientSMTPError
from mailconduit.smtp.envelope import Envelope
from mailconduit.smtp.replies import ReplyAction

__all__ = [
    "DeliveryStatus",
    "RecipientResult",
    "RecipientStatus",
    "SendOutcome",
    "StreamEnd",
    "StreamResult",
    "status_for",
]


class DeliveryStatus(enum.StrEnum):
    """The fate of one message on one attempt."""

    SENT = "sent"  # 250 to the final "."
    FAILED = "failed"  # 5xx, or refused before sending (row error): do not retry
    RETRY = "retry"  # 4xx, timeout or drop before the final "." was written
    UNCERTAIN = "uncertain"  # "." written, no reply: it may have been delivered


class RecipientStatus(enum.StrEnum):
    """One recipient's fate within a transaction."""

    ACCEPTED = "accepted"
    REFUSED = "refused"  # 5xx: never for this message
    DEFERRED = "deferred"  # 4xx (e.g. 452 too many recipients): retry in a new transaction


class RecipientResult(NamedTuple):
    """The server's answer to one RCPT TO."""

    address: str
    status: RecipientStatus
    code: int
    enhanced: str = ""
    text: str = ""


@dataclass(slots=True)  # not frozen: see mailconduit.smtp.envelope's docstring
class SendOutcome:
    """What happened to one message: status, the deciding reply, and every recipient's answer.

    ``error`` is the ``mailconduit.errors`` instance behind a status other than SENT
    (its class says what to do next: throttle, retry, fail the row, abort the run).
    """

    envelope: Envelope
    status: DeliveryStatus
    code: int = 0
    enhanced: str = ""
    text: str = ""
    recipients: tuple[RecipientResult, ...] = ()
    error: MailconduitError | None = None

    @property
    def token(self) -> object:
        return self.envelope.token

    @property
    def sent(self) -> bool:
        return self.status is DeliveryStatus.SENT

    @property
    def accepted_recipients(self) -> tuple[str, ...]:
        return self._with(RecipientStatus.ACCEPTED)

    @property
    def refused_recipients(self) -> tuple[str, ...]:
        return self._with(RecipientStatus.REFUSED)

    @property
    def deferred_recipients(self) -> tuple[str, ...]:
        """Recipients to try again in a new transaction (4xx on RCPT, e.g. 452)."""
        return self._with(RecipientStatus.DEFERRED)

    def _with(self, status: RecipientStatus) -> tuple[str, ...]:
        return tuple(r.address for r in self.recipients if r.status is status)

    def raise_for_status(self) -> None:
        """Raise :attr:`error` unless the message was sent."""
        if self.status is not DeliveryStatus.SENT:
            raise self.error or TransientSMTPError(0, f"message {self.status.value}")


class StreamEnd(enum.StrEnum):
    """Why :meth:`SMTPSession.stream` returned."""

    SOURCE_EXHAUSTED = "source exhausted"  # the session stays open
    CAP_REACHED = "message cap reached"  # QUIT sent; open a new session for more
    SERVER_CLOSING = "server closing (421)"  # closed; reconnect later, slower
    CONNECTION_LOST = "connection lost"  # drop or timeout; reconnect


@dataclass(frozen=True, slots=True)
class StreamResult:
    """How one :meth:`SMTPSession.stream` call ended, and how many messages it took."""

    reason: StreamEnd
    messages: int  # messages taken from the source (each got exactly one outcome)
    error: SMTPError | None = None


def status_for(action: ReplyAction) -> DeliveryStatus:
    """The delivery status a refusing reply's action implies: retry later, or give up."""
    if action in (ReplyAction.RETRY, ReplyAction.THROTTLE):
        return DeliveryStatus.RETRY
    return DeliveryStatus.FAILED
