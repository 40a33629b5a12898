"""The one scheduler of interfaces: APScheduler with its jobs in the project's store.

``mailconduit serve`` runs it. Jobs live in the store's ``scheduled_jobs`` table, so a run
that fell due while nothing was running is found when the scheduler is back and runs once
(coalesced) if the interface's ``catch_up`` allows. An interface is never run twice at once:
one job instance at a time here, and the interface's lease across processes.

Several ``serve`` processes may share a store: each starts a scheduler, but only the one
holding the scheduler's lease in the store (taken atomically, renewed by its thread) lets
APScheduler run jobs; the others stand by and take the lease over when it expires (its
holder was stopped or killed). Each due time is claimed in the store before its run, so a
due time yields one run even if two schedulers ever believed they led.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import json
import logging
import os
import secrets
import socket
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from zoneinfo import ZoneInfo

from apscheduler.events import EVENT_JOB_MAX_INSTANCES, JobSubmissionEvent
from apscheduler.executors.base import BaseExecutor, run_job
from apscheduler.job import Job
from apscheduler.jobstores.sqlalchemy import SQLAlchemyJobStore
from apscheduler.schedulers.background import BackgroundScheduler
from apscheduler.triggers.base import BaseTrigger
from apscheduler.triggers.cron import CronTrigger
from apscheduler.triggers.interval import IntervalTrigger

from mailconduit.db.engines import engine
from mailconduit.errors import ConfigError, FieldError, MailconduitError, NotFoundError
from mailconduit.interfaces import store
from mailconduit.interfaces.model import Interface, Schedule
from mailconduit.journal import Journal

__all__ = [
    "JOBS_TABLE",
    "LEADER_KEY",
    "MINUTE_ENV",
    "InterfaceScheduler",
    "NextRun",
    "SchedulerStatus",
    "lease_seconds_for",
    "next_runs",
    "notify_changed",
    "scheduler_status",
    "trigger_of",
]

log = logging.getLogger("mailconduit.interfaces")
JOBS_TABLE = "scheduled_jobs"
MINUTE_ENV = "MAILCONDUIT_SCHEDULE_MINUTE_SECONDS"
#: The scheduler's lease in the journal's lease table (one per store).
LEADER_KEY = "scheduler:interfaces"
#: The longest the scheduler's lease lasts unless renewed (so the longest a dead holder
#: keeps the others waiting, plus a third of it for them to notice).
LEASE_SECONDS = 15.0
_JOB_PREFIX = "interface:"
_current: InterfaceScheduler | None = None
_current_lock = threading.Lock()
#: The due time the job running in this thread was submitted for (set by the executor).
_due = threading.local()


def lease_seconds_for(minute_seconds: float) -> float:
    """The scheduler's lease for minutes of ``minute_seconds``: 15 s for real minutes,
    shorter for shortened ones (tests), so a takeover takes less than a minute."""
    return max(2.0, min(LEASE_SECONDS, minute_seconds / 2))


def trigger_of(schedule: Schedule, *, minute_seconds: float = 60.0) -> BaseTrigger:
    """The APScheduler trigger of a schedule; ``minute_seconds`` shortens minutes for tests."""
    if schedule.cron:
        return CronTrigger.from_crontab(schedule.cron, timezone=ZoneInfo(schedule.timezone))
    return IntervalTrigger(seconds=schedule.every_minutes * minute_seconds, timezone=UTC)


def _holder_name() -> str:
    return f"{socket.gethostname()[:200]}:{os.getpid()}:{secrets.token_hex(4)}"


def _scheduled_run(name: str, fingerprint: str = "") -> None:
    """The job: claim the due time, then run the interface (``fingerprint`` tells
    configurations apart; the executor says which due time this is)."""
    from mailconduit.interfaces.runner import InterfaceBusyError, run_id_for, run_interface

    due: datetime | None = getattr(_due, "at", None)
    holder: str = getattr(_due, "holder", "") or _holder_name()
    run_id = run_id_for(name, due)
    if due is not None and not store.claim_due_run(
        name, due.timestamp(), run_id=run_id, holder=holder
    ):
        log.info("interface %s: the run due at %s was run by another scheduler", name, due)
        return
    try:
        report = run_interface(name, trigger="schedule", run_id=run_id)
    except InterfaceBusyError:
        log.info("interface %s: still running; this scheduled run is skipped", name)
        if due is not None:
            store.skip_due_run(name, due.timestamp())
    except MailconduitError as exc:
        log.warning("interface %s: scheduled run failed: %s", name, exc)
    else:
        log.info("interface %s: scheduled run %s %s", name, report.run_id, report.status)


class _DueTimeExecutor(BaseExecutor):  # type: ignore[misc]  # APScheduler 3 has no type hints
    """A thread pool, as APScheduler's own, that tells each job which due time it runs for
    (the job claims that due time in the store before running)."""

    def __init__(self, workers: int, holder: str) -> None:
        super().__init__()
        self.holder = holder
        self._pool = concurrent.futures.ThreadPoolExecutor(
            workers, thread_name_prefix="interface-run"
        )

    def _do_submit_job(self, job: Job, run_times: list[datetime]) -> None:
        def body() -> list[Any]:
            _due.at, _due.holder = run_times[-1], self.holder
            try:
                return list(run_job(job, "default", run_times, self._logger.name))
            finally:
                _due.at = None

        def done(future: concurrent.futures.Future[list[Any]]) -> None:
            exc = future.exception()
            if exc is not None:
                self._run_job_error(job.id, exc, exc.__traceback__)
            else:
                self._run_job_success(job.id, future.result())

        self._pool.submit(body).add_done_callback(done)

    def shutdown(self, wait: bool = True) -> None:
        self._pool.shutdown(wait)


class InterfaceScheduler:
    """APScheduler in a background thread, its jobs kept in step with the stored interfaces,
    running them only while this process holds the store's scheduler lease."""

    def __init__(
        self,
        *,
        minute_seconds: float = 60.0,
        workers: int = 4,
        announce: Callable[[str], None] | None = None,
    ) -> None:
        self.minute_seconds = minute_seconds
        self.lease_seconds = lease_seconds_for(minute_seconds)
        #: Who this scheduler is in the lease: host, pid and a random tail.
        self.holder = _holder_name()
        #: No other scheduler shares it: the lease is taken over only once it expired.
        self._home = "scheduler:" + secrets.token_hex(8)
        self._announce = announce
        self._leading = threading.Event()
        self._stopping = threading.Event()
        self._sync_lock = threading.Lock()
        self._journal: Journal | None = None
        self._keeper: threading.Thread | None = None
        self._scheduler = BackgroundScheduler(
            jobstores={"default": SQLAlchemyJobStore(engine=engine(), tablename=JOBS_TABLE)},
            executors={"default": _DueTimeExecutor(workers, self.holder)},
            job_defaults={"coalesce": True, "max_instances": 1},
            timezone=UTC,
        )
        self._scheduler.add_listener(self._still_running, EVENT_JOB_MAX_INSTANCES)

    @classmethod
    def from_environment(
        cls, *, announce: Callable[[str], None] | None = None
    ) -> InterfaceScheduler:
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
        return cls(minute_seconds=minute, announce=announce)

    @property
    def leading(self) -> bool:
        """True while this process holds the lease and runs the schedules."""
        return self._leading.is_set()

    def job(self, name: str) -> Job | None:
        """The scheduler's job of an interface (None when it has no schedule)."""
        return self._scheduler.get_job(_JOB_PREFIX + name, jobstore="default")

    def start(self) -> None:
        """Start the thread (paused), try for the lease at once, then keep or seek it."""
        global _current
        self._scheduler.start(paused=True)
        self._journal = Journal()
        self._tick()
        if not self.leading:
            self._say_standing_by()
        self._keeper = threading.Thread(target=self._keep, name="scheduler-lease", daemon=True)
        self._keeper.start()
        with _current_lock:
            _current = self

    def stop(self, *, wait: bool = False) -> None:
        """Stop scheduling and let the lease go; runs under way finish in their threads
        (awaited with ``wait``)."""
        global _current
        with _current_lock:
            if _current is self:
                _current = None
        self._stopping.set()
        if self._keeper is not None:
            self._keeper.join()
        self._scheduler.shutdown(wait=wait)
        if self._journal is not None:
            if self._leading.is_set():
                self._leading.clear()
                self._journal.release_lease(LEADER_KEY, owner=self.holder)
            self._journal.close()
            self._journal = None

    @contextlib.contextmanager
    def running(self, *, wait: bool = False) -> Iterator[InterfaceScheduler]:
        """Started for the block; ``wait``: at its end, wait for runs under way."""
        self.start()
        try:
            yield self
        finally:
            self.stop(wait=wait)

    def _still_running(self, event: JobSubmissionEvent) -> None:
        """A due time came while the interface's previous run still went, so it gets no run:
        it is claimed with none, and the store accounts for every due time."""
        name = str(event.job_id).removeprefix(_JOB_PREFIX)
        for due in event.scheduled_run_times[-1:]:
            store.claim_due_run(name, due.timestamp(), run_id="", holder=self.holder)
        log.info("interface %s: still running; the run due now is skipped", name)

    # -- the lease ---------------------------------------------------------------------

    def _keep(self) -> None:
        """Renew the lease while leading, else watch for it to be free (until stopped)."""
        while not self._stopping.wait(self.lease_seconds / 3):
            try:
                self._tick()
            except Exception:  # a store hiccup: never lead on a lease not renewed
                log.exception("scheduler lease")
                if self._leading.is_set():
                    self._step_down()

    def _tick(self) -> None:
        journal = self._journal
        assert journal is not None
        if self._leading.is_set():
            if journal.renew_lease(LEADER_KEY, owner=self.holder, ttl=self.lease_seconds):
                self.sync()
            else:
                self._step_down()
        elif (
            journal.take_lease(
                LEADER_KEY, owner=self.holder, home=self._home, ttl=self.lease_seconds
            )
            is None
        ):
            self._take_over()

    def _take_over(self) -> None:
        self._leading.set()
        self.sync()
        orphans = self._unfinished_runs_of_others()
        self._scheduler.resume()
        self._say(f"scheduler running in this process ({_who(self.holder)})")
        if orphans:
            threading.Thread(
                target=self._resume_orphans, args=(orphans,), name="resume-runs", daemon=True
            ).start()

    def _step_down(self) -> None:
        self._scheduler.pause()
        self._leading.clear()
        self._say_standing_by()

    def _say_standing_by(self) -> None:
        status = scheduler_status()
        there = f": {status.pid_and_host} runs it" if status.pid_and_host else ""
        self._say(f"scheduler standing by{there}")

    def _say(self, text: str) -> None:
        log.info("%s", text)
        if self._announce is not None:
            self._announce(text)

    # -- runs a killed scheduler left --------------------------------------------------

    def _unfinished_runs_of_others(self) -> list[store.DueRun]:
        """Each interface's latest claimed run, when another scheduler claimed it and the
        journal does not have it finished (its process was killed during the run)."""
        from mailconduit import api

        found: list[store.DueRun] = []
        for interface in store.list_interfaces():
            latest = next(iter(store.due_runs(interface.name, limit=1)), None)
            if latest is None or not latest.run_id or latest.holder == self.holder:
                continue
            try:
                status = str(api.get_run(latest.run_id).status)
            except NotFoundError:
                status = "running"  # claimed, never started
            if status == "running":
                found.append(latest)
        return found

    def _resume_orphans(self, orphans: list[store.DueRun]) -> None:
        """Resume the runs a killed scheduler left, each once nobody holds its interface
        (the dead holder's lease expires); gives up after a few of those lease times."""
        from mailconduit.interfaces.runner import LEASE_SECONDS as RUN_LEASE
        from mailconduit.interfaces.runner import InterfaceBusyError, run_interface

        pause = self.lease_seconds / 3
        tries = int(3 * RUN_LEASE / pause) + 1
        for _ in range(tries):
            if not orphans or not self._leading.is_set():
                return
            left: list[store.DueRun] = []
            for orphan in orphans:
                try:
                    run_interface(orphan.interface, trigger="schedule", run_id=orphan.run_id)
                except InterfaceBusyError:
                    left.append(orphan)  # the killed holder's lease has not expired yet
                except MailconduitError as exc:
                    log.warning(
                        "interface %s: resuming %s: %s", orphan.interface, orphan.run_id, exc
                    )
                else:
                    self._say(f"interface {orphan.interface}: resumed run {orphan.run_id}")
            orphans = left
            if self._stopping.wait(pause):
                return

    # -- jobs --------------------------------------------------------------------------

    def _fingerprint(self, interface: Interface) -> str:
        return json.dumps([interface.schedule.to_document(), self.minute_seconds], sort_keys=True)

    def sync(self) -> None:
        """Add, change or drop jobs so they match the stored schedules (the leader only).
        An unchanged schedule keeps its job (and so its next run time, even a missed one)."""
        if not self._leading.is_set():
            return
        with self._sync_lock:
            self._sync()

    def _sync(self) -> None:
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


def _who(holder: str) -> str:
    """'pid N on host H' of a lease holder's name."""
    host, _, rest = holder.rpartition(":")[0].rpartition(":")
    return f"pid {rest} on host {host}" if host else holder


@dataclass(frozen=True, slots=True)
class SchedulerStatus:
    """Which process runs the schedules of this store, as people are told."""

    #: "running here", "standing by", "running elsewhere" or "not running".
    state: str
    #: "pid N on host H" of the process that runs them ("" when none does).
    pid_and_host: str

    def describe(self) -> str:
        """One line for the console and the log."""
        if self.state == "running here":
            return f"scheduler: running in this process ({self.pid_and_host})"
        if self.state == "standing by":
            there = f"; {self.pid_and_host} runs it" if self.pid_and_host else ""
            return f"scheduler: standing by{there}"
        if self.state == "running elsewhere":
            return f"scheduler: running in {self.pid_and_host}"
        return "scheduler: not running (no 'mailconduit serve' with its scheduler on this store)"


def scheduler_status() -> SchedulerStatus:
    """Who holds the scheduler's lease now, and what this process's scheduler does."""
    with _current_lock:
        current = _current
    with Journal() as journal:
        lease = journal.lease(LEADER_KEY)
    live = lease is not None and lease.expires_at > lease.now
    who = _who(lease.owner) if lease is not None and live else ""
    if current is not None and current.leading:
        return SchedulerStatus("running here", _who(current.holder))
    if current is not None:
        return SchedulerStatus("standing by", who)
    return SchedulerStatus("running elsewhere" if who else "not running", who)


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
