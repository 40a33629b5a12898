"""The runner's view of one SMTP transaction's result: what to do with the row next."""

from __future__ import annotations

from dataclasses import dataclass

from mailconduit.delivery.feed import Job
from mailconduit.errors import ThrottledError
from mailconduit.journal import RowState, RowStatus
from mailconduit.smtp import DeliveryStatus, RecipientStatus, SendOutcome

__all__ = ["Outcome", "outcome_of", "pending_state", "row_state"]


#: Not frozen, as RowState (see there why).
@dataclass(slots=True)
class Outcome:
    """What the session says happened to a job.

    ``refused``: recipients refused for good (recipient, code, text); ``deferred``:
    recipients to try again in a new transaction (452); ``throttled``: a retry the server
    asked for by telling us to slow down (421, 4.7.x).
    """

    status: DeliveryStatus
    code: int = 0
    enhanced: str = ""
    text: str = ""
    refused: tuple[tuple[str, int, str], ...] = ()
    deferred: tuple[str, ...] = ()
    throttled: bool = False


def outcome_of(outcome: SendOutcome) -> Outcome:
    """The runner's view of a session outcome: what to do with the row next."""
    refused = tuple(
        (r.address, r.code, r.text)
        for r in outcome.recipients
        if r.status is RecipientStatus.REFUSED
    )
    text = outcome.text or (str(outcome.error) if outcome.error is not None else "")
    status = outcome.status
    if status is DeliveryStatus.FAILED or status is DeliveryStatus.UNCERTAIN:
        return Outcome(status, outcome.code, outcome.enhanced, text, refused)
    return Outcome(
        status, outcome.code, outcome.enhanced, text, refused, outcome.deferred_recipients,
        throttled=status is DeliveryStatus.RETRY and isinstance(outcome.error, ThrottledError),
    )  # fmt: skip


def row_state(
    job: Job, state: RowStatus, outcome: Outcome, *, owed: tuple[str, ...] | None = None
) -> RowState:
    """The journal's row for ``job`` in ``state`` after ``outcome``: the recipients refused
    so far and, for a row sent to some recipients only, those still owed the message."""
    refused = job.refused
    if outcome.refused:
        known = {r[0] for r in outcome.refused}
        refused = tuple(r for r in refused if r[0] not in known) + outcome.refused
    if not job.narrowed or state == RowStatus.SENT:
        owed = ()
    elif state == RowStatus.FAILED:
        # What --retry-failed sends to: every recipient not served yet, and only those.
        unserved = {*job.owed, *(r[0] for r in refused)}
        owed = tuple(r for r in job.recipients if r in unserved)
    elif owed is None:
        answered = {r[0] for r in refused}
        owed = tuple(r for r in job.owed if r not in answered)
    return RowState(
        row_key=job.row_key,
        seq=job.seq,
        row_number=job.row_number,
        state=state,
        attempts=job.attempts,
        recipients=tuple(job.recipients),
        message_id=job.message_id,
        code=outcome.code,
        enhanced=outcome.enhanced,
        reply=outcome.text,
        detail=refused,
        owed=owed,
    )


def pending_state(job: Job, otherwise: RowStatus) -> RowStatus:
    """How a row given up or left over is journaled: uncertain once an attempt may have
    delivered it (so --no-resend-uncertain holds it), else ``otherwise``."""
    return RowStatus.UNCERTAIN if job.uncertain_before else otherwise
