"""The one scheduler of interfaces: APScheduler with its jobs in the project's store.

``mailconduit serve`` runs it. Jobs live in the store's ``scheduled_jobs`` table, so a run
that fell due while nothing was running is found when the scheduler is back and runs once
(coalesced) if the interface's ``catch_up`` allows. An interface is never run twice at once:
one job instance at a time here, and the interface's lease across processes.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from zoneinfo import ZoneInfo

from apscheduler.job import Job
from apscheduler.jobstores.memory import MemoryJobStore
from apscheduler.jobstores.sqlalchemy import SQLAlchemyJobStore
from apscheduler.schedulers.background import BackgroundScheduler
from apscheduler.triggers.base import BaseTrigger
from apscheduler.triggers.cron import CronTrigger
from apscheduler.triggers.interval import IntervalTrigger

from mailconduit.db.engines import engine
from mailconduit.errors import ConfigError, FieldError, MailconduitError
from mailconduit.interfaces import store
from mailconduit.interfaces.model import Interface, Schedule

__all__ = [
    "JOBS_TABLE",
    "MINUTE_ENV",
    "InterfaceScheduler",
    "NextRun",
    "next_runs",
    "notify_changed",
    "trigger_of",
]

log = logging.getLogger("mailconduit.interfaces")
JOBS_TABLE = "scheduled_jobs"
MINUTE_ENV = "MAILCONDUIT_SCHEDULE_MINUTE_SECONDS"
_JOB_PREFIX = "interface:"
#: How often the scheduler re-reads the interfaces (changes made by another process).
SYNC_SECONDS = 30.0
_current: InterfaceScheduler | None = None
_current_lock = threading.Lock()


def trigger_of(schedule: Schedule, *, minute_seconds: float = 60.0) -> BaseTrigger:
    """The APScheduler trigger of a schedule; ``minute_seconds`` shortens minutes for tests."""
    if schedule.cron:
        return CronTrigger.from_crontab(schedule.cron, timezone=ZoneInfo(schedule.timezone))
    return IntervalTrigger(seconds=schedule.every_minutes * minute_seconds, timezone=UTC)


def _scheduled_run(name: str, fingerprint: str = "") -> None:
    """The job: run the interface as its schedule asks (``fingerprint`` tells configurations apart)."""
    from mailconduit.interfaces.runner import InterfaceBusyError, run_interface

    try:
        report = run_interface(name, trigger="schedule")
    except InterfaceBusyError:
        log.info("interface %s: still running; this scheduled run is skipped", name)
    except MailconduitError as exc:
        log.warning("interface %s: scheduled run failed: %s", name, exc)
    else:
        log.info("interface %s: scheduled run %s %s", name, report.run_id, report.status)


class InterfaceScheduler:
    """APScheduler in a background thread, its jobs kept in step with the stored interfaces."""

    def __init__(self, *, minute_seconds: float = 60.0, workers: int = 4) -> None:
        from apscheduler.executors.pool import ThreadPoolExecutor

        self.minute_seconds = minute_seconds
        self._scheduler = BackgroundScheduler(
            jobstores={
                "default": SQLAlchemyJobStore(engine=engine(), tablename=JOBS_TABLE),
                "internal": MemoryJobStore(),
            },
            executors={"default": ThreadPoolExecutor(workers)},
            job_defaults={"coalesce": True, "max_instances": 1},
            timezone=UTC,
        )

    @classmethod
    def from_environment(cls) -> InterfaceScheduler:
        """The scheduler ``mailconduit serve`` runs; MAILCONDUIT_SCHEDULE_MINUTE_SECONDS
        shortens its minutes (for tests and demonstrations only)."""
        text = os.environ.get(MINUTE_ENV, "").strip()
        try:
            minute = float(text) if text else 60.0
        except ValueError:
            minute = 0.0
        if not 0 < minute <= 60:
            raise ConfigError.for_fields(
                "scheduler", [FieldError(MINUTE_ENV, "must be a number of seconds from 0 to 60")]
            )
        return cls(minute_seconds=minute)

    def job(self, name: str) -> Job | None:
        """The scheduler's job of an interface (None when it has no schedule)."""
        return self._scheduler.get_job(_JOB_PREFIX + name, jobstore="default")

    def start(self) -> None:
        """Start the thread, catch up on missed runs, and follow the interfaces from now on."""
        global _current
        self._scheduler.start()
        self.sync()
        self._scheduler.add_job(
            self.sync,
            IntervalTrigger(seconds=SYNC_SECONDS),
            id="sync",
            jobstore="internal",
            replace_existing=True,
        )
        with _current_lock:
            _current = self

    def stop(self, *, wait: bool = False) -> None:
        """Stop scheduling; runs under way finish in their threads (awaited with ``wait``)."""
        global _current
        with _current_lock:
            if _current is self:
                _current = None
        self._scheduler.shutdown(wait=wait)

    @contextlib.contextmanager
    def running(self, *, wait: bool = False) -> Iterator[InterfaceScheduler]:
        """Started for the block; ``wait``: at its end, wait for runs under way."""
        self.start()
        try:
            yield self
        finally:
            self.stop(wait=wait)

    def _fingerprint(self, interface: Interface) -> str:
        return json.dumps([interface.schedule.to_document(), self.minute_seconds], sort_keys=True)

    def sync(self) -> None:
        """Add, change or drop jobs so they match the stored schedules. An unchanged
        schedule keeps its job (and so its next run time, even one that was missed)."""
        wanted = {i.name: i for i in store.list_interfaces() if i.schedule.active}
        for job in self._scheduler.get_jobs(jobstore="default"):
            name = job.id.removeprefix(_JOB_PREFIX)
            if job.id.startswith(_JOB_PREFIX) and name not in wanted:
                job.remove()
        for name, interface in wanted.items():
            fingerprint = self._fingerprint(interface)
            job = self._scheduler.get_job(_JOB_PREFIX + name, jobstore="default")
            if job is not None and job.kwargs.get("fingerprint") == fingerprint:
                continue
            self._scheduler.add_job(
                f"{__name__}:_scheduled_run",
                trigger_of(interface.schedule, minute_seconds=self.minute_seconds),
                args=[name],
                kwargs={"fingerprint": fingerprint},
                id=_JOB_PREFIX + name,
                name=f"interface {name}",
                jobstore="default",
                replace_existing=True,
                misfire_grace_time=None if interface.schedule.catch_up else 1,
            )

    def next_run_times(self) -> dict[str, datetime]:
        """Each scheduled interface's next run time."""
        return {
            job.id.removeprefix(_JOB_PREFIX): job.next_run_time
            for job in self._scheduler.get_jobs(jobstore="default")
            if job.next_run_time is not None
        }


def notify_changed() -> None:
    """An interface was saved or deleted: the scheduler of this process (if any) follows now."""
    with _current_lock:
        current = _current
    if current is not None:
        current.sync()


@dataclass(frozen=True, slots=True)
class NextRun:
    """When an interface runs next by itself."""

    interface: str
    at: datetime
    schedule: str


def next_runs(*, limit: int = 10) -> list[NextRun]:
    """The next scheduled runs, soonest first: from the running scheduler's jobs, else
    computed from the stored schedules (a console without a scheduler)."""
    interfaces = {i.name: i for i in store.list_interfaces() if i.schedule.active}
    with _current_lock:
        current = _current
    now = datetime.now(UTC)
    times: dict[str, Any] = {}
    if current is not None:
        times = current.next_run_times()
    else:
        for name, interface in interfaces.items():
            times[name] = trigger_of(interface.schedule).get_next_fire_time(None, now)
    found = [
        NextRun(name, at.astimezone(UTC), interfaces[name].schedule.describe())
        for name, at in times.items()
        if at is not None and name in interfaces
    ]
    return sorted(found, key=lambda n: n.at)[:limit]
