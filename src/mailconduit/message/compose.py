"""One row to one ready message: render the templates, parse the addresses, build the bytes.

Every failure is a RowError (or subclass) carrying the row key and, when the field's
template reads exactly one column, that column, so the report can say which cell is wrong.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

from mailconduit.errors import AddressError, RenderError, RowError
from mailconduit.message.addresses import Address, parse_address_list
from mailconduit.message.attachment import Attachment
from mailconduit.message.build import (
    AttachmentSource,
    BuiltMessage,
    build_message,
    resolve_attachment,
)
from mailconduit.message.render import GROUP_MODE_NAMES, MessageTemplate

__all__ = ["compose_message"]


def _column_of(template: MessageTemplate, field: str) -> str:
    """The single column a field's template reads, or "" when it reads none or several."""
    columns = template.columns(field) - GROUP_MODE_NAMES
    return next(iter(columns)) if len(columns) == 1 else ""


def _files(
    template: MessageTemplate,
    paths: Iterable[tuple[str, str, str]],
    attachment_dir: Path | None,
    row_key: str,
) -> list[Attachment]:
    """The files of (field, label, rendered path) triples; a path that rendered empty (a
    blank cell) means no file for this row. A failure names the columns the field reads."""
    out: list[Attachment] = []
    for field, label, path in paths:
        if not path.strip():
            continue
        try:
            out.append(resolve_attachment(path, attachment_dir, row_key, label=label))
        except RowError as exc:
            columns = ", ".join(sorted(template.columns(field) - GROUP_MODE_NAMES))
            # Without a column, the field's name leads, so no other field's column is guessed.
            message = exc.message if columns else f"{field}: {exc.message}"
            raise RowError(message, row_key, columns, field) from None
    return out


def _addresses(template: MessageTemplate, text: str, field: str, row_key: str) -> list[Address]:
    try:
        return parse_address_list(text, field=field)
    except AddressError as exc:
        column = _column_of(template, field)
        raise AddressError(exc.message, exc.address, row_key, column, field) from None


def compose_message(
    template: MessageTemplate,
    row: Mapping[str, Any],
    *,
    row_key: str,
    **options: Any,
) -> BuiltMessage:
    """Render ``row`` with ``template`` and build the message (see :func:`_compose`).

    Every row error names the column it came from when that can be told: the column
    the failing field reads, or among several, the one whose value the error quotes.
    """
    try:
        return _compose(template, row, row_key=row_key, **options)
    except RowError as exc:
        if exc.column:
            raise
        column = _guess_column(template, row, exc)
        if not column:
            raise
        if isinstance(exc, AddressError):
            raise AddressError(exc.message, exc.address, row_key, column, exc.field) from None
        if isinstance(exc, RenderError):
            raise type(exc)(exc.message, row_key, column, exc.template) from None
        raise RowError(exc.message, row_key, column, exc.field) from None


def _guess_column(template: MessageTemplate, row: Mapping[str, Any], exc: RowError) -> str:
    """The column behind a row error, or "" when it cannot be told for sure."""
    field = exc.field if exc.field in template.field_names else ""
    if field:
        names = template.columns(field)
    else:
        names = frozenset().union(*(template.columns(f) for f in template.field_names))
    candidates = sorted(c for c in names - GROUP_MODE_NAMES if c in row)
    if len(candidates) == 1:
        return candidates[0]
    address = exc.address if isinstance(exc, AddressError) else ""
    if "<" in address and address.rstrip().endswith(">"):
        address = address[address.rindex("<") + 1 : address.rindex(">")]  # the addr-spec failed
    quoted = [
        c
        for c in candidates
        if (value := "" if row[c] is None else str(row[c]))
        and (
            value == address or f"'{value}'" in exc.message or (len(value) > 1 and value in address)
        )
    ]
    return quoted[0] if len(quoted) == 1 else ""


def _compose(
    template: MessageTemplate,
    row: Mapping[str, Any],
    *,
    row_key: str,
    message_id: str,
    default_from: Address | None = None,
    default_reply_to: Sequence[Address] = (),
    extras: Mapping[str, Any] | None = None,
    extra_attachments: Sequence[Attachment] = (),
    attachment_dir: Path | None = None,
    date: datetime | None = None,
    charset: str = "utf-8",
    smtputf8: bool = True,
) -> BuiltMessage:
    """Render ``row`` with ``template`` and build the message.

    ``default_from`` / ``default_reply_to`` (the connection's) apply when the template's
    field renders empty. With ``smtputf8=True`` (the default) a UTF-8 local part is allowed
    and flagged in ``needs_smtputf8``; the sender refuses the row if the server lacks it.
    """
    rendered = template.render(row, row_key=row_key, extras=extras)
    if rendered.from_.strip():
        senders = _addresses(template, rendered.from_, "from", row_key)
        if len(senders) != 1:
            raise AddressError(
                f"from: expected one sender address, found {len(senders)}",
                rendered.from_,
                row_key,
                _column_of(template, "from"),
                "from",
            )
        sender = senders[0]
    elif default_from is not None:
        sender = default_from
    else:
        raise AddressError(
            "from: no sender address (set one on the connection or the export)",
            "",
            row_key,
            field="from",
        )
    to = _addresses(template, rendered.to, "to", row_key)
    cc = _addresses(template, rendered.cc, "cc", row_key) if rendered.cc else []
    bcc = _addresses(template, rendered.bcc, "bcc", row_key) if rendered.bcc else []
    reply_to = (
        _addresses(template, rendered.reply_to, "reply_to", row_key) if rendered.reply_to else []
    )
    if not (to or cc or bcc):
        column = _column_of(template, "to")
        raise AddressError("no recipient: to, cc and bcc all rendered empty", "", row_key, column)
    attachments: list[AttachmentSource] = list(extra_attachments)
    if rendered.attachments:
        named = enumerate(rendered.attachments, 1)
        paths = [(f"attachment {n}", "attachment", path) for n, path in named]
        attachments[:0] = _files(template, paths, attachment_dir, row_key)
    inline: list[tuple[str, AttachmentSource]] = []
    for name, path in rendered.inline:
        label = f"inline image {name!r} file"
        inline += ((name, f) for f in _files(template, [(f"inline {name}", label, path)],
                                              attachment_dir, row_key))  # fmt: skip
    try:
        return build_message(
            from_=sender,
            to=to,
            cc=cc,
            bcc=bcc,
            reply_to=reply_to or tuple(default_reply_to),
            subject=rendered.subject,
            text_body=rendered.text_body if rendered.text_body is not None else rendered.html_text,
            html_body=rendered.html_body,
            attachments=attachments,
            inline=inline,
            attachment_dir=attachment_dir,
            headers=rendered.headers,
            message_id=message_id,
            date=date,
            charset=charset,
            smtputf8=smtputf8,
            row_key=row_key,
        )
    except RowError as exc:
        column = "" if exc.column else _column_of(template, exc.field)
        if not column:
            raise
        if isinstance(exc, AddressError):
            raise AddressError(exc.message, exc.address, row_key, column, exc.field) from None
        raise RowError(exc.message, row_key, column, exc.field) from None
