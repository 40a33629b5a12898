"""One mail transaction in flight, and the pure decision of its outcome from the replies.

A :class:`Transaction` only keeps the books (the replies to MAIL, RCPT, DATA and the
final "."). It tells its session two things through :class:`TransactionEvents`: the
reply to DATA arrived, and the transaction ended; the session decides what follows
(send the content, RSET, report the outcome).
"""

from __future__ import annotations

from typing import Protocol

from mailconduit.errors import SMTPError, TransientSMTPError
from mailconduit.smtp.envelope import Envelope
from mailconduit.smtp.outcome import (
    DeliveryStatus,
    RecipientResult,
    RecipientStatus,
    SendOutcome,
    status_for,
)
from mailconduit.smtp.replies import Reply, classify, error_for

__all__ = ["Transaction", "TransactionEvents", "decide_outcome", "recipient_results"]


class TransactionEvents(Protocol):
    """What a :class:`Transaction` reports to the session that runs it."""

    def data_replied(self, txn: Transaction) -> None:
        """The reply to DATA is on ``txn``'s books (354, or a refusal: see ``data_refused``)."""

    def transaction_ended(self, txn: Transaction, final: Reply | None) -> None:
        """``txn`` is over: ``final`` is the reply to its "." (None when it ended before)."""


class Transaction:
    """One message in flight: the replies so far and whether its "." has been written."""

    __slots__ = (
        "accepted",
        "data_reply",
        "done",
        "dot_written",
        "envelope",
        "events",
        "mail_reply",
        "rcpt_replies",
        "wire",
    )

    def __init__(self, events: TransactionEvents, envelope: Envelope, wire: bytes) -> None:
        self.events = events
        self.envelope = envelope
        self.wire = wire
        self.mail_reply: Reply | None = None
        self.rcpt_replies: list[Reply] = []
        self.accepted = 0
        self.data_reply: Reply | None = None
        self.dot_written = False
        self.done = False

    @property
    def data_refused(self) -> bool:
        """DATA got an answer other than 354: the server may hold a half-open transaction."""
        reply = self.data_reply
        return reply is not None and reply.code != 354

    def on_mail(self, reply: Reply | None, error: SMTPError | None) -> None:
        if reply is not None:
            self.mail_reply = reply

    def on_rcpt(self, reply: Reply | None, error: SMTPError | None) -> None:
        if reply is not None:
            self.rcpt_replies.append(reply)
            if 200 <= reply.code < 300:
                self.accepted += 1

    def record_data(self, reply: Reply | None, error: SMTPError | None) -> None:
        """Lockstep mode: keep DATA's reply; the waiting session reads it itself."""
        if reply is not None:
            self.data_reply = reply

    def on_data(self, reply: Reply | None, error: SMTPError | None) -> None:
        """Pipelined mode: keep DATA's reply and tell the session, which decides what follows."""
        if reply is not None:
            self.data_reply = reply
            self.events.data_replied(self)

    def on_dot(self, reply: Reply | None, error: SMTPError | None) -> None:
        if reply is not None:
            self.events.transaction_ended(self, reply)

    def content(self) -> bytes:
        """What follows a 354: the message, or a bare "." when no recipient was accepted."""
        return self.wire if self.accepted else b".\r\n"


def recipient_results(txn: Transaction) -> tuple[RecipientResult, ...]:
    """Each recipient's answer. After a refused MAIL the RCPT replies (503, bad sequence)
    mean nothing: every recipient then shares the MAIL reply's fate."""
    mail = txn.mail_reply
    if mail is not None and not 200 <= mail.code < 300:
        shared = RecipientStatus.DEFERRED if 400 <= mail.code < 500 else RecipientStatus.REFUSED
        return tuple(
            RecipientResult(address, shared, mail.code, mail.enhanced, mail.message)
            for address in txn.envelope.recipients
        )
    replies = txn.rcpt_replies
    results = []
    for index, address in enumerate(txn.envelope.recipients):
        if index < len(replies):
            reply = replies[index]
            code = reply.code
            if 200 <= code < 300:
                status = RecipientStatus.ACCEPTED
            elif 400 <= code < 500:
                status = RecipientStatus.DEFERRED
            else:
                status = RecipientStatus.REFUSED
            results.append(RecipientResult(address, status, code, reply.enhanced, reply.message))
        else:
            results.append(RecipientResult(address, RecipientStatus.DEFERRED, 0, "", "no reply"))
    return tuple(results)


def decide_outcome(
    txn: Transaction, final: Reply | None, lost: SMTPError | None, *, host: str
) -> SendOutcome:
    """The outcome of ``txn`` from its books: the first refusing reply decides, else the
    reply to "."; with no reply at all, RETRY before the "." was written, UNCERTAIN after."""
    envelope = txn.envelope
    recipients = recipient_results(txn)
    decisive: Reply | None = None
    command = ""
    all_refused = False
    mail = txn.mail_reply
    if mail is not None and not 200 <= mail.code < 300:
        decisive, command = mail, "MAIL FROM"
    elif len(txn.rcpt_replies) == len(envelope.recipients) and not txn.accepted:
        deferred = [r for r in txn.rcpt_replies if 400 <= r.code < 500]
        decisive = deferred[0] if deferred else txn.rcpt_replies[0]
        command = "RCPT TO"
        all_refused = not deferred
    elif txn.data_reply is not None and txn.data_reply.code != 354:
        decisive, command = txn.data_reply, "DATA"
    elif final is not None:
        if 200 <= final.code < 300:
            return SendOutcome(
                envelope,
                DeliveryStatus.SENT,
                final.code,
                final.enhanced,
                final.message,
                recipients,
            )
        decisive, command = final, "end of DATA"
    if decisive is not None:
        error = error_for(decisive, command=command, host=host, recipient_refused=all_refused)
        status = status_for(classify(decisive.code, decisive.enhanced, decisive.text))
        return SendOutcome(
            envelope,
            status,
            decisive.code,
            decisive.enhanced,
            decisive.message,
            recipients,
            error,
        )
    return _unanswered(txn, recipients, lost, host=host)


def _unanswered(
    txn: Transaction,
    recipients: tuple[RecipientResult, ...],
    lost: SMTPError | None,
    *,
    host: str,
) -> SendOutcome:
    """No reply decided ``txn``: RETRY before its "." was written, UNCERTAIN after."""
    envelope = txn.envelope
    cause = lost or TransientSMTPError(0, "the connection ended", host=host)
    if txn.dot_written:
        unsure = TransientSMTPError(
            0,
            f"no reply to the final '.' ({cause.reply}); the message may have been delivered",
            command="end of DATA",
            host=host,
        )
        return SendOutcome(
            envelope, DeliveryStatus.UNCERTAIN, 0, "", unsure.reply, recipients, unsure
        )
    return SendOutcome(
        envelope,
        DeliveryStatus.RETRY,
        cause.code,
        cause.enhanced,
        cause.reply,
        recipients,
        cause,
    )
