"""Standard input as a data container: spooled to a private temporary file first.

A source is read more than once (columns, validation, rows), and stdin only once, so
its bytes go to disk (memory stays constant) and are read from there.
"""

from __future__ import annotations

import codecs
import shutil
import sys
import tempfile
from pathlib import Path

from mailconduit.errors import SourceError
from mailconduit.sources.base import SourceKind
from mailconduit.sources.text import read_head, resolve_encoding

__all__ = ["STDIN_LOCATION", "detect_kind", "spool_stdin"]

STDIN_LOCATION = "<stdin>"
_CHUNK = 1 << 20


def spool_stdin() -> Path:
    """Copy standard input into a new temporary directory; returns the file's path."""
    stream = sys.stdin
    if stream is None:
        raise SourceError("there is no standard input to read", STDIN_LOCATION)
    if stream.isatty():
        raise SourceError(
            "standard input is a terminal; pipe the data in (… | mailconduit export -)",
            STDIN_LOCATION,
        )
    directory = Path(tempfile.mkdtemp(prefix="mailconduit-stdin-"))
    path = directory / "stdin"
    with path.open("wb") as out:
        binary = getattr(stream, "buffer", None)
        if binary is not None:
            shutil.copyfileobj(binary, out, _CHUNK)
        else:  # a text stream standing in for stdin (tests, embedding applications)
            while text := stream.read(_CHUNK):
                out.write(text.encode("utf-8"))
    return path


def detect_kind(path: Path, encoding: str | None = None) -> SourceKind:
    """JSON Lines when the first non-blank character is ``{``, a JSON array for ``[``, else
    CSV; read in the data's encoding (UTF-16 data starts with ``{`` too)."""
    codec = resolve_encoding(encoding, read_head(path))
    with path.open("rb") as fh:
        head = fh.read(4096)
    text = codecs.getincrementaldecoder(codec)("replace").decode(head)
    stripped = text.lstrip("\ufeff \t\r\n")
    if stripped.startswith("{"):
        return SourceKind.JSONL
    if stripped.startswith("["):
        return SourceKind.JSON
    return SourceKind.CSV
