"""The output charset of a message: its MIME name, and encoding text into it with a clear error.

Only stateless, ASCII-compatible charsets are accepted (UTF-8, ISO-8859-x, windows-125x, ...):
headers are encoded character by character and MIME syntax must stay ASCII.
"""

from __future__ import annotations

import codecs
import functools
from dataclasses import dataclass

from mailconduit.errors import ConfigError, FieldError, RowError
from mailconduit.message.chars import char_name

__all__ = ["OutputCharset", "resolve_charset"]

#: Python codec names whose MIME name is spelled differently.
_MIME_NAMES = {"ascii": "us-ascii", "latin-1": "iso-8859-1", "shift_jis": "shift_jis"}
_PROBE = "\r\n\t !\"#$%&'()*+,-./09:;<=>?@AZ[\\]^_`az{|}~"


@dataclass(frozen=True, slots=True)
class OutputCharset:
    """A resolved output charset: ``name`` goes into MIME headers, ``codec`` encodes text."""

    name: str
    codec: str
    single_byte: bool = False

    @property
    def is_utf8(self) -> bool:
        return self.codec == "utf-8"

    def encode(self, text: str, *, field: str, row_key: str = "") -> bytes:
        """Encode ``text``; a character the charset lacks is a row error naming the field."""
        try:
            return text.encode(self.codec)
        except UnicodeEncodeError as exc:
            char = text[exc.start]
            raise RowError(
                f"{field}: character {char!r} ({char_name(char)}) cannot be encoded "
                f"in the output charset {self.name}",
                row_key,
            ) from None


@functools.lru_cache(maxsize=32)
def resolve_charset(name: str) -> OutputCharset:
    """Look up ``name`` (e.g. ``utf-8``, ``latin1``, ``windows-1252``); refuse unusable ones."""
    try:
        codec = codecs.lookup(name.strip()).name
    except LookupError:
        raise ConfigError.for_fields(
            "charset", [FieldError("charset", f"unknown charset {name!r}")]
        ) from None
    stateful = codec.startswith(("utf-16", "utf-32", "utf-7", "iso2022", "hz"))
    if stateful or _PROBE.encode(codec, "replace") != _PROBE.encode("ascii"):
        raise ConfigError.for_fields(
            "charset",
            [FieldError("charset", f"{name!r} is not an ASCII-compatible charset usable in mail")],
        )
    if codec in _MIME_NAMES:
        mime = _MIME_NAMES[codec]
    elif codec.startswith("iso8859-"):
        mime = "iso-8859-" + codec[len("iso8859-") :]
    elif codec.startswith("cp125"):
        mime = "windows-" + codec[2:]
    else:
        mime = codec.replace("_", "-")
    sample = [chr(c) for c in range(0x80, 0x3100)] + [chr(c) for c in range(0x4E00, 0x4E40)]
    single_byte = codec != "utf-8" and all(len(c.encode(codec, "ignore")) <= 1 for c in sample)
    return OutputCharset(mime, codec, single_byte)
