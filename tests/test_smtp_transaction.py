"""The transaction's books and the outcome decided from them: pure, no socket involved."""

from __future__ import annotations

from mailconduit.errors import (
    PermanentSMTPError,
    RecipientRefusedError,
    TransientSMTPError,
)
from mailconduit.smtp import DeliveryStatus, Envelope, RecipientStatus
from mailconduit.smtp.replies import Reply
from mailconduit.smtp.transaction import Transaction, decide_outcome

HOST = "mx.example.com"


class Recorder:
    """A TransactionEvents that keeps what it was told, in order."""

    def __init__(self) -> None:
        self.events: list[tuple[str, Transaction, Reply | None]] = []

    def data_replied(self, txn: Transaction) -> None:
        self.events.append(("data", txn, txn.data_reply))

    def transaction_ended(self, txn: Transaction, final: Reply | None) -> None:
        self.events.append(("end", txn, final))


def _txn(*recipients: str) -> tuple[Transaction, Recorder]:
    recorder = Recorder()
    envelope = Envelope(
        "a@example.com", recipients or ("b@example.com",), b"Subject: x\r\n\r\nhi\r\n"
    )
    return Transaction(recorder, envelope, envelope.data + b".\r\n"), recorder


def _reply(code: int, text: str = "ok") -> Reply:
    return Reply(code, (text,))


def test_data_reply_is_reported_and_the_session_decides() -> None:
    txn, recorder = _txn()
    txn.on_mail(_reply(250), None)
    txn.on_rcpt(_reply(250), None)
    txn.on_data(_reply(354, "go ahead"), None)
    assert [(kind, reply.code if reply else None) for kind, _, reply in recorder.events] == [
        ("data", 354)
    ]
    assert not txn.data_refused
    assert txn.content() == txn.wire
    txn.on_dot(_reply(250, "2.0.0 queued"), None)
    assert recorder.events[-1][0] == "end" and recorder.events[-1][1] is txn
    outcome = decide_outcome(txn, recorder.events[-1][2], None, host=HOST)
    assert outcome.status is DeliveryStatus.SENT
    assert (outcome.code, outcome.enhanced) == (250, "2.0.0")
    assert outcome.accepted_recipients == ("b@example.com",)


def test_refused_data_marks_the_transaction_and_fails_it_by_type() -> None:
    txn, recorder = _txn()
    txn.on_mail(_reply(250), None)
    txn.on_rcpt(_reply(250), None)
    txn.on_data(_reply(554, "5.3.4 no thanks"), None)
    assert txn.data_refused
    assert [kind for kind, _, _ in recorder.events] == ["data"]  # nothing ends on its own
    outcome = decide_outcome(txn, None, None, host=HOST)
    assert outcome.status is DeliveryStatus.FAILED
    assert type(outcome.error) is PermanentSMTPError
    assert (outcome.error.code, outcome.error.enhanced) == (554, "5.3.4")


def test_every_recipient_refused_is_a_recipient_error_and_no_content_follows() -> None:
    txn, _ = _txn("b@example.com", "c@example.com")
    txn.on_mail(_reply(250), None)
    txn.on_rcpt(_reply(550, "5.1.1 no such user"), None)
    txn.on_rcpt(_reply(550, "5.1.1 no such user"), None)
    assert txn.content() == b".\r\n"
    outcome = decide_outcome(txn, None, None, host=HOST)
    assert outcome.status is DeliveryStatus.FAILED
    assert isinstance(outcome.error, RecipientRefusedError)
    assert outcome.refused_recipients == ("b@example.com", "c@example.com")


def test_a_deferred_mail_defers_every_recipient() -> None:
    txn, _ = _txn("b@example.com", "c@example.com")
    txn.on_mail(_reply(451, "4.3.0 try later"), None)
    txn.on_rcpt(_reply(503, "5.5.1 bad sequence"), None)
    outcome = decide_outcome(txn, None, None, host=HOST)
    assert outcome.status is DeliveryStatus.RETRY
    assert {r.status for r in outcome.recipients} == {RecipientStatus.DEFERRED}
    assert outcome.deferred_recipients == ("b@example.com", "c@example.com")


def test_no_reply_is_retry_before_the_dot_and_uncertain_after() -> None:
    lost = TransientSMTPError(0, "the server closed the connection", host=HOST)
    txn, _ = _txn()
    txn.on_mail(_reply(250), None)
    assert decide_outcome(txn, None, lost, host=HOST).status is DeliveryStatus.RETRY
    txn.dot_written = True
    outcome = decide_outcome(txn, None, lost, host=HOST)
    assert outcome.status is DeliveryStatus.UNCERTAIN
    assert isinstance(outcome.error, TransientSMTPError)
