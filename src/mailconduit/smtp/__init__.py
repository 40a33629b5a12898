"""The only part of mailconduit that talks SMTP: sessions, replies and Test Connection.

:class:`SMTPSession` (in ``client``) is the one client class; the modules beside it are
the parts it hands its work to (``handshake``, ``channel``, ``pipeline``, ``flight``), the
pure steps they use (``connect``, ``protocol``, ``transaction``, ``esmtp``, ``replies``,
``auth``, ``tls``) and its inputs and outputs (``envelope``, ``outcome``).

Test Connection lives in :mod:`mailconduit.smtp.probe` (import it from there): it needs
the email package, which an export does not load.
"""

from __future__ import annotations

from mailconduit.smtp.client import SMTPSession, Stage
from mailconduit.smtp.envelope import Envelope, MessageSource
from mailconduit.smtp.esmtp import Capabilities
from mailconduit.smtp.outcome import (
    DeliveryStatus,
    RecipientResult,
    RecipientStatus,
    SendOutcome,
    StreamEnd,
    StreamResult,
)
from mailconduit.smtp.replies import Reply, ReplyAction, classify
from mailconduit.smtp.tls import CertificateInfo, TLSInfo
from mailconduit.smtp.transcript import Transcript

__all__ = [
    "Capabilities",
    "CertificateInfo",
    "DeliveryStatus",
    "Envelope",
    "MessageSource",
    "RecipientResult",
    "RecipientStatus",
    "Reply",
    "ReplyAction",
    "SMTPSession",
    "SendOutcome",
    "Stage",
    "StreamEnd",
    "StreamResult",
    "TLSInfo",
    "Transcript",
    "classify",
]
