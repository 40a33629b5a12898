"""Running an interface: its settings become an ordinary export (journal, report, resume),
one run at a time per interface, then its notifications go out."""

from __future__ import annotations

import hashlib
import logging
import os
import secrets
import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from mailconduit import api
from mailconduit.config import ExportSpec
from mailconduit.errors import ConfigError, FieldError, MailconduitError, NotFoundError
from mailconduit.home import home_lock
from mailconduit.interfaces import store
from mailconduit.interfaces.model import Interface, interface_from_document
from mailconduit.interfaces.notify import notify_run
from mailconduit.journal import Journal

if TYPE_CHECKING:
    from mailconduit.delivery.report import ExportReport

__all__ = [
    "LEASE_SECONDS",
    "InterfaceBusyError",
    "check",
    "preview",
    "problem",
    "run_id_for",
    "run_interface",
    "spec_of",
    "start_interface",
]

log = logging.getLogger("mailconduit.interfaces")
#: How long an interface's lease lasts unless renewed (a crashed holder frees it by then).
LEASE_SECONDS = 15.0


class InterfaceBusyError(MailconduitError):
    """The interface is being run already (here or by another process sharing the store)."""

    def __init__(self, name: str) -> None:
        super().__init__(f"interface {name!r} is running already; try again when it ends", name)
        self.name = name


def spec_of(interface: Interface, *, run_id: str = "") -> ExportSpec:
    """The export an interface stands for, validated as a one-off export is."""
    data = dict(interface.export)
    if interface.is_query:
        try:
            data["database_url"] = store.database_url(interface.database)
        except NotFoundError as exc:  # a setting of the interface, not the item asked for
            raise ConfigError.for_fields("interface", [FieldError("database", exc.message)]) from None
    if run_id:
        data["run_id"] = run_id
    spec = api.export_spec(data)
    try:
        api.get_connection(spec.connection)
    except NotFoundError as exc:
        raise ConfigError.for_fields("interface", [FieldError("connection", exc.message)]) from None
    return spec


def check(interface: Interface) -> ExportSpec:
    """Validate an interface in full: its document (files included) and its export."""
    interface_from_document(interface.to_document())
    if interface.notify.emails:
        try:
            api.get_connection(interface.notify.connection)
        except NotFoundError as exc:
            raise ConfigError.for_fields(
                "interface", [FieldError("notify.connection", exc.message)]
            ) from None
    return spec_of(interface)


def preview(interface: Interface, *, limit: int = 3) -> list[Any]:
    """The first messages the interface would send now (nothing is sent)."""
    return api.preview(check(interface), limit=limit)


def problem(interface: Interface) -> str:
    """Why the interface would not run now (a file or column gone...), or "" when it would."""
    try:
        previews = preview(interface, limit=1)
    except MailconduitError as exc:
        return " ".join(str(exc).split())
    for item in previews:
        error = getattr(item, "error", "")
        if error:
            return " ".join(str(error).split())
    return ""


def run_id_for(name: str, at: datetime | None = None) -> str:
    """A new run's id: the interface's name, the moment (UTC, to the second) and a random
    tail, so two runs started in the same second stay two runs (at most 80 characters)."""
    moment = (at or datetime.now(UTC)).astimezone(UTC)
    return f"{name[:58]}-{moment:%Y%m%dT%H%M%S}-{secrets.token_hex(2)}"


@contextmanager
def _lease(name: str) -> Iterator[None]:
    """Hold the interface's lease in the journal while it runs (renewed in the background).

    A lock file in this home is held as well: a lease taken from this home (same host and
    home folder) whose holder no longer holds that lock was left by a killed process, and
    is taken over at once rather than when it expires.
    """
    with home_lock("interfaces", name, busy=lambda: InterfaceBusyError(name)) as folder:
        place = f"{socket.gethostname()}:{folder.resolve()}".encode()
        with _journal_lease(name, here="home:" + hashlib.sha256(place).hexdigest()[:32]):
            yield


@contextmanager
def _journal_lease(name: str, *, here: str) -> Iterator[None]:
    journal = Journal()
    key = f"interface:{name}"
    owner = f"{socket.gethostname()[:200]}:{os.getpid()}:{secrets.token_hex(4)}"
    if journal.take_lease(key, owner=owner, home=here, ttl=LEASE_SECONDS) is not None:
        journal.close()
        raise InterfaceBusyError(name)
    done = threading.Event()

    def keep() -> None:
        while not done.wait(LEASE_SECONDS / 3):
            journal.renew_lease(key, owner=owner, ttl=LEASE_SECONDS)

    keeper = threading.Thread(target=keep, name=f"lease-{key}", daemon=True)
    keeper.start()
    try:
        yield
    finally:
        done.set()
        keeper.join()
        journal.release_lease(key, owner=owner)
        journal.close()


def run_interface(
    name: str, *, trigger: str = "manual", at: datetime | None = None, run_id: str = ""
) -> ExportReport:
    """Run an interface and wait: an ordinary export, then its notifications.

    ``trigger`` is ``manual`` or ``schedule``; ``at`` names the run's moment, ``run_id`` the run itself.
    Raises :class:`InterfaceBusyError` when the interface is running already.
    """
    interface = store.get_interface(name)
    run_id = run_id or run_id_for(name, at)
    with _lease(name):
        store.record_run(name, run_id, trigger=trigger)
        try:
            report = api.run_export(spec_of(interface, run_id=run_id))
        except MailconduitError as exc:
            store.set_run_error(run_id, " ".join(str(exc).split()))
            notify_run(interface, run_id=run_id, trigger=trigger, report=None, error=exc)
            raise
    notify_run(interface, run_id=run_id, trigger=trigger, report=report, error=None)
    return report


def start_interface(name: str, *, trigger: str = "manual") -> str:
    """Start a run in a background thread of this process; returns its run id once the
    run exists (or raises what stopped it before)."""
    interface = store.get_interface(name)
    spec_of(interface)  # a broken interface is refused before a thread starts
    run_id = run_id_for(name)
    started = threading.Event()
    failure: list[BaseException] = []

    def body() -> None:
        try:
            run_interface(name, trigger=trigger, run_id=run_id)
        except MailconduitError as exc:
            failure.append(exc)
            log.warning("interface %s: %s", name, exc)
        finally:
            started.set()

    threading.Thread(target=body, name=f"interface-{name}", daemon=True).start()
    journal = Journal()
    try:
        while not started.wait(0.05):
            if journal.run_exists(run_id):
                return run_id
    finally:
        journal.close()
    if failure:
        raise failure[0]
    return run_id

