"""The interfaces' scheduler: APScheduler with its jobs in the store, runs that are ordinary
runs, no overlap, a run missed while it was down made up once, cron in a time zone."""

from __future__ import annotations

import threading
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from export_support import sink_messages, use_free_sink_port, write_csv
from interfaces_support import interface_document
from mailconduit.interfaces import schedule, service
from mailconduit.interfaces.model import DATA_DIRS_ENV, Schedule
from mailconduit.interfaces.schedule import InterfaceScheduler, trigger_of

ROWS = [{"email": "ann@example.com"}, {"email": "bob@example.com"}]
#: A schedule's minute in these tests, in seconds.
MINUTE = 0.5


@pytest.fixture
def source(data_dir: Path) -> Path:
    return write_csv(data_dir / "people.csv", ROWS)


def document(source: Path, **schedule_doc: Any) -> dict[str, Any]:
    return interface_document(
        source, name="ticker", subject="tick", body="tock", schedule=schedule_doc
    )


def wait_for(condition: Any, pause: float = 0.05) -> None:
    """Poll until ``condition()`` holds (the test's timeout is the only limit)."""
    done = threading.Event()
    while not done.wait(pause):
        if condition():
            done.set()


def finished_runs() -> list[service.HistoryEntry]:
    return [
        h for h in service.history("ticker") if h.run is not None and h.run.status == "finished"
    ]


def test_every_n_minutes_runs_repeatedly_each_run_an_ordinary_run(source: Path) -> None:
    service.save_interface(document(source, every_minutes=1))
    with InterfaceScheduler(minute_seconds=MINUTE).running(wait=True):
        wait_for(lambda: len(finished_runs()) >= 2)
    runs = finished_runs()
    assert len({h.run_id for h in runs}) == len(runs)
    assert {h.trigger for h in runs} == {"schedule"}
    for h in runs:
        assert h.run is not None and h.run.counts.get("sent") == 2
    messages = sink_messages()
    ids = [m.header("Message-ID") for m in messages]
    assert len(ids) == len(set(ids)), "a message went out twice"
    assert len(messages) == 2 * len({h.run_id for h in service.history("ticker")})


def test_jobs_live_in_the_store_and_follow_changes(source: Path) -> None:
    service.save_interface(document(source, every_minutes=60, catch_up=False))
    with InterfaceScheduler(minute_seconds=60).running(wait=True) as scheduler:
        job = scheduler.job("ticker")
        assert job is not None and job.misfire_grace_time == 1 and job.coalesce
        first_next = job.next_run_time
        doc = document(source, cron="30 7 * * *", timezone="Europe/Paris")
        service.save_interface(doc, existing="ticker")
        job = scheduler.job("ticker")
        assert job is not None and job.misfire_grace_time is None
        assert job.next_run_time != first_next
        assert job.next_run_time.astimezone(ZoneInfo("Europe/Paris")).hour == 7
        service.delete_interface("ticker")
        assert scheduler.job("ticker") is None


def test_a_scheduler_started_again_keeps_the_next_run_time(source: Path) -> None:
    service.save_interface(document(source, every_minutes=60))
    with InterfaceScheduler().running(wait=True) as first:
        job = first.job("ticker")
        assert job is not None
        planned = job.next_run_time
    with InterfaceScheduler().running(wait=True) as second:
        job = second.job("ticker")
        assert job is not None and job.next_run_time == planned


def test_a_run_missed_while_the_scheduler_was_down_runs_once_when_it_is_back(
    source: Path,
) -> None:
    service.save_interface(document(source, every_minutes=1))
    minute = 3.0
    with InterfaceScheduler(minute_seconds=minute).running(wait=True) as scheduler:
        job = scheduler.job("ticker")
        assert job is not None
        due = job.next_run_time.timestamp()
        stopped = time.time()
    assert finished_runs() == [] and stopped < due
    # Nothing runs while the scheduler is down; let three runs fall due.
    wait_for(lambda: time.time() > due + 2 * minute + 0.2)
    assert service.history("ticker") == []
    back = datetime.now(UTC)
    with InterfaceScheduler(minute_seconds=minute).running(wait=True):
        wait_for(lambda: len(finished_runs()) >= 1)
    first = min(service.history("ticker"), key=lambda h: h.started_at)
    assert first.trigger == "schedule" and first.started_at >= back.timestamp()


def test_cron_schedules_follow_their_time_zone() -> None:
    trigger = trigger_of(Schedule(cron="0 9 * * mon-fri", timezone="America/New_York"))
    start = datetime(2026, 7, 3, 12, 0, tzinfo=UTC)  # a Friday, 08:00 in New York
    first = trigger.get_next_fire_time(None, start)
    assert first is not None and first == datetime(2026, 7, 3, 13, 0, tzinfo=UTC)
    second = trigger.get_next_fire_time(first, first)
    assert second == datetime(2026, 7, 6, 13, 0, tzinfo=UTC)  # Monday, skipping the weekend


def test_next_runs_without_a_running_scheduler(source: Path) -> None:
    service.save_interface(document(source, cron="0 6 * * *", timezone="UTC"))
    (upcoming,) = schedule.next_runs()
    assert upcoming.interface == "ticker" and upcoming.at.hour == 6 and upcoming.at.minute == 0


def test_a_schedule_goes_on_across_a_restart_of_serve(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """As an operator sees it: runs by the schedule, none while 'serve' is stopped, one made
    up as soon as it is back, and never a message twice."""
    from serve_support import poll, serve_env, serving

    home, folder = tmp_path / "serve-home", tmp_path / "serve-data"
    home.mkdir()
    folder.mkdir()
    env = serve_env(
        home,
        MAILCONDUIT_SINK_PORT=str(use_free_sink_port(monkeypatch)),
        MAILCONDUIT_DATA_DIRS=str(folder),
        MAILCONDUIT_SCHEDULE_MINUTE_SECONDS="2",
    )
    monkeypatch.setenv("MAILCONDUIT_HOME", str(home))  # this process reads the same store
    monkeypatch.setenv(DATA_DIRS_ENV, str(folder))
    source = write_csv(folder / "people.csv", ROWS)
    service.save_interface(document(source, every_minutes=1))
    with serving(env):
        poll(lambda: len(finished_runs()) >= 1)
    before = {h.run_id for h in service.history("ticker")}
    stopped = time.time()
    poll(lambda: time.time() > stopped + 5)  # two or three runs fall due meanwhile
    assert {h.run_id for h in service.history("ticker")} == before
    restarted = time.time()
    with serving(env):
        poll(lambda: any(h.started_at >= restarted for h in finished_runs()))
    made_up = [h for h in service.history("ticker") if h.run_id not in before]
    assert made_up and {h.trigger for h in made_up} == {"schedule"}
    ids = [m.header("Message-ID") for m in sink_messages()]
    assert len(ids) == len(set(ids)), "a message went out twice"
