"""A message's bytes are freed as soon as its outcome is known, not at the next full
garbage collection: with large messages (invoices with their PDFs) the difference was
hundreds of messages held at once, over 100 MB.
"""

from __future__ import annotations

import gc
from collections.abc import Iterator

import pytest

from delivery_support import (
    CONNECTION,
    MESSAGE,
    fault_connection,
    people,
)
from mailconduit import api
from mailconduit.delivery.runner import Job


@pytest.fixture
def no_cyclic_gc() -> Iterator[None]:
    """Only reference counting frees objects: what a cycle holds stays."""
    was_enabled = gc.isenabled()
    gc.disable()
    yield
    if was_enabled:
        gc.enable()


def test_finished_messages_are_freed_at_once(
    monkeypatch: pytest.MonkeyPatch, no_cyclic_gc: None
) -> None:
    live: list[int] = []

    def count_jobs(_: object) -> None:
        live.append(sum(1 for o in gc.get_objects() if type(o) is Job))

    with fault_connection(monkeypatch) as server:
        report = api.export(
            people(600), connection=CONNECTION, **MESSAGE, concurrency=2, progress=count_jobs
        )
    assert report.sent == 600 and len(server.messages) == 600
    assert len(live) >= 3 and live[-1] == 0
    # at most the runner's window (64 claimed rows) is alive, never the rows already sent
    assert max(live) <= 64 + 8, live
