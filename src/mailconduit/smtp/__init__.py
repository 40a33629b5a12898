"""The only part of mailconduit that talks SMTP: sessions, replies and Test Connection."""

from __future__ import annotations

from mailconduit.smtp.client import (
    DeliveryStatus,
    Envelope,
    MessageSource,
    RecipientResult,
    RecipientStatus,
    SendOutcome,
    SMTPSession,
    Stage,
    StreamEnd,
    StreamResult,
)
from mailconduit.smtp.esmtp import Capabilities
from mailconduit.smtp.probe import ProbeResult, probe
from mailconduit.smtp.replies import Reply, ReplyAction, classify
from mailconduit.smtp.tls import CertificateInfo, TLSInfo
from mailconduit.smtp.transcript import Transcript

__all__ = [
    "Capabilities",
    "CertificateInfo",
    "DeliveryStatus",
    "Envelope",
    "MessageSource",
    "ProbeResult",
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
    "probe",
]
