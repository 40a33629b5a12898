"""What an interface is: a saved export, its schedule and who hears about its runs.

Its document (YAML for people, JSON in the store) wraps the interface file of
``mailconduit run`` under ``export:``, so an exported interface runs from the command line
as it is; ``database``, ``schedule`` and ``notify`` sit beside it. Files it reads must lie
under a folder the operator allows (MAILCONDUIT_DATA_DIRS) or the console's uploads.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from mailconduit.address import parse_list
from mailconduit.config import NAME_RE, url_scheme
from mailconduit.errors import AddressError, ConfigError, FieldError
from mailconduit.home import home, uploads_dir

__all__ = [
    "DATA_DIRS_ENV",
    "NOT_IN_INTERFACES",
    "Interface",
    "Notify",
    "Schedule",
    "allowed_roots",
    "interface_files_dir",
    "interface_from_document",
]

#: The operator's folders (os.pathsep-separated) an interface may read data and files from.
DATA_DIRS_ENV = "MAILCONDUIT_DATA_DIRS"
#: Export settings an interface may not hold: secrets (a stored database connection stands
#: for ``database_url``), other files of the server, and what each run decides itself.
NOT_IN_INTERFACES = frozenset(
    {"database_url", "body_file", "html_body_file", "text_body_file", "dry_run", "report",
     "journal", "run_id"}
)  # fmt: skip
_LONGEST_INTERVAL = 7 * 24 * 60


@dataclass(frozen=True, slots=True)
class Schedule:
    """When an interface runs by itself: a cron expression in a time zone, or every N minutes.

    ``catch_up``: a run missed while the scheduler was down runs once when it is back.
    """

    cron: str = ""
    timezone: str = "UTC"
    every_minutes: int = 0
    catch_up: bool = True

    @property
    def active(self) -> bool:
        return bool(self.cron or self.every_minutes)

    def describe(self) -> str:
        if self.cron:
            return f"cron {self.cron} ({self.timezone})"
        if self.every_minutes:
            return f"every {self.every_minutes} minute{'s' if self.every_minutes > 1 else ''}"
        return "by hand only"

    def to_document(self) -> dict[str, Any]:
        if not self.active:
            return {}
        out: dict[str, Any] = (
            {"cron": self.cron, "timezone": self.timezone}
            if self.cron
            else {"every_minutes": self.every_minutes}
        )
        out["catch_up"] = self.catch_up
        return out


@dataclass(frozen=True, slots=True)
class Notify:
    """Who hears about a run: e-mail addresses (through ``connection``) and/or a webhook."""

    emails: tuple[str, ...] = ()
    connection: str = "local"
    webhook: str = ""
    when: Literal["failure", "always"] = "failure"

    @property
    def active(self) -> bool:
        return bool(self.emails or self.webhook)

    def to_document(self) -> dict[str, Any]:
        if not self.active:
            return {}
        out: dict[str, Any] = {"when": self.when}
        if self.emails:
            out["emails"] = list(self.emails)
            out["connection"] = self.connection
        if self.webhook:
            out["webhook"] = self.webhook
        return out


@dataclass(frozen=True, slots=True)
class Interface:
    """A saved export: ``export`` holds the interface file's settings (source included)."""

    name: str
    export: Mapping[str, Any]
    description: str = ""
    database: str = ""
    schedule: Schedule = field(default_factory=Schedule)
    notify: Notify = field(default_factory=Notify)
    created_at: float = 0.0
    updated_at: float = 0.0

    @property
    def is_query(self) -> bool:
        return str(self.export.get("kind", "")) == "sql"

    @property
    def connection(self) -> str:
        return str(self.export.get("connection", ""))

    def to_document(self) -> dict[str, Any]:
        """The interface as a YAML/JSON document (what import and export exchange)."""
        doc: dict[str, Any] = {"name": self.name}
        if self.description:
            doc["description"] = self.description
        doc["export"] = dict(self.export)
        if self.database:
            doc["database"] = self.database
        if self.schedule.active:
            doc["schedule"] = self.schedule.to_document()
        if self.notify.active:
            doc["notify"] = self.notify.to_document()
        return doc


def allowed_roots() -> list[Path]:
    """Folders an interface may read files from: MAILCONDUIT_DATA_DIRS and the console's
    own (uploads, unpacked attachment archives)."""
    roots = [uploads_dir().resolve(), interface_files_dir().resolve()]
    for part in os.environ.get(DATA_DIRS_ENV, "").split(os.pathsep):
        if part.strip():
            roots.append(Path(part.strip()).expanduser().resolve())
    return roots


def interface_files_dir() -> Path:
    """Where attachment archives uploaded for interfaces are unpacked."""
    path = home() / "interface-files"
    path.mkdir(mode=0o700, exist_ok=True)
    return path


def _allowed_path(value: str, key: str, errors: list[FieldError], *, folder: bool) -> None:
    path = Path(value).expanduser()
    if not path.is_absolute():
        errors.append(FieldError(key, "must be an absolute path"))
        return
    resolved = path.resolve()
    if not any(resolved.is_relative_to(root) for root in allowed_roots()):
        errors.append(
            FieldError(key, f"is outside the data folders the operator allows ({DATA_DIRS_ENV})")
        )
    elif folder and not resolved.is_dir():
        errors.append(FieldError(key, "is not a folder"))
    elif not folder and not resolved.is_file():
        errors.append(FieldError(key, "is not a file"))


def _text(doc: Mapping[str, Any], key: str, errors: list[FieldError], where: str = "") -> str:
    value = doc.get(key, "")
    if value is None:
        return ""
    if not isinstance(value, str):
        errors.append(FieldError(where + key, "must be text"))
        return ""
    return value.strip()


def _section(doc: Any, name: str, holds: str, errors: list[FieldError]) -> Mapping[str, Any]:
    """The mapping of the document's section ``name``: empty when it is absent, or when it is
    not a mapping (an error saying it ``holds`` what it should)."""
    if doc is None:
        return {}
    if not isinstance(doc, Mapping):
        errors.append(FieldError(name, f"must be a mapping ({holds})"))
        return {}
    return doc


def _schedule(doc: Any, errors: list[FieldError]) -> Schedule:
    doc = _section(doc, "schedule", "cron and timezone, or every_minutes", errors)
    if not doc:
        return Schedule()
    cron = _text(doc, "cron", errors, "schedule.")
    zone = _text(doc, "timezone", errors, "schedule.") or "UTC"
    every = doc.get("every_minutes") or 0
    catch_up = doc.get("catch_up", True)
    if isinstance(every, str) and every.strip().isdigit():
        every = int(every)
    if not isinstance(every, int) or isinstance(every, bool) or not 0 <= every <= _LONGEST_INTERVAL:
        errors.append(FieldError("schedule.every_minutes", f"must be a whole number from 1 to {_LONGEST_INTERVAL}"))
        every = 0
    if not isinstance(catch_up, bool):
        errors.append(FieldError("schedule.catch_up", "must be true or false"))
        catch_up = True
    if cron and every:
        errors.append(FieldError("schedule", "give a cron expression or every_minutes, not both"))
    try:
        ZoneInfo(zone)
    except (ZoneInfoNotFoundError, ValueError):
        errors.append(FieldError("schedule.timezone", f"{zone!r} is not a known time zone"))
        zone = "UTC"
    if cron:
        from apscheduler.triggers.cron import CronTrigger

        try:
            CronTrigger.from_crontab(cron, timezone=ZoneInfo(zone))
        except ValueError as exc:
            errors.append(FieldError("schedule.cron", f"{cron!r}: {exc}"))
    return Schedule(cron=cron, timezone=zone, every_minutes=every, catch_up=catch_up)


def _notify(doc: Any, errors: list[FieldError]) -> Notify:
    doc = _section(doc, "notify", "emails, connection, webhook, when", errors)
    if not doc:
        return Notify()
    raw = doc.get("emails") or []
    if isinstance(raw, str):
        raw = [raw]
    emails: list[str] = []
    if not isinstance(raw, list) or not all(isinstance(e, str) for e in raw):
        errors.append(FieldError("notify.emails", "must be a list of addresses"))
        raw = []
    for entry in raw:
        try:
            emails += [a.formatted for a in parse_list(entry)]
        except AddressError as exc:
            errors.append(FieldError("notify.emails", f"{exc.address!r}: {exc.message}"))
    when = doc.get("when", "failure")
    if when not in ("failure", "always"):
        errors.append(FieldError("notify.when", "must be 'failure' or 'always'"))
        when = "failure"
    webhook = _text(doc, "webhook", errors, "notify.")
    if webhook and url_scheme(webhook) not in ("http", "https"):
        errors.append(FieldError("notify.webhook", "must be an http:// or https:// URL"))
    connection = _text(doc, "connection", errors, "notify.") or "local"
    return Notify(emails=tuple(emails), connection=connection, webhook=webhook, when=when)


def interface_from_document(
    doc: Any, *, created_at: float = 0.0, updated_at: float = 0.0, check_files: bool = True
) -> Interface:
    """Check an interface document's shape and names, every wrong field at once.

    ``check_files`` off (reading the store) skips whether its files still exist. The export settings themselves are checked by the export's own validator when the
    interface is saved (see :func:`mailconduit.interfaces.runner.check`).
    """
    if not isinstance(doc, Mapping):
        raise ConfigError.for_fields(
            "interface", [FieldError("document", "expected a mapping of settings")]
        )
    errors: list[FieldError] = []
    name = _text(doc, "name", errors)
    if not NAME_RE.match(name):
        errors.append(
            FieldError("name", "is required: letters, digits, '.', '_' and '-', at most 64")
        )
    export = doc.get("export")
    if not isinstance(export, Mapping):
        errors.append(FieldError("export", "is required: a mapping of export settings"))
        export = {}
    export = {str(k): v for k, v in export.items() if v is not None}
    for key in sorted(NOT_IN_INTERFACES & export.keys()):
        hint = "; name a stored database connection in 'database'" if key == "database_url" else ""
        errors.append(FieldError(f"export.{key}", f"cannot be part of an interface{hint}"))
    source = export.get("source")
    database = _text(doc, "database", errors)
    if not isinstance(source, str) or not source.strip():
        errors.append(FieldError("export.source", "is required: a data file or a SQL query"))
    elif str(export.get("kind", "")) == "sql":
        if not database:
            errors.append(FieldError("database", "is required for a SQL query: a stored database connection"))
    elif check_files:
        _allowed_path(source, "export.source", errors, folder=False)
    if check_files and isinstance(export.get("attach_dir"), str) and export["attach_dir"]:
        _allowed_path(export["attach_dir"], "export.attach_dir", errors, folder=True)
    if database and str(export.get("kind", "")) != "sql":
        errors.append(FieldError("database", "goes with a SQL query (kind: sql) only"))
    schedule = _schedule(doc.get("schedule"), errors)
    notify = _notify(doc.get("notify"), errors)
    unknown = set(doc) - {"name", "description", "export", "database", "schedule", "notify"}
    errors += [FieldError(str(k), "is not an interface setting") for k in sorted(map(str, unknown))]
    if errors:
        raise ConfigError.for_fields("interface", errors)
    return Interface(
        name=name,
        export=export,
        description=_text(doc, "description", errors),
        database=database,
        schedule=schedule,
        notify=notify,
        created_at=created_at,
        updated_at=updated_at,
    )
