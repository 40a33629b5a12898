"""A readable plain-text version of an HTML body, for the text part of multipart/alternative.

Paragraphs and headings become blank-line separated blocks, list items get "- " or "1. ",
table cells are joined with " | ", links are kept as "text (url)", entities are decoded,
and script, style and head content is dropped.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from html.parser import HTMLParser

__all__ = ["TextPlan", "html_to_text", "text_plan"]

_PARAGRAPH_TAGS = frozenset(
    {
        "p", "h1", "h2", "h3", "h4", "h5", "h6", "ul", "ol", "dl", "table", "blockquote",
        "pre", "figure", "address", "fieldset", "form", "hr",
    }
)  # fmt: skip
_LINE_TAGS = frozenset(
    {
        "div", "section", "article", "header", "footer", "main", "aside", "nav", "tr",
        "dt", "dd", "figcaption", "caption", "center", "details", "summary", "tbody", "thead",
    }
)  # fmt: skip
_SKIP_TAGS = frozenset({"script", "style", "head", "title", "template", "noscript"})
_VOID_TAGS = frozenset({"br", "img", "hr", "input", "meta", "link", "wbr", "col", "area", "source"})
_WHITESPACE_RE = re.compile(r"[ \t\r\n\f\v\u00a0]+")
_BLANK_LINES_RE = re.compile(r"\n{3,}")
_HIDDEN_SCHEMES = ("#", "javascript:", "data:", "vbscript:")


class _TextWriter(HTMLParser):
    """Collects text pieces; line breaks are requested and written lazily before content."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.out: list[str] = []
        self._pending_breaks = 0
        self._at_line_start = True
        self._last_space = False
        self._skip_depth = 0
        self._pre_depth = 0
        self._lists: list[list[int]] = []  # one [counter] per open list; -1 for bullets
        self._links: list[tuple[str, int]] = []
        self._cells_in_row = 0

    def _request_break(self, count: int) -> None:
        if self.out:
            self._pending_breaks = max(self._pending_breaks, count)

    def _write(self, text: str, *, raw: bool = False) -> None:
        if self._pending_breaks:
            self.out.append("\n" * self._pending_breaks)
            self._pending_breaks = 0
            self._at_line_start = True
            self._last_space = False
        if self._at_line_start and not (self._pre_depth or raw):
            text = text.lstrip(" ")
            if not text:
                return
        self.out.append(text)
        self._at_line_start = text.endswith("\n")
        self._last_space = text.endswith((" ", "\n"))

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in _SKIP_TAGS:
            if tag not in _VOID_TAGS:
                self._skip_depth += 1
            return
        if self._skip_depth:
            return
        attributes = {name: value or "" for name, value in attrs}
        if tag == "br":
            self.out.append("\n")
            self._pending_breaks = 0
            self._at_line_start = True
            self._last_space = True
        elif tag == "hr":
            self._request_break(2)
            self._write("-" * 20)
            self._request_break(2)
        elif tag in ("ul", "ol"):
            self._request_break(2 if not self._lists else 1)
            self._lists.append([0 if tag == "ol" else -1])
        elif tag == "li":
            self._request_break(1)
            indent = "  " * max(len(self._lists) - 1, 0)
            if self._lists and self._lists[-1][0] >= 0:
                self._lists[-1][0] += 1
                self._write(f"{indent}{self._lists[-1][0]}. ", raw=True)
            else:
                self._write(f"{indent}- ", raw=True)
        elif tag == "tr":
            self._request_break(1)
            self._cells_in_row = 0
        elif tag in ("td", "th"):
            if self._cells_in_row:
                self._write(" | ")
            self._cells_in_row += 1
        elif tag == "a":
            self._links.append((attributes.get("href", "").strip(), len(self.out)))
        elif tag == "img":
            alt = attributes.get("alt", "").strip()
            if alt:
                self.handle_data(alt)
        elif tag in _PARAGRAPH_TAGS:
            self._request_break(2)
            if tag == "pre":
                self._pre_depth += 1
        elif tag in _LINE_TAGS:
            self._request_break(1)

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.handle_starttag(tag, attrs)
        if tag not in _VOID_TAGS:
            self.handle_endtag(tag)

    def handle_endtag(self, tag: str) -> None:
        if tag in _SKIP_TAGS:
            self._skip_depth = max(self._skip_depth - 1, 0)
            return
        if self._skip_depth:
            return
        if tag in ("ul", "ol"):
            if self._lists:
                self._lists.pop()
            self._request_break(2 if not self._lists else 1)
        elif tag == "a" and self._links:
            href, start = self._links.pop()
            self._close_link(href, "".join(self.out[start:]).strip())
        elif tag in _PARAGRAPH_TAGS:
            if tag == "pre":
                self._pre_depth = max(self._pre_depth - 1, 0)
            self._request_break(2)
        elif tag in _LINE_TAGS or tag == "li":
            self._request_break(1)

    def _close_link(self, href: str, text: str) -> None:
        if not href or href.lower().startswith(_HIDDEN_SCHEMES):
            return
        shown = href[7:] if href.lower().startswith("mailto:") else href
        if not text:
            self._write(shown)
        elif shown not in text:
            self._write(f" ({shown})" if not self._last_space else f"({shown})")

    def handle_data(self, data: str) -> None:
        if self._skip_depth or not data:
            return
        if self._pre_depth:
            self._write(data.replace("\r\n", "\n").replace("\r", "\n"))
            return
        data = _WHITESPACE_RE.sub(" ", data)
        if self._last_space and data.startswith(" "):
            data = data[1:]
        if data:
            self._write(data)


_ODD_SECTION_RE = re.compile(r"<!\[(?!CDATA\[)")


def _convert(html: str, writer_class: type[_TextWriter]) -> tuple[str, _TextWriter | None]:
    """The joined pieces and the writer that read ``html``, or (``html``, None) when the
    parser refused every attempt."""
    # The stdlib parser raises AssertionError on some malformed declarations ("<![0");
    # then those markers are read as text instead, first the odd "<![", then any "<!".
    for attempt in (html, _ODD_SECTION_RE.sub("&lt;![", html), html.replace("<!", "&lt;!")):
        writer = writer_class()
        try:
            writer.feed(attempt)
            writer.close()
        except AssertionError:
            continue
        return "".join(writer.out), writer if attempt is html else None
    return html, None


def _tidy(text: str) -> str:
    lines = [line.rstrip(" ") for line in text.split("\n")]
    text = _BLANK_LINES_RE.sub("\n\n", "\n".join(lines)).strip("\n")
    return text + "\n" if text else ""


def html_to_text(html: str) -> str:
    """Convert an HTML document or fragment into readable plain text ending with a newline."""
    return _tidy(_convert(html, _TextWriter)[0])


# --------------------------------------------------------------------------- per template

#: One private-use character stands for each substitution while the template is converted.
_SLOT_BASE = 0xE000
_MAX_SLOTS = 0xF8FF - _SLOT_BASE
_SLOT_RE = re.compile("[\ue000-\uf8ff]")
#: Before a substitution, these would make its value part of a tag or a character reference.
_UNSAFE_BEFORE_RE = re.compile(r"(?:<|&[^\t\n\f <&;]*)\Z")
#: A value the conversion could change: empty, or with whitespace it would collapse or strip.
_UNSAFE_VALUE_RE = re.compile(r"\A(?: |\Z)| \Z|  |[\t\n\r\f\v\xa0]")
#: Values shown as str() would show them and escaped as text (no ``__html__``).
_PLAIN_TYPES = frozenset({str, int, float})


class _SlotWriter(_TextWriter):
    """A writer that notes where the slot characters of a template are read: as text (and
    whether inside a link, whose text decides what is written), or anywhere else."""

    def __init__(self) -> None:
        super().__init__()
        self.slots_in_text: list[str] = []
        self.in_link = False
        self._in_tag = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self._in_tag = True  # an image's alt text is an attribute, not text
        try:
            super().handle_starttag(tag, attrs)
        finally:
            self._in_tag = False

    def handle_data(self, data: str) -> None:
        if not self._in_tag:
            slots = _SLOT_RE.findall(data)
            if slots:
                self.slots_in_text += slots
                self.in_link = self.in_link or bool(self._links and not self._skip_depth)
        super().handle_data(data)


@dataclass(frozen=True, slots=True)
class TextPlan:
    """The text alternative of an HTML template of plain substitutions, converted once.

    ``pieces`` is the converted text cut at the substitutions that show in it (``shown``,
    by index; the others fall in dropped parts such as ``<title>``). :meth:`fill` gives
    exactly what :func:`html_to_text` gives for the HTML rendered with the same values.
    """

    pieces: tuple[str, ...]
    shown: tuple[int, ...]

    def fill(self, values: Sequence[object]) -> str | None:
        """The text for these substitution values (before escaping), or None when a value
        could read differently in place (markup, whitespace, empty): then convert the HTML."""
        texts: list[str] = []
        for value in values:
            if value.__class__ not in _PLAIN_TYPES:
                return None
            texts.append(str(value))
        pieces = self.pieces
        out = [pieces[0]]
        for n, slot in enumerate(self.shown, 1):
            text = texts[slot]
            if not text or _UNSAFE_VALUE_RE.search(text):
                return None
            out += (text, pieces[n])
        return "".join(out)


def text_plan(literals: Sequence[str]) -> TextPlan | None:
    """The plan of an HTML template made of ``literals`` with a substitution between each
    two (escaped as Jinja's autoescape does), or None when the template cannot have one.

    A substitution qualifies when it falls in text outside links, after neither "<" nor
    an unfinished character reference; otherwise (in a tag, an attribute, a comment...)
    its value could change what the rest of the HTML means.
    """
    count = len(literals) - 1
    if count > _MAX_SLOTS or any(_SLOT_RE.search(text) for text in literals):
        return None
    if any(_UNSAFE_BEFORE_RE.search(text) for text in literals[:-1]):
        return None
    slots = [chr(_SLOT_BASE + n) for n in range(count)]
    html = "".join(part for pair in zip(literals, [*slots, ""], strict=True) for part in pair)
    joined, writer = _convert(html, _SlotWriter)
    if not isinstance(writer, _SlotWriter) or writer.in_link:
        return None
    if sorted(writer.slots_in_text) != slots:  # each slot read once, as text
        return None
    text = _tidy(joined)
    cut = _SLOT_RE.split(text)
    shown = tuple(ord(char) - _SLOT_BASE for char in _SLOT_RE.findall(text))
    if list(shown) != sorted(set(shown)):
        return None
    return TextPlan(tuple(cut), shown)
