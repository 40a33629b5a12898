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
import re
from collections.abc import Mapping
from typing import Any

from starlette.datastructures import FormData

from mailconduit import api
from mailconduit.config import ExportSpec
from mailconduit.errors import ConfigError, FieldError, NotFoundError
from mailconduit.web.uploads import (
    attachments_dir,
    public_text,
    resolve_interface,
    resolve_upload,
)

__all__ = [
    "EXPORT_FORM_FIELDS",
    "FORM_SETTINGS",
    "SERVER_ONLY_FIELDS",
    "WEB_EXPORT_FIELDS",
    "export_settings",
    "preview_dicts",
    "spec_from_web",
]

#: Settings a web request may give, beside ``upload`` or ``interface``, and the JSON type of
#: each: ``text``; ``integer`` and ``boolean`` (as a form sends them, text is accepted too);
#: ``formats`` (text, or a list of texts); ``sheet`` (a name, or a position from 0);
#: ``templates`` (text, or a list of texts: attachments); ``named`` (text, a list of texts
#: or a mapping of names to texts: inline images).
WEB_EXPORT_FIELDS: dict[str, str] = {
    "connection": "text", "to": "text", "cc": "text", "bcc": "text", "reply_to": "text",
    "from": "text", "subject": "text", "body": "text", "html_body": "text",
    "text_body": "text", "attach": "templates", "inline": "named", "mode": "text",
    "by": "text", "to_column": "text", "table_formats": "formats", "table_row_cap": "integer",
    "oversize": "text", "where": "text", "order_by": "text", "key": "text", "kind": "text",
    "encoding": "text", "delimiter": "text", "sheet": "sheet", "charset": "text",
    "html": "boolean", "fail_fast": "boolean", "run_id": "text", "concurrency": "integer",
    "rate": "text", "max_errors": "integer", "resend_uncertain": "boolean",
    "messages_per_connection": "integer",
}  # fmt: skip
_KIND_ERRORS = {
    "text": "must be text",
    "integer": "must be a whole number",
    "boolean": "must be true or false",
    "formats": "must be a format name or a list of them",
    "sheet": "must be a sheet name or its position",
    "templates": "must be text or a list of texts",
    "named": "must be 'NAME=TEMPLATE' lines, a list of them or a mapping of names to texts",
    "scalar": "must be text, a number or true/false",
}
_WHOLE_NUMBER = re.compile(r"\s*[+-]?\d+\s*")
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


def _of_kind(value: Any, kind: str) -> bool:
    if kind == "text":
        return isinstance(value, str)
    if kind == "integer":
        whole = isinstance(value, int) and not isinstance(value, bool)
        return whole or (isinstance(value, str) and _WHOLE_NUMBER.fullmatch(value) is not None)
    if kind == "boolean":
        return isinstance(value, bool | str)
    if kind == "sheet":
        return isinstance(value, str) or (isinstance(value, int) and not isinstance(value, bool))
    listed = isinstance(value, list) and all(isinstance(v, str) for v in value)
    if kind in ("formats", "templates"):
        return listed or isinstance(value, str)
    if kind == "named":
        named = isinstance(value, dict) and all(isinstance(v, str) for v in value.values())
        return listed or named or isinstance(value, str)
    return isinstance(value, str | int | float | bool)


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
        kind = "text" if key in ("upload", "interface") else WEB_EXPORT_FIELDS.get(key, "scalar")
        if value is not None and not _of_kind(value, kind):
            errors.append(FieldError(str(key), _KIND_ERRORS[kind]))
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
        spec = api.load_interface(
            resolve_interface(str(interface)), run_id=str(run_id) if run_id else None
        )
    else:
        source = resolve_upload(str(upload))
        settings = {k: v for k, v in data.items() if k != "upload"}
        if isinstance(settings.get("attach"), str):  # a form's text area: one template a line
            settings["attach"] = [
                line.strip() for line in settings["attach"].splitlines() if line.strip()
            ]
        if settings.get("attach") or settings.get("inline"):
            settings["attach_dir"] = str(attachments_dir(source))
        spec = api.export_spec({"source": str(source.path), **settings})
    try:
        api.get_connection(spec.connection)
    except NotFoundError as exc:  # a setting of this request, not the page asked for: 422
        raise ConfigError.for_fields("export", [FieldError("connection", exc.message)]) from None
    return dataclasses.replace(spec, dry_run=None, report="")


def preview_dicts(previews: list[Any]) -> list[dict[str, Any]]:
    """Rendered preview messages as plain dicts: headers, text, html (for pages and the API)."""
    out: list[dict[str, Any]] = []
    for item in previews:
        if hasattr(item, "to_dict"):
            data: dict[str, Any] = item.to_dict()
        elif dataclasses.is_dataclass(item) and not isinstance(item, type):
            data = dataclasses.asdict(item)
        else:
            data = dict(vars(item))
        headers = data.get("headers") or []
        if isinstance(headers, dict):
            headers = list(headers.items())
        out.append(
            {
                **data,
                "headers": [[str(k), str(v)] for k, v in headers],
                "text": data.get("text"),
                "html": data.get("html"),
                **({"error": public_text(str(data["error"]))} if data.get("error") else {}),
            }
        )
    return out


#: (name, label, help) of the export form's text settings, in order.
EXPORT_FORM_FIELDS: tuple[tuple[str, str, str], ...] = (
    (
        "to",
        "To",
        "Recipient template, e.g. {{ email }} (a column of the file). Several: comma-separated.",
    ),
    ("cc", "Cc", "Optional copy recipients (a template too)."),
    ("bcc", "Bcc", "Optional hidden recipients."),
    ("reply_to", "Reply-To", "Optional address replies should go to."),
    ("from", "From", "Sender; empty uses the connection's sender."),
    ("subject", "Subject", "Subject template, e.g. Your invoice {{ number }}."),
    ("where", "Filter", "Optional SQL condition selecting rows, e.g. country = 'FR'."),
    ("order_by", "Sort", "Optional SQL ordering, e.g. name DESC."),
    ("key", "Key column", "Column that identifies a row (default: position and content)."),
    ("by", "Group by", "Group mode: the column whose values each get one message."),
    (
        "to_column",
        "Recipients column",
        "Table or group mode: send to every address in this column.",
    ),
    ("encoding", "Encoding", "Text encoding of the file (default: detected, UTF-8 first)."),
    ("delimiter", "Delimiter", "CSV delimiter (default: detected)."),
    ("sheet", "Sheet", "Excel sheet name (default: the first)."),
    ("max_errors", "Pause after errors", "Pause the run after this many failed rows (0: never)."),
    ("concurrency", "Parallel sessions", "SMTP sessions at once (default: the connection's)."),
    ("run_id", "Run id", "Optional name for the run (default: generated)."),
)
#: Settings typed in text areas: kept as typed (a body's blanks are its own).
_TEXT_AREAS = ("body", "html_body", "text_body", "attach", "inline")
#: Every setting the export form carries (what the preview page hands on to Send).
FORM_SETTINGS = (
    "upload",
    "interface",
    "connection",
    *_TEXT_AREAS,
    "html",
    "mode",
    "fail_fast",
    *(name for name, _, _ in EXPORT_FORM_FIELDS),
)


def export_settings(form: FormData) -> dict[str, Any]:
    """The non-empty settings of a submitted export form (checkbox as boolean)."""
    data: dict[str, Any] = {}
    for name in FORM_SETTINGS:
        value = form.get(name)
        if name == "fail_fast":
            if value not in (None, "", "off"):
                data[name] = True
            continue
        if isinstance(value, str) and value.strip():
            data[name] = value if name in _TEXT_AREAS else value.strip()
    if data.get("interface"):
        data = {k: v for k, v in data.items() if k in ("interface", "run_id")}
    return data
