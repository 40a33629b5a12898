"""Characters that matter for mail safety, and how an error message names a character."""

from __future__ import annotations

import re
import string

from mailconduit.config import char_name

__all__ = ["ATEXT", "HEADER_BREAKERS", "HEADER_BREAKERS_RE", "char_name"]

#: RFC 5322 atext: what an atom (a bare word of a display name or local part) may hold.
ATEXT = frozenset(string.ascii_letters + string.digits + "!#$%&'*+-/=?^_`{|}~")

#: Characters that end or split a header line for some reader: CR, LF, NUL, VT, FF, the
#: file/group/record separators (``str.splitlines`` splits on them), NEL, U+2028, U+2029.
HEADER_BREAKERS = "\r\n\x00\x0b\x0c\x1c\x1d\x1e\x85\u2028\u2029"
HEADER_BREAKERS_RE = re.compile("[" + re.escape(HEADER_BREAKERS) + "]")
