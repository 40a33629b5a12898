"""What the console, the REST API and the CLI do with interfaces: save (checked in full),
duplicate, delete, and exchange them as YAML. The scheduler follows every change."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from mailconduit import api
from mailconduit.errors import ConfigError, FieldError, NotFoundError
from mailconduit.interfaces import schedule, store
from mailconduit.interfaces.model import Interface, interface_from_document
from mailconduit.interfaces.runner import check

if TYPE_CHECKING:
    from mailconduit.journal import RunInfo

__all__ = [
    "HistoryEntry",
    "delete_interface",
    "duplicate_interface",
    "history",
    "interface_from_yaml",
    "interface_to_yaml",
    "notifications_of",
    "save_interface",
]


def save_interface(doc: Mapping[str, Any], *, existing: str | None = None) -> Interface:
    """Create an interface from a document, or replace ``existing`` (whose name stays)."""
    interface = interface_from_document(doc)
    if existing is not None and interface.name != existing:
        raise ConfigError.for_fields(
            "interface", [FieldError("name", "cannot change; duplicate the interface instead")]
        )
    check(interface)
    saved = store.update_interface(interface) if existing else store.create_interface(interface)
    schedule.notify_changed()
    return saved


def duplicate_interface(name: str, new_name: str) -> Interface:
    """A copy of an interface under a new name, without its schedule (turned on by hand)."""
    original = store.get_interface(name)
    copy = dataclasses.replace(
        original,
        name=new_name,
        schedule=dataclasses.replace(original.schedule, cron="", every_minutes=0),
    )
    return save_interface(copy.to_document())


def delete_interface(name: str) -> None:
    """Delete an interface; its runs stay in the journal."""
    store.delete_interface(name)
    schedule.notify_changed()


def interface_to_yaml(doc: Mapping[str, Any]) -> str:
    """An interface document as YAML (keys in the document's order)."""
    import yaml

    return yaml.safe_dump(dict(doc), sort_keys=False, allow_unicode=True)


def interface_from_yaml(text: str, *, what: str = "interface file") -> dict[str, Any]:
    """The document in a YAML text; a syntax error names its line."""
    from mailconduit.config.document import parse_document

    doc = parse_document(text, what=what)
    if not isinstance(doc, dict):
        raise ConfigError.for_fields(what, [FieldError("file", "expected a mapping of settings")])
    return doc


@dataclass(frozen=True, slots=True)
class HistoryEntry:
    """One run of an interface: how it was started and, once in the journal, its state."""

    run_id: str
    interface: str
    trigger: str
    started_at: float
    error: str
    run: RunInfo | None
    #: How the run's notifications went (none when it sent none).
    notifications: tuple[store.NotificationOutcome, ...] = ()


def notifications_of(run_id: str) -> list[store.NotificationOutcome]:
    """How the notifications of a run of an interface went (none for other runs)."""
    return store.notifications_of(run_id)


def history(name: str | None = None, *, limit: int = 50) -> list[HistoryEntry]:
    """The runs of an interface (of all with None), newest first."""
    out: list[HistoryEntry] = []
    for link in store.runs_of(name, limit=limit):
        try:
            run: RunInfo | None = api.get_run(link.run_id)
        except NotFoundError:
            run = None
        notes = tuple(store.notifications_of(link.run_id))
        out.append(
            HistoryEntry(
                link.run_id, link.interface, link.trigger, link.started_at, link.error, run, notes
            )
        )
    return out
