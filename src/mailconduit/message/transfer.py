"""Content-Transfer-Encoding of text and binary parts, chosen so decoding gives back the text.

What a reader gets back after decoding a text part (the "byte-for-byte" contract):

* A text without NUL and without a lone CR (a "\\r" not followed by "\\n") is split into
  lines at "\\r\\n" or "\\n"; every line ends with CRLF, including the last one (a missing
  final line break is added, as the email package does; an empty text stays empty).
  Nothing else changes: lone "." lines, trailing spaces, "From " lines come back intact.
* A text holding NUL or a lone CR is sent base64, so it decodes to exactly
  ``text.encode(charset)``: no line ending is touched and none is added.

7bit is used for ASCII whose lines fit in 998 octets, quoted-printable for other mostly
ASCII text, base64 otherwise. Encoded lines never exceed 76 characters.
"""

from __future__ import annotations

import binascii
import struct
from dataclasses import dataclass

from mailconduit.message.charset import OutputCharset

__all__ = ["EncodedBody", "encode_binary", "encode_text", "normalise_text"]

_ASCII_BYTES = bytes(range(128))
_MAX_7BIT_LINE = 998
_BASE64_LINE = 76
#: Cutters of 2**k lines of base64 at once (k = 0..8): a count of lines is a sum of them,
#: and one ``unpack_from`` in C costs much less than a Python slice per line.
#: Receipt (bench/RESULTS.md, invoice scenario): base64 lines of a 100 KB PDF 250 → 151 µs.
_LINE_CUTTERS = tuple(struct.Struct(f"{_BASE64_LINE}s" * (1 << k)) for k in range(9))


@dataclass(frozen=True, slots=True)
class EncodedBody:
    """A part body ready for the wire: its transfer encoding and CRLF-terminated bytes."""

    transfer_encoding: str
    data: bytes


def _has_lone_cr(text: str) -> bool:
    count = text.count("\r")
    return count != 0 and count != text.count("\r\n")


def normalise_text(text: str) -> str | None:
    """The text as lines ending in "\\n" (final one added), or None if it must go base64."""
    if "\x00" in text or _has_lone_cr(text):
        return None
    if "\r" in text:
        text = text.replace("\r\n", "\n")
    if text and text[-1] != "\n":
        text += "\n"
    return text


def _lines_fit(text: str) -> bool:
    if len(text) <= _MAX_7BIT_LINE:
        return True
    return max(map(len, text.split("\n"))) <= _MAX_7BIT_LINE


def encode_text(text: str, charset: OutputCharset, *, field: str, row_key: str = "") -> EncodedBody:
    """Encode a text part (see the module docstring for exactly what comes back)."""
    lines = normalise_text(text)
    if lines is None:
        return encode_binary(charset.encode(text, field=field, row_key=row_key))
    if lines.isascii() and _lines_fit(lines):
        return EncodedBody("7bit", lines.replace("\n", "\r\n").encode("ascii"))
    data = charset.encode(lines, field=field, row_key=row_key)
    high = len(data.translate(None, _ASCII_BYTES))
    if high * 6 <= len(data):
        encoded = binascii.b2a_qp(data, istext=True)
        return EncodedBody("quoted-printable", encoded.replace(b"\n", b"\r\n"))
    # base64 carries the canonical form: CRLF line ends (no charset we accept has 0x0A
    # inside a multi-byte character, so replacing bytes is safe)
    return encode_binary(data.replace(b"\n", b"\r\n"))


def encode_binary(data: bytes) -> EncodedBody:
    """Base64 at 76 characters per line, CRLF line ends."""
    encoded = binascii.b2a_base64(data, newline=False)
    count, rest = divmod(len(encoded), _BASE64_LINE)
    lines: list[bytes] = []
    offset = 0
    largest = len(_LINE_CUTTERS) - 1
    while count:
        k = min(count.bit_length() - 1, largest)
        cutter = _LINE_CUTTERS[k]
        lines += cutter.unpack_from(encoded, offset)
        offset += cutter.size
        count -= 1 << k
    if rest:
        lines.append(encoded[offset:])
    if not lines:
        return EncodedBody("base64", b"")
    lines.append(b"")  # the final CRLF, without copying the result once more
    return EncodedBody("base64", b"\r\n".join(lines))
