"""Message-field templates rendered per row in a Jinja2 sandbox, with undefined names as errors.

All problems a template can have before any row is sent are found up front: syntax errors
(at construction), unknown columns (:meth:`MessageTemplate.check`) and sandbox violations
(:meth:`MessageTemplate.check_render`). Per-row failures raise :class:`RenderError` naming
the field and, when it can be told, the column. Templates without markup skip Jinja, and
templates made only of ``{{ name }}`` / ``{{ row["name"] }}`` substitutions use a direct
path with the same output as Jinja: when every field is of these kinds, Jinja is not even
loaded.
"""

from __future__ import annotations

import difflib
import re
import sys
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import markupsafe

from mailconduit.errors import RenderError, RowError, TemplateSandboxError
from mailconduit.message.chars import HEADER_BREAKERS_RE, char_name
from mailconduit.message.header import check_header_name

if TYPE_CHECKING:
    from jinja2 import Template, nodes

    from mailconduit.message.htmltext import TextPlan
    from mailconduit.message.sandbox import Sandbox

__all__ = [
    "GROUP_MODE_NAMES",
    "ROW_MODE_NAMES",
    "TABLE_MODE_NAMES",
    "MessageTemplate",
    "RenderedMessage",
]

#: Names a template may use besides the columns, per export mode.
ROW_MODE_NAMES = frozenset({"row"})
TABLE_MODE_NAMES = frozenset({"rows", "count", "columns", "table_html", "table_text"})
GROUP_MODE_NAMES = TABLE_MODE_NAMES | {"row", "group"}
DEFAULT_MAX_FIELD_CHARS = 10_000
DEFAULT_MAX_BODY_CHARS = 10_000_000
_MARKUP_START = ("{{", "{%", "{#")
_UNDEFINED_NAME_RE = re.compile(r"^'([^']+)' is undefined")
_MISSING_KEY_RE = re.compile(r"^'dict object' has no attribute '([^']+)'")
_DICT_METHODS = frozenset(dir(dict))
#: The globals of our sandbox (Jinja's, without ``lipsum``, with the loop step counter); a
#: test holds them equal.
SANDBOX_GLOBALS = frozenset(
    {"range", "dict", "cycler", "joiner", "namespace", "__mailconduit_loop_step"}
)
#: ``{{ name }}`` or ``{{ row["key"] }}`` exactly as Jinja reads them (any whitespace inside).
_SIMPLE_TAG_RE = re.compile(
    r"\{\{\s*(?:([A-Za-z_][A-Za-z0-9_]*)|row\s*\[\s*(?:\"([^\"\\]*)\"|'([^'\\]*)')\s*\])\s*\}\}"
)
#: Names Jinja reads as constants, operators or statements: those go through Jinja.
_JINJA_WORDS = frozenset(
    [
        "true",
        "false",
        "none",
        "True",
        "False",
        "None",
        "and",
        "or",
        "not",
        "in",
        "is",
        "if",
        "else",
        "elif",
        "for",
        "recursive",
        "with",
        "without",
        "context",
        "import",
        "from",
        "as",
        "set",
        "block",
        "macro",
        "call",
        "filter",
        "include",
        "extends",
        "raw",
        "pluralize",
        "trans",
    ]
)
_NEWLINE_RE = re.compile(r"\r\n|\r|\n")
#: The characters HTML escaping replaces (markupsafe: & < > ' ").
_HTML_SPECIAL_RE = re.compile("[&<>'\"]")


@dataclass(slots=True)  # not frozen: see mailconduit.smtp.envelope's docstring
class RenderedMessage:
    """The rendered text of every message field of one row (addresses not parsed yet)."""

    to: str
    cc: str
    bcc: str
    from_: str
    reply_to: str
    subject: str
    text_body: str | None
    html_body: str | None
    attachments: tuple[str, ...]
    headers: tuple[tuple[str, str], ...]
    inline: tuple[tuple[str, str], ...] = ()
    #: Without ``text_body``: the plain-text alternative of ``html_body``, when the
    #: template could give it without converting the HTML (see :class:`TextPlan`).
    html_text: str | None = None


class _Env:
    """The settings of a sandbox, made (and Jinja imported) only when a field needs it."""

    __slots__ = ("_env", "_options", "keep_trailing_newline")

    def __init__(self, **options: Any) -> None:
        self._options = options
        self._env: Sandbox | None = None
        self.keep_trailing_newline: bool = options.get("keep_trailing_newline", False)

    def get(self) -> Sandbox:
        if self._env is None:
            from mailconduit.message.sandbox import Sandbox

            self._env = Sandbox(**self._options)
        return self._env


class _Field:
    """One compiled field template: constant, direct substitution, or full Jinja."""

    __slots__ = (
        "columns",
        "constant",
        "env",
        "field",
        "names",
        "parts",
        "plan",
        "planned",
        "source",
        "template",
        "tree",
        "unsafe",
        "whole_row",
    )

    def __init__(self, field: str, source: str, env: _Env) -> None:
        self.field = field
        self.source = source
        self.env = env
        self.constant: str | None = None
        self.parts: list[tuple[int, str]] | None = None
        self.names: frozenset[str] = frozenset()
        self.columns: frozenset[str] = frozenset()
        self.unsafe: list[str] = []
        #: ``row`` is used other than by a constant key (``row.get(x)``, ``row[name]``,
        #: ``row.items()``): the field may read any column.
        self.whole_row = False
        self.tree: nodes.Template | None = None
        self.template: Template | None = None
        self.plan: TextPlan | None = None
        self.planned = False
        if not any(marker in source for marker in _MARKUP_START):
            self.constant = _jinja_text(source, keep_trailing_newline=env.keep_trailing_newline)
            return
        parts = _simple_parts(source, keep_trailing_newline=env.keep_trailing_newline)
        if parts is not None:
            self.parts = parts
            self.columns = frozenset(text for kind, text in parts if kind == _ROW_KEY)
            names = {text for kind, text in parts if kind == _NAME}
            self.names = frozenset(names | {"row"} if self.columns else names)
            return
        from jinja2 import meta, nodes

        tree = self._compile()
        for loader in tree.find_all((nodes.Extends, nodes.Include, nodes.Import, nodes.FromImport)):
            raise RenderError(
                f"line {loader.lineno}: templates cannot load other templates "
                "(extends, include, import)",
                template=field,
            )
        self.names = frozenset(meta.find_undeclared_variables(tree))
        lookups = set()
        for node in tree.find_all((nodes.Getitem, nodes.Getattr)):
            key = _static_row_key(node)
            if key is not None:
                lookups.add(key)
            attr = _static_attribute(node)
            if attr is not None and attr.startswith("_"):
                self.unsafe.append(attr)
        for node in tree.find_all(nodes.Filter):
            if (
                node.name == "attr"
                and node.args
                and isinstance(node.args[0], nodes.Const)
                and str(node.args[0].value).startswith("_")
            ):
                self.unsafe.append(str(node.args[0].value))
        self.columns = frozenset(lookups)
        self.whole_row = _reads_whole_row(tree)
        self.parts = _direct_parts(tree)

    def _compile(self) -> nodes.Template:
        """Parse and compile with Jinja; a syntax error is a RenderError naming the line."""
        from jinja2 import TemplateSyntaxError

        env = self.env.get()
        try:
            tree = env.parse(self.source)
            self.template = env.from_string(tree)
        except TemplateSyntaxError as exc:
            raise RenderError(
                f"syntax error at line {exc.lineno}: {exc.message}", template=self.field
            ) from None
        self.tree = tree
        return tree

    def literal(self) -> str:
        """The text the template writes as it stands (outside its ``{{ }}`` and ``{% %}``),
        after Jinja's own whitespace control."""
        if self.constant is not None:
            return self.constant
        if self.parts is not None:
            return "".join(text for kind, text in self.parts if kind == _LITERAL)
        from jinja2 import nodes

        assert self.tree is not None
        return "".join(node.data for node in self.tree.find_all(nodes.TemplateData))

    def render(self, context: dict[str, Any], *, escape: bool, limit: int) -> str:
        if self.constant is not None:
            text = self.constant
        elif self.parts is not None:
            try:
                text = _render_direct(self.parts, context, escape)
            except KeyError:
                text = self._render_jinja(context, limit)
        else:
            text = self._render_jinja(context, limit)
        if len(text) > limit:
            raise _TooLarge
        return text

    def text_alternative(self, context: dict[str, Any]) -> str | None:
        """This HTML field's plain text for ``context`` from a plan made once per template,
        or None: then the rendered HTML is converted.

        Receipt (bench/RESULTS.md, invoice scenario): 270 µs (html_to_text) → 5.6 µs per row.
        """
        if not self.planned:
            self.planned = True
            self.plan = self._make_plan()
        plan = self.plan
        if plan is None:
            return None
        values: list[object] = []
        for kind, text in self.parts or ():
            if kind == _NAME:
                values.append(context.get(text, _MISSING))
            elif kind == _ROW_KEY:
                values.append(context["row"].get(text, _MISSING))
        return plan.fill(values)

    def _make_plan(self) -> TextPlan | None:
        from mailconduit.message.htmltext import text_plan  # html.parser, when needed

        if self.constant is not None:
            return text_plan([self.constant])
        if self.parts is None:
            return None
        literals = [""]
        for kind, text in self.parts:
            if kind == _LITERAL:
                literals[-1] += text
            else:
                literals.append("")
        return text_plan(literals)

    def _render_jinja(self, context: dict[str, Any], limit: int) -> str:
        if self.template is None:  # a direct field meeting a missing name: Jinja says why
            self._compile()
        assert self.template is not None
        out: list[str] = []
        size = 0
        for chunk in self.template.root_render_func(self.template.new_context(context)):
            size += len(chunk)
            if size > limit:
                raise _TooLarge
            out.append(chunk)
        return "".join(out)


#: A name the context lacks: not a plain value, so the text is converted from the HTML.
_MISSING = object()


class _TooLarge(Exception):
    """Internal: a field rendered beyond its size cap."""


def _reads_whole_row(tree: nodes.Template) -> bool:
    """Whether ``row`` is read other than by constant keys (a template that names its own
    ``row``, as a loop variable, is left alone)."""
    from jinja2 import nodes

    uses = 0
    for name in tree.find_all(nodes.Name):
        if name.name == "row":
            if name.ctx != "load":
                return False
            uses += 1
    static = sum(
        1 for node in tree.find_all((nodes.Getitem, nodes.Getattr)) if _static_row_key(node)
    )
    return uses > static


def _static_row_key(node: nodes.Node) -> str | None:
    """``row["x"]`` or ``row.x`` (not a dict method): the column name looked up, if constant."""
    from jinja2 import nodes

    if not (isinstance(node, nodes.Getitem | nodes.Getattr) and isinstance(node.node, nodes.Name)):
        return None
    if node.node.name != "row":
        return None
    if isinstance(node, nodes.Getitem):
        if isinstance(node.arg, nodes.Const) and isinstance(node.arg.value, str):
            return node.arg.value
        return None
    return node.attr if node.attr not in _DICT_METHODS else None


def _static_attribute(node: nodes.Node) -> str | None:
    from jinja2 import nodes

    if isinstance(node, nodes.Getattr):
        return node.attr
    if isinstance(node, nodes.Getitem) and isinstance(node.arg, nodes.Const):
        value = node.arg.value
        return value if isinstance(value, str) and value.startswith("__") else None
    return None


_LITERAL, _NAME, _ROW_KEY = 0, 1, 2


def _jinja_text(source: str, *, keep_trailing_newline: bool) -> str:
    """The text as Jinja reads it: every line break LF, one final one dropped unless kept."""
    text = _NEWLINE_RE.sub("\n", source) if "\r" in source else source
    if not keep_trailing_newline and text.endswith("\n"):
        text = text[:-1]
    return text


def _simple_parts(source: str, *, keep_trailing_newline: bool) -> list[tuple[int, str]] | None:
    """The parts Jinja would make of a template of text and plain substitutions, read
    without Jinja; None for anything else (Jinja then reads it).

    Jinja's reading is followed exactly: line breaks become LF, and without
    ``keep_trailing_newline`` one final line break is dropped. A property test compares
    the two on generated templates.
    """
    if "{%" in source or "{#" in source:
        return None
    text = _jinja_text(source, keep_trailing_newline=keep_trailing_newline)
    parts: list[tuple[int, str]] = []
    pos = 0
    while (start := text.find("{{", pos)) >= 0:
        tag = _SIMPLE_TAG_RE.match(text, start)
        if tag is None:
            return None
        name, double_quoted, single_quoted = tag.groups()
        if start > pos:
            parts.append((_LITERAL, text[pos:start]))
        if name is not None:
            if name in _JINJA_WORDS:
                return None
            parts.append((_NAME, name))
        else:
            key = double_quoted if double_quoted is not None else single_quoted
            if key.startswith("_"):
                return None
            parts.append((_ROW_KEY, key))
        pos = tag.end()
    if pos < len(text):
        parts.append((_LITERAL, text[pos:]))
    return parts


def _direct_parts(tree: nodes.Template) -> list[tuple[int, str]] | None:
    """The template as literal/lookup parts when it is only text and plain substitutions."""
    from jinja2 import nodes

    if len(tree.body) != 1 or not isinstance(tree.body[0], nodes.Output):
        return None
    parts: list[tuple[int, str]] = []
    for node in tree.body[0].nodes:
        if isinstance(node, nodes.TemplateData):
            parts.append((_LITERAL, node.data))
        elif isinstance(node, nodes.Name) and node.ctx == "load":
            parts.append((_NAME, node.name))
        elif (
            isinstance(node, nodes.Getitem)
            and isinstance(node.node, nodes.Name)
            and node.node.name == "row"
            and isinstance(node.arg, nodes.Const)
            and isinstance(node.arg.value, str)
            and not node.arg.value.startswith("_")
        ):
            parts.append((_ROW_KEY, node.arg.value))
        else:
            return None
    return parts


def _render_direct(parts: list[tuple[int, str]], context: dict[str, Any], escape: bool) -> str:
    """Substitute values exactly as Jinja would (str(), or HTML escaping when ``escape``)."""
    out = []
    for kind, text in parts:
        if kind == _LITERAL:
            out.append(text)
            continue
        value = context[text] if kind == _NAME else context["row"][text]
        if value is None:
            continue
        if escape:
            if value.__class__ is str and _HTML_SPECIAL_RE.search(value) is None:
                # What escaping gives, without building a Markup. Receipt (message_bench
                # "compose: invoice, own 98 KB PDF", CPU time): 386 µs, 432 µs without.
                out.append(value)
            else:
                out.append(str(markupsafe.escape(value)))
        elif isinstance(value, str):
            out.append(value)
        else:
            out.append(str(value))
    return "".join(out)


def _header_pairs(headers: Mapping[str, str] | Iterable[tuple[str, str]]) -> list[tuple[str, str]]:
    return list(headers.items() if isinstance(headers, Mapping) else headers)


class MessageTemplate:
    """The compiled templates of every message field; render them once per row (or group).

    Field names used in errors: ``to``, ``cc``, ``bcc``, ``from``, ``reply_to``, ``subject``,
    ``text_body``, ``html_body``, ``attachment N``, ``inline NAME`` and ``header NAME``.
    """

    def __init__(
        self,
        *,
        to: str = "",
        cc: str = "",
        bcc: str = "",
        from_: str = "",
        reply_to: str = "",
        subject: str = "",
        text_body: str | None = None,
        html_body: str | None = None,
        attachments: Sequence[str] = (),
        headers: Mapping[str, str] | Iterable[tuple[str, str]] = (),
        inline: Sequence[tuple[str, str]] = (),
        max_field_chars: int = DEFAULT_MAX_FIELD_CHARS,
        max_body_chars: int = DEFAULT_MAX_BODY_CHARS,
    ) -> None:
        self.max_field_chars = max_field_chars
        self.max_body_chars = max_body_chars
        line_env = _Env(max_chars=max_field_chars, autoescape=False)
        text_env = _Env(max_chars=max_body_chars, autoescape=False, keep_trailing_newline=True)
        html_env = _Env(max_chars=max_body_chars, autoescape=True, keep_trailing_newline=True)
        self._global_names = SANDBOX_GLOBALS
        self._to = _Field("to", to, line_env)
        self._cc = _Field("cc", cc, line_env)
        self._bcc = _Field("bcc", bcc, line_env)
        self._from = _Field("from", from_, line_env)
        self._reply_to = _Field("reply_to", reply_to, line_env)
        self._subject = _Field("subject", subject, line_env)
        self._text = _Field("text_body", text_body, text_env) if text_body is not None else None
        self._html = _Field("html_body", html_body, html_env) if html_body is not None else None
        self._attachments = tuple(
            _Field(f"attachment {n}", source, line_env) for n, source in enumerate(attachments, 1)
        )
        self._inline = tuple(
            (name, _Field(f"inline {name}", source, line_env)) for name, source in inline
        )
        header_fields = []
        for name, source in _header_pairs(headers):
            try:
                check_header_name(name)
            except RowError as exc:
                raise RenderError(exc.message, template=f"header {name}") from None
            header_fields.append((name, _Field(f"header {name}", source, line_env)))
        self._headers = tuple(header_fields)

    def _fields(self) -> Iterator[_Field]:
        yield from (self._to, self._cc, self._bcc, self._from, self._reply_to, self._subject)
        if self._text is not None:
            yield self._text
        if self._html is not None:
            yield self._html
        yield from self._attachments
        yield from (field for _, field in self._inline)
        yield from (field for _, field in self._headers)

    @property
    def has_html_body(self) -> bool:
        return self._html is not None

    @property
    def field_names(self) -> tuple[str, ...]:
        """The names of every field this template renders (as used in errors)."""
        return tuple(f.field for f in self._fields())

    def columns(self, field: str) -> frozenset[str]:
        """The names a field's template reads (columns, ``row["x"]`` keys, mode names)."""
        for candidate in self._fields():
            if candidate.field == field:
                return candidate.names | candidate.columns
        return frozenset()

    def reads_whole_row(self, field: str) -> bool:
        """Whether a field reads ``row`` by keys not written in it, so it may read any column."""
        return any(f.whole_row for f in self._fields() if f.field == field)

    def check(self, columns: Iterable[str], *, provided: Iterable[str] = ROW_MODE_NAMES) -> None:
        """Raise RenderError for the first field reading a column the source does not have.

        ``provided`` are the extra names of the export mode (see ``*_MODE_NAMES``). Also
        refuses statically visible sandbox violations such as ``x.__class__``.
        """
        known = {str(c) for c in columns}
        allowed = known | set(provided) | self._global_names
        for field in self._fields():
            one_line = field is not self._text and field is not self._html
            if one_line and (breaker := HEADER_BREAKERS_RE.search(field.literal())):
                raise RenderError(
                    f"the template's own text holds {char_name(breaker.group())}, which "
                    "no header line (nor file name) can hold; remove it",
                    template=field.field,
                )
            if field.unsafe:
                raise TemplateSandboxError(
                    f"sandbox violation: access to {field.unsafe[0]!r} is not allowed in templates",
                    template=field.field,
                )
            unknown = sorted((field.names - allowed) | (field.columns - known))
            if unknown:
                raise RenderError(
                    _unknown_message(unknown, known), template=field.field, column=unknown[0]
                )

    def check_render(
        self, sample_row: Mapping[str, Any], *, extras: Mapping[str, Any] | None = None
    ) -> None:
        """Render every field once against a sample row; raise RenderError on a sandbox violation.

        Other failures on the sample are left to the per-row render, since they depend on data.
        """
        try:
            self.render(sample_row, row_key="sample", extras=extras)
        except TemplateSandboxError:
            raise
        except RowError:
            pass

    def render(
        self,
        row: Mapping[str, Any],
        *,
        row_key: str = "",
        extras: Mapping[str, Any] | None = None,
    ) -> RenderedMessage:
        """Render all fields for one row; ``extras`` adds mode names (rows, group, count...)."""
        context = dict(row)
        if all(key.__class__ is str for key in context):
            context["row"] = row
        else:  # names are strings: a copy with str() keys, which ``row`` is then too
            context = {str(key): value for key, value in row.items()}
            context["row"] = dict(context)
        if extras:
            context.update(extras)
        line = self.max_field_chars
        body = self.max_body_chars
        r = self._render_field
        return RenderedMessage(
            to=r(self._to, context, row_key, line),
            cc=r(self._cc, context, row_key, line),
            bcc=r(self._bcc, context, row_key, line),
            from_=r(self._from, context, row_key, line),
            reply_to=r(self._reply_to, context, row_key, line),
            subject=r(self._subject, context, row_key, line),
            text_body=r(self._text, context, row_key, body) if self._text is not None else None,
            html_body=(
                r(self._html, context, row_key, body, escape=True)
                if self._html is not None
                else None
            ),
            html_text=(
                self._html.text_alternative(context)
                if self._html is not None and self._text is None
                else None
            ),
            attachments=tuple(r(f, context, row_key, line) for f in self._attachments),
            headers=tuple((name, r(f, context, row_key, line)) for name, f in self._headers),
            inline=(
                tuple((name, r(f, context, row_key, line)) for name, f in self._inline)
                if self._inline
                else ()
            ),
        )

    @staticmethod
    def _render_field(
        field: _Field, context: dict[str, Any], row_key: str, limit: int, *, escape: bool = False
    ) -> str:
        constant = field.constant
        if constant is not None and len(constant) <= limit:
            return constant
        try:
            return field.render(context, escape=escape, limit=limit)
        except _TooLarge:
            raise RenderError(
                f"the rendered text is longer than the limit of {limit} characters",
                row_key=row_key,
                template=field.field,
            ) from None
        except RenderError:
            raise
        except Exception as exc:  # a template is user code: any failure fails this row only
            raise _render_error(exc, field.field, row_key) from None


def _render_error(exc: Exception, field: str, row_key: str) -> RenderError:
    """The row's error for what a template raised (Jinja's errors only if Jinja is loaded)."""
    jinja = sys.modules.get("jinja2.exceptions")
    if jinja is not None and isinstance(exc, jinja.SecurityError):
        return TemplateSandboxError(f"sandbox violation: {exc}", row_key=row_key, template=field)
    if jinja is not None and isinstance(exc, jinja.UndefinedError):
        message = str(exc)
        found = _UNDEFINED_NAME_RE.match(message) or _MISSING_KEY_RE.match(message)
        column = found.group(1) if found else ""
        reason = f"unknown column {column!r}" if found else message
        return RenderError(reason, row_key=row_key, column=column, template=field)
    return RenderError(f"{exc.__class__.__name__}: {exc}", row_key=row_key, template=field)


def _unknown_message(unknown: list[str], known: set[str]) -> str:
    names = ", ".join(repr(n) for n in unknown)
    text = f"unknown column{'s' if len(unknown) > 1 else ''} {names}"
    close = difflib.get_close_matches(unknown[0], list(known), n=1)
    if close:
        text += f" (did you mean {close[0]!r}?)"
    if known:
        shown = sorted(known)[:20]
        text += "; the source has: " + ", ".join(shown) + (", ..." if len(known) > 20 else "")
    return text
