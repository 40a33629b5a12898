"""Exports on Celery workers: real brokers (Redis and RabbitMQ), PostgreSQL as the shared
journal, worker processes with homes of their own, the fault server as the mail server."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from agents_support import BROKERS, Cluster, running_cluster, use_agent_server
from delivery_support import (
    CONNECTION,
    MESSAGE,
    TimedFaultServer,
    deliveries,
    journal_rows,
    people,
    write_csv,
)
from mailconduit import api

pytestmark = [pytest.mark.postgres, pytest.mark.slow]


@pytest.fixture(params=list(BROKERS))
def cluster(
    request: pytest.FixtureRequest, pg_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Cluster]:
    with running_cluster(BROKERS[request.param], pg_url, tmp_path, monkeypatch) as group:
        yield group


def test_three_workers_send_a_run_once(
    cluster: Cluster, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    source = write_csv(tmp_path / "people.csv", people(60))
    with TimedFaultServer() as server:
        use_agent_server(cluster, monkeypatch, server.port)
        for _ in range(3):
            cluster.start_worker(MAILCONDUIT_AGENT_CHUNK_ROWS="7")
        cluster.wait_live(3)
        monkeypatch.setenv("MAILCONDUIT_AGENT_CHUNK_ROWS", "7")
        report = api.export(str(source), connection=CONNECTION, **MESSAGE)
        assert report.status == "finished", report.message
        assert report.counts.get("sent") == 60
        got = deliveries(server.messages)
        assert sorted(got) == sorted(f"user{i}@example.com" for i in range(60))
        assert all(len(ids) == 1 for ids in got.values()), got
        rows = journal_rows(report.run_id)
        assert {r.state for r in rows.values()} == {"sent"}
        for rcpt, ids in got.items():
            key = rcpt.removeprefix("user").removesuffix("@example.com")
            assert rows[key].message_id == ids[0]
