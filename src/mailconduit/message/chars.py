"""Characters that matter for mail safety, and how an error message names a character."""

from __future__ import annotations

import re
import string
import unicodedata

__all__ = ["ATEXT", "HEADER_BREAKERS", "HEADER_BREAKERS_RE", "char_name"]

#: RFC 5322 atext: what an atom (a bare word of a display name or local part) may hold.
ATEXT = frozenset(string.ascii_letters + string.digits + "!#$%&'*+-/=?^_`{|}~")

#: Characters that end or split a header line for some reader: CR, LF, NUL, VT, FF, the
#: file/group/record separators (``str.splitlines`` splits on them), NEL, U+2028, U+2029.
HEADER_BREAKERS = "\r\n\x00\x0b\x0c\x1c\x1d\x1e\x85\u2028\u2029"
HEADER_BREAKERS_RE = re.compile("[" + re.escape(HEADER_BREAKERS) + "]")
_CONTROL_NAMES = {
    "\x00": "NUL",
    "\t": "TAB",
    "\n": "LINE FEED",
    "\x0b": "VERTICAL TAB",
    "\x0c": "FORM FEED",
    "\r": "CARRIAGE RETURN",
    "\x1c": "FILE SEPARATOR",
    "\x1d": "GROUP SEPARATOR",
    "\x1e": "RECORD SEPARATOR",
    "\x85": "NEXT LINE",
}


def char_name(char: str) -> str:
    """``U+000A LINE FEED``: a character as a person can read it in an error message."""
    name = _CONTROL_NAMES.get(char) or unicodedata.name(char, "control character")
    return f"U+{ord(char):04X} {name}"
