"""Agents under faults: pool processes and workers killed with -9 mid-chunk, a worker frozen
past its lease, a chunk published twice, the broker connection cut, a connection-wide rate
shared by three workers. Every wait is on the journal's or the server's state."""

from __future__ import annotations

import contextlib
import os
import signal
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from agents_support import (
    Cluster,
    agent_connection,
    detach,
    run_status,
    sent_rows,
    use_agent_server,
    wait_for,
)
from delivery_support import TimedFaultServer, deliveries, journal_rows, people, write_csv

pytestmark = [pytest.mark.postgres, pytest.mark.slow]


def _assert_each_row_once_or_resent_alike(
    server: TimedFaultServer, run_id: str, n: int, *, others: frozenset[str] = frozenset()
) -> int:
    """Every row sent and recorded; a row delivered twice has one Message-ID, the one the
    journal holds; nobody else but ``others`` got a message. Returns how many rows were
    delivered more than once."""
    rows = journal_rows(run_id)
    assert {r.state for r in rows.values()} == {"sent"}, {
        k: (r.state, r.reply) for k, r in rows.items() if r.state != "sent"
    }
    assert len(rows) == n
    wanted = {f"user{i}@example.com" for i in range(n)}
    got = {k: v for k, v in deliveries(server.messages).items() if k in wanted or k in others}
    assert sorted(got) == sorted(wanted | others)
    for rcpt, ids in got.items():
        if rcpt in others:
            continue
        key = rcpt.removeprefix("user").removesuffix("@example.com")
        assert set(ids) == {rows[key].message_id}, (rcpt, ids)
    return sum(1 for ids in got.values() if len(ids) > 1)


def test_kill_9_of_pool_processes_and_workers_loses_no_row(
    cluster: Cluster, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    n = 240
    source = write_csv(tmp_path / "people.csv", people(n))
    monkeypatch.setenv("MAILCONDUIT_AGENT_CHUNK_ROWS", "12")
    with agent_connection(cluster, monkeypatch, faults={("DOT", "*"): "delay:0.03"}) as server:
        for _ in range(3):
            cluster.start_worker(concurrency=2)
        cluster.wait_live(3)
        run_id = detach(source)
        kills = 0
        for threshold in (20, 70, 120, 170):
            wait_for(lambda t=threshold: sent_rows(run_id) >= t or run_status(run_id) != "running",
                     what=f"{threshold} rows sent")  # fmt: skip
            if run_status(run_id) != "running":
                break
            wait_for(lambda: cluster.running_owners(run_id) or run_status(run_id) != "running",
                     what="a live pool process holding a chunk")  # fmt: skip
            owners = cluster.running_owners(run_id)
            if not owners:
                break
            victim = owners[0]
            if kills % 2 == 0:
                os.kill(victim, signal.SIGKILL)  # a pool process, mid-chunk
            else:
                worker = cluster.worker_of(victim)
                assert worker is not None
                os.kill(worker.pid, signal.SIGKILL)  # the worker's main process
                cluster.start_worker(concurrency=2)
            kills += 1
        assert kills >= 2
        wait_for(lambda: run_status(run_id) != "running", what="the run's end", timeout=300)
        assert run_status(run_id) == "finished"
        twice = _assert_each_row_once_or_resent_alike(server, run_id, n)
        # Only rows in flight at a kill may go twice: one session per chunk, a few per kill.
        assert twice <= kills * 4, twice


def test_a_worker_frozen_past_its_lease_neither_records_nor_sends_on_waking(
    cluster: Cluster, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    n = 10
    source = write_csv(tmp_path / "people.csv", people(n))
    with agent_connection(cluster, monkeypatch, hold_dot=3) as server:
        frozen = cluster.start_worker()
        cluster.wait_live(1)
        run_id = detach(source)
        # The third message's "." is held: rows 0 and 1 are recorded, row 2 is in flight.
        wait_for(lambda: len(server.times("DOT")) >= 3, what="the third message's end")
        wait_for(lambda: sent_rows(run_id) == 2, what="two rows recorded")
        os.killpg(frozen.pid, signal.SIGSTOP)
        server.release()
        cluster.start_worker()
        wait_for(lambda: run_status(run_id) != "running", what="the other worker's takeover")
        assert run_status(run_id) == "finished"
        delivered = len(server.messages)
        recorded = journal_rows(run_id)
        os.killpg(frozen.pid, signal.SIGCONT)
        wait_for(lambda: "nothing more is sent or recorded" in frozen.output(),
                 what="the woken worker to give its chunk up")  # fmt: skip
        assert len(server.messages) == delivered  # nothing sent after waking
        assert journal_rows(run_id) == recorded  # nothing recorded after waking
        twice = _assert_each_row_once_or_resent_alike(server, run_id, n)
        assert twice == 1  # row 2, in flight when it froze: resent with its Message-ID
        assert recorded["2"].attempts == 2


def test_a_chunk_published_twice_sends_no_extra_message(
    cluster: Cluster, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    from mailconduit.agents import AgentSettings
    from mailconduit.agents.app import publish

    monkeypatch.setenv("MAILCONDUIT_AGENT_CHUNK_ROWS", "5")
    first = write_csv(tmp_path / "first.csv", people(20))
    with agent_connection(cluster, monkeypatch) as server:
        cluster.start_worker()
        cluster.wait_live(1)
        run_id = detach(first)
        settings = AgentSettings.from_env()
        publish(settings, cluster.agent, run_id, [1, 2, 3, 4, 1, 2])  # while it runs
        wait_for(lambda: run_status(run_id) != "running", what="the run's end")
        publish(settings, cluster.agent, run_id, [1, 2, 3, 4])  # after it ended
        # One worker takes tasks in order: once a later run is done, so are the duplicates.
        later = detach(write_csv(tmp_path / "later.csv", people(1, start=100)))
        wait_for(lambda: run_status(later) != "running", what="the later run's end")
        assert run_status(run_id) == "finished"
        later_rcpt = frozenset({"user100@example.com"})
        assert _assert_each_row_once_or_resent_alike(server, run_id, 20, others=later_rcpt) == 0
        assert len(server.messages) == 21


def test_a_connection_rate_holds_for_three_workers_together(
    cluster: Cluster, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    n = 90
    monkeypatch.setenv("MAILCONDUIT_AGENT_CHUNK_ROWS", "6")
    source = write_csv(tmp_path / "people.csv", people(n))
    server = TimedFaultServer()
    with server:
        use_agent_server(cluster, monkeypatch, server.port, rate_per_second=20)
        for _ in range(3):
            cluster.start_worker()
        cluster.wait_live(3)
        run_id = detach(source)
        wait_for(lambda: run_status(run_id) != "running", what="the run's end")
        assert run_status(run_id) == "finished"
        assert _assert_each_row_once_or_resent_alike(server, run_id, n) == 0
        times = sorted(server.times("MAIL"))
        assert len(times) == n
        # Per second the cap is paced (a burst of one): no one-second window above 20 + 1.
        busiest = max(sum(1 for t in times if start <= t < start + 1.0) for start in times)
        assert busiest <= 21, busiest
        owners = {c.owner.split(":")[1] for c in _chunks(cluster, run_id)}
        assert len(owners) >= 2  # the rate was shared, not one worker's


def _chunks(cluster: Cluster, run_id: str) -> list:  # type: ignore[type-arg]
    store = cluster.store()
    try:
        return list(store.chunks(run_id))
    finally:
        store.close()


@contextlib.contextmanager
def _two_workers_behind_a_cuttable_broker(
    cluster: Cluster, monkeypatch: pytest.MonkeyPatch, source: Path, *, chunk_rows: int, delay: str
) -> Iterator[tuple[TimedFaultServer, Any, str]]:
    """Two workers reaching the broker through a proxy that can cut their connections, a
    detached run of ``source`` on them: (the SMTP server, the proxy, the run id)."""
    from agents_support import CuttableProxy

    monkeypatch.setenv("MAILCONDUIT_AGENT_CHUNK_ROWS", str(chunk_rows))
    broker = cluster.env["MAILCONDUIT_BROKER_URL"]
    port = 6379 if broker.startswith("redis") else 5672
    proxy = CuttableProxy(("127.0.0.1", port))
    try:
        with agent_connection(
            cluster, monkeypatch, faults={("DOT", "*"): f"delay:{delay}"}
        ) as server:
            for _ in range(2):
                # One chunk per task: the workers need the broker between chunks (a task
                # going on with the run's next chunks would not notice the cuts).
                cluster.start_worker(
                    MAILCONDUIT_BROKER_URL=proxy.url(broker), MAILCONDUIT_AGENT_CHAIN_SECONDS="0.001"
                )
            cluster.wait_live(2)
            yield server, proxy, detach(source)
    finally:
        proxy.close()


def test_the_run_completes_when_the_broker_connection_drops(
    cluster: Cluster, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    n = 120
    source = write_csv(tmp_path / "people.csv", people(n))
    with _two_workers_behind_a_cuttable_broker(
        cluster, monkeypatch, source, chunk_rows=10, delay="0.03"
    ) as (server, proxy, run_id):
        for threshold in (25, 60):
            wait_for(lambda t=threshold: sent_rows(run_id) >= t, what=f"{threshold} rows")
            assert proxy.cut() > 0  # the workers' broker connections, mid-run
        wait_for(lambda: run_status(run_id) != "running", what="the run's end", timeout=300)
        assert run_status(run_id) == "finished"
        twice = _assert_each_row_once_or_resent_alike(server, run_id, n)
        assert twice == 0


def test_the_run_completes_when_the_broker_connection_drops_again_and_again(
    cluster: Cluster, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """Cut every tenth of a second for 8 s. Before the reaper watched the queue, Redis lost
    a message now and then (handed out as the connection dropped: its chunk stayed queued
    for an hour), and a worker's consumer could stay silent with messages waiting (Celery
    after several reconnections in a row): the run hung in 2 tries of 3."""
    import time

    n = 300
    source = write_csv(tmp_path / "people.csv", people(n))
    with _two_workers_behind_a_cuttable_broker(
        cluster, monkeypatch, source, chunk_rows=5, delay="0.04"
    ) as (server, proxy, run_id):
        for _ in range(80):  # 8 s of cuts at most
            if run_status(run_id) != "running":
                break
            time.sleep(0.1)
            proxy.cut()
        wait_for(lambda: run_status(run_id) != "running", what="the run's end", timeout=300)
        assert run_status(run_id) == "finished"
        assert _assert_each_row_once_or_resent_alike(server, run_id, n) == 0


def test_a_chunk_that_keeps_killing_its_workers_fails_with_its_reason(
    cluster: Cluster, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    source = write_csv(tmp_path / "people.csv", people(30))
    with agent_connection(cluster, monkeypatch, faults={("DOT", "*"): "delay:0.2"}) as server:
        cluster.start_worker(MAILCONDUIT_AGENT_MAX_ATTEMPTS="2")
        cluster.wait_live(1)
        run_id = detach(source)
        killed: set[int] = set()
        for _ in range(2):
            wait_for(lambda: set(cluster.running_owners(run_id)) - killed,
                     what="a pool process holding the chunk")  # fmt: skip
            victim = next(iter(set(cluster.running_owners(run_id)) - killed))
            os.kill(victim, signal.SIGKILL)
            killed.add(victim)
        wait_for(lambda: run_status(run_id) != "running", what="the chunk given up")
        from mailconduit import api

        info = api.get_run(run_id)
        assert info.status == "failed"
        assert "given up" in info.message and "2 times" in info.message, info.message
        assert len(server.messages) < 30
