"""Export connections to YAML/JSON and import them back (passwords only when asked for),
with their OAuth2 sign-in and preset (client secret and refresh token only when asked for)."""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any

import yaml

from mailconduit.config.connection import Connection
from mailconduit.config.document import parse_document
from mailconduit.connections import signin, store
from mailconduit.errors import ConfigError, FieldError, NotFoundError

__all__ = ["dump_connections", "load_connections"]


def dump_connections(
    conns: Iterable[Connection], *, fmt: str = "yaml", include_passwords: bool = False
) -> str:
    """Serialise connections; the password is left out unless ``include_passwords``."""
    items = []
    for conn in conns:
        item = conn.storable_dict(include_password=include_passwords)
        if conn.origin == "store":  # its OAuth2 sign-in and preset go along
            item.update(signin.stored_fields(conn.name, include_secrets=include_passwords))
        items.append(item)
    doc = {"connections": items}
    if fmt == "json":
        return json.dumps(doc, indent=2, sort_keys=False) + "\n"
    if fmt == "yaml":
        return yaml.safe_dump(doc, sort_keys=False, allow_unicode=True)
    raise ConfigError.for_fields("export", [FieldError("format", f"{fmt!r} is not yaml or json")])


def _parse(text: str, fmt: str | None) -> list[dict[str, Any]]:
    doc = parse_document(text, what="import file", fmt="json" if fmt == "json" else "yaml")
    if isinstance(doc, dict) and "connections" in doc:
        doc = doc["connections"]
    if isinstance(doc, dict):
        doc = [doc]
    if not isinstance(doc, list) or not all(isinstance(d, dict) for d in doc):
        raise ConfigError.for_fields(
            "import file", [FieldError("connections", "expected a list of connection mappings")]
        )
    return doc


def load_connections(text: str, *, fmt: str | None = None, replace: bool = False) -> list[str]:
    """Create (or with ``replace`` update) every connection in the document.

    All entries are validated first; if any is wrong nothing is written and the error
    names the entry and its fields.
    """
    entries = _parse(text, fmt)
    problems: list[FieldError] = []
    plan: list[tuple[str, dict[str, Any], bool]] = []
    for index, entry in enumerate(entries, 1):
        label = str(entry.get("name") or f"entry {index}")
        exists = False
        try:
            store.get(label)
            exists = True
        except (NotFoundError, ConfigError):
            pass
        if exists and not replace:
            problems.append(
                FieldError(f"{label}.name", "already exists (use --replace to overwrite)")
            )
            continue
        try:
            if not exists:
                signin.validate(entry)
        except ConfigError as exc:
            problems.extend(FieldError(f"{label}.{e.field}", e.message) for e in exc.errors)
            continue
        plan.append((label, entry, exists))
    if problems:
        raise ConfigError.for_fields("import", problems)
    done = []
    for label, entry, exists in plan:
        if exists:
            changes = {k: v for k, v in entry.items() if k != "name"}
            signin.update(label, changes)
        else:
            signin.create(entry)
        done.append(label)
    return done
