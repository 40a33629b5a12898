"""Checks run before anything is sent: the connection's state, the template's characters,
and, in table and group mode, columns whose value must be the same across a message."""

from __future__ import annotations

import re
from collections.abc import Collection
from typing import Any

from mailconduit.config import Connection, ExportMode, ExportSpec, ImplementationType, char_name
from mailconduit.delivery.units import group_of, message_rows
from mailconduit.errors import ConfigError, FieldError, RenderError
from mailconduit.message import MessageTemplate
from mailconduit.sources import Source
from mailconduit.sources.cells import cell_problem

__all__ = ["check_connection", "check_shared_columns", "check_template_texts", "template_error"]

_RECIPIENT_FIELDS = ("to", "cc", "bcc")
_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def check_connection(conn: Connection, *, sending: bool) -> None:
    """The seed's execution rules: an export needs an active target connection."""
    if not sending:
        return
    name = conn.name
    if not conn.is_active:
        problem = (
            f"{name!r} is inactive; activate it with 'mailconduit connections edit {name} --active'"
        )
    elif not conn.is_target:
        problem = (
            f"{name!r} is not a target; enable it with "
            f"'mailconduit connections edit {name} --target'"
        )
    elif conn.implementation_type is ImplementationType.CELERY:
        problem = (
            f"{name!r} runs on Celery workers (queue {conn.agent!r}), which this version cannot "
            "dispatch to yet; set --implementation-type default to run it here"
        )
    else:
        return
    raise ConfigError.for_fields("export", [FieldError("connection", problem)])


def template_error(exc: RenderError, source: str) -> ConfigError:
    """A template problem as the one-line error of the export, naming where it is."""
    where = f"template {exc.template}" if exc.template else "template"
    column = f", column {exc.column!r}" if exc.column else ""
    return ConfigError.for_fields(
        "export",
        [FieldError(exc.template or "template", f"{exc.message} ({source}: {where}{column})")],
    )


def _body_setting(spec: ExportSpec, kind: str) -> str:
    """The setting a ``text`` or ``html`` body came from, to name it in an error."""
    for name in (f"{kind}_body_file", f"{kind}_body", "body_file"):
        if getattr(spec, name):
            return name
    return "body"


def check_template_texts(spec: ExportSpec, text: str | None, html: str | None) -> None:
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


def check_shared_columns(
    spec: ExportSpec, source: Source, template: MessageTemplate, provided: Collection[str]
) -> None:
    """Table and group mode: a column name in a template gives the message's first row's
    value, which is only right when every row of the message has the same one.

    One scan of the data (the rows the messages will hold); a column whose value differs
    within one message is a ConfigError naming the field, the rows, and what to write.
    """
    fields: dict[str, str] = {}  # column → the first field reading it
    computed: set[str] = set()  # columns counted only because a field reads row by computed keys
    for field in template.field_names:
        names = template.columns(field)
        if template.reads_whole_row(field):  # row.get(x), row[name]: any column may be read
            computed.update(name for name in source.columns if name not in names)
            names = names | frozenset(source.columns)
        for name in sorted(names):
            if name in source.columns and name not in provided:
                fields.setdefault(name, field)
    if not fields:
        return
    grouped = spec.mode is ExportMode.GROUP
    first: dict[Any, dict[str, tuple[int, Any]]] = {}
    differing: dict[str, tuple[Any, int, int]] = {}  # column → (group, row, other row)
    for row in message_rows(spec, source):
        if row.problem is not None:
            continue
        group = group_of(row.values.get(spec.by)) if grouped else None
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
            _shared_column_error(spec, fields[column], column, *where, computed=column in computed)
            for column, where in differing.items()
        ]
        raise ConfigError.for_fields("export", errors)


def _same(a: Any, b: Any) -> bool:
    return bool(a is b or a == b or (a != a and b != b))  # NaN is the same as NaN here


def _shared_column_error(
    spec: ExportSpec, field: str, column: str, group: Any, row: int, other: int, *,
    computed: bool = False,
) -> FieldError:  # fmt: skip
    where = "of the table" if spec.mode is ExportMode.TABLE else f"of group {str(group)[:40]!r}"
    item = f"rows[0].{column}" if _IDENTIFIER.fullmatch(column) else f"rows[0][{column!r}]"
    said = (
        f"column {column!r} differs between rows {row} and {other} {where}, but in "
        f"{spec.mode.value} mode a column name gives the value of the message's first row only"
    )
    if computed:
        said = (
            "it reads row by a key worked out when rendering (row.get(...), row[name]), so it "
            f"may read any column, and {said}"
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
