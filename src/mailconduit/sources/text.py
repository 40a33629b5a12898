"""Text files: choosing the encoding (BOMs), and saying exactly where decoding failed."""

from __future__ import annotations

import codecs
from pathlib import Path

from mailconduit.errors import ConfigError, FieldError, SourceError

__all__ = ["DEFAULT_ENCODING", "decode_error", "read_head", "resolve_encoding"]

#: UTF-8, with or without a byte-order mark.
DEFAULT_ENCODING = "utf-8-sig"

_BOMS: tuple[tuple[bytes, str], ...] = (
    (codecs.BOM_UTF32_LE, "utf-32"),
    (codecs.BOM_UTF32_BE, "utf-32"),
    (codecs.BOM_UTF16_LE, "utf-16"),
    (codecs.BOM_UTF16_BE, "utf-16"),
)


def read_head(path: Path, size: int = 4) -> bytes:
    """The first ``size`` bytes of the file (enough to see a byte-order mark)."""
    with path.open("rb") as fh:
        return fh.read(size)


def resolve_encoding(encoding: str | None, head: bytes) -> str:
    """The codec to read with: the one asked for, else what the BOM says, else UTF-8.

    ``utf-8`` is read as ``utf-8-sig`` so that a BOM never ends up in a column name.
    """
    if encoding is None:
        for bom, name in _BOMS:
            if head.startswith(bom):
                return name
        return DEFAULT_ENCODING
    try:
        name = codecs.lookup(encoding).name
    except LookupError:
        raise ConfigError.for_fields(
            "source options", [FieldError("encoding", f"unknown encoding {encoding!r}")]
        ) from None
    return DEFAULT_ENCODING if name == "utf-8" else encoding


def decode_error(path: Path, encoding: str, location: str) -> SourceError:
    """A SourceError naming the line and byte offset of the first undecodable bytes.

    Called only after decoding failed: it re-reads the file in binary to find the spot.
    """
    decoder = codecs.getincrementaldecoder(encoding)("strict")
    line = 1
    offset = 0
    with path.open("rb") as fh:
        while chunk := fh.read(1 << 16):
            state = decoder.getstate()
            try:
                line += decoder.decode(chunk).count("\n")
            except UnicodeDecodeError as exc:
                pending = len(state[0])
                decoder.setstate(state)
                good = max(exc.start - pending, 0)
                line += decoder.decode(chunk[:good]).count("\n")
                position = offset - pending + exc.start
                bad = exc.object[exc.start : exc.end]
                return _decode_error(encoding, bad, line, position, location)
            offset += len(chunk)
        try:
            decoder.decode(b"", final=True)
        except UnicodeDecodeError as exc:
            bad = exc.object[exc.start : exc.end]
            return _decode_error(
                encoding, bad, line, offset - len(exc.object) + exc.start, location
            )
    return SourceError(f"the file cannot be decoded as {encoding}", location)


def _decode_error(
    encoding: str, bad: bytes, line: int, position: int, location: str
) -> SourceError:
    shown = " ".join(f"0x{b:02x}" for b in bad[:4])
    name = "UTF-8" if codecs.lookup(encoding).name in ("utf-8", "utf-8-sig") else encoding
    hint = (
        "if the file is in another encoding, name it with --encoding "
        "(for example cp1252, latin-1 or utf-16)"
        if name == "UTF-8"
        else "check the --encoding given for this file"
    )
    return SourceError(
        f"byte {shown} at byte offset {position} is not valid {name}; {hint}",
        f"{location}:{line}",
    )
