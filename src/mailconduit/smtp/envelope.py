"""What a session is given to send: the :class:`Envelope`, and where streamed ones come from.

Per-message records across mailconduit (this envelope, the outcome, the built message,
the rendered fields, the journal's row) are plain slotted dataclasses, not frozen ones:
bench/RESULTS.md "second session": a frozen one costs ~3 µs to build against ~0.5 µs, ~8 µs per message.
They are read-only all the same; their docstrings point here instead of repeating it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from mailconduit.errors import AddressError
from mailconduit.smtp.esmtp import check_envelope_address

__all__ = ["Envelope", "MessageSource"]


class MessageSource(Protocol):
    """Where a streaming session takes messages from; an ``asyncio.Queue`` is one.

    ``get_nowait`` raises ``asyncio.QueueEmpty`` when nothing is ready yet. ``None``
    marks the end; a session puts it back, so every session sharing the source sees it.
    """

    def get_nowait(self) -> Envelope | None: ...

    async def get(self) -> Envelope | None: ...

    def put_nowait(self, item: Envelope | None, /) -> None: ...


@dataclass(slots=True)  # not frozen: see the module docstring
class Envelope:
    """One message to send: envelope sender, recipients and the data (CRLF, not dot-stuffed).

    ``token`` is the caller's own reference (e.g. the row key), handed back in the
    outcome. Addresses that could inject an SMTP command are refused here, before
    anything can be written. A non-ASCII address turns ``smtputf8`` on.
    """

    sender: str
    recipients: tuple[str, ...]
    data: bytes
    smtputf8: bool = False
    token: object = None
    #: True when ``data`` has CRLF line ends only, as ``mailconduit.message`` builds it
    #: (its property tests hold it to that): they are then not normalised a second time.
    crlf: bool = False

    def __post_init__(self) -> None:
        if isinstance(self.recipients, str):
            raise TypeError("recipients must be a sequence of addresses, not one string")
        if not isinstance(self.recipients, tuple):
            object.__setattr__(self, "recipients", tuple(self.recipients))
        if not self.recipients:
            raise AddressError("a message needs at least one recipient")
        check_envelope_address(self.sender, role="sender")
        ascii_only = self.sender.isascii()
        for recipient in self.recipients:
            check_envelope_address(recipient, role="recipient")
            ascii_only = ascii_only and recipient.isascii()
        if not ascii_only and not self.smtputf8:
            object.__setattr__(self, "smtputf8", True)
