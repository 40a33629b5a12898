"""Preparation: everything checked and compiled before the first message is built.

Everything that can be wrong with the input is found here (connection state, source
structure, template syntax, unknown columns, sandbox violations, a column that differs
across the rows of one table or group message): the export then stops with one line and
nothing is sent.
"""

from __future__ import annotations

import codecs
import dataclasses
import re
from pathlib import Path

from mailconduit.config import Connection, ExportMode, ExportSpec
from mailconduit.delivery.checks import (
    check_connection,
    check_shared_columns,
    check_template_texts,
    template_error,
)
from mailconduit.errors import AddressError, ConfigError, FieldError, RenderError
from mailconduit.message import (
    GROUP_MODE_NAMES,
    ROW_MODE_NAMES,
    TABLE_MODE_NAMES,
    Address,
    MessageTemplate,
    make_address,
    parse_address_list,
)
from mailconduit.sources import Source, open_source

__all__ = ["Prepared", "prepare"]

_TABLE_NAMES = frozenset({"table_html", "table_text", "rows"})


@dataclasses.dataclass
class Prepared:
    """An export checked and ready: the open source, compiled templates and defaults."""

    spec: ExportSpec
    connection: Connection
    source: Source
    template: MessageTemplate
    html: bool
    notes: tuple[str, ...]
    default_from: Address | None
    default_reply_to: tuple[Address, ...]
    domain: str
    attachment_dir: Path | None
    total: int

    def close(self) -> None:
        """Close the source (a file or a database cursor)."""
        self.source.close()


def _read_body(path: str, field: str) -> str:
    """A body file's text: UTF-8, or UTF-16/32 marked by a byte-order mark (as editors on
    Windows save "Unicode" text); a ConfigError naming ``field`` when it cannot be read."""
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        raise ConfigError.for_fields(
            "export", [FieldError(field, f"{path}: {exc.strerror}")]
        ) from None
    encoding = "utf-8-sig"  # a BOM is no part of the body
    if data.startswith((codecs.BOM_UTF32_LE, codecs.BOM_UTF32_BE)):
        encoding = "utf-32"
    elif data.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        encoding = "utf-16"
    try:
        return data.decode(encoding)
    except UnicodeDecodeError:
        raise ConfigError.for_fields(
            "export", [FieldError(field, f"{path}: not UTF-8 text (nor UTF-16/32 with a BOM)")]
        ) from None


#: A body file of one of these names is HTML: ``x.html``, ``x.htm``, ``x.html.j2``...
_HTML_FILE_RE = re.compile(r"\.html?(?:\.(?:j2|jinja|jinja2))?\Z", re.IGNORECASE)
#: An HTML document: ``<!DOCTYPE html`` or ``<html`` first (after blanks, an XML
#: declaration, HTML or template comments, template tags such as ``{% if %}``). Atomic and
#: possessive: each comment is matched once, so a body of many never backtracks exponentially.
_HTML_DOCUMENT_RE = re.compile(
    r"\A\ufeff?\s*(?:<\?xml[^>]{0,200}\?>\s*)?(?:(?><!--.*?-->|\{#.*?#\}|\{%.*?%\})\s*)*+"
    r"(<!doctype\s+html|<html(?=[\s>]))",
    re.IGNORECASE | re.DOTALL,
)
_SNIFFED_CHARS = 65_536


def _bodies(spec: ExportSpec, conn: Connection) -> tuple[str | None, str | None, str]:
    """The (text, HTML) body templates, and a note when the body's content decided HTML.

    ``--html-body``/``--text-body`` (and their files) are what they say. ``--body`` is HTML
    by ``--html``/``--text``, else an .html file name, else when it is an HTML document,
    else by the connection's ``use_html_body``.
    """
    if spec.html_body or spec.html_body_file or spec.text_body or spec.text_body_file:
        html = _read_body(spec.html_body_file, "html_body_file") if spec.html_body_file else None
        text = _read_body(spec.text_body_file, "text_body_file") if spec.text_body_file else None
        return text or spec.text_body or None, html or spec.html_body or None, ""
    body = _read_body(spec.body_file, "body_file") if spec.body_file else spec.body
    note = ""
    if spec.html is not None:
        as_html = spec.html
    elif spec.body_file and _HTML_FILE_RE.search(spec.body_file):
        as_html = True
    elif document := _HTML_DOCUMENT_RE.match(body[:_SNIFFED_CHARS]):
        as_html = True
        if not conn.use_html_body:
            what = f"body file {Path(spec.body_file).name!r}" if spec.body_file else "the body"
            note = (
                f"{what} is an HTML document (it starts with {document.group(1)}), so it is "
                "sent as HTML with a plain-text alternative; --text sends it as plain text"
            )
    else:
        as_html = conn.use_html_body
    return (None, body, note) if as_html else (body, None, note)


def prepare(spec: ExportSpec, conn: Connection, *, sending: bool) -> Prepared:
    """Check everything that can be checked before sending; raise with one clear line."""
    check_connection(conn, sending=sending)
    text, html, note = _bodies(spec, conn)
    check_template_texts(spec, text, html)
    if spec.inline and html is None:
        raise ConfigError.for_fields(
            "export",
            [FieldError("inline", "inline images need an HTML body, and this body is sent as "
                        "plain text; give --html, an .html body file or --html-body[-file]")],
        )  # fmt: skip
    template = _template(spec, text, html)
    attachment_dir = _attachment_dir(spec)
    default_from, default_reply = _defaults(spec, conn)
    source = open_source(
        spec.source,
        kind=spec.kind or None,
        encoding=spec.encoding or None,
        delimiter=spec.delimiter or None,
        sheet=spec.sheet or None,
        where=spec.where or None,
        order_by=spec.order_by or None,
        key=spec.key or None,
        database_url=spec.database_url or None,
    )
    try:
        total = _check_source(spec, source, template)
    except BaseException:
        source.close()
        raise
    return Prepared(
        spec=spec,
        connection=conn,
        source=source,
        template=template,
        html=html is not None,
        notes=(note,) if note else (),
        default_from=default_from,
        default_reply_to=default_reply,
        domain=(default_from.domain if default_from else "") or "mailconduit.invalid",
        attachment_dir=attachment_dir,
        total=total,
    )


def _template(spec: ExportSpec, text: str | None, html: str | None) -> MessageTemplate:
    """The export's compiled template; in table and group mode the bodies place the table."""
    to = spec.to
    if spec.to_column:
        to = ", ".join(t for t in (spec.to, "{{ to_column_addresses }}") if t)

    def compile_template(text: str | None, html: str | None) -> MessageTemplate:
        try:
            return MessageTemplate(
                to=to,
                cc=spec.cc,
                bcc=spec.bcc,
                from_=spec.from_,
                reply_to=spec.reply_to,
                subject=spec.subject,
                text_body=text,
                html_body=html,
                attachments=spec.attach,
                headers=spec.headers,
                inline=spec.inline,
            )
        except RenderError as exc:
            raise template_error(exc, "export") from None

    template = compile_template(text, html)
    if spec.mode is not ExportMode.ROW and "html" in spec.table_formats:
        # A body that does not place the table (by the names it reads, not the words it
        # contains: "All rows:" places none) gets it after its text.
        if html is not None and not template.columns("html_body") & _TABLE_NAMES:
            html += "\n{{ table_html }}\n"
        if text is not None and not template.columns("text_body") & _TABLE_NAMES:
            text += "\n\n{{ table_text }}\n"
        template = compile_template(text, html)
    return template


def _attachment_dir(spec: ExportSpec) -> Path | None:
    """The folder relative attachment paths are read from, if one is given."""
    if not spec.attach_dir:
        return None
    attachment_dir = Path(spec.attach_dir).expanduser()
    if not attachment_dir.is_dir():
        raise ConfigError.for_fields(
            "export", [FieldError("attach_dir", f"{attachment_dir} is not a folder")]
        )
    return attachment_dir


def _defaults(spec: ExportSpec, conn: Connection) -> tuple[Address | None, tuple[Address, ...]]:
    """The connection's From and Reply-To, used where the template gives none."""
    default_from: Address | None = None
    default_reply: tuple[Address, ...] = ()
    try:
        if conn.sender:
            default_from = make_address(conn.sender, display_name=conn.from_name)
        if conn.reply_to:
            default_reply = tuple(parse_address_list(conn.reply_to, field="reply_to"))
    except AddressError as exc:
        raise ConfigError.for_fields("connection", [FieldError("from_address", str(exc))]) from None
    if default_from is None and not spec.from_:
        raise ConfigError.for_fields(
            "export",
            [FieldError("from", f"no sender: connection {conn.name!r} has no from address and "
                        "its username is not an address; give --from")],
        )  # fmt: skip
    return default_from, default_reply


def _check_source(spec: ExportSpec, source: Source, template: MessageTemplate) -> int:
    """Check the data against the template (columns, shared values, one sample rendered);
    returns the number of rows."""
    location = source.location
    provided = {
        ExportMode.ROW: ROW_MODE_NAMES,
        ExportMode.TABLE: TABLE_MODE_NAMES | {"row"},
        ExportMode.GROUP: GROUP_MODE_NAMES,
    }[spec.mode] | ({"to_column_addresses"} if spec.to_column else set())
    for column, what in ((spec.by, "by"), (spec.to_column, "to_column")):
        if column and column not in source.columns:
            raise ConfigError.for_fields(
                "export",
                [FieldError(what, f"column {column!r} is not in {location}; its columns are: "
                            f"{', '.join(source.columns)}")],
            )  # fmt: skip
    try:
        template.check(source.columns, provided=provided)
    except RenderError as exc:
        raise template_error(exc, location) from None
    total = source.validate()
    if spec.mode is not ExportMode.ROW:
        check_shared_columns(spec, source, template, provided)
    sample = next((row for row in source.rows() if row.problem is None), None)
    if sample is None:
        return total
    extras = None
    if spec.mode is not ExportMode.ROW:
        from mailconduit.message.table import table_context

        extras = table_context(
            source.columns,
            [sample.values],
            group="" if spec.mode is ExportMode.GROUP else None,
        )
        extras["to_column_addresses"] = ""
    try:
        template.check_render(sample.values, extras=extras)
    except RenderError as exc:
        raise template_error(exc, location) from None
    return total
