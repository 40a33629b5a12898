"""Text files: choosing the encoding (BOMs, UTF-16/32 without one), telling text from binary
data, and saying exactly where decoding failed."""

from __future__ import annotations

import codecs
from pathlib import Path

from mailconduit.config.text import source_codec
from mailconduit.errors import ConfigError, FieldError, SourceError

__all__ = [
    "DEFAULT_ENCODING",
    "HEAD_BYTES",
    "decode_error",
    "read_head",
    "refuse_binary",
    "resolve_encoding",
]

#: UTF-8, with or without a byte-order mark.
DEFAULT_ENCODING = "utf-8-sig"
#: Bytes read from the start of a file to tell its encoding and whether it is text.
HEAD_BYTES = 64

_BOMS: tuple[tuple[bytes, str], ...] = (
    (codecs.BOM_UTF32_LE, "utf-32"),
    (codecs.BOM_UTF32_BE, "utf-32"),
    (codecs.BOM_UTF16_LE, "utf-16"),
    (codecs.BOM_UTF16_BE, "utf-16"),
)
#: How files that are not text begin: a file with one of these is refused as a whole.
_SIGNATURES: tuple[tuple[bytes, str], ...] = (
    (b"PK\x03\x04", "a ZIP archive (an .xlsx workbook is one: give it the .xlsx extension)"),
    (b"PK\x05\x06", "an empty ZIP archive"),
    (b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1", "an old Office document (.xls: save it as .xlsx)"),
    (b"PAR1", "a Parquet file (give it the .parquet extension)"),
    (b"SQLite format 3\x00", "a SQLite database (read it with --query and --database-url)"),
    (b"%PDF-", "a PDF document"),
    (b"\x89PNG\r\n\x1a\n", "a PNG image"),
    (b"GIF87a", "a GIF image"),
    (b"GIF89a", "a GIF image"),
    (b"\xff\xd8\xff", "a JPEG image"),
    (b"\x1f\x8b", "a gzip-compressed file (decompress it first)"),
    (b"\xfd7zXZ\x00", "an xz-compressed file (decompress it first)"),
    (b"\x28\xb5\x2f\xfd", "a zstd-compressed file (decompress it first)"),
    (b"7z\xbc\xaf\x27\x1c", "a 7-Zip archive"),
    (b"Rar!\x1a\x07", "a RAR archive"),
    (b"\x7fELF", "a program"),
)


def read_head(path: Path, size: int = HEAD_BYTES) -> bytes:
    """The first ``size`` bytes of the file (enough for a byte-order mark and a signature)."""
    with path.open("rb") as fh:
        return fh.read(size)


def refuse_binary(head: bytes, location: str) -> None:
    """SourceError when the file starts like a known binary format: it is not text at all."""
    for signature, what in _SIGNATURES:
        if head.startswith(signature):
            raise SourceError(f"this is not a text file: it is {what}", location)
    if head[:3] == b"BZh" and head[4:10] == b"1AY&SY":
        raise SourceError(
            "this is not a text file: it is a bzip2-compressed file (decompress it first)",
            location,
        )


def _wide_without_bom(head: bytes) -> str | None:
    """UTF-16/32 told by where its NUL bytes fall (text starts with ASCII characters), or None."""
    sample = head[: len(head) - len(head) % 4]
    if len(sample) < 4:
        return None
    units = [sample[i : i + 4] for i in range(0, len(sample), 4)]
    if all(u[1:] == b"\0\0\0" and u[0] for u in units):
        return "utf-32-le"
    if all(u[:3] == b"\0\0\0" and u[3] for u in units):
        return "utf-32-be"
    pairs = [sample[i : i + 2] for i in range(0, len(sample), 2)]
    if all(p[1] == 0 and p[0] for p in pairs):
        return "utf-16-le"
    if all(p[0] == 0 and p[1] for p in pairs):
        return "utf-16-be"
    return None


def resolve_encoding(encoding: str | None, head: bytes) -> str:
    """The codec to read with: the one asked for, else what the BOM says, else UTF-8.

    ``utf-8`` is read as ``utf-8-sig`` so that a BOM never ends up in a column name. UTF-16
    and UTF-32 without a byte-order mark are recognised by their NUL bytes (asked for by
    name, their byte order is found the same way; little-endian when it cannot be told).
    """
    if encoding is None:
        for bom, name in _BOMS:
            if head.startswith(bom):
                return name
        return _wide_without_bom(head) or DEFAULT_ENCODING
    try:
        name = source_codec(encoding)
    except ValueError as exc:
        raise ConfigError.for_fields("source options", [FieldError("encoding", str(exc))]) from None
    if name == "utf-8":
        return DEFAULT_ENCODING
    family = name[:6]
    if family in ("utf-16", "utf-32"):
        if any(head.startswith(bom) for bom, wide in _BOMS if wide == family):
            return family  # the generic codec reads the byte order from the BOM and drops it
        if name == family:  # no BOM: Python's generic codec would refuse to read the file
            found = _wide_without_bom(head)
            return found if found and found.startswith(family) else f"{family}-le"
    return name


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
