"""What a session is given to send: the :class:`Envelope`, and where streamed ones come from.

Per-message records across mailconduit (this envelope, the outcome, the built message,
the rendered fields, the journal's row) are plain slotted dataclasses, not frozen ones:
bench/RESULTS.md "second session": a frozen one costs ~3 µs to build against ~0.5 µs, ~8 µs per message.
They are read-only all the same; their docstrings point here instead of repeating it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from mailconduit.errors import AddressError, RowError
from mailconduit.smtp.esmtp import Capabilities, check_envelope_address, mail_command, wire_data

__all__ = ["Envelope", "MessageSource", "mail_line", "preflight"]


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


def preflight(
    envelope: Envelope, caps: Capabilities, *, host: str
) -> tuple[bytes, RowError | None]:
    """The wire form of the data, or the reason a server offering ``caps`` cannot take it."""
    if envelope.smtputf8 and not caps.smtputf8:
        bad = next(
            (a for a in (envelope.sender, *envelope.recipients) if not a.isascii()),
            envelope.sender,
        )
        return b"", AddressError(
            f"{host} does not offer SMTPUTF8, which address {bad!r} needs; "
            "the message was not sent (it would have to be altered)",
            address=bad,
        )
    wire = wire_data(envelope.data, crlf=envelope.crlf)
    if caps.size and len(wire) > caps.size:
        return b"", RowError(
            f"the message is {len(wire)} bytes and {host} accepts at most {caps.size} "
            "bytes (SIZE); it was not sent"
        )
    if not caps.eightbitmime and not envelope.smtputf8 and not wire.isascii():
        return b"", RowError(
            f"the message holds 8-bit data and {host} does not offer 8BITMIME; "
            "encode it as 7-bit (quoted-printable or base64)"
        )
    return wire, None


def mail_line(envelope: Envelope, caps: Capabilities, size: int) -> bytes:
    """The MAIL FROM command for ``envelope`` (``size``: its wire length) to a server offering ``caps``."""
    return mail_command(
        envelope.sender,
        size=size if caps.size is not None else None,
        smtputf8=envelope.smtputf8,
        eight_bit=caps.eightbitmime and not envelope.data.isascii(),
    )
