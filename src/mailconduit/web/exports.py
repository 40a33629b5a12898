"""Export settings as the console accepts them (form or JSON), turned into an ExportSpec.

The source is an uploaded file (by reference) or a saved interface file (by name); settings
that would name other files or databases of the server (``source``, ``body_file``,
``attach_dir``, ``database_url``...) are refused here, so a web user can read nothing the
operator did not put there. Attachments and inline images come from the upload's own
attachment folder (files uploaded beside it). Every other rule is
:func:`mailconduit.api.export_spec`'s.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

from mailconduit import api
from mailconduit.config import ExportSpec
from mailconduit.errors import ConfigError, FieldError
from mailconduit.web.uploads import attachments_dir, resolve_interface, resolve_upload

__all__ = ["SERVER_ONLY_FIELDS", "WEB_EXPORT_FIELDS", "spec_from_web"]

#: Settings a web request may give, beside ``upload`` or ``interface``.
WEB_EXPORT_FIELDS: tuple[str, ...] = (
    "connection",
    "to",
    "cc",
    "bcc",
    "reply_to",
    "from",
    "subject",
    "body",
    "html_body",
    "text_body",
    "attach",
    "inline",
    "mode",
    "by",
    "to_column",
    "table_formats",
    "table_row_cap",
    "oversize",
    "where",
    "order_by",
    "key",
    "kind",
    "encoding",
    "delimiter",
    "sheet",
    "charset",
    "html",
    "fail_fast",
    "run_id",
    "concurrency",
    "rate",
    "max_errors",
    "resend_uncertain",
    "messages_per_connection",
)
#: Settings that name files or databases on the server: CLI and interface files only.
SERVER_ONLY_FIELDS = frozenset(
    {
        "source",
        "sql",
        "body_file",
        "html_body_file",
        "text_body_file",
        "attach_dir",
        "database_url",
        "dry_run",
        "report",
        "journal",
    }
)


def spec_from_web(data: Mapping[str, Any]) -> ExportSpec:
    """Validate a web export request: ``upload`` (with settings) or ``interface`` (with run_id)."""
    errors: list[FieldError] = []
    for key in data:
        if key in SERVER_ONLY_FIELDS:
            errors.append(
                FieldError(
                    str(key),
                    "names a file or database of the server; from the console, upload the data "
                    "file or use a saved interface file",
                )
            )
    for key, value in data.items():
        listed = isinstance(value, list) and all(isinstance(v, str) for v in value)
        if key in ("table_formats", "attach", "inline") and listed:
            continue
        named = isinstance(value, dict) and all(isinstance(v, str) for v in value.values())
        if key == "inline" and named:
            continue
        if value is not None and not isinstance(value, str | int | float | bool):
            errors.append(FieldError(str(key), "must be text, a number or true/false"))
    upload = data.get("upload")
    interface = data.get("interface")
    if upload and interface:
        errors.append(FieldError("upload", "give an uploaded file or an interface file, not both"))
    elif not upload and not interface:
        errors.append(
            FieldError("upload", "is required: upload a data file (or pick a saved interface file)")
        )
    if interface:
        extra = [
            k
            for k in data
            if k not in ("interface", "run_id", "upload") and k not in SERVER_ONLY_FIELDS
        ]
        errors += [
            FieldError(k, "comes from the interface file and cannot be changed here") for k in extra
        ]
    if errors:
        raise ConfigError.for_fields("export", errors)
    if interface:
        run_id = data.get("run_id")
        return api.load_interface(
            resolve_interface(str(interface)), run_id=str(run_id) if run_id else None
        )
    source = resolve_upload(str(upload))
    settings = {k: v for k, v in data.items() if k != "upload"}
    if isinstance(settings.get("attach"), str):  # a form's text area: one template a line
        settings["attach"] = [
            line.strip() for line in settings["attach"].splitlines() if line.strip()
        ]
    if settings.get("attach") or settings.get("inline"):
        settings["attach_dir"] = str(attachments_dir(source))
    spec = api.export_spec({"source": str(source.path), **settings})
    return dataclasses.replace(spec, dry_run="", report="")
