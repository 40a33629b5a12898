"""The runner's view of one SMTP transaction's result: what to do with the row next."""

from __future__ import annotations

from dataclasses import dataclass

from mailconduit.errors import ThrottledError
from mailconduit.smtp import DeliveryStatus, RecipientStatus, SendOutcome

__all__ = ["Outcome", "outcome_of"]


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
