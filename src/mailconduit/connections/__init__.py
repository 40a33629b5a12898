"""Stored SMTP connections: persistence, encryption at rest, environment URLs, import/export."""

from mailconduit.connections.store import TestStatus, env_var_name
from mailconduit.connections.transfer import dump_connections, load_connections

__all__ = ["TestStatus", "dump_connections", "env_var_name", "load_connections"]
