"""Test support shipped with mailconduit: a fault-injecting SMTP server, Postfix's
smtp-sink as a second server, a service that is not SMTP, test certificates and small helpers.

Nothing in mailconduit imports this package; your tests do.
"""

from __future__ import annotations

from mailconduit.testing.fixtures import (
    loopback_connection,
    message_source,
    numbered_envelopes,
    run,
    stream_messages,
)
from mailconduit.testing.oauth import ManualClock, OAuthServer, XOAuth2Server
from mailconduit.testing.postfix import SmtpSink, free_port
from mailconduit.testing.server import Fault, FaultServer, ReceivedMessage, ServerSession
from mailconduit.testing.services import NATS_BANNER, BannerService

__all__ = [
    "NATS_BANNER",
    "BannerService",
    "Fault",
    "FaultServer",
    "ManualClock",
    "OAuthServer",
    "ReceivedMessage",
    "ServerSession",
    "SmtpSink",
    "XOAuth2Server",
    "free_port",
    "loopback_connection",
    "message_source",
    "numbered_envelopes",
    "run",
    "stream_messages",
]
