"""Helpers for the agents' tests: real brokers (Redis, RabbitMQ), PostgreSQL as the shared
journal, and worker processes started with ``mailconduit agent run``, each with a home of
its own (as on another machine)."""

from __future__ import annotations

import contextlib
import os
import secrets
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from delivery_support import CONNECTION, MAILCONDUIT, MESSAGE, TimedFaultServer, connection_url
from serve_support import LoggedProcess

BROKERS = {
    "redis": "redis://127.0.0.1:6379/0",
    "rabbitmq": "amqp://guest:guest@127.0.0.1:5672//",
}
#: Short leases so a takeover happens within seconds (the default is 30 s).
FAST_AGENT_ENV = {
    "MAILCONDUIT_AGENT_LEASE_SECONDS": "3",
    "MAILCONDUIT_AGENT_HEARTBEAT_SECONDS": "1",
    "MAILCONDUIT_AGENT_REAP_SECONDS": "0.5",
}


def wait_for(predicate: Any, *, what: str, timeout: float = 120.0, every: float = 0.05) -> None:
    """Poll until ``predicate()``; a generous bound only against a hang, never a speed check."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            pytest.fail(f"gave up after {timeout:.0f} s waiting for {what}")
        time.sleep(every)


@dataclass
class Worker(LoggedProcess):
    """One ``mailconduit agent run`` process (the leader of its own process group)."""

    home: Path

    def children(self) -> list[int]:
        """The pool processes of this worker."""
        path = Path(f"/proc/{self.pid}/task/{self.pid}/children")
        try:
            return [int(p) for p in path.read_text().split()]
        except OSError:
            return []


@dataclass
class Cluster:
    """A broker, a shared journal, an agent and its workers: what several machines share."""

    agent: str
    env: dict[str, str]
    tmp: Path
    workers: list[Worker] = field(default_factory=list)

    def start_worker(self, *, concurrency: int = 1, **extra: str) -> Worker:
        n = len(self.workers) + 1
        home = self.tmp / f"worker-home-{n}"
        home.mkdir(exist_ok=True)
        log = self.tmp / f"worker-{n}.log"
        env = {**self.env, "MAILCONDUIT_HOME": str(home), **extra}
        with open(log, "wb") as out:
            process = subprocess.Popen(
                [MAILCONDUIT, "agent", "run", self.agent, "--concurrency", str(concurrency)],
                env=env,
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                cwd=home,
                start_new_session=True,
            )
        worker = Worker(process, log, home)
        self.workers.append(worker)
        return worker

    def live_workers(self) -> int:
        from mailconduit.journal.agents import AgentStore

        store = AgentStore(self.env["MAILCONDUIT_DB"])
        try:
            return sum(
                1 for w in store.workers(self.agent) if not w.stopped and w.heartbeat_age < 3
            )
        finally:
            store.close()

    def wait_live(self, count: int) -> None:
        wait_for(lambda: self.live_workers() >= count, what=f"{count} live workers")

    def stop(self) -> None:
        for worker in self.workers:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(worker.pid, signal.SIGCONT)  # a frozen one must hear SIGTERM
                os.killpg(worker.pid, signal.SIGTERM)
        for worker in self.workers:
            with contextlib.suppress(subprocess.TimeoutExpired):
                worker.process.wait(30)
            # what is left of the group: a hung worker, pool processes orphaned by a kill -9
            with contextlib.suppress(ProcessLookupError):
                os.killpg(worker.pid, signal.SIGKILL)
            worker.process.wait()

    def store(self) -> Any:
        from mailconduit.journal.agents import AgentStore

        return AgentStore(self.env["MAILCONDUIT_DB"])

    def running_owners(self, run_id: str) -> list[int]:
        """Pids of the live pool processes holding a chunk of the run right now."""
        store = self.store()
        try:
            owners = [
                int(c.owner.split(":")[1])
                for c in store.chunks(run_id)
                if c.state == "running" and c.seconds_left > 0
            ]
        finally:
            store.close()
        return [pid for pid in owners if self.worker_of(pid) is not None]

    def worker_of(self, pid: int) -> Worker | None:
        return next((w for w in self.workers if pid in w.children()), None)


@contextlib.contextmanager
def running_cluster(
    broker: str, pg_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Cluster]:
    """This test's shared journal and broker, set for this process (the coordinator) too;
    the workers it starts are stopped at the end."""
    from cryptography.fernet import Fernet

    agent = "agent-" + secrets.token_hex(4)
    key = Fernet.generate_key().decode()
    shared = {
        "MAILCONDUIT_DB": pg_url,
        "MAILCONDUIT_BROKER_URL": broker,
        "MAILCONDUIT_KEY": key,
        **FAST_AGENT_ENV,
    }
    for name, value in shared.items():
        monkeypatch.setenv(name, value)
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTEST_")}
    env.update(shared, PYTHONUNBUFFERED="1")
    group = Cluster(agent, env, tmp_path)
    try:
        yield group
    finally:
        group.stop()


def use_agent_server(
    cluster: Cluster, monkeypatch: pytest.MonkeyPatch, port: int, **query: object
) -> None:
    """Connection ``fault``: the test server, routed through the cluster's agent."""
    url = connection_url(port, implementation_type="celery", agent=cluster.agent, **query)
    name = f"MAILCONDUIT_CONN_{CONNECTION.upper()}"
    monkeypatch.setenv(name, url)
    cluster.env[name] = url


@contextlib.contextmanager
def agent_connection(
    cluster: Cluster, monkeypatch: pytest.MonkeyPatch, **server_options: Any
) -> Iterator[TimedFaultServer]:
    """A :class:`TimedFaultServer` (``faults``, ``hold_dot``...) that connection ``fault``
    reaches through the cluster's agent until the block ends."""
    with TimedFaultServer(**server_options) as server:
        use_agent_server(cluster, monkeypatch, server.port)
        yield server


def run_status(run_id: str) -> str:
    from mailconduit.journal import Journal

    journal = Journal()
    try:
        return journal.get_run(run_id).status
    finally:
        journal.close()


def sent_rows(run_id: str) -> int:
    from mailconduit.journal import Journal

    journal = Journal()
    try:
        return journal.get_run(run_id).counts.get("sent", 0)
    finally:
        journal.close()


def send_standard(source: Path, connection: str) -> Any:
    """Export ``source`` with the standard message through ``connection``; the report."""
    from mailconduit import api

    return api.export(
        str(source), connection=connection, to=MESSAGE["to"], subject=MESSAGE["subject"],
        body=MESSAGE["body"], key=MESSAGE["key"],
    )  # fmt: skip


def detach(source: Path, **options: Any) -> str:
    """Start a celery export of ``source`` (the standard message) and return its run id."""
    from mailconduit import api

    spec = api.export_spec(
        {"source": str(source), "connection": CONNECTION, **MESSAGE, "concurrency": 1, **options}
    )
    return api.detach_export(spec, queue=True)


class CuttableProxy:
    """A TCP relay on 127.0.0.1 to ``target``; :meth:`cut` drops every connection open now,
    as a network failure between a worker and its broker would (new ones get through)."""

    def __init__(self, target: tuple[str, int]) -> None:
        self.target = target
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port: int = self._listener.getsockname()[1]
        self._open: set[socket.socket] = set()
        self._lock = threading.Lock()
        self.cuts = 0
        threading.Thread(target=self._accept, name="proxy", daemon=True).start()

    def url(self, broker: str) -> str:
        scheme, _, rest = broker.partition("://")
        auth, _, hostpart = rest.rpartition("@")
        path = hostpart.partition("/")[2]
        return f"{scheme}://{auth + '@' if auth else ''}127.0.0.1:{self.port}/{path}"

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            try:
                upstream = socket.create_connection(self.target)
            except OSError:
                client.close()
                continue
            with self._lock:
                self._open.update((client, upstream))
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(a, b), daemon=True).start()

    def _pump(self, src: socket.socket, dst: socket.socket) -> None:
        try:
            while data := src.recv(65536):
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                with contextlib.suppress(OSError):
                    s.shutdown(socket.SHUT_RDWR)
                s.close()
            with self._lock:
                self._open.difference_update((src, dst))

    def cut(self) -> int:
        """Drop every relayed connection; returns how many sockets were open."""
        with self._lock:
            sockets = list(self._open)
            self._open.clear()
        for s in sockets:
            with contextlib.suppress(OSError):
                s.shutdown(socket.SHUT_RDWR)
            s.close()
        self.cuts += 1
        return len(sockets)

    def close(self) -> None:
        self._listener.close()
        self.cut()
