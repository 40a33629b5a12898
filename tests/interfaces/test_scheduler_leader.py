"""One scheduler per store, with real ``mailconduit serve`` processes sharing a store (SQLite
file or PostgreSQL): one runs the schedules, the other stands by and takes over when the
first is killed; a run missed while every scheduler was down is made up once (or not at
all without catch-up), even when two processes come back at once."""

from __future__ import annotations

import itertools
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from export_support import (
    connect_to,
    server_messages,
    sink_messages,
    use_free_sink_port,
    write_csv,
)
from mailconduit import api
from mailconduit.errors import NotFoundError
from mailconduit.interfaces import schedule, service, store
from mailconduit.interfaces.model import DATA_DIRS_ENV
from mailconduit.sink import ensure_running
from mailconduit.testing import FaultServer
from serve_support import Serve, poll, serve_env, start_serve

ROWS = [{"email": "ann@example.com"}, {"email": "bob@example.com"}]
LEADING = "scheduler running in this process"
STANDING_BY = "scheduler standing by"


@dataclass
class Store:
    """The store both processes share, their environment, and what this process reads."""

    env: dict[str, str]
    home: Path
    started: list[Serve]

    def serve(self, name: str, *options: str) -> Serve:
        """``mailconduit serve --no-sink`` with ``options``, logging to serve-NAME.log."""
        started = start_serve(self.env, self.home / f"serve-{name}.log", "--no-sink", *options)
        self.started.append(started)
        return started


@pytest.fixture(params=["sqlite", "postgresql"])
def shared(
    request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Store]:
    """A store on SQLite or PostgreSQL, a data folder, and this home's sink running here
    (so it outlives any serve process: both run with --no-sink)."""
    home, folder = tmp_path / "serve-home", tmp_path / "serve-data"
    home.mkdir()
    folder.mkdir()
    extra = {
        "MAILCONDUIT_SINK_PORT": str(use_free_sink_port(monkeypatch)),
        "MAILCONDUIT_DATA_DIRS": str(folder),
        schedule.MINUTE_ENV: "8",
    }
    if request.param == "postgresql":
        extra["MAILCONDUIT_DB"] = request.getfixturevalue("pg_url")
        monkeypatch.setenv("MAILCONDUIT_DB", extra["MAILCONDUIT_DB"])
    monkeypatch.setenv("MAILCONDUIT_HOME", str(home))  # this process reads the same store
    monkeypatch.setenv(DATA_DIRS_ENV, str(folder))
    write_csv(folder / "people.csv", ROWS)
    shared = Store(serve_env(home, **extra), home, [])
    try:
        with ensure_running():
            yield shared
    finally:
        for process in shared.started:
            process.stop()


def save_ticker(
    shared: Store,
    *,
    minute: float,
    catch_up: bool = True,
    source: str = "people.csv",
    connection: str = "local",
) -> None:
    shared.env[schedule.MINUTE_ENV] = str(minute)
    service.save_interface(
        {
            "name": "ticker",
            "export": {
                "source": str(Path(shared.env["MAILCONDUIT_DATA_DIRS"]) / source),
                "connection": connection,
                "to": "{{ email }}",
                "subject": "tick",
                "body": "tock",
            },
            "schedule": {"every_minutes": 1, "catch_up": catch_up},
        }
    )


def claims() -> list[store.DueRun]:
    """The due times claimed so far, oldest first."""
    return sorted(store.due_runs("ticker", limit=1000), key=lambda c: c.due_at)


def finished(claim: store.DueRun) -> bool:
    runs = {h.run_id: h.run for h in service.history("ticker", limit=1000)}
    run = runs.get(claim.run_id)
    return run is not None and run.status == "finished"


def all_finished(found: list[store.DueRun]) -> bool:
    """Every run of these due times finished (a due time skipped because the run before
    was still going has none)."""
    ran = [c for c in found if c.run_id]
    return bool(ran) and all(finished(c) for c in ran)


def assert_every_due_time_once(found: list[store.DueRun], minute: float) -> None:
    """Consecutive due times, each claimed once: by a run, or skipped because the run of
    an earlier due time was still going then (one interface never runs twice at once)."""
    gaps = [b.due_at - a.due_at for a, b in itertools.pairwise(found)]
    assert gaps == pytest.approx([minute] * len(gaps)), "a due time was lost or doubled"
    last_run = None
    for claim in found:
        if claim.run_id:
            last_run = api.get_run(claim.run_id)
            continue
        assert last_run is not None and (last_run.finished_at or 0) > claim.due_at, (
            "a due time was skipped though no run was going"
        )


def holder_pid(claim: store.DueRun) -> int:
    return int(claim.holder.split(":")[-2])


def assert_one_run_per_claim_and_no_message_twice(found: list[store.DueRun]) -> None:
    found = [c for c in found if c.run_id]
    history = service.history("ticker", limit=1000)
    assert sorted(h.run_id for h in history) == sorted(c.run_id for c in found)
    assert {h.trigger for h in history} == {"schedule"}
    for h in history:
        assert h.run is not None and h.run.status == "finished" and h.run.counts["sent"] == 2
    ids = [m.header("Message-ID") for m in sink_messages()]
    assert len(ids) == 2 * len(found) and len(set(ids)) == len(ids), "a message went out twice"


def test_one_process_runs_the_schedule_and_the_other_takes_over_after_kill_9(
    shared: Store,
) -> None:
    minute = 8.0  # the scheduler's lease is then 4 s: a takeover ends before the next due time
    save_ticker(shared, minute=minute)
    first = shared.serve("first")
    poll(lambda: first.up() and LEADING in first.output())
    second = shared.serve("second")
    poll(lambda: second.up() and STANDING_BY in second.output())
    assert f"pid {first.pid} on host" in second.output()
    assert LEADING not in second.output()
    status = schedule.scheduler_status()
    assert status.state == "running elsewhere" and f"pid {first.pid} " in status.describe()

    poll(lambda: len(claims()) >= 2 and all_finished(claims()))
    # Kill the leader between two runs: the last one finished, the next not due yet.
    poll(lambda: all_finished(claims()) and time.time() < claims()[-1].due_at + minute / 2)
    first.kill()
    killed = time.time()
    poll(lambda: LEADING in second.output())
    poll(lambda: len([c for c in claims() if c.due_at > killed]) >= 3 and all_finished(claims()))
    second.stop()

    found = claims()
    before = [c for c in found if c.due_at < killed]
    after = [c for c in found if c.due_at > killed]
    assert len(before) >= 2 and holder_pid(before[0]) == first.pid
    assert len(after) >= 3 and {holder_pid(c) for c in after} == {second.pid}
    assert_every_due_time_once(found, minute)
    assert_one_run_per_claim_and_no_message_twice(found)


@pytest.mark.parametrize("catch_up", [True, False], ids=["catch-up", "no-catch-up"])
def test_runs_missed_while_down_are_made_up_once_by_two_processes_coming_back(
    shared: Store, catch_up: bool
) -> None:
    minute = 4.0
    save_ticker(shared, minute=minute, catch_up=catch_up)
    alone = shared.serve("alone")
    poll(lambda: alone.up() and all_finished(claims()))
    alone.stop()
    (last,) = claims()
    # Three due times pass with no scheduler at all.
    poll(lambda: time.time() > last.due_at + 3 * minute + 0.5, pause=0.5)
    assert claims() == [last]

    started = time.time()  # every due time before this passed with no scheduler at all
    missed = int((started - last.due_at) // minute)
    together = [shared.serve("one"), shared.serve("two")]
    poll(lambda: any(LEADING in s.output() for s in together), pause=0.05)
    seen_back = time.time()  # a scheduler is back (a little before this moment)
    poll(lambda: all(s.up() for s in together))
    poll(lambda: len([c for c in claims() if c.due_at > seen_back]) >= 2 and all_finished(claims()))
    assert len([s for s in together if LEADING in s.output()]) == 1
    for process in together:
        process.stop()

    found = claims()
    after = [c for c in found if c.due_at > last.due_at]
    assert_every_due_time_once(after, minute)  # from the first run back on
    first_back = after[0]
    assert missed >= 3
    if catch_up:
        # One run for all the due times missed: the latest of them, before the scheduler was back.
        assert first_back.due_at >= last.due_at + missed * minute - 0.01
        assert first_back.due_at < seen_back
    else:
        # None made up: the first run back is due after the processes were started.
        assert first_back.due_at > started
    assert_one_run_per_claim_and_no_message_twice(found)


def test_no_scheduler_keeps_a_process_out(shared: Store) -> None:
    save_ticker(shared, minute=4.0)
    off = shared.serve("off", "--no-scheduler")
    poll(off.up)
    assert schedule.scheduler_status().state == "not running"
    on = shared.serve("on")
    poll(lambda: on.up() and LEADING in on.output())
    poll(lambda: all_finished(claims()))
    assert {holder_pid(c) for c in claims()} == {on.pid}
    assert "scheduler" not in off.output()


def test_a_run_cut_short_by_kill_9_is_resumed_by_the_process_taking_over(
    shared: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    minute = 12.0  # lease 6 s: the takeover and the rest of the run end before the next due
    people = [{"email": f"user{i}@example.com"} for i in range(8)]
    write_csv(Path(shared.env["MAILCONDUIT_DATA_DIRS"]) / "many.csv", people)
    with FaultServer() as server:
        slow = connect_to(monkeypatch, server.port, name="slow", rate_per_second="4")
        shared.env["MAILCONDUIT_CONN_SLOW"] = os.environ["MAILCONDUIT_CONN_SLOW"]
        save_ticker(shared, minute=minute, source="many.csv", connection=slow)
        first = shared.serve("first")
        poll(lambda: first.up() and LEADING in first.output())
        second = shared.serve("second")
        poll(lambda: second.up() and STANDING_BY in second.output())

        def sending() -> bool:
            found = claims()
            if not found:
                return False
            try:
                run = api.get_run(found[-1].run_id)
            except NotFoundError:
                return False
            return run.status == "running" and run.counts.get("sent", 0) >= 2

        poll(sending, pause=0.05)
        first.kill()
        poll(lambda: LEADING in second.output())
        poll(lambda: len(claims()) >= 3 and all_finished(claims()))
        second.stop()
        received = server_messages(server)

    found = claims()
    cut = found[0]
    assert holder_pid(cut) == first.pid and f"resumed run {cut.run_id}" in second.output()
    assert {holder_pid(c) for c in found[1:]} == {second.pid}
    assert_every_due_time_once(found, minute)
    ran = [c for c in found if c.run_id]
    for claim in ran:
        run = api.get_run(claim.run_id)
        assert run.status == "finished" and run.counts.get("sent") == len(people)
    # Every row of every due time arrived; only a row in flight at the kill may arrive twice.
    per_address = {p["email"]: 0 for p in people}
    for message in received:
        for address in message.recipients:
            per_address[address] += 1
    assert all(len(ran) <= n <= len(ran) + 1 for n in per_address.values()), per_address
