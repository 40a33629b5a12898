"""Fixtures the export API tests share: a sink port of their own, a fault server and a
connection to it."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from export_support import connect_to, use_free_sink_port
from mailconduit.testing import FaultServer


@pytest.fixture(autouse=True)
def sink_port(monkeypatch: pytest.MonkeyPatch) -> int:
    """The built-in ``local`` connection starts its sink on a port no other test uses."""
    return use_free_sink_port(monkeypatch)


@pytest.fixture
def server() -> Iterator[FaultServer]:
    """A fault server with no faults, in a background thread."""
    with FaultServer() as srv:
        yield srv


@pytest.fixture
def target(monkeypatch: pytest.MonkeyPatch, server: FaultServer) -> str:
    """The name of a connection to ``server`` whose Use HTML Body is off: only what the
    body says makes HTML."""
    return connect_to(monkeypatch, server.port)
