"""One export from start to report: check, prepare, then dry-run or deliver.

Everything that can be wrong with the input is found before the first message goes
out (connection state, source structure, template syntax, unknown columns, sandbox
violations, a column that differs across the rows of one table or group message): the
export then stops with one line and nothing is sent. Per-row problems (an invalid
address, a missing attachment, a control character in a cell) skip that row and are
reported; in table and group mode such a row is left out of its message, which goes on.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import fcntl
import functools
import os
import re
import socket
import threading
import time
from collections.abc import Callable, Collection, Iterator, Sequence
from pathlib import Path
from typing import Any, TypeVar

from mailconduit.config import (
    Connection,
    ExportMode,
    ExportSpec,
    ImplementationType,
    RateLimit,
    char_name,
    export_spec_to_dict,
    validate_export_spec,
)
from mailconduit.delivery.events import Progress, ProgressCallback
from mailconduit.delivery.ratelimit import DailyUsage, RateLimiter
from mailconduit.delivery.report import ExportReport, write_report
from mailconduit.delivery.runner import CANCELLED, Job, Runner
from mailconduit.errors import (
    AddressError,
    ConfigError,
    FieldError,
    RenderError,
    RowError,
)
from mailconduit.home import home
from mailconduit.journal.store import (
    CLAIMED,
    FAILED,
    FINAL_STATES,
    SENT,
    SKIPPED,
    UNCERTAIN,
    Journal,
    RowState,
)
from mailconduit.message import (
    GROUP_MODE_NAMES,
    ROW_MODE_NAMES,
    TABLE_MODE_NAMES,
    Address,
    MessageTemplate,
    compose_message,
    make_address,
    make_message_id,
    parse_address_list,
)
from mailconduit.message.build import BuiltMessage
from mailconduit.smtp import SMTPSession
from mailconduit.sources import Row, Source, open_source
from mailconduit.sources.cells import cell_problem

__all__ = ["execute", "new_run_id", "preview", "report_from_journal", "resume"]

T = TypeVar("T")
_SAFE = re.compile(r"[^A-Za-z0-9._-]+")
_TABLE_NAMES = frozenset({"table_html", "table_text", "rows"})
_RECIPIENT_FIELDS = ("to", "cc", "bcc")
_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def new_run_id() -> str:
    """A readable, unique run id: ``20261129-142501-3fa2c1``."""
    return time.strftime("%Y%m%d-%H%M%S") + "-" + os.urandom(3).hex()


# --------------------------------------------------------------------------- preparation


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
        self.source.close()


def _check_connection(conn: Connection, *, sending: bool) -> None:
    """The seed's execution rules: an export needs an active target connection."""
    if not sending:
        return
    name = conn.name
    if not conn.is_active:
        raise ConfigError.for_fields(
            "export",
            [FieldError("connection", f"{name!r} is inactive; activate it with "
                        f"'mailconduit connections edit {name} --active'")],
        )  # fmt: skip
    if not conn.is_target:
        raise ConfigError.for_fields(
            "export",
            [FieldError("connection", f"{name!r} is not a target; enable it with "
                        f"'mailconduit connections edit {name} --target'")],
        )  # fmt: skip
    if conn.implementation_type is ImplementationType.CELERY:
        raise ConfigError.for_fields(
            "export",
            [FieldError("connection", f"{name!r} runs on Celery workers (queue {conn.agent!r}), which "
                        "this version cannot dispatch to yet; set --implementation-type default "
                        "to run it here")],
        )  # fmt: skip


def _template_error(exc: RenderError, source: str) -> ConfigError:
    where = f"template {exc.template}" if exc.template else "template"
    column = f", column {exc.column!r}" if exc.column else ""
    return ConfigError.for_fields(
        "export",
        [FieldError(exc.template or "template", f"{exc.message} ({source}: {where}{column})")],
    )


def _read_body(path: str, field: str) -> str:
    try:
        return Path(path).read_text(encoding="utf-8-sig")  # a BOM is no part of the body
    except OSError as exc:
        raise ConfigError.for_fields(
            "export", [FieldError(field, f"{path}: {exc.strerror}")]
        ) from None
    except UnicodeDecodeError:
        raise ConfigError.for_fields(
            "export", [FieldError(field, f"{path}: not UTF-8 text")]
        ) from None


#: A body file of one of these names is HTML: ``x.html``, ``x.htm``, ``x.html.j2``...
_HTML_FILE_RE = re.compile(r"\.html?(?:\.(?:j2|jinja|jinja2))?\Z", re.IGNORECASE)
#: An HTML document: ``<!DOCTYPE html`` or ``<html`` first (after blanks, an XML
#: declaration, HTML or template comments).
_HTML_DOCUMENT_RE = re.compile(
    r"\A\ufeff?\s*(?:<\?xml[^>]{0,200}\?>\s*)?(?:(?:<!--.*?-->|\{#.*?#\})\s*)*"
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


def _body_setting(spec: ExportSpec, kind: str) -> str:
    """The setting a ``text`` or ``html`` body came from, to name it in an error."""
    for name in (f"{kind}_body_file", f"{kind}_body", "body_file"):
        if getattr(spec, name):
            return name
    return "body"


def _check_template_texts(spec: ExportSpec, text: str | None, html: str | None) -> None:
    """The templates hold no character data may not hold either (the same rule as cells)."""
    texts: dict[str, str] = {
        "to": spec.to, "cc": spec.cc, "bcc": spec.bcc, "from": spec.from_,
        "reply_to": spec.reply_to, "subject": spec.subject,
        **{_body_setting(spec, kind): body for kind, body in (("text", text), ("html", html))
           if body is not None},
        **{f"attach {n}": template for n, template in enumerate(spec.attach, 1)},
        **{f"inline {name}": template for name, template in spec.inline},
        **{f"header {name}": template for name, template in spec.headers},
    }  # fmt: skip
    problem = cell_problem(texts)
    if problem is not None:
        raise ConfigError.for_fields(
            "export",
            [FieldError(problem.column, f"the template holds {char_name(problem.char)}; control "
                        "characters cannot be sent (TAB, LF and CR can)")],
        )  # fmt: skip


def prepare(spec: ExportSpec, conn: Connection, *, sending: bool) -> Prepared:
    """Check everything that can be checked before sending; raise with one clear line."""
    _check_connection(conn, sending=sending)
    text, html, note = _bodies(spec, conn)
    _check_template_texts(spec, text, html)
    if spec.inline and html is None:
        raise ConfigError.for_fields(
            "export",
            [FieldError("inline", "inline images need an HTML body, and this body is sent as "
                        "plain text; give --html, an .html body file or --html-body[-file]")],
        )  # fmt: skip
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
            raise _template_error(exc, "export") from None

    template = compile_template(text, html)
    if spec.mode is not ExportMode.ROW and "html" in spec.table_formats:
        # A body that does not place the table (by the names it reads, not the words it
        # contains: "All rows:" places none) gets it after its text.
        if html is not None and not template.columns("html_body") & _TABLE_NAMES:
            html += "\n{{ table_html }}\n"
        if text is not None and not template.columns("text_body") & _TABLE_NAMES:
            text += "\n\n{{ table_text }}\n"
        template = compile_template(text, html)

    attachment_dir: Path | None = None
    if spec.attach_dir:
        attachment_dir = Path(spec.attach_dir).expanduser()
        if not attachment_dir.is_dir():
            raise ConfigError.for_fields(
                "export", [FieldError("attach_dir", f"{attachment_dir} is not a folder")]
            )

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
    domain = (default_from.domain if default_from else "") or "mailconduit.invalid"

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
            raise _template_error(exc, location) from None
        total = source.validate()
        if spec.mode is not ExportMode.ROW:
            _check_shared_columns(spec, source, template, provided)
        sample = next((row for row in source.rows() if row.problem is None), None)
        if sample is not None:
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
                raise _template_error(exc, location) from None
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
        domain=domain,
        attachment_dir=attachment_dir,
        total=total,
    )


def _check_shared_columns(
    spec: ExportSpec, source: Source, template: MessageTemplate, provided: Collection[str]
) -> None:
    """Table and group mode: a column name in a template gives the message's first row's
    value, which is only right when every row of the message has the same one.

    One scan of the data (the rows the messages will hold); a column whose value differs
    within one message is a ConfigError naming the field, the rows, and what to write.
    """
    fields: dict[str, str] = {}  # column → the first field reading it
    for field in template.field_names:
        for name in sorted(template.columns(field)):
            if name in source.columns and name not in provided:
                fields.setdefault(name, field)
    if not fields:
        return
    grouped = spec.mode is ExportMode.GROUP
    first: dict[Any, dict[str, tuple[int, Any]]] = {}
    differing: dict[str, tuple[Any, int, int]] = {}  # column → (group, row, other row)
    for row in _message_rows(spec, source):
        if row.problem is not None:
            continue
        group = _group_of(row.values.get(spec.by)) if grouped else None
        seen = first.setdefault(group, {})
        for column in fields:
            value = row.values.get(column)
            earlier = seen.setdefault(column, (row.number, value))
            if column not in differing and not _same(earlier[1], value):
                differing[column] = (group, earlier[0], row.number)
        if len(differing) == len(fields):
            break
    if differing:
        errors = [
            _shared_column_error(spec, fields[column], column, *where)
            for column, where in differing.items()
        ]
        raise ConfigError.for_fields("export", errors)


def _same(a: Any, b: Any) -> bool:
    return bool(a is b or a == b or (a != a and b != b))  # NaN is the same as NaN here


def _group_of(value: Any) -> Any:
    """A group value as a dict key (a list or mapping from JSON stands for its text)."""
    try:
        hash(value)
    except TypeError:
        return repr(value)
    return value


def _shared_column_error(
    spec: ExportSpec, field: str, column: str, group: Any, row: int, other: int
) -> FieldError:
    where = "of the table" if spec.mode is ExportMode.TABLE else f"of group {str(group)[:40]!r}"
    item = f"rows[0].{column}" if _IDENTIFIER.fullmatch(column) else f"rows[0][{column!r}]"
    said = (
        f"column {column!r} differs between rows {row} and {other} {where}, but in "
        f"{spec.mode.value} mode a column name gives the value of the message's first row only"
    )
    if field in _RECIPIENT_FIELDS:
        told = (
            f"; to send to every address in it, use --to-column {column} (or {{{{ {item} }}}} "
            "to mean the first row's address)"
        )
    else:
        told = (
            f"; write {{{{ {item} }}}} for the first row's value, or an aggregate over the rows "
            f"such as {{{{ rows|map(attribute={column!r})|join(', ') }}}}"
        )
    return FieldError(field, said + told)


def _message_rows(spec: ExportSpec, source: Source) -> Iterator[Row]:
    """The rows table and group messages are made of: the first ``limit`` of the source."""
    for count, row in enumerate(source.rows(), 1):
        if spec.limit and count > spec.limit:
            return
        yield row


# --------------------------------------------------------------------------- messages


@dataclasses.dataclass
class Unit:
    """One message's worth of data: a row, a group or the whole table."""

    key: str
    seq: int
    number: int
    row: dict[str, Any]
    to_override: str = ""
    rows: list[dict[str, Any]] | None = None


def _rejected(key: str, seq: int, row: Row) -> RowState:
    """A row with a cell data may not hold: reported with its column and why, never sent."""
    assert row.problem is not None
    error = RowError(row.problem.reason, key, row.problem.column)
    return RowState(key, seq, row.number, SKIPPED, reply=str(error), column=error.column)


def _units(p: Prepared) -> Iterator[Unit | RowState]:
    spec = p.spec
    limit = spec.limit
    if spec.mode is ExportMode.ROW:
        for seq, row in enumerate(p.source.rows(), 1):
            if limit and seq > limit:
                return
            if row.problem is not None:
                yield _rejected(row.key, seq, row)
            else:
                yield Unit(row.key, seq, row.number, row.values)
        return
    rows: list[dict[str, Any]] = []
    numbers: list[int] = []
    left_out: list[Row] = []  # rows with a forbidden character: reported, not in the message
    for row in _message_rows(spec, p.source):
        if row.problem is not None:
            left_out.append(row)
        else:
            rows.append(row.values)
            numbers.append(row.number)
    units: list[Unit | RowState] = []
    if spec.mode is ExportMode.TABLE:
        if rows:
            unit = Unit("table", 1, 1, rows[0], rows=rows)
            units.append(_to_column(unit, spec.to_column, numbers))
    else:
        groups: dict[Any, list[int]] = {}
        for index, values in enumerate(rows):
            groups.setdefault(_group_of(values.get(spec.by)), []).append(index)
        for seq, (value, indexes) in enumerate(groups.items(), 1):
            key = f"group:{'' if value is None else value}"
            members = [rows[i] for i in indexes]
            unit = Unit(key, seq, seq, members[0], rows=members)
            units.append(_to_column(unit, spec.to_column, [numbers[i] for i in indexes]))
    # Reported first (so --fail-fast sends nothing), numbered after the messages: the
    # journal's claim mark counts messages only.
    for seq, row in enumerate(left_out, len(units) + 1):
        yield _rejected(f"row:{row.key}", seq, row)
    yield from units


def _to_column(unit: Unit, column: str, numbers: Sequence[int]) -> Unit | RowState:
    """``unit`` with the recipients of its ``column`` cells, or skipped for a cell that is
    not an address list (naming the column and the data row)."""
    if not column:
        return unit
    seen: dict[str, Address] = {}
    for values, number in zip(unit.rows or (), numbers, strict=True):
        cell = values.get(column)
        if cell is None:
            continue
        try:
            found = parse_address_list(str(cell), field="to_column")
        except AddressError as exc:
            return _skipped(
                unit, AddressError(f"row {number}: {exc.message}", exc.address, unit.key, column)
            )
        for address in found:  # every distinct address once: ANNA@ and anna@ are one mailbox
            seen.setdefault(address.envelope.lower(), address)
    unit.to_override = ", ".join(a.formatted for a in seen.values())
    return unit


def _table_extras(p: Prepared, unit: Unit, *, inline: bool) -> tuple[dict[str, Any], list[Any]]:
    spec = p.spec
    rows = unit.rows or []
    columns = p.source.columns
    group = unit.row.get(spec.by) if spec.mode is ExportMode.GROUP else None
    from mailconduit.message.table import table_attachment, table_context

    extras = table_context(columns, rows, group=group, max_rows=spec.table_row_cap or 500)
    if not inline:
        # Plain text: the HTML body escapes it (a tag here would show as text).
        extras["table_html"] = "The data is attached."
        extras["table_text"] = "The data is attached."
    attachments = []
    formats = [f for f in spec.table_formats if f != "html"]
    if not inline and not formats:
        formats = ["csv"]
    stem = _SAFE.sub("_", f"data-{group}" if group is not None else "data").strip("_") or "data"
    for kind in formats:
        attachments.append(table_attachment(kind, columns, rows, filename=f"{stem}.{kind}"))
    return extras, attachments


def _compose(p: Prepared, unit: Unit, run_id: str, *, inline: bool = True) -> BuiltMessage:
    spec = p.spec
    extras: dict[str, Any] | None = None
    attachments: list[Any] = []
    if unit.rows is not None:
        extras, attachments = _table_extras(p, unit, inline=inline)
        extras["to_column_addresses"] = unit.to_override
    return compose_message(
        p.template,
        unit.row,
        row_key=unit.key,
        message_id=make_message_id(run_id, unit.key, p.domain),
        default_from=p.default_from,
        default_reply_to=p.default_reply_to,
        extras=extras,
        extra_attachments=attachments,
        attachment_dir=p.attachment_dir,
        charset=spec.charset,
    )


def _skipped(unit: Unit, exc: RowError) -> RowState:
    return RowState(
        row_key=unit.key,
        seq=unit.seq,
        row_number=unit.number,
        state=SKIPPED,
        reply=str(exc),
        column=exc.column,
    )


def _jobs(
    p: Prepared,
    run_id: str,
    *,
    states: dict[str, tuple[str, int]],
    retry_failed: bool,
    resend_uncertain: bool,
    size_limit: int,
    claimed_seq: int = 0,
    partial: dict[str, RowState] | None = None,
) -> Iterator[Job | RowState]:
    """The run's messages; ``partial`` (from :meth:`Journal.partial_rows`) names the rows an
    earlier attempt delivered to some recipients: they go to the ones still owed only."""
    partial = partial or {}
    for unit in _units(p):
        if isinstance(unit, RowState):
            if unit.row_key in states:  # reported by an earlier attempt of this run
                yield RowState(unit.row_key, unit.seq, unit.row_number, "resumed")
            else:
                yield unit
            continue
        prior = states.get(unit.key)
        if prior is None and unit.seq <= claimed_seq:
            prior = (CLAIMED, 1)  # claimed by an earlier attempt, its outcome never written
        attempts = 0
        uncertain = False
        if prior is not None:
            state, attempts = prior
            if state in FINAL_STATES and not (state == FAILED and retry_failed):
                yield RowState(unit.key, unit.seq, unit.number, "resumed")
                continue
            uncertain = state in (CLAIMED, UNCERTAIN)
            if uncertain and not resend_uncertain:
                held = "held: its earlier delivery may have succeeded (--no-resend-uncertain)"
                if unit.key in partial:  # keep who is still owed it for a later resume
                    yield dataclasses.replace(
                        partial[unit.key], state=UNCERTAIN, reply=held, updated_at=0.0
                    )
                    continue
                yield RowState(
                    unit.key, unit.seq, unit.number, UNCERTAIN, attempts=attempts, reply=held,
                )  # fmt: skip
                continue
        try:
            for built in _fit(p, unit, run_id, size_limit):
                job = Job(
                    row_key=built[0],
                    seq=unit.seq,
                    row_number=unit.number,
                    sender=built[1].envelope_from,
                    recipients=list(built[1].envelope_recipients),
                    data=built[1].data,
                    smtputf8=built[1].needs_smtputf8,
                    message_id=built[1].message_id,
                    attempts=attempts,
                    uncertain_before=uncertain,
                )
                if built[0] in partial:
                    _owed_only(job, partial[built[0]])
                yield job
        except RowError as exc:
            yield _skipped(unit, exc)


def _owed_only(job: Job, prior: RowState) -> None:
    """Narrow a resumed job to the recipients its journal entry still owes the message to;
    the others keep their earlier answer (served, or refused as recorded)."""
    owed = set(prior.owed)
    narrowed = [r for r in job.recipients if r in owed]
    if not narrowed:  # none of them is in the message any more: send it as it is
        return
    job.refused = tuple(d for d in prior.detail if d[0] not in owed)
    job.narrow(narrowed)


def _fit(p: Prepared, unit: Unit, run_id: str, size_limit: int) -> list[tuple[str, BuiltMessage]]:
    """The unit's message(s); in table/group mode, made to fit the server's SIZE if asked."""
    built = _compose(p, unit, run_id)
    if unit.rows is None or not size_limit or built.size <= size_limit or p.spec.oversize == "fail":
        return [(unit.key, built)]
    if p.spec.oversize == "attach":
        attached = _compose(p, unit, run_id, inline=False)
        return [(unit.key, attached)]
    # split: as many parts as needed, each under the limit (bounded: at most one row per part)
    rows = unit.rows
    parts = min(len(rows), max(2, -(-built.size // size_limit) + 1))
    while True:
        size = -(-len(rows) // parts)
        chunks = [rows[i : i + size] for i in range(0, len(rows), size)]
        out = []
        for n, chunk in enumerate(chunks, 1):
            key = f"{unit.key}#part{n}of{len(chunks)}"
            sub = dataclasses.replace(unit, key=key, rows=chunk, row=chunk[0])
            out.append((key, _compose(p, sub, run_id)))
        if all(b.size <= size_limit for _, b in out):
            return out
        if parts >= len(rows):
            break
        parts = min(parts * 2, len(rows))  # the last try is one row per message
    raise RowError(
        f"the table does not fit the server's SIZE limit of {size_limit} bytes even one row per message",
        unit.key,
    )


# --------------------------------------------------------------------------- running


def _rate_for(spec: ExportSpec, conn: Connection) -> RateLimit:
    r = spec.rate
    return RateLimit(
        per_second=r.per_second or conn.rate_per_second,
        per_minute=r.per_minute or conn.rate_per_minute,
        per_hour=r.per_hour or conn.rate_per_hour,
        per_day=r.per_day or conn.daily_cap,
    )


def _opener(
    conn: Connection, spec: ExportSpec, allow_address: Any, send_gate: Any = None
) -> Any:
    data_timeout = spec.data_timeout_ms / 1000 if spec.data_timeout_ms else None
    per_conn = spec.messages_per_connection if spec.messages_per_connection >= 0 else None

    async def open_session() -> SMTPSession:
        session = SMTPSession(
            conn,
            data_timeout=data_timeout,
            allow_address=allow_address,
            messages_per_connection=per_conn,
            send_gate=send_gate,
        )
        try:
            await session.connect()
        except BaseException:
            session.close()
            raise
        return session

    return open_session


async def _server_size(opener: Any) -> int:
    session = await opener()
    try:
        return int(session.capabilities.size or 0)
    finally:
        try:
            await asyncio.wait_for(session.quit(), 5)
        except Exception:
            session.close()


async def execute(
    spec: ExportSpec,
    conn: Connection,
    *,
    progress: ProgressCallback | None = None,
    handle_signals: bool = False,
    allow_address: Any = None,
    resume_of: str = "",
    retry_failed: bool = False,
) -> ExportReport:
    """Run an export (or resume ``resume_of``) on the running loop; returns its report.

    Blocking steps (reading the source to check it, journal set-up, the report) run in a
    worker thread, so the loop goes on serving others. Cancelling the awaiting task stops
    the run as a first Ctrl-C does; the journal then says so, and the CancelledError goes
    on once it is written. ``handle_signals`` is for the CLI alone: SIGINT/SIGTERM stop it.
    """
    if spec.dry_run:
        return await _off_loop(functools.partial(_dry_run, spec, conn))
    run_id = resume_of or spec.run_id or new_run_id()
    if not spec.journal:
        return await _execute(spec, conn, run_id, None, progress=progress, handle_signals=handle_signals,
                              allow_address=allow_address, retry_failed=retry_failed)  # fmt: skip
    with _run_lock(run_id) as home_id:
        journal = Journal()
        with _RunLease(journal, run_id, home_id) as lease:
            return await _execute(spec, conn, run_id, journal, progress=progress,
                                  handle_signals=handle_signals, allow_address=allow_address,
                                  retry_failed=retry_failed, lease=lease)  # fmt: skip


async def _off_loop(call: Callable[[], T], cleanup: Callable[[T], object] | None = None) -> T:
    """``call()`` in a worker thread. If the awaiting task is cancelled meanwhile, the call
    still finishes (it may be writing the journal) and ``cleanup`` gets its result before
    the cancellation goes on."""
    future = asyncio.get_running_loop().run_in_executor(None, call)
    try:
        return await asyncio.shield(future)
    except asyncio.CancelledError:
        with contextlib.suppress(Exception):
            result = await future
            if cleanup is not None:
                cleanup(result)
        raise


@contextlib.contextmanager
def _run_lock(run_id: str) -> Iterator[str]:
    """One process at a time sends a run: a second ``run --run-id X`` started while X is
    still sending (an overlapping cron job) would see X's claimed rows and send them again.

    This lock covers one home; the journal's lease (:class:`_RunLease`) covers every host.
    Yields the home's id, which the lease records.
    """
    folder = home() / "runs"
    folder.mkdir(mode=0o700, exist_ok=True)
    with open(folder / f"{run_id}.lock", "a+b") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise ConfigError.for_fields(
                "export",
                [FieldError("run_id", f"run {run_id!r} is being sent by another process right "
                            "now; let it finish (or stop it), then run again to resume")],
            ) from None  # fmt: skip
        yield _home_id(folder)


def _home_id(folder: Path) -> str:
    """A random id for this home, made once: tells a lease taken from here from one taken
    from another home (even on a machine with the same name and paths)."""
    path = folder / "home-id"
    for _ in range(3):
        with contextlib.suppress(FileNotFoundError):
            text = path.read_text(encoding="ascii").strip()
            if text:
                return text
        tmp = folder / f"home-id.{os.getpid()}.{os.urandom(4).hex()}"
        tmp.write_text(os.urandom(8).hex() + "\n", encoding="ascii")
        try:
            os.link(tmp, path)  # never replaces the id another process wrote first
        except FileExistsError:
            pass
        finally:
            tmp.unlink()
    raise ConfigError.for_fields("export", [FieldError("home", f"{path} cannot be read")])


#: How long a run's lease lasts unless renewed. After a crash, the run can be resumed from
#: another home once it expires (from the crashed sender's own home at once).
LEASE_SECONDS = 30.0
#: How often a sending process renews its run's lease.
LEASE_RENEW_SECONDS = 10.0


class _RunLease:
    """The run's lease in the journal: one process at a time sends a run, on whichever
    host it runs, as long as they share the journal (PostgreSQL, or one SQLite file).

    Taken before the run's rows are read, renewed by a thread while it runs (through
    the prepare step as well), let go at the end, also after an error or a stop. When
    another process takes it over (it expired: this process was frozen longer than
    :data:`LEASE_SECONDS`), :meth:`on_lost` hears of it and the run stops.
    """

    def __init__(self, journal: Journal, run_id: str, home_id: str) -> None:
        self.journal = journal
        self.run_id = run_id
        self.home_id = home_id
        self.owner = f"{socket.gethostname()}:{os.getpid()}:{os.urandom(4).hex()}"
        self.lost = ""  # why the lease was lost; empty while it is held
        self._guard = threading.Lock()
        self._listener: Callable[[str], None] | None = None
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._keep, name=f"lease-{run_id}", daemon=True)

    def __enter__(self) -> _RunLease:
        holder = self.journal.take_lease(
            self.run_id, owner=self.owner, home=self.home_id, ttl=LEASE_SECONDS
        )
        if holder is not None:
            left = max(1, round(holder.seconds_left))
            until = time.strftime("%H:%M:%S", time.localtime(time.time() + left))
            raise ConfigError.for_fields(
                "export",
                [FieldError("run_id", f"run {self.run_id!r} is being sent right now by "
                            f"{_holder(holder.owner)}, whose lease on it runs until {until} "
                            f"(in {left} s); let it finish (or stop it), then run again to resume "
                            "(if that process died, its lease expires by then)")],
            )  # fmt: skip
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._done.set()
        self._thread.join()
        if not self.lost:
            with contextlib.suppress(Exception):  # unreachable store: it expires by itself
                self.journal.release_lease(self.run_id, owner=self.owner)

    def on_lost(self, listener: Callable[[str], None]) -> None:
        """Call ``listener(reason)`` (from the renewing thread) if the lease is lost."""
        with self._guard:
            self._listener = listener
            lost = self.lost
        if lost:
            listener(lost)

    def _keep(self) -> None:
        while not self._done.wait(LEASE_RENEW_SECONDS):
            try:
                kept = self.journal.renew_lease(self.run_id, owner=self.owner, ttl=LEASE_SECONDS)
                holder = None if kept else self.journal.lease(self.run_id)
            except Exception:  # the store is unreachable for now: try again at the next turn
                kept, holder = True, None
            if kept:
                continue
            who = _holder(holder.owner) if holder is not None else "another process"
            with self._guard:
                self.lost = (
                    f"stopped: {who} took over this run after its lease expired, so no row "
                    "goes out twice; resume it when that process is done"
                )
                listener = self._listener
            if listener is not None:
                listener(self.lost)
            return


def _holder(owner: str) -> str:
    """A lease owner (``host:pid:nonce``) as a person reads it."""
    host, _, rest = owner.partition(":")
    pid = rest.partition(":")[0]
    return f"process {pid} on host {host}" if pid else f"{owner!r}"


@dataclasses.dataclass
class _Start:
    """A run checked and recorded in its journal, ready to send."""

    prepared: Prepared
    states: dict[str, tuple[str, int]]
    partial: dict[str, RowState]
    claimed_seq: int


def _start(spec: ExportSpec, conn: Connection, run_id: str, journal: Journal | None) -> _Start:
    """Read what an earlier attempt did, check the export, record the run (blocking)."""
    states: dict[str, tuple[str, int]] = {}
    partial: dict[str, RowState] = {}
    claimed_seq = 0
    resuming = False
    if journal is not None and journal.run_exists(run_id):
        resuming = True
        states = journal.states(run_id)
        partial = journal.partial_rows(run_id)
        claimed_seq = journal.get_run(run_id).claimed_seq
    prepared = prepare(spec, conn, sending=True)
    try:
        if journal is not None:
            fingerprint = prepared.source.fingerprint()
            if resuming:
                info = journal.get_run(run_id)
                if info.fingerprint != fingerprint:
                    raise ConfigError.for_fields(
                        "resume",
                        [FieldError("source", f"the data of {prepared.source.location} changed since run "
                                    f"{run_id} started; resuming would mix two data sets (start a new run, "
                                    "or give the original data with --source)")],
                    )  # fmt: skip
                journal.set_status(run_id, "running", total=prepared.total)
            else:
                journal.create_run(
                    run_id,
                    connection=conn.name,
                    mode=spec.mode.value,
                    spec=export_spec_to_dict(dataclasses.replace(spec, run_id=run_id)),
                    fingerprint=fingerprint,
                    total=prepared.total,
                )
    except BaseException:
        prepared.close()
        raise
    return _Start(prepared, states, partial, claimed_seq)


def _stopped_early(exc: BaseException) -> tuple[str, str]:
    """The journal's status and message for a run ended by ``exc`` before its runner did."""
    if isinstance(exc, asyncio.CancelledError | KeyboardInterrupt):
        return "interrupted", CANCELLED
    return "failed", "stopped by an error before finishing"


async def _execute(
    spec: ExportSpec,
    conn: Connection,
    run_id: str,
    journal: Journal | None,
    *,
    progress: ProgressCallback | None,
    handle_signals: bool,
    allow_address: Any,
    retry_failed: bool,
    lease: _RunLease | None = None,
) -> ExportReport:
    async def deliver(start: _Start) -> tuple[Runner, Any]:
        """Send the run's messages through a pool of sessions."""
        prepared = start.prepared
        resend = spec.resend_uncertain
        opener = _opener(conn, spec, allow_address)
        size_limit = 0
        if spec.mode is not ExportMode.ROW and spec.oversize != "fail":
            size_limit = await _server_size(opener)
        jobs = _jobs(
            prepared, run_id, states=start.states, retry_failed=retry_failed,
            resend_uncertain=resend, size_limit=size_limit, claimed_seq=start.claimed_seq,
            partial=start.partial,
        )  # fmt: skip
        daily = _daily_usage(journal, conn) if journal is not None else None
        runner = Runner(
            run_id=run_id,
            spec=spec,
            connection=conn,
            jobs=jobs,
            open_session=opener,
            journal=journal,
            total=prepared.total if spec.mode is ExportMode.ROW else None,
            concurrency=spec.concurrency or conn.concurrency,
            limiter=RateLimiter(_rate_for(spec, conn), daily_usage=daily),
            progress=progress,
            handle_signals=handle_signals,
            resend_uncertain=resend,
        )
        if lease is not None:
            loop = asyncio.get_running_loop()
            lease.on_lost(lambda reason: _stop_soon(loop, runner, reason))
        return runner, await runner.run()

    try:
        start = await _off_loop(
            functools.partial(_start, spec, conn, run_id, journal), lambda s: s.prepared.close()
        )
        if progress is not None:
            for note in start.prepared.notes:
                progress(Progress(run_id, "note", message=note))
        started = time.monotonic()
        try:
            runner, result = await deliver(start)
        finally:
            start.prepared.close()
    except BaseException as exc:
        if journal is not None and journal.run_exists(run_id) and not (lease and lease.lost):
            status, message = _stopped_early(exc)
            journal.set_status(run_id, status, message=message)
        raise
    report = await _off_loop(
        functools.partial(
            _finish, spec, conn, run_id, journal, runner, result,
            elapsed=time.monotonic() - started, states=start.states, lease=lease,
            notes=start.prepared.notes,
        )
    )  # fmt: skip
    task = asyncio.current_task()
    if task is not None and task.cancelling():
        # The run stopped gracefully and its journal is written: now the cancellation
        # goes on, as asyncio's contract wants (timeouts and task groups rely on it).
        raise asyncio.CancelledError(f"run {run_id} stopped; resume it to send the rest")
    return report


def _finish(
    spec: ExportSpec,
    conn: Connection,
    run_id: str,
    journal: Journal | None,
    runner: Runner,
    result: Any,
    *,
    elapsed: float,
    states: dict[str, tuple[str, int]],
    lease: _RunLease | None,
    notes: tuple[str, ...],
) -> ExportReport:
    """Record how the run ended and make its report (blocking)."""
    if journal is not None:
        taken_over = lease is not None and bool(lease.lost)
        if not taken_over:  # else the run's status is its new sender's to write
            journal.set_status(
                run_id, result.status, message=result.message, finished=result.status == "finished"
            )
        if runner.limiter is not None:
            _save_daily(journal, conn, runner.limiter)
        report = report_from_journal(run_id, journal=journal)
        if taken_over:
            report.status, report.message = result.status, result.message
        report.elapsed = elapsed
        report.uncertain_resent = runner.counters.uncertain_resent
        report.sent_before = sum(1 for state, _ in states.values() if state == SENT)
    else:
        from mailconduit.delivery.runner import report_for

        report = report_for(runner, result, elapsed=elapsed)
    report.notes = notes
    if spec.report:
        write_report(report, spec.report, fmt=spec.report_format)
    return report


def _stop_soon(loop: asyncio.AbstractEventLoop, runner: Runner, reason: str) -> None:
    """Stop ``runner`` from another thread (the lease's), unless its loop is already gone."""
    with contextlib.suppress(RuntimeError):
        loop.call_soon_threadsafe(runner.stop, "interrupted", reason)


async def resume(
    run_id: str,
    conn: Connection,
    *,
    retry_failed: bool = False,
    resend_uncertain: bool | None = None,
    source: Any = None,
    progress: ProgressCallback | None = None,
    handle_signals: bool = False,
    allow_address: Any = None,
) -> ExportReport:
    """Resume ``run_id`` from its journal: confirmed rows are never sent again."""
    journal = Journal()
    spec = spec_of_run(run_id, journal=journal)  # NotFoundError for an unknown run
    changes: dict[str, Any] = {"run_id": run_id, "dry_run": ""}
    if source is not None:
        changes["source"] = source
    elif spec.source == "<python iterable>":
        raise ConfigError.for_fields(
            "resume",
            [FieldError("source", "this run read Python data; pass the same data as source=...")],
        )
    if resend_uncertain is not None:
        changes["resend_uncertain"] = resend_uncertain
    spec = dataclasses.replace(spec, **changes)
    return await execute(
        spec, conn, progress=progress, handle_signals=handle_signals,
        allow_address=allow_address, resume_of=run_id, retry_failed=retry_failed,
    )  # fmt: skip


def spec_of_run(run_id: str, *, journal: Journal | None = None) -> ExportSpec:
    journal = journal or Journal()
    info = journal.get_run(run_id)
    data = dict(info.spec)
    return validate_export_spec({k: v for k, v in data.items() if v not in (None,)})


def report_from_journal(run_id: str, *, journal: Journal | None = None) -> ExportReport:
    journal = journal or Journal()
    info = journal.get_run(run_id)
    counts = {k: v for k, v in info.counts.items()}
    if counts.get(CLAIMED) and info.status != "running":
        counts[UNCERTAIN] = counts.get(UNCERTAIN, 0) + counts.pop(CLAIMED)
    elapsed = (info.finished_at or info.updated_at) - info.created_at
    return ExportReport(
        run_id=run_id,
        status=info.status,
        connection=info.connection,
        counts=counts,
        total=info.total or 0,
        elapsed=max(0.0, elapsed),
        message=info.message,
        row_source=lambda: journal.rows(run_id),
    )


def _daily_usage(journal: Journal, conn: Connection) -> DailyUsage | None:
    return journal.daily_usage(conn.name)


def _save_daily(journal: Journal, conn: Connection, limiter: RateLimiter) -> None:
    journal.save_daily_usage(conn.name, limiter.daily_usage())


# --------------------------------------------------------------------------- dry run / preview


def _eml_name(seq: int, key: str) -> str:
    safe = _SAFE.sub("_", key).strip("_")[:60] or "row"
    return f"{seq:06d}-{safe}.eml"


def _dry_run(spec: ExportSpec, conn: Connection) -> ExportReport:
    prepared = prepare(spec, conn, sending=False)
    run_id = spec.run_id or new_run_id()
    out = Path(spec.dry_run)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        prepared.close()
        raise ConfigError.for_fields(
            "export", [FieldError("dry_run", f"{out}: {exc.strerror}")]
        ) from None
    kept: list[RowState] = []
    counts = {"sent": 0, "failed": 0, "skipped": 0, "written": 0}
    first: str = ""
    started = time.monotonic()
    try:
        for item in _jobs(
            prepared, run_id, states={}, retry_failed=False, resend_uncertain=True, size_limit=0
        ):
            if isinstance(item, RowState):
                counts["skipped"] += 1
                kept.append(item)
                continue
            path = out / _eml_name(item.seq, item.row_key)
            path.write_bytes(item.data)
            counts["written"] += 1
            kept.append(
                RowState(item.row_key, item.seq, item.row_number, "written", recipients=tuple(item.recipients),
                         message_id=item.message_id, reply=str(path))
            )  # fmt: skip
            if not first:
                first = preview_text(item.data)
    finally:
        prepared.close()
    report = ExportReport(
        run_id=run_id,
        status="dry-run",
        connection=conn.name,
        counts=counts,
        total=prepared.total,
        elapsed=time.monotonic() - started,
        message="".join(f"{note}\n" for note in prepared.notes)
        + (f"nothing was sent; first message:\n{first}" if first else "nothing was sent"),
        dry_run_dir=str(out),
        kept_rows=kept,
        notes=prepared.notes,
    )
    if spec.report:
        write_report(report, spec.report, fmt=spec.report_format)
    return report


def preview_text(data: bytes, *, max_lines: int = 30) -> str:
    """Headers and the beginning of the text of a message, as a person reads them."""
    from email import policy
    from email.parser import BytesParser

    msg = BytesParser(policy=policy.default).parsebytes(data)
    lines = [
        f"{name}: {value}" for name, value in msg.items() if name.lower() not in ("mime-version",)
    ]
    body = msg.get_body(preferencelist=("plain", "html"))
    text = body.get_content() if body is not None else ""
    lines.append("")
    lines.extend(str(text).splitlines()[:max_lines])
    return "\n".join(lines)


@dataclasses.dataclass(frozen=True)
class PreviewMessage:
    """A rendered message shown before sending (nothing is sent)."""

    row_key: str
    row_number: int
    recipients: tuple[str, ...]
    headers: tuple[tuple[str, str], ...]
    text: str
    html: str
    attachments: tuple[str, ...]
    size: int
    error: str = ""
    #: Inline images of the HTML: (Content-ID, file name).
    inline: tuple[tuple[str, str], ...] = ()
    #: What the export decided on its own and says (the body sent as HTML, and why).
    notes: tuple[str, ...] = ()


def preview(spec: ExportSpec, conn: Connection, *, limit: int = 3) -> list[PreviewMessage]:
    """The first ``limit`` messages, rendered and built but not sent."""
    from email import policy
    from email.parser import BytesParser

    prepared = prepare(dataclasses.replace(spec, limit=limit), conn, sending=False)
    out: list[PreviewMessage] = []
    try:
        for item in _jobs(
            prepared, "preview", states={}, retry_failed=False, resend_uncertain=True, size_limit=0
        ):
            if isinstance(item, RowState):
                out.append(
                    PreviewMessage(item.row_key, item.row_number, (), (), "", "", (), 0,
                                   item.reply, notes=prepared.notes)
                )  # fmt: skip
                continue
            msg = BytesParser(policy=policy.default).parsebytes(item.data)
            plain = msg.get_body(preferencelist=("plain",))
            html = msg.get_body(preferencelist=("html",))
            names = tuple(part.get_filename() or "" for part in msg.iter_attachments())
            inline = tuple(
                (str(part["Content-ID"]).strip("<>"), part.get_filename() or "")
                for part in msg.walk()
                if part.get_content_disposition() == "inline" and part["Content-ID"]
            )
            out.append(
                PreviewMessage(
                    row_key=item.row_key,
                    row_number=item.row_number,
                    recipients=tuple(item.recipients),
                    headers=tuple((k, str(v)) for k, v in msg.items()),
                    text=str(plain.get_content()) if plain is not None else "",
                    html=str(html.get_content()) if html is not None else "",
                    attachments=names,
                    size=len(item.data),
                    inline=inline,
                    notes=prepared.notes,
                )
            )
    finally:
        prepared.close()
    return out
