"""The address grammar: RFC 5322 §3.4 address lists, read strictly, with RFC 6531 UTF-8 local
parts and IDNA domains. Pure functions; at the bottom of the layers so that a connection's
from_address and a row's To are read by the same rules.

Strict on purpose, because in a data export an odd address is a mistake or a smuggling
attempt: anything unbalanced, ambiguous or left over is refused with the reason, never read
leniently. By policy (beyond RFC 5322) these are refused too:

- an RFC 2047 encoded-word in an addr-spec (RFC 2047 §5 forbids it there): it is never
  decoded, and sending it as written invites a reader to decode it into another address;
- a quoted local part, a comment or white space inside an addr-spec or ``<...>``, a source
  route (``<@relay:user@domain>``), a dotless domain, a local part not in NFC form or with a
  character that reads as ASCII punctuation (``＠``);
- a comment holding ``@`` (some programs take it for the address) and control characters.

A display name is the phrase as written, with its quotes and comments (``Acme (EU)``), less
the outer quotes when it is wrapped in them (``"Smith, John"``). The comment of a bare
``a@x.example (Ann)`` becomes its display name; one after ``>`` is dropped. Groups (``Team: a@x.example, b@x.example;``)
give their members. An encoded-word in a display name is kept as written (not decoded) and
re-encoded on output.
"""

from __future__ import annotations

import functools
import ipaddress
import re
import string
import unicodedata
from collections.abc import Iterator
from dataclasses import dataclass

from mailconduit.errors import AddressError

__all__ = [
    "ENCODED_WORD_REASON",
    "MAX_ADDRESS_OCTETS",
    "MAX_DOMAIN_OCTETS",
    "MAX_LOCAL_OCTETS",
    "Address",
    "check_display_name",
    "parse_list",
    "parse_mailbox",
    "parse_simple",
]

MAX_LOCAL_OCTETS = 64
MAX_DOMAIN_OCTETS = 255
MAX_ADDRESS_OCTETS = 254

#: RFC 5322 atext (ASCII); non-ASCII characters are atext too (RFC 6532).
_ATEXT = frozenset(string.ascii_letters + string.digits + "!#$%&'*+-/=?^_`{|}~")
_ATOM_CHARS = _ATEXT | {"."}
_WSP = frozenset(" \t")
#: Controls other than TAB, the Unicode line and paragraph separators, lone surrogates.
_FORBIDDEN_RE = re.compile("[\x00-\x08\x0a-\x1f\x7f-\x9f\u2028\u2029\ud800-\udfff]")
_LABEL_RE = re.compile(r"[a-z0-9](?:[a-z0-9-]*[a-z0-9])?")
#: A run of atom characters: atext, '.', and any non-ASCII character.
_ATOM_RE = re.compile(r"[A-Za-z0-9!#$%&'*+\-/=?^_`{|}~.\u0080-\U0010ffff]*")
_LOCAL_ASCII_RE = re.compile(r"[A-Za-z0-9!#$%&'*+\-/=?^_`{|}~.]+")
_SPACE_RE = re.compile(r"\s")
_QUOTED_PAIR_RE = re.compile(r"\\(.)")
_DOT_ATOM_ADDRESS = (
    r"([A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+(?:\.[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+)*)"
    r"@([A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)+)"
)
#: A bare ASCII ``local@domain`` whose local part is a dot-atom (RFC 5322 3.2.3).
_SIMPLE_RE = re.compile(_DOT_ATOM_ADDRESS)
_SEPARATOR_RE = re.compile("[,;]")
_WORD = r"[A-Za-z0-9!#$%&'*+\-/=?^_`{|}~.\u00a0-\u2027\u202a-\ud7ff\ue000-\U0010ffff]+"
#: ``Display Name <local@domain>``: words parted by single spaces, or one quoted-string
#: without backslashes or controls, before a bare ASCII address as above.
_NAMED_RE = re.compile(
    r'(?:"([^"\\\x00-\x1f\x7f-\x9f\u2028\u2029\ud800-\udfff]*)"|(' + _WORD + "(?: " + _WORD + ")*))"
    r" ?<" + _DOT_ATOM_ADDRESS + ">"
)
ENCODED_WORD_REASON = "encoded-word in an address (RFC 2047 forbids it there; it is not decoded)"
_QUOTED_LOCAL = "quoted local parts are refused (they are used to smuggle addresses)"
_SPACE = "the address contains a space (a display name goes before <address>)"


@dataclass(frozen=True, slots=True)
class Address:
    """One validated mailbox: ``local@domain`` with an optional display name.

    ``domain`` is the Unicode form, ``ascii_domain`` the IDNA (punycode) form used on the
    wire; ``local`` is exactly as written.
    """

    local: str
    domain: str
    ascii_domain: str
    display_name: str = ""

    @property
    def envelope(self) -> str:
        """The address for MAIL FROM / RCPT TO and headers: ``local@ascii_domain``."""
        return f"{self.local}@{self.ascii_domain}"

    @property
    def needs_smtputf8(self) -> bool:
        """True when the local part is not ASCII, so only an SMTPUTF8 server can take it."""
        return not self.local.isascii()

    @property
    def formatted(self) -> str:
        """The human-readable header form, e.g. ``Zoë Example <zoe@example.com>`` (not encoded)."""
        if not self.display_name:
            return self.envelope
        name = self.display_name
        if not all(c in _ATEXT or c == " " or not c.isascii() for c in name):
            name = '"' + name.replace("\\", "\\\\").replace('"', '\\"') + '"'
        return f"{name} <{self.envelope}>"

    def __str__(self) -> str:
        return self.formatted


class _Invalid(ValueError):
    """Why an entry is invalid, before the caller adds the entry's text."""


def _describe(char: str) -> str:
    if "\ud800" <= char <= "\udfff":
        return f"U+{ord(char):04X} (a lone surrogate)"
    name = unicodedata.name(char, "")
    return f"U+{ord(char):04X} {name}" if name else f"U+{ord(char):04X} (a control character)"


def _check_chars(text: str) -> None:
    found = _FORBIDDEN_RE.search(text)
    if found is not None:
        raise _Invalid(f"character {_describe(found.group())} is not allowed in an address")


# --------------------------------------------------------------------------- addr-spec


def _check_local(local: str) -> None:
    if local[0] == "." or local[-1] == ".":
        raise _Invalid("the local part starts or ends with a dot")
    if ".." in local:
        raise _Invalid("two dots in a row in the local part")
    if local.isascii():
        if not _LOCAL_ASCII_RE.fullmatch(local):
            bad = next(c for c in local if c not in _ATOM_CHARS)
            raise _Invalid(f"character {bad!r} is not allowed in the local part")
    else:
        if not unicodedata.is_normalized("NFC", local):
            raise _Invalid("the local part is not in Unicode normal form NFC")
        for char in local:
            if char.isascii():
                if char not in _ATOM_CHARS:
                    raise _Invalid(f"character {char!r} is not allowed in the local part")
                continue
            if unicodedata.category(char)[0] in "CZ":
                raise _Invalid(f"character {_describe(char)} is not allowed in the local part")
            folded = unicodedata.normalize("NFKC", char)
            if any(c.isascii() and c not in _ATEXT for c in folded):
                raise _Invalid(
                    f"character {_describe(char)} reads as {folded!r}; "
                    "it is not allowed in the local part"
                )
        _check_one_script(local, "local part")
    if len(local.encode("utf-8")) > MAX_LOCAL_OCTETS:
        raise _Invalid(f"the local part is longer than {MAX_LOCAL_OCTETS} octets")


@functools.lru_cache(maxsize=4096)
def _check_domain(domain: str) -> tuple[str, str]:
    """Validate ``domain``; return its (Unicode, ASCII) forms or raise _Invalid."""
    if not domain:
        raise _Invalid("no domain after the @")
    if domain.startswith("["):
        return _check_literal(domain)
    if domain.endswith("."):
        raise _Invalid("the domain ends with a dot")
    if domain.isascii():
        ascii_domain = domain.lower()
        labels = ascii_domain.split(".")
        for label in labels:
            if not label:
                raise _Invalid("the domain has an empty label (two dots in a row?)")
            if len(label) > 63:
                raise _Invalid(f"domain label {label[:20]!r}... is longer than 63 characters")
            if not _LABEL_RE.fullmatch(label):
                raise _Invalid(
                    f"domain label {label!r} may hold only letters, digits and inner hyphens"
                )
        unicode_domain = ascii_domain
        if "xn--" in ascii_domain:
            import idna  # punycode: loaded for the domains that need it

            try:
                unicode_domain = idna.decode(ascii_domain)
            except idna.IDNAError as exc:
                raise _Invalid(f"the domain is not valid punycode ({exc})") from None
            for label in unicode_domain.split("."):
                _check_one_script(label, "domain")
    else:
        import idna

        _check_unmapped(domain)
        try:
            ascii_domain = idna.encode(
                domain, uts46=True, std3_rules=True, transitional=False
            ).decode("ascii")
            unicode_domain = idna.decode(ascii_domain)
        except idna.IDNAError as exc:
            raise _Invalid(f"not a valid internationalised domain ({exc})") from None
        labels = ascii_domain.split(".")
    if len(ascii_domain) > MAX_DOMAIN_OCTETS:
        raise _Invalid(f"the domain is longer than {MAX_DOMAIN_OCTETS} octets")
    if len(labels) < 2:
        raise _Invalid("the domain has no dot (a full domain such as example.com is needed)")
    if labels[-1].isdigit():
        raise _Invalid("the domain looks like an IP address; write it as [192.0.2.1]")
    return unicode_domain, ascii_domain


#: Scripts whose letters look alike (``а`` U+0430 and ``a``): one label mixing them is a
#: look-alike of another address, as browsers judge domain names.
_CONFUSABLE_SCRIPTS = ("LATIN", "CYRILLIC", "GREEK")


def _check_one_script(part: str, where: str) -> None:
    """Refuse ``part`` (a local part or a domain label) when its letters mix Latin, Cyrillic
    and Greek."""
    seen = ""
    for char in part:
        if char.isascii() or not char.isalpha():
            script = "LATIN" if char.isalpha() else ""
        else:
            script = unicodedata.name(char, "").split(" ", 1)[0]
        if script not in _CONFUSABLE_SCRIPTS:
            continue
        if seen and script != seen:
            raise _Invalid(
                f"the {where} mixes {seen.title()} and {script.title()} letters "
                "(a look-alike of another address)"
            )
        seen = script


def _check_unmapped(domain: str) -> None:
    """Refuse a domain that IDNA processing would change beyond lower case: an invisible
    character it drops (U+200B, a soft hyphen), a full-width letter or ideographic full stop it
    maps to ASCII, a decomposed accent. The recipient must be the domain as written."""
    import idna

    if not unicodedata.is_normalized("NFC", domain):
        raise _Invalid("the domain is not in Unicode normal form NFC")
    for char in domain:
        try:
            mapped = idna.uts46_remap(char, std3_rules=True, transitional=False)
        except idna.IDNAError:
            continue  # a disallowed character: idna.encode says so below
        if mapped not in (char, char.lower()):
            shown = f"{mapped!r}" if mapped else "nothing"
            raise _Invalid(
                f"character {_describe(char)} in the domain would be read as {shown}; "
                "write the domain as it is meant"
            )
    for label in domain.split("."):
        _check_one_script(label, "domain")


def _check_literal(domain: str) -> tuple[str, str]:
    inner = domain[1:-1] if domain.endswith("]") else ""
    try:
        if inner[:5].lower() == "ipv6:":
            literal = f"[IPv6:{ipaddress.IPv6Address(inner[5:]).compressed}]"
        else:
            literal = f"[{ipaddress.IPv4Address(inner)}]"
    except ValueError:
        raise _Invalid(f"{domain!r} is not an IPv4 or [IPv6:...] address literal") from None
    return literal, literal


def _has_encoded_word(spec: str) -> bool:
    start = spec.find("=?")
    return start >= 0 and spec.find("?=", start + 2) >= 0


def _mailbox(local: str, domain: str, display_name: str) -> Address:
    """Validate ``local@domain`` and build the Address, or raise _Invalid."""
    if not local:
        raise _Invalid("nothing before the @")
    if _has_encoded_word(f"{local}@{domain}"):
        raise _Invalid(ENCODED_WORD_REASON)
    if not (local.isascii() and domain.isascii()) and _SPACE_RE.search(f"{local}@{domain}"):
        raise _Invalid(_SPACE)
    _check_local(local)
    unicode_domain, ascii_domain = _check_domain(domain)
    if len(local.encode("utf-8")) + 1 + len(ascii_domain) > MAX_ADDRESS_OCTETS:
        raise _Invalid(f"the address is longer than {MAX_ADDRESS_OCTETS} octets")
    return Address(local, unicode_domain, ascii_domain, " ".join(display_name.split()))


# --------------------------------------------------------------------------- the reader


_ATOM, _QUOTED, _COMMENT = "atom", "quoted-string", "comment"


@dataclass(slots=True)
class _Word:
    """One piece of a phrase as read: an atom, a quoted-string (its value) or a comment (its
    text without the parentheses), and where it was."""

    value: str
    kind: str
    start: int
    end: int


def _unescaped(text: str, start: int) -> Iterator[tuple[int, str]]:
    """Each character of ``text`` from ``start`` with its index, quoted-pairs (a backslash
    and the character it escapes) passed over whole: they never open or close anything."""
    index = start
    while index < len(text):
        char = text[index]
        if char == "\\":
            index += 2
            continue
        yield index, char
        index += 1


class _Reader:
    """A position in the text, and the lexical pieces of RFC 5322 3.2 read from there."""

    __slots__ = ("pos", "text")

    def __init__(self, text: str) -> None:
        self.text = text
        self.pos = 0

    def peek(self) -> str:
        return self.text[self.pos] if self.pos < len(self.text) else ""

    def skip_wsp(self) -> None:
        while self.peek() in _WSP:
            self.pos += 1

    def skip_cfws(self, comments: list[str]) -> None:
        """Skip white space and comments, collecting the comments' text."""
        while True:
            char = self.peek()
            if char in _WSP:
                self.pos += 1
            elif char == "(":
                comments.append(self.comment())
            else:
                return

    def comment(self) -> str:
        """A comment (nested comments and quoted-pairs allowed); its text, outer parentheses off."""
        text = self.text
        start = self.pos
        depth = 0
        for index, char in _unescaped(text, start):
            if char == "(":
                depth += 1
            elif char == ")":
                depth -= 1
                if depth == 0:
                    self.pos = index + 1
                    inner = text[start + 1 : index]
                    if "@" in inner:
                        raise _Invalid(
                            "a comment holding '@' (some programs would read it as the address)"
                        )
                    return _QUOTED_PAIR_RE.sub(r"\1", inner)
        raise _Invalid("unbalanced parenthesis: '(' without a closing ')'")

    def quoted(self) -> str:
        """A quoted-string; its value, quoted-pairs undone."""
        text = self.text
        index = self.pos + 1
        chars: list[str] = []
        while index < len(text):
            char = text[index]
            if char == "\\" and index + 1 < len(text):
                chars.append(text[index + 1])
                index += 2
            elif char == '"':
                self.pos = index + 1
                return "".join(chars)
            else:
                chars.append(char)
                index += 1
        raise _Invalid("unbalanced double quote")

    def atom(self) -> str:
        """A run of atom characters (atext, '.', any non-ASCII character)."""
        found = _ATOM_RE.match(self.text, self.pos)
        assert found is not None  # the pattern matches the empty string too
        self.pos = found.end()
        return found.group()

    def domain(self) -> str:
        """A dot-atom or ``[literal]`` after the @ (checked by the caller)."""
        if self.peek() != "[":
            return self.atom()
        end = self.text.find("]", self.pos)
        if end < 0:
            raise _Invalid("'[' without a closing ']'")
        literal = self.text[self.pos : end + 1]
        self.pos = end + 1
        return literal


#: Characters standing where they cannot, and the mistake each one shows.
_STRAY = {
    ")": "unbalanced parenthesis: ')' without an opening '('",
    ">": "'>' without an opening '<'",
    "@": "more than one @ in the address",
}
#: The same inside ``<...>``, where only ``>`` may follow the domain ("": the text ended).
_STRAY_IN_ANGLE = {
    "": "'<' without a closing '>'",
    "(": "a comment inside an address",
    "@": _STRAY["@"],
    "<": "'<' inside '<...>'",
}


def _unexpected(char: str, after: str) -> _Invalid:
    return _Invalid(_STRAY.get(char, f"unexpected text after {after}"))


def _end_of_entry(reader: _Reader, comments: list[str], after: str) -> None:
    """After a mailbox or group: only comments, white space, then a separator or the end."""
    reader.skip_cfws(comments)
    char = reader.peek()
    if char and char not in ",;":
        if char in ")>@" or after != "the address":
            raise _unexpected(char, after)
        raise _Invalid("unexpected text after the address (separate addresses with ',' or ';')")


def _local_before_at(words: list[_Word], at: int) -> str:
    """The local part of a bare addr-spec: the one atom that touches the @ (comments may
    come before it)."""
    atoms = [w for w in words if w.kind != _COMMENT]
    if not atoms:
        raise _Invalid("nothing before the @")
    if words[-1].kind == _COMMENT:
        raise _Invalid("a comment inside an address")
    last = atoms[-1]
    if last.end != at:
        raise _Invalid(_SPACE)
    if last.kind == _QUOTED or (len(atoms) > 1 and atoms[-2].end == last.start):
        raise _Invalid(_QUOTED_LOCAL)
    if len(atoms) > 1:
        raise _Invalid(_SPACE)
    return last.value


def _local_part(reader: _Reader, *, in_angle: bool) -> str:
    """The atom before the @ of an addr-spec (the reader is left after the @), or the
    reason the next character is not the @."""
    local = reader.atom()
    char = reader.peek()
    if char == "@":
        reader.pos += 1
        return local
    if not char:
        raise _Invalid("'<' without a closing '>'" if in_angle else "no @ in the address")
    if char == '"':
        raise _Invalid(_QUOTED_LOCAL)
    if char == "(":
        raise _Invalid("a comment inside an address")
    if char in _WSP or char == "<":
        if not in_angle:
            raise _Invalid("not a bare address (a display name is given apart)")
        reader.skip_wsp()
        raise _Invalid("'<' inside '<...>'" if reader.peek() == "<" else _SPACE)
    if char == ">" and in_angle:
        raise _Invalid("no @ in the address")
    raise _Invalid(f"character {char!r} is not allowed in the local part")


def _angle_addr(reader: _Reader) -> tuple[str, str]:
    """``<local@domain>`` (white space allowed next to the brackets, nothing else)."""
    reader.pos += 1
    reader.skip_wsp()
    char = reader.peek()
    if char == ">":
        raise _Invalid("empty address")
    if char == "@":
        raise _Invalid("a source route (<@relay:...>) is refused")
    local = _local_part(reader, in_angle=True)
    domain = reader.domain()
    char = reader.peek()
    if char in _WSP:
        reader.skip_wsp()
        char = reader.peek()
        if char not in (">", "", "<"):
            raise _Invalid(_SPACE)
    if char != ">":
        if char in _STRAY_IN_ANGLE:
            raise _Invalid(_STRAY_IN_ANGLE[char])
        if not domain:
            raise _Invalid(f"character {char!r} is not allowed in a domain")
        raise _Invalid(f"unexpected {char!r} inside '<...>'")
    reader.pos += 1
    return local, domain


def _phrase(words: list[_Word], text: str) -> str:
    """The display name: the phrase as written, quotes and comments included (``Acme (EU)``);
    when it starts and ends with a quoted-string, what is inside the outer quotes with the
    quoted-pairs undone (``"Smith, John"``, and ``"Priya "PJ" Patel"`` as a person means it)."""
    if not words:
        return ""
    raw = text[words[0].start : words[-1].end]
    if words[0].kind == _QUOTED and words[-1].kind == _QUOTED:
        raw = _QUOTED_PAIR_RE.sub(r"\1", raw[1:-1])
    return " ".join(raw.split())


def _entry(reader: _Reader, *, in_group: bool) -> list[Address]:
    """One mailbox (bare or ``name <addr>``) or, outside a group, one group."""
    words: list[_Word] = []
    while True:
        reader.skip_wsp()
        start = reader.pos
        char = reader.peek()
        if char == '"':
            words.append(_Word(reader.quoted(), _QUOTED, start, reader.pos))
        elif char == "(":
            words.append(_Word(reader.comment(), _COMMENT, start, reader.pos))
        elif char and (char in _ATOM_CHARS or not char.isascii()):
            words.append(_Word(reader.atom(), _ATOM, start, reader.pos))
        else:
            break
    comments = [w.value for w in words if w.kind == _COMMENT]
    char = reader.peek()
    if char == "@":
        local = _local_before_at(words, reader.pos)
        reader.pos += 1
        domain = reader.domain()
        if not domain and reader.peek() in _WSP:
            raise _Invalid(_SPACE)
        if not domain and reader.peek() == "(":
            raise _Invalid("a comment inside an address")
        mailbox = _mailbox(local, domain, "")
        _end_of_entry(reader, comments, "the address")
        name = " ".join(" ".join(comments).split())  # "a@example.com (Ann)" is Ann's
        return [Address(mailbox.local, mailbox.domain, mailbox.ascii_domain, name)]
    if char == "<":
        local, domain = _angle_addr(reader)
        mailbox = _mailbox(local, domain, _phrase(words, reader.text))
        _end_of_entry(reader, [], "'>'")
        return [mailbox]
    if char == ":":
        if in_group:
            raise _Invalid("a group inside a group")
        if not words:
            raise _Invalid("a group needs a name before ':'")
        reader.pos += 1
        return _group_members(reader)
    if not char or char in ",;":
        if comments and len(comments) == len(words):
            raise _Invalid("a comment without an address")
        raise _Invalid("no @ in the address")
    if char in ")>":
        raise _unexpected(char, "")
    raise _Invalid(f"unexpected {char!r}")


def _group_members(reader: _Reader) -> list[Address]:
    members: list[Address] = []
    comments: list[str] = []
    while True:
        reader.skip_cfws(comments)
        char = reader.peek()
        if char == ";":
            reader.pos += 1
            _end_of_entry(reader, comments, "the group's ';'")
            return members
        if char == ",":
            reader.pos += 1
        elif not char:
            raise _Invalid("a group without its closing ';'")
        else:
            members.extend(_entry(reader, in_group=True))


#: The brackets an entry nests, outermost rule first: inside a comment nothing else counts;
#: inside an angle address, comments still do.
_BRACKETS = (("(", ")"), ("<", ">"))


def _in_brackets(char: str, open_counts: dict[str, int]) -> bool:
    """Count ``char`` if it opens a bracket or closes an open one; True then, and for any
    character inside a bracket (such a character neither quotes nor ends anything)."""
    for opening, closing in _BRACKETS:
        if char == opening:
            open_counts[opening] += 1
            return True
        if char == closing and open_counts[opening]:
            open_counts[opening] -= 1
            return True
        if open_counts[opening]:
            return True
    return False


def _entry_end(text: str, start: int) -> int:
    """Where the entry starting at ``start`` ends, read leniently (only to quote it in errors)."""
    open_counts = {opening: 0 for opening, _ in _BRACKETS}
    in_quote = in_group = False
    for index, char in _unescaped(text, start):
        if in_quote:
            in_quote = char != '"'
        elif char == '"' and not open_counts["("]:
            in_quote = True
        elif _in_brackets(char, open_counts):
            pass
        elif char == ":":
            in_group = True
        elif char == ";" and in_group:
            in_group = False
        elif char in ",;" and not in_group:
            return index
    return len(text)


# --------------------------------------------------------------------------- public


def parse_list(text: str) -> tuple[Address, ...]:
    """Every address of an address list: entries parted by ``,`` or ``;`` (groups allowed).

    Empty entries are skipped. Raises :class:`AddressError` with the reason as ``message``
    and the offending entry, as written, as ``address``.
    """
    reader = _Reader(text)
    found: list[Address] = []
    try:
        _check_chars(text)
    except _Invalid as exc:
        raise AddressError(str(exc), text) from None
    while reader.pos < len(text):
        char = text[reader.pos]
        if char in _WSP or char in ",;":
            reader.pos += 1
            continue
        start = reader.pos
        try:
            found.extend(_entry(reader, in_group=False))
        except _Invalid as exc:
            raise AddressError(str(exc), text[start : _entry_end(text, start)].strip()) from None
    return tuple(found)


def parse_mailbox(addr_spec: str, display_name: str = "") -> Address:
    """One bare ``local@domain`` (nothing around it) with a display name given apart.

    The display name is free text (it is quoted or encoded on output); only the addr-spec is
    read by the grammar. Raises :class:`AddressError` as :func:`parse_list` does.
    """
    try:
        _check_chars(addr_spec)
        if not addr_spec:
            raise _Invalid("empty address")
        reader = _Reader(addr_spec)
        local = _local_part(reader, in_angle=False)
        domain = reader.domain()
        rest = addr_spec[reader.pos :]
        if rest:
            if rest[0] in _WSP or rest[0] == "(":
                raise _Invalid("not a bare address (a display name is given apart)")
            raise _unexpected(rest[0], "the address")
        return _mailbox(local, domain, display_name)
    except _Invalid as exc:
        raise AddressError(str(exc), addr_spec) from None


def check_display_name(name: str) -> None:
    """Refuse a display name given apart (a connection's from_name) that holds a control
    character; any other text is fine, since it is quoted or encoded on output."""
    found = _FORBIDDEN_RE.search(name.replace("\t", " "))
    if found is not None:
        raise AddressError(f"character {_describe(found.group())} is not allowed in a name", name)


def parse_simple(text: str) -> tuple[Address, ...] | None:
    """The addresses of the usual cells, checked directly: entries ``local@domain`` or
    ``Name <local@domain>`` (an ASCII dot-atom address) parted by ``,`` or ``;``. None when
    the text is anything else or is refused: :func:`parse_list` then reads it and says why.
    Property tests hold the two equal."""
    if "=?" in text:
        return None
    found = _simple_entry(text.strip(" \t"))
    if found is not None:
        return (found,)
    if '"' in text or "(" in text or ":" in text or not _SEPARATOR_RE.search(text):
        return None
    entries = []
    for piece in _SEPARATOR_RE.split(text):
        piece = piece.strip(" \t")
        if piece:
            entry = _simple_entry(piece)
            if entry is None:
                return None
            entries.append(entry)
    return tuple(entries)


def _simple_entry(text: str) -> Address | None:
    found = _SIMPLE_RE.fullmatch(text)
    if found is not None:
        display = ""
        local, domain = found.groups()
    else:
        found = _NAMED_RE.fullmatch(text)
        if found is None:
            return None
        quoted, words, local, domain = found.groups()
        display = " ".join((words if quoted is None else quoted).split())
    if len(local) > MAX_LOCAL_OCTETS:
        return None
    try:
        unicode_domain, ascii_domain = _check_domain(domain)
    except _Invalid:
        return None
    if len(local) + 1 + len(ascii_domain) > MAX_ADDRESS_OCTETS:
        return None
    return Address(local, unicode_domain, ascii_domain, display)
