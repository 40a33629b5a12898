"""The output charset of a message: its MIME name, and encoding text into it with a clear error.

Only registered MIME charsets that are stateless and ASCII-compatible are accepted (UTF-8,
ISO-8859-x, windows-125x, ...; see :func:`mailconduit.config.mime_charset`): headers are
encoded character by character and MIME syntax must stay ASCII.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

from mailconduit.config import mime_charset
from mailconduit.errors import ConfigError, FieldError, RowError
from mailconduit.message.chars import char_name

__all__ = ["OutputCharset", "resolve_charset"]


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
                field=field,
            ) from None


@functools.lru_cache(maxsize=32)
def resolve_charset(name: str) -> OutputCharset:
    """Look up ``name`` (e.g. ``utf-8``, ``latin1``, ``windows-1252``); refuse unusable ones."""
    try:
        mime, codec = mime_charset(name)
    except ValueError as exc:
        raise ConfigError.for_fields("charset", [FieldError("charset", str(exc))]) from None
    sample = [chr(c) for c in range(0x80, 0x3100)] + [chr(c) for c in range(0x4E00, 0x4E40)]
    single_byte = codec != "utf-8" and all(len(c.encode(codec, "ignore")) <= 1 for c in sample)
    return OutputCharset(mime, codec, single_byte)
