"""Fixtures the export API tests share: a fault server and a connection to it."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from export_support import connect_to
from mailconduit.testing import FaultServer


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
