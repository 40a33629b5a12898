"""Test support shipped with mailconduit: a fault-injecting SMTP server and test certificates.

Nothing in mailconduit imports this package; your tests do.
"""

from __future__ import annotations

from mailconduit.testing.server import Fault, FaultServer, ReceivedMessage, ServerSession

__all__ = ["Fault", "FaultServer", "ReceivedMessage", "ServerSession"]
