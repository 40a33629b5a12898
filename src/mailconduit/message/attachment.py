"""Attachments: content with a file name, files loaded only from inside a base directory.

Path traversal is refused three ways: absolute paths, ``..`` components, and any path that
resolves (through symlinks) outside the base directory. Non-ASCII file names are written
with RFC 2231 ``filename*`` plus a safe ASCII ``filename`` fallback.
"""

from __future__ import annotations

import mimetypes
import os
import re
import stat
import unicodedata
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import BinaryIO
from urllib.parse import quote

from mailconduit.errors import ConfigError, FieldError, RowError
from mailconduit.message.header import check_header_value

__all__ = ["Attachment", "disposition_params", "load_attachment", "validate_attachment"]

MAX_FILENAME_CHARS = 255
_CONTENT_TYPE_RE = re.compile(
    r"[A-Za-z0-9][A-Za-z0-9!#$&^_.+-]{0,126}/[A-Za-z0-9][A-Za-z0-9!#$&^_.+-]{0,126}"
)
_PLAIN_FILENAME_RE = re.compile(r"[A-Za-z0-9 !#$%&'()*+,\-.=@\[\]^_`{}~]{1,70}")
_FALLBACK_UNSAFE_RE = re.compile(r"[^A-Za-z0-9._()+,=@ -]+")
_ATTR_CHARS = "!#$&+-.^_`|~"
#: Unicode's control characters (category Cc), in one scan.
_CONTROL_RE = re.compile("[\x00-\x1f\x7f-\x9f]")
_CONTINUATION_CHUNK = 60
#: Opening a file that sits right in the folder: never through a symlink, and never
#: waiting on a FIFO (one swapped in after the check is refused as not regular).
_DIRECT_OPEN = os.O_RDONLY | os.O_NONBLOCK | os.O_NOFOLLOW


@dataclass(frozen=True, slots=True)
class Attachment:
    """A file to attach: the name the recipient sees, its bytes and its MIME type."""

    filename: str
    content: bytes
    content_type: str = "application/octet-stream"


def validate_attachment(attachment: Attachment, *, row_key: str = "") -> None:
    """Raise RowError for a file name or content type that cannot go into a header safely."""
    name = attachment.filename
    check_header_value(name, field="attachment filename", row_key=row_key)
    if not name.strip():
        raise RowError("attachment filename is empty", row_key)
    if "/" in name or "\\" in name:
        raise RowError(f"attachment filename {name!r} contains a path separator", row_key)
    if len(name) > MAX_FILENAME_CHARS:
        raise RowError(
            f"attachment filename is longer than {MAX_FILENAME_CHARS} characters", row_key
        )
    if _CONTROL_RE.search(name):
        raise RowError(f"attachment filename {name!r} contains a control character", row_key)
    ctype = attachment.content_type
    if not _CONTENT_TYPE_RE.fullmatch(ctype):
        raise RowError(
            f"attachment content type {ctype!r} is not of the form type/subtype", row_key
        )
    if ctype.lower().startswith(("multipart/", "message/")):
        raise RowError(
            f"attachment content type {ctype!r} cannot be sent base64; "
            "use application/octet-stream",
            row_key,
        )


def _ascii_fallback(name: str) -> str:
    """A plain ASCII file name for readers that ignore ``filename*``; keeps the extension."""
    stem, dot, ext = name.rpartition(".")
    if not dot or not stem or not (ext.isascii() and ext.isalnum() and len(ext) <= 10):
        stem, ext = name, ""
    ascii_stem = "".join(
        char
        if char.isascii()
        else unicodedata.normalize("NFKD", char).encode("ascii", "ignore").decode() or "_"
        for char in stem
    )
    cleaned = re.sub("_+", "_", _FALLBACK_UNSAFE_RE.sub("_", ascii_stem)).strip(" ._")
    if not cleaned.strip("_"):
        cleaned = "attachment"
    return cleaned[:50].rstrip(" ") + (f".{ext}" if ext else "")


def disposition_params(filename: str) -> list[str]:
    """The ``filename`` parameters as header tokens (continuations for long names)."""
    if (
        _PLAIN_FILENAME_RE.fullmatch(filename)
        and filename == filename.strip()
        and "=?" not in filename
    ):
        return [f'filename="{filename}"']
    encoded = "utf-8''" + quote(filename.encode("utf-8"), safe=_ATTR_CHARS)
    fallback = f'filename="{_ascii_fallback(filename)}"'
    if len(encoded) <= _CONTINUATION_CHUNK + 10:
        return [f"filename*={encoded};", fallback]
    tokens: list[str] = []
    start = 0
    while start < len(encoded):
        end = min(start + _CONTINUATION_CHUNK, len(encoded))
        percent = encoded.rfind("%", max(end - 2, start), end)
        if percent != -1 and end < len(encoded):
            end = percent
        tokens.append(f"filename*{len(tokens)}*={encoded[start:end]};")
        start = end
    tokens.append(fallback)
    return tokens


def load_attachment(
    path_text: str,
    *,
    base_dir: Path,
    row_key: str = "",
    max_bytes: int | None = None,
    label: str = "attachment",
) -> Attachment:
    """Read ``path_text`` (relative, rendered per row) from inside ``base_dir``.

    Absolute paths, ``..``, symlinks leading outside, missing files and non-files are
    row errors naming the file as given (never the folder's path on the server, which a
    web user must not learn); a missing base directory is a configuration error.
    ``label`` names the file's role in those errors ("attachment", "inline image 'logo'").
    """
    shown = path_text if len(path_text) <= 200 else path_text[:200] + "..."
    check_header_value(path_text, field=f"{label} path", row_key=row_key)
    if not path_text.strip():
        raise RowError(f"{label} path is empty", row_key)
    parts = PurePosixPath(path_text.replace("\\", "/"))
    if parts.is_absolute() or re.match(r"[A-Za-z]:", path_text):
        raise RowError(
            f"{label} path {shown!r} is absolute; only relative paths are allowed", row_key
        )
    if ".." in parts.parts:
        raise RowError(
            f"{label} path {shown!r} contains '..'; it must stay inside the base directory",
            row_key,
        )
    handle = _open_direct(os.path.join(base_dir, parts.name)) if len(parts.parts) == 1 else None
    if handle is None:
        handle = _open_checked(base_dir, parts, shown, row_key, label)
    try:
        with handle:
            content = handle.read() if max_bytes is None else handle.read(max_bytes + 1)
    except OSError as exc:
        raise RowError(f"{label} {shown!r} cannot be read: {exc.strerror}", row_key) from None
    if max_bytes is not None and len(content) > max_bytes:
        raise RowError(f"{label} {shown!r} is larger than {max_bytes} bytes", row_key)
    guessed = mimetypes.guess_type(parts.name, strict=False)[0] or "application/octet-stream"
    if guessed.startswith(("message/", "multipart/")):
        guessed = "application/octet-stream"
    return Attachment(parts.name, content, guessed)


def _open_direct(path: str) -> BinaryIO | None:
    """A regular file right in the folder (the common case: one name, no symlink), opened
    with one lstat; None leaves the decision to the full checks of :func:`_open_checked`."""
    try:
        if not stat.S_ISREG(os.lstat(path).st_mode):
            return None
        fd = os.open(path, _DIRECT_OPEN)
    except OSError:
        return None
    try:
        regular = stat.S_ISREG(os.fstat(fd).st_mode)
    except OSError:
        regular = False
    if not regular:
        os.close(fd)
        return None
    return open(fd, "rb")


def _open_checked(
    base_dir: Path, parts: PurePosixPath, shown: str, row_key: str, label: str
) -> BinaryIO:
    """Open ``parts`` under ``base_dir`` after resolving both: symlinks may lead only to
    files inside the folder."""
    try:
        base = base_dir.resolve(strict=True)
    except OSError:
        raise ConfigError.for_fields(
            "attachments", [FieldError("attach_dir", f"directory {str(base_dir)!r} does not exist")]
        ) from None
    try:
        target = (base / Path(*parts.parts)).resolve(strict=True)
    except FileNotFoundError:
        raise RowError(f"{label} {shown!r} not found in the attachment folder", row_key) from None
    except (OSError, RuntimeError) as exc:
        raise RowError(
            f"{label} {shown!r} cannot be opened: {exc.__class__.__name__}", row_key
        ) from None
    if not target.is_relative_to(base):
        raise RowError(f"{label} {shown!r} resolves outside the attachment directory", row_key)
    if not target.is_file():
        raise RowError(f"{label} {shown!r} is not a regular file", row_key)
    try:
        return target.open("rb")
    except OSError as exc:
        raise RowError(f"{label} {shown!r} cannot be read: {exc.strerror}", row_key) from None
