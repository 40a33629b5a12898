"""The embedded local SMTP server ("sink") and the built-in ``local`` connection.

Run it with ``mailconduit sink``; commands that use the ``local`` connection start
it for their own duration with :func:`ensure_running`. Messages are kept under
``MAILCONDUIT_HOME`` and read with :func:`list_messages` and :func:`get_message`.
"""

from __future__ import annotations

from mailconduit.sink.connection import (
    LOCAL_FROM_ADDRESS,
    local_connection,
    sink_credentials,
)
from mailconduit.sink.server import MAX_MESSAGE_SIZE, SinkServer, ensure_running, serve_forever
from mailconduit.sink.state import (
    DEFAULT_PORT,
    SinkInfo,
    configured_port,
    is_running,
    running_sink,
)
from mailconduit.sink.store import (
    MessageSummary,
    ReceivedAttachment,
    StoredMessage,
    clear,
    count_messages,
    get_message,
    list_messages,
    message_summary,
    raw_message,
)

__all__ = [
    "DEFAULT_PORT",
    "LOCAL_FROM_ADDRESS",
    "MAX_MESSAGE_SIZE",
    "MessageSummary",
    "ReceivedAttachment",
    "SinkInfo",
    "SinkServer",
    "StoredMessage",
    "clear",
    "configured_port",
    "count_messages",
    "ensure_running",
    "get_message",
    "is_running",
    "list_messages",
    "local_connection",
    "message_summary",
    "raw_message",
    "running_sink",
    "serve_forever",
    "sink_credentials",
]
