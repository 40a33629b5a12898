"""The longest text each setting may hold: the same caps for the CLI, files, REST and forms."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from mailconduit.config.secret import Secret
from mailconduit.config.text import char_name
from mailconduit.errors import FieldError

#: The longest text each field may hold, in characters (numbers and switches given as text
#: too). Connections, exports and console users: the CLI, interface files, the REST API and
#: the web forms all refuse the same input, and no error ever quotes a huge value.
TEXT_LIMITS: dict[str, dict[str, int]] = {
    "connection": {
        "name": 64, "agent": 64, "implementation_type": 32, "security": 32,
        "auth_mechanism": 32, "username": 320, "password": 8192, "server_url": 300,
        "from_address": 254, "from_name": 256, "reply_to": 254, "ca_file": 4096,
        "ehlo_hostname": 255, "query": 1000, "datetime_format": 100,
        "port": 16, "timeout_ms": 16, "concurrency": 16, "daily_cap": 16,
        "messages_per_connection": 16, "rate_per_second": 32, "rate_per_minute": 32,
        "rate_per_hour": 32, "is_active": 8, "is_source": 8, "is_target": 8, "use_ssl": 8,
        "use_html_body": 8, "verify_tls": 8, "allow_insecure_auth": 8,
    },
    "export": {
        "source": 1 << 20, "connection": 64, "to": 10_000, "cc": 10_000, "bcc": 10_000,
        "reply_to": 10_000, "from_": 10_000, "subject": 10_000, "body": 512 << 10,
        "html_body": 512 << 10, "text_body": 512 << 10, "headers": 10_000, "inline": 10_000,
        "body_file": 4096, "html_body_file": 4096, "text_body_file": 4096, "attach": 4096,
        "attach_dir": 4096, "database_url": 4096, "dry_run": 4096, "report": 4096,
        "where": 10_000, "order_by": 10_000, "key": 1000, "by": 1000, "to_column": 1000,
        "sheet": 255, "encoding": 64, "charset": 64, "delimiter": 8, "kind": 32, "mode": 16,
        "oversize": 16, "report_format": 16, "run_id": 80, "rate": 200, "table_formats": 200,
    },
    "user": {"name": 64, "password": 1024, "label": 200},
}  # fmt: skip
#: The limit of a field the table does not list (a setting given as text, a new field).
_DEFAULT_TEXT_LIMIT = 65_536
#: A field NAME longer than this is no field of ours; it is not quoted back in full.
_FIELD_NAME_LIMIT = 64
#: A lone surrogate: what a JSON ``"\\ud800"`` or a Python str may hold, but no text is; it
#: cannot be encoded for a file, a database, a header or an error page.
_SURROGATE_RE = re.compile("[\ud800-\udfff]")
#: Other spellings of export settings, and the setting each one stands for.
EXPORT_ALIASES = {"from": "from_", "from_address": "from_", "sql": "source"}


def text_limit(kind: str, name: str) -> int:
    """The longest text field ``name`` of a ``connection``, ``export`` or ``user`` may hold."""
    if kind == "export":
        name = EXPORT_ALIASES.get(name, name)
    return TEXT_LIMITS[kind].get(name, _DEFAULT_TEXT_LIMIT)


def text_limit_errors(kind: str, data: Mapping[str, Any]) -> list[FieldError]:
    """One error per field of ``data`` whose text is longer than :data:`TEXT_LIMITS` allows
    (each item of a list counts alone) or holds a lone surrogate, which is not text at all;
    ``kind`` is ``connection``, ``export`` or ``user``."""
    errors: list[FieldError] = []
    for key, value in data.items():
        name = str(key)
        if len(name) > _FIELD_NAME_LIMIT:
            errors.append(
                FieldError(name[:32] + "...", f"is no field name ({len(name)} characters)")
            )
            continue
        limit = text_limit(kind, name)
        if isinstance(value, Secret):
            value = value.reveal()
        if isinstance(value, Mapping):
            items: list[Any] = [f"{k}: {v}" for k, v in value.items()]
        elif isinstance(value, list | tuple) and value and isinstance(value[0], str):
            items = list(value)  # not rows of a Python source: those are data, not settings
        else:
            items = [value]
        for index, item in enumerate(items):
            if not isinstance(item, str):
                continue
            where = f"item {index + 1} " if len(items) > 1 else ""
            if len(item) > limit:
                errors.append(
                    FieldError(name, f"{where}is too long: {len(item)} characters, at most {limit}")
                )
                break
            if found := _SURROGATE_RE.search(item):
                errors.append(
                    FieldError(name, f"{where}holds {char_name(found.group())}, which is not text")
                )
                break
    return errors
