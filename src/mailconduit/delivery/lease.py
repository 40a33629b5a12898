"""One sender per run: a lock file within one home, and a lease in the journal across hosts."""

from __future__ import annotations

import contextlib
import os
import socket
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

from mailconduit.errors import ConfigError, FieldError
from mailconduit.home import home_lock
from mailconduit.journal import Journal

__all__ = ["LEASE_RENEW_SECONDS", "LEASE_SECONDS", "RunLease", "run_lock"]


@contextlib.contextmanager
def run_lock(run_id: str) -> Iterator[str]:
    """One process at a time sends a run: a second ``run --run-id X`` started while X is
    still sending (an overlapping cron job) would see X's claimed rows and send them again.

    This lock covers one home; the journal's lease (:class:`RunLease`) covers every host.
    Yields the home's id, which the lease records.
    """

    def busy() -> ConfigError:
        return ConfigError.for_fields(
            "export",
            [FieldError("run_id", f"run {run_id!r} is being sent by another process right "
                        "now; let it finish (or stop it), then run again to resume")],
        )  # fmt: skip

    with home_lock("runs", run_id, busy=busy) as folder:
        yield _home_id(folder)


def _home_id(folder: Path) -> str:
    """A random id for this home, made once: tells a lease taken from here from one taken
    from another home (even on a machine with the same name and paths)."""
    path = folder / "home-id"
    for _ in range(3):
        with contextlib.suppress(FileNotFoundError):
            text = path.read_text(encoding="ascii").strip()
            if text:
                return text
        tmp = folder / f"home-id.{os.getpid()}.{os.urandom(4).hex()}"
        tmp.write_text(os.urandom(8).hex() + "\n", encoding="ascii")
        try:
            os.link(tmp, path)  # never replaces the id another process wrote first
        except FileExistsError:
            pass
        finally:
            tmp.unlink()
    raise ConfigError.for_fields("export", [FieldError("home", f"{path} cannot be read")])


#: How long a run's lease lasts unless renewed. After a crash, the run can be resumed from
#: another home once it expires (from the crashed sender's own home at once).
LEASE_SECONDS = 30.0
#: How often a sending process renews its run's lease.
LEASE_RENEW_SECONDS = 10.0


class RunLease:
    """The run's lease in the journal: one process at a time sends a run, on whichever
    host it runs, as long as they share the journal (PostgreSQL, or one SQLite file).

    Taken before the run's rows are read, renewed by a thread while it runs (through
    the prepare step as well), let go at the end, also after an error or a stop. When
    another process takes it over (it expired: this process was frozen longer than
    :data:`LEASE_SECONDS`), :meth:`on_lost` hears of it and the run stops.
    """

    def __init__(self, journal: Journal, run_id: str, home_id: str) -> None:
        self.journal = journal
        self.run_id = run_id
        self.home_id = home_id
        self.owner = f"{socket.gethostname()}:{os.getpid()}:{os.urandom(4).hex()}"
        self.lost = ""  # why the lease was lost; empty while it is held
        self._guard = threading.Lock()
        self._listener: Callable[[str], None] | None = None
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._keep, name=f"lease-{run_id}", daemon=True)

    def __enter__(self) -> RunLease:
        holder = self.journal.take_lease(
            self.run_id, owner=self.owner, home=self.home_id, ttl=LEASE_SECONDS
        )
        if holder is not None:
            left = max(1, round(holder.seconds_left))
            until = time.strftime("%H:%M:%S", time.localtime(time.time() + left))
            raise ConfigError.for_fields(
                "export",
                [FieldError("run_id", f"run {self.run_id!r} is being sent right now by "
                            f"{_holder(holder.owner)}, whose lease on it runs until {until} "
                            f"(in {left} s); let it finish (or stop it), then run again to resume "
                            "(if that process died, its lease expires by then)")],
            )  # fmt: skip
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._done.set()
        self._thread.join()
        if not self.lost:
            with contextlib.suppress(Exception):  # unreachable store: it expires by itself
                self.journal.release_lease(self.run_id, owner=self.owner)

    def on_lost(self, listener: Callable[[str], None]) -> None:
        """Call ``listener(reason)`` (from the renewing thread) if the lease is lost."""
        with self._guard:
            self._listener = listener
            lost = self.lost
        if lost:
            listener(lost)

    def _keep(self) -> None:
        while not self._done.wait(LEASE_RENEW_SECONDS):
            try:
                kept = self.journal.renew_lease(self.run_id, owner=self.owner, ttl=LEASE_SECONDS)
                holder = None if kept else self.journal.lease(self.run_id)
            except Exception:  # the store is unreachable for now: try again at the next turn
                kept, holder = True, None
            if kept:
                continue
            who = _holder(holder.owner) if holder is not None else "another process"
            with self._guard:
                self.lost = (
                    f"stopped: {who} took over this run after its lease expired, so no row "
                    "goes out twice; resume it when that process is done"
                )
                listener = self._listener
            if listener is not None:
                listener(self.lost)
            return


def _holder(owner: str) -> str:
    """A lease owner (``host:pid:nonce``) as a person reads it."""
    host, _, rest = owner.partition(":")
    pid = rest.partition(":")[0]
    return f"process {pid} on host {host}" if pid else f"{owner!r}"
