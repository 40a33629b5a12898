"""E-mail addresses: strict parsing and validation, IDNA, and the SMTPUTF8 flag.

Stricter than RFC 5322 on purpose: quoted local parts, comments and dotless domains are
refused, because in a data export they are mistakes or smuggling attempts, not addresses.
Parsing is cached: the same value (a fixed From, a repeated recipient) is parsed once.
"""

from __future__ import annotations

import functools
import ipaddress
import re
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass

from mailconduit.errors import AddressError
from mailconduit.message.chars import ATEXT, HEADER_BREAKERS_RE, char_name

__all__ = [
    "Address",
    "make_address",
    "parse_address",
    "parse_address_list",
    "require_recipients",
]

MAX_LOCAL_OCTETS = 64
MAX_DOMAIN_OCTETS = 255
MAX_ADDRESS_OCTETS = 254
_CACHED_TEXT_MAX = 512
_LOCAL_ASCII_RE = re.compile(r"[A-Za-z0-9!#$%&'*+\-/=?^_`{|}~.]+")
_LABEL_RE = re.compile(r"[a-z0-9](?:[a-z0-9-]*[a-z0-9])?")
_SPACE_RE = re.compile(r"\s")
#: A separator outside ``<...>`` (used when the text has no quotes).
_UNQUOTED_SPLIT_RE = re.compile(r"[,;](?![^<]*>)")
#: A bare ASCII ``local@domain`` whose local part is a dot-atom (RFC 5322 3.2.3).
_SIMPLE_ADDRESS_RE = re.compile(
    r"([A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+(?:\.[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+)*)"
    r"@([A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)+)"
)


@dataclass(frozen=True, slots=True)
class Address:
    """One validated mailbox: ``local@domain`` with an optional display name.

    ``domain`` is the Unicode form, ``ascii_domain`` the IDNA (punycode) form used on the
    wire; ``local`` is kept as given (NFC-normalised when it is not ASCII).
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
        if not all(c in ATEXT or c == " " or not c.isascii() for c in name):
            name = '"' + name.replace("\\", "\\\\").replace('"', '\\"') + '"'
        return f"{name} <{self.envelope}>"

    def __str__(self) -> str:
        return self.formatted


class _Invalid(ValueError):
    """Internal: why an address is invalid, before the caller adds the field and value."""


def _check_local(local: str) -> str:
    if not local:
        raise _Invalid("nothing before the @")
    if local.startswith('"'):
        raise _Invalid("quoted local parts are refused (they are used to smuggle addresses)")
    if local[0] == "." or local[-1] == ".":
        raise _Invalid("the local part starts or ends with a dot")
    if ".." in local:
        raise _Invalid("two dots in a row in the local part")
    if local.isascii():
        if not _LOCAL_ASCII_RE.fullmatch(local):
            bad = next(c for c in local if c not in ATEXT and c != ".")
            raise _Invalid(f"character {bad!r} is not allowed in the local part")
    else:
        local = unicodedata.normalize("NFC", local)
        for char in local:
            if char.isascii():
                if char not in ATEXT and char != ".":
                    raise _Invalid(f"character {char!r} is not allowed in the local part")
            elif unicodedata.category(char)[0] in "CZ":
                raise _Invalid(f"character {char_name(char)} is not allowed in the local part")
    if len(local.encode("utf-8")) > MAX_LOCAL_OCTETS:
        raise _Invalid(f"the local part is longer than {MAX_LOCAL_OCTETS} octets")
    return local


@functools.lru_cache(maxsize=4096)
def _check_domain(domain: str) -> tuple[str, str]:
    """Validate ``domain``; return its (Unicode, ASCII) forms or raise _Invalid."""
    if not domain:
        raise _Invalid("no domain after the @")
    if domain.startswith("[") and domain.endswith("]"):
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
    else:
        import idna

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


def _check_literal(domain: str) -> tuple[str, str]:
    inner = domain[1:-1]
    try:
        if inner[:5].lower() == "ipv6:":
            literal = f"[IPv6:{ipaddress.IPv6Address(inner[5:]).compressed}]"
        else:
            literal = f"[{ipaddress.IPv4Address(inner)}]"
    except ValueError:
        raise _Invalid(f"{domain!r} is not an IPv4 or [IPv6:...] address literal") from None
    return literal, literal


def _address(spec: str, display_name: str) -> Address:
    """Validate an addr-spec (``local@domain``) and build the Address, or raise _Invalid."""
    if not spec:
        raise _Invalid("empty address")
    if spec.startswith('"'):
        raise _Invalid("quoted local parts are refused (they are used to smuggle addresses)")
    if _SPACE_RE.search(spec):
        raise _Invalid("the address contains a space (a display name goes before <address>)")
    local, at, domain = spec.rpartition("@")
    if not at:
        raise _Invalid("no @ in the address")
    if not domain:
        raise _Invalid("no domain after the @")
    local = _check_local(local)
    unicode_domain, ascii_domain = _check_domain(domain)
    if len(local.encode("utf-8")) + 1 + len(ascii_domain) > MAX_ADDRESS_OCTETS:
        raise _Invalid(f"the address is longer than {MAX_ADDRESS_OCTETS} octets")
    return Address(local, unicode_domain, ascii_domain, " ".join(display_name.split()))


def _split_items(text: str) -> list[str]:
    """Split on top-level ``,`` and ``;``: not inside quotes or ``<...>``."""
    if '"' not in text:
        return [item.strip() for item in _UNQUOTED_SPLIT_RE.split(text) if item.strip()]
    items: list[str] = []
    start = 0
    in_quote = escaped = False
    depth = 0
    for index, char in enumerate(text):
        if escaped:
            escaped = False
        elif in_quote:
            if char == "\\":
                escaped = True
            elif char == '"':
                in_quote = False
        elif char == '"':
            in_quote = True
        elif char == "<":
            depth += 1
        elif char == ">":
            depth = max(depth - 1, 0)
        elif char in ",;" and depth == 0:
            items.append(text[start:index])
            start = index + 1
    if in_quote:
        raise _Invalid("unbalanced double quote")
    items.append(text[start:])
    return [item.strip() for item in items if item.strip()]


def _unquote(display: str) -> str:
    if len(display) >= 2 and display[0] == '"' and display[-1] == '"':
        return re.sub(r"\\(.)", r"\1", display[1:-1]).strip()
    return display


def _find_angle(item: str) -> int:
    if '"' not in item:
        return item.find("<")
    in_quote = escaped = False
    for index, char in enumerate(item):
        if escaped:
            escaped = False
        elif char == "\\" and in_quote:
            escaped = True
        elif char == '"':
            in_quote = not in_quote
        elif char == "<" and not in_quote:
            return index
    return -1


def _parse_item(item: str) -> Address:
    angle = _find_angle(item)
    if angle < 0:
        return _address(item, "")
    close = item.find(">", angle)
    if close < 0:
        raise _Invalid("'<' without a closing '>'")
    if item[close + 1 :].strip():
        raise _Invalid("unexpected text after '>'")
    display = _unquote(item[:angle].strip())
    return _address(item[angle + 1 : close].strip(), display)


def _simple_address(local: str, domain: str) -> Address | None:
    """The Address of a dot-atom ``local@domain``; None when a limit is crossed or the
    domain is refused (the full parser then says why)."""
    if len(local) > MAX_LOCAL_OCTETS:
        return None
    try:
        unicode_domain, ascii_domain = _check_domain(domain)
    except _Invalid:
        return None
    if len(local) + 1 + len(ascii_domain) > MAX_ADDRESS_OCTETS:
        return None
    return Address(local, unicode_domain, ascii_domain, "")


def _fail(field: str, value: str, reason: str, row_key: str = "") -> AddressError:
    shown = value if len(value) <= 100 else value[:100] + "..."
    return AddressError(f"invalid {field} address {shown!r}: {reason}", value, row_key)


@functools.lru_cache(maxsize=8192)
def _parse_list_cached(text: str, field: str) -> tuple[Address, ...]:
    found = HEADER_BREAKERS_RE.search(text)
    if found is not None:
        raise _fail(
            field,
            text,
            f"a value that would break a header (it contains {char_name(found.group())})",
        )
    try:
        items = _split_items(text)
    except _Invalid as exc:
        raise _fail(field, text, str(exc)) from None
    result = []
    for item in items:
        try:
            result.append(_parse_item(item))
        except _Invalid as exc:
            raise _fail(field, item, str(exc)) from None
    return tuple(result)


def parse_address_list(text: str, *, field: str = "to") -> list[Address]:
    """Parse addresses separated by ``,`` or ``;`` (display names and ``<...>`` allowed).

    An empty text gives an empty list (see :func:`require_recipients`). Any invalid entry
    raises :class:`AddressError` naming ``field``, the entry and the reason.
    """
    if not text or text.isspace():
        return []
    simple = _SIMPLE_ADDRESS_RE.fullmatch(text)
    if simple is not None:  # one bare ASCII address: the usual cell, checked directly
        found = _simple_address(*simple.groups())
        if found is not None:
            return [found]
    if len(text) > _CACHED_TEXT_MAX:  # keep the cache small whatever the data holds
        return list(_parse_list_cached.__wrapped__(text, field))
    return list(_parse_list_cached(text, field))


def parse_address(text: str, *, field: str = "from") -> Address:
    """Parse exactly one address (e.g. From); none or several is an AddressError."""
    found = parse_address_list(text, field=field)
    if len(found) != 1:
        reason = "no address given" if not found else f"expected one address, found {len(found)}"
        raise _fail(field, text, reason)
    return found[0]


@functools.lru_cache(maxsize=4096)
def make_address(addr_spec: str, *, display_name: str = "") -> Address:
    """Build an Address from a bare ``local@domain`` and a display name, validating both."""
    found = HEADER_BREAKERS_RE.search(addr_spec + display_name)
    if found is not None:
        raise _fail(
            "address",
            addr_spec,
            f"a value that would break a header (it contains {char_name(found.group())})",
        )
    try:
        return _address(addr_spec.strip(), display_name.strip())
    except _Invalid as exc:
        raise _fail("address", addr_spec, str(exc)) from None


def require_recipients(
    to: Sequence[Address], cc: Sequence[Address], bcc: Sequence[Address], *, row_key: str = ""
) -> None:
    """Raise AddressError when to, cc and bcc are all empty: such a row cannot be sent."""
    if not (to or cc or bcc):
        raise AddressError("no recipient: to, cc and bcc are all empty", "", row_key)
