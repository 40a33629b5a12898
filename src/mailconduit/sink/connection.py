"""The built-in ``local`` connection: the embedded sink, with credentials it accepts.

TLS verification stays on: the connection trusts the sink's own CA (``ca_file``).
The From address uses ``example.com``, a domain reserved for examples (RFC 2606)
that strict address validators accept (``.test`` and ``.localhost`` are refused
by them as special-use names); nothing sent to the sink ever leaves this machine.
"""

from __future__ import annotations

from mailconduit.config.connection import Connection, validate_connection
from mailconduit.home import LOCAL_CONNECTION, sink_dir
from mailconduit.sink.certs import ensure_certificates
from mailconduit.sink.credentials import SinkCredentials, ensure_credentials
from mailconduit.sink.files import directory_lock
from mailconduit.sink.state import HOST, configured_port, running_sink

__all__ = [
    "LOCAL_FROM_ADDRESS",
    "LOCAL_FROM_NAME",
    "local_connection",
    "sink_credentials",
]

LOCAL_FROM_ADDRESS = "mailconduit@example.com"
LOCAL_FROM_NAME = "mailconduit"


def sink_credentials() -> SinkCredentials:
    """The user and password this home's sink accepts (created on first use)."""
    directory = sink_dir()
    with directory_lock(directory):
        return ensure_credentials(directory)


def local_connection() -> Connection:
    """The ``local`` connection for this home, creating the sink's credentials and CA if needed.

    Its port is the running sink's, else the one a new sink would use (see
    :func:`mailconduit.sink.ensure_running`).
    """
    directory = sink_dir()
    with directory_lock(directory):
        credentials = ensure_credentials(directory)
        certificates = ensure_certificates(directory)
    running = running_sink(directory)
    return validate_connection(
        {
            "name": LOCAL_CONNECTION,
            "server_url": HOST,
            "port": running.port if running is not None else configured_port(),
            "security": "starttls",
            "username": credentials.username,
            "password": credentials.password,
            "ca_file": str(certificates.ca_file),
            "verify_tls": True,
            "from_address": LOCAL_FROM_ADDRESS,
            "from_name": LOCAL_FROM_NAME,
            "agent": "local",
            "implementation_type": "default",
            "is_active": True,
            "is_target": True,
            "use_html_body": False,
        },
        origin="builtin",
    )
