"""Messages: templates rendered per row, validated addresses, and the MIME bytes to send.

Pure functions with no network or database I/O; only attachment files are read, and only
from inside a base directory. Typical use per row::

    built = compose_message(template, row, row_key=key, message_id=make_message_id(...))
"""

from typing import TYPE_CHECKING

from mailconduit.message.addresses import (
    Address,
    make_address,
    parse_address,
    parse_address_list,
    require_recipients,
)
from mailconduit.message.attachment import Attachment, load_attachment
from mailconduit.message.build import BuiltMessage, build_message, make_message_id
from mailconduit.message.charset import OutputCharset, resolve_charset
from mailconduit.message.compose import compose_message
from mailconduit.message.render import (
    GROUP_MODE_NAMES,
    ROW_MODE_NAMES,
    TABLE_MODE_NAMES,
    MessageTemplate,
    RenderedMessage,
)
from mailconduit.message.transfer import normalise_text

if TYPE_CHECKING:  # loaded on first use by __getattr__ below; named here for type checkers
    from mailconduit.message.htmltext import html_to_text
    from mailconduit.message.table import (
        TABLE_FORMATS,
        csv_bytes,
        html_table,
        json_bytes,
        table_attachment,
        table_context,
        text_table,
        xlsx_bytes,
    )

__all__ = [
    "GROUP_MODE_NAMES",
    "ROW_MODE_NAMES",
    "TABLE_FORMATS",
    "TABLE_MODE_NAMES",
    "Address",
    "Attachment",
    "BuiltMessage",
    "MessageTemplate",
    "OutputCharset",
    "RenderedMessage",
    "build_message",
    "compose_message",
    "csv_bytes",
    "html_table",
    "html_to_text",
    "json_bytes",
    "load_attachment",
    "make_address",
    "make_message_id",
    "normalise_text",
    "parse_address",
    "parse_address_list",
    "require_recipients",
    "resolve_charset",
    "table_attachment",
    "table_context",
    "text_table",
    "xlsx_bytes",
]

_TABLE_NAMES = frozenset(
    {"TABLE_FORMATS", "csv_bytes", "html_table", "json_bytes", "table_attachment",
     "table_context", "text_table", "xlsx_bytes"}
)  # fmt: skip


def __getattr__(name: str) -> object:
    # html_to_text needs html.parser: loaded on first use, not with every export.
    if name == "html_to_text":
        from mailconduit.message.htmltext import html_to_text

        return html_to_text
    if name in _TABLE_NAMES:  # table and group mode only (csv, json, html, openpyxl)
        from mailconduit.message import table

        return getattr(table, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
