"""The Celery application: the only module that imports Celery.

Settings fit at-least-once work whose safety is in the journal, not in the broker: a task
is acknowledged only after it ran (``acks_late``) and goes back to the queue when its
pool process dies (``reject_on_worker_lost``); a worker reserves one task at a time
(prefetch 1); no ETA or countdown, no chords, no result backend (progress is read from
the journal). A task carries only (run id, chunk number).
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
from collections.abc import Sequence
from typing import Any

from mailconduit.agents.settings import AgentSettings, check_agent_name, queue_name
from mailconduit.config import Connection
from mailconduit.journal.agents import AgentStore

__all__ = ["CHUNK_TASK", "make_app", "publish", "run_worker"]

CHUNK_TASK = "mailconduit.chunk"
log = logging.getLogger("mailconduit.agents")

_apps: dict[tuple[int, str], Any] = {}
_apps_lock = threading.Lock()


def make_app(settings: AgentSettings) -> Any:
    """The Celery app for ``settings.broker_url`` (one per process and broker)."""
    key = (os.getpid(), settings.broker_url)
    with _apps_lock:
        app = _apps.get(key)
        if app is None:
            app = _apps[key] = _build(settings)
        return app


def _build(settings: AgentSettings) -> Any:
    from celery import Celery

    app = Celery("mailconduit", broker=settings.broker_url, set_as_current=False)
    app.conf.update(
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        task_acks_on_failure_or_timeout=True,
        worker_prefetch_multiplier=1,
        task_ignore_result=True,
        task_store_errors_even_if_ignored=False,
        result_backend=None,
        task_serializer="json",
        accept_content=["json"],
        broker_transport_options={"visibility_timeout": settings.visibility_timeout},
        broker_connection_retry_on_startup=True,
        broker_connection_max_retries=None,
        worker_hijack_root_logger=False,
        worker_send_task_events=False,
        task_send_sent_event=False,
        worker_enable_remote_control=False,
        worker_cancel_long_running_tasks_on_connection_loss=False,
    )

    @app.task(name=CHUNK_TASK, acks_late=True, reject_on_worker_lost=True, ignore_result=True)  # type: ignore[untyped-decorator]
    def chunk_task(run_id: str, chunk: int) -> str:
        return _run_task(run_id, int(chunk))

    return app


def _run_task(run_id: str, chunk: int) -> str:
    from mailconduit.agents.chunk import run_chunk
    from mailconduit.connections.env import env_lookup
    from mailconduit.netpolicy import allow_address

    def connection(name: str) -> Connection:
        found = env_lookup(name)
        if found is None:
            from mailconduit.connections import store

            found = store.get(name)
        if not found.signs_in_with_oauth:
            return found
        from mailconduit.connections import signin  # OAuth2 and HTTP modules: only for it

        return signin.with_tokens(found)  # an OAuth2 connection: this chunk's token provider

    settings = AgentSettings.from_env(require_broker=False)
    AgentStore.shared(hold_seconds=settings.hold_seconds)
    profile_dir = os.environ.get("MAILCONDUIT_AGENT_PROFILE", "").strip()
    profiler = None
    if profile_dir:  # for benchmarks: one cProfile dump per chunk, read with pstats
        import cProfile

        profiler = cProfile.Profile()
        profiler.enable()
    try:
        outcome = run_chunk(
            run_id, chunk, settings=settings, connection=connection, allow_address=allow_address
        )
    finally:
        if profiler is not None:
            profiler.disable()
            profiler.dump_stats(os.path.join(profile_dir, f"chunk-{run_id}-{chunk}-{os.getpid()}.prof"))
    log.info("run %s chunk %s: %s", run_id, chunk, outcome)
    return outcome


def warm_up(settings: AgentSettings) -> None:
    """Build the app and open its broker connection ahead of :func:`publish`; a failure
    here is :func:`publish`'s to report."""
    try:
        app = make_app(settings)
        with app.producer_or_acquire():
            pass
    except Exception:  # the broker is down: publish says so
        log.debug("broker warm-up failed", exc_info=True)


def publish(settings: AgentSettings, agent: str, run_id: str, chunks: Sequence[int]) -> None:
    """Put one task per chunk on the agent's queue (mandatory delivery is the journal's job:
    a chunk whose task is lost is published again by a worker's reaper)."""
    app = make_app(settings)
    queue = queue_name(agent)
    with app.producer_or_acquire() as producer:
        for chunk in chunks:
            app.send_task(CHUNK_TASK, args=(run_id, chunk), queue=queue, producer=producer)


def queue_depth(settings: AgentSettings, agent: str) -> int | None:
    """Messages waiting in the agent's queue (0 when it does not exist); None when the
    broker cannot be asked now."""
    app = make_app(settings)
    try:
        with app.connection_for_read() as conn:
            try:
                declared = conn.default_channel.queue_declare(queue=queue_name(agent), passive=True)
            except conn.channel_errors:  # no such queue yet (Redis: an empty list is no key)
                return 0
            return int(declared.message_count)
    except Exception:  # the broker is unreachable: the consumer's own retries deal with it
        return None


class _Background:
    """The worker's own threads: heartbeats to the registry, and the reaper.

    The reaper also keeps the broker honest, since a run's recovery must not depend on it:
    a queued chunk whose message is nowhere in the queue (lost with a broker connection
    cut as Redis handed it out, or held for an hour as unacknowledged by a connection that
    died) is published again; and a worker with room whose queue holds messages it does
    not take (Celery's consumer can stay silent after reconnecting to Redis several times
    in a row: celery/celery#8091, #10205) has its consumer reconnect.
    """

    def __init__(self, settings: AgentSettings, agent: str, worker: str, concurrency: int) -> None:
        self.settings = settings
        self.agent = agent
        self.worker = worker
        self.concurrency = concurrency
        self.consumer: Any = None  # Celery's consumer, once the worker is ready
        self._idle_with_work_since: float | None = None
        self._done = threading.Event()
        self._threads = [
            threading.Thread(target=self._beat, name="agent-heartbeat", daemon=True),
            threading.Thread(target=self._reap, name="agent-reaper", daemon=True),
        ]
        self._store: AgentStore | None = None

    def start(self) -> None:
        self._store = AgentStore(hold_seconds=self.settings.hold_seconds)
        self._store.heartbeat(worker=self.worker, agent=self.agent, host=socket.gethostname(),
                              pid=os.getpid(), concurrency=self.concurrency)  # fmt: skip
        for thread in self._threads:
            thread.start()

    def stop(self) -> None:
        self._done.set()
        for thread in self._threads:
            if thread.is_alive():
                thread.join(10)
        if self._store is not None:
            try:
                self._store.worker_stopped(self.worker)
            except Exception:  # the journal is gone: the heartbeat ages out by itself
                log.warning("could not mark worker %s stopped", self.worker)

    def _beat(self) -> None:
        assert self._store is not None
        while not self._done.wait(self.settings.heartbeat_seconds):
            try:
                self._store.heartbeat(worker=self.worker, agent=self.agent,
                                      host=socket.gethostname(), pid=os.getpid(),
                                      concurrency=self.concurrency)  # fmt: skip
            except Exception:
                log.warning("heartbeat of %s not recorded (journal unreachable)", self.worker)

    def _reap(self) -> None:
        from mailconduit.agents.chunk import finish_run_if_complete

        store = AgentStore(hold_seconds=self.settings.hold_seconds)
        try:
            while not self._done.wait(self.settings.reap_seconds):
                try:
                    found = store.expired_chunks(
                        lease=self.settings.lease_seconds,
                        lost=max(self.settings.visibility_timeout, 300.0),
                    )
                    by_run: dict[tuple[str, str], list[int]] = {}
                    for run_id, chunk, agent in found:
                        by_run.setdefault((agent, run_id), []).append(chunk)
                    for (agent, run_id), chunks in by_run.items():
                        publish(self.settings, agent, run_id, chunks)
                        log.info("run %s: chunks %s published again", run_id, chunks)
                    for run_id in store.stop_expired():  # held by a dead worker of a stopped run
                        finish_run_if_complete(store, run_id)
                    self._watch_queue(store)
                except Exception:
                    log.warning("reaper: journal or broker unreachable; trying again")
        finally:
            store.close()

    @property
    def quiet_seconds(self) -> float:
        """How long a queued chunk may go unclaimed with an empty queue, or a worker with room
        leave messages in its queue, before the broker is taken to have dropped them."""
        return max(2.0, 3 * self.settings.reap_seconds)

    def _watch_queue(self, store: AgentStore) -> None:
        depth = queue_depth(self.settings, self.agent)
        if depth is None:
            return
        if depth == 0:
            self._idle_with_work_since = None
            chunks = store.unheard_chunks(self.agent, quiet=self.quiet_seconds)
            by_run: dict[str, list[int]] = {}
            for run_id, chunk in chunks:
                by_run.setdefault(run_id, []).append(chunk)
            for run_id, numbers in by_run.items():
                publish(self.settings, self.agent, run_id, numbers)
                log.warning("run %s: chunks %s were queued with no message in the broker; "
                            "published again", run_id, numbers)  # fmt: skip
            return
        from celery.worker import state

        busy = len(state.active_requests) + len(state.reserved_requests)
        if busy >= self.concurrency or self.consumer is None:
            self._idle_with_work_since = None
            return
        now = time.monotonic()
        if self._idle_with_work_since is None:
            self._idle_with_work_since = now
        elif now - self._idle_with_work_since >= self.quiet_seconds:
            self._idle_with_work_since = None
            log.warning("worker %s: %s messages wait in its queue and it takes none; its "
                        "consumer reconnects", self.worker, depth)  # fmt: skip
            self.consumer.hub.call_soon(_reconnect, self.consumer)


def _reconnect(consumer: Any) -> None:
    """In the consumer's loop: end it as a lost connection does, so Celery connects again."""
    errors = tuple(consumer.connection_errors)
    if any(issubclass(ConnectionError, e) for e in errors):
        raise ConnectionError("mailconduit: the consumer took no message; reconnecting")
    raise errors[0]("mailconduit: the consumer took no message; reconnecting")


def _preload() -> None:
    """Import what a chunk needs before the pool processes are forked: each would import
    it again on its first chunk (measured with MAILCONDUIT_AGENT_PROFILE), a delay before
    the run's first message. (The OAuth2 sign-in, 0.9 s of OAuth and HTTP modules, is
    imported for an XOAUTH2 connection only, as api.serving does.)"""
    import mailconduit.agents.chunk
    import mailconduit.connections.store
    import mailconduit.delivery.execution
    import mailconduit.delivery.loop
    import mailconduit.netpolicy  # noqa: F401


def run_worker(name: str, *, concurrency: int, settings: AgentSettings) -> int:
    """Start a Celery worker for agent ``name`` in this process; returns when it stops."""
    check_agent_name(name)
    app = make_app(settings)
    _preload()
    worker_id = f"{name}@{socket.gethostname()}.{os.getpid()}"
    background = _Background(settings, name, worker_id, concurrency)
    from celery.signals import worker_ready

    def ready(sender: Any = None, **_: Any) -> None:
        background.consumer = sender if getattr(sender, "hub", None) is not None else None
        background.start()  # live in the registry once it consumes, not before
        print(f"agent {name}: worker {worker_id} ready", flush=True)

    worker_ready.connect(ready, weak=False)
    try:
        worker = app.Worker(
            hostname=worker_id,
            queues=[queue_name(name)],
            concurrency=concurrency,
            pool="prefork",
            loglevel="WARNING",
            without_gossip=True,
            without_mingle=True,
            without_heartbeat=True,
            optimization="fair",
            quiet=True,
        )
        worker.start()
        return int(getattr(worker, "exitcode", 0) or 0)
    finally:
        background.stop()
