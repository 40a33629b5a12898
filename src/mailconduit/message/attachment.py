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
import threading
import time
import unicodedata
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import BinaryIO
from urllib.parse import quote

from mailconduit.errors import ConfigError, FieldError, RowError
from mailconduit.message.header import check_header_value
from mailconduit.message.transfer import encode_binary

__all__ = [
    "Attachment",
    "attachment_base64",
    "disposition_params",
    "load_attachment",
    "validate_attachment",
]

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
#: Receipt (bench/RESULTS.md, invoice scenario): reading a PDF with the checks 100 → 37 µs.
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
    direct = _open_direct(os.path.join(base_dir, parts.name)) if len(parts.parts) == 1 else None
    handle = _open_checked(base_dir, parts, shown, row_key, label) if direct is None else direct[0]
    content = None if direct is None else _KEPT.content(direct[1])
    try:
        with handle:
            if content is None:
                content = handle.read() if max_bytes is None else handle.read(max_bytes + 1)
                if direct is not None and (max_bytes is None or len(content) <= max_bytes):
                    content = _KEPT.read(direct[1], content)
    except OSError as exc:
        raise RowError(f"{label} {shown!r} cannot be read: {exc.strerror}", row_key) from None
    if max_bytes is not None and len(content) > max_bytes:
        raise RowError(f"{label} {shown!r} is larger than {max_bytes} bytes", row_key)
    guessed = mimetypes.guess_type(parts.name, strict=False)[0] or "application/octet-stream"
    if guessed.startswith(("message/", "multipart/")):
        guessed = "application/octet-stream"
    return Attachment(parts.name, content, guessed)


#: What tells one version of a file from another: device, inode, size, modification and
#: change times (ns); any write, truncation, rename or chmod changes one of them.
_FileKey = tuple[int, int, int, int, int]
_SETTLED_NS = 1_000_000_000


@dataclass(slots=True)
class _KeptFile:
    content: bytes
    base64: bytes | None = None

    @property
    def size(self) -> int:
        return len(self.content) + len(self.base64 or b"")


class _FileCache:
    """Files attached to many messages (one brochure for every row) are read and encoded
    once: a file is kept from its second read on, while unchanged, within bounds of files
    and bytes. A file per row (an invoice each) is never kept, so costs nothing more.

    A file modified in the last second is not kept: where timestamps are coarse, a second
    write of the same size within the same tick would not change its key.
    Receipt (message_bench "compose: invoice, shared PDF"): ~100 µs against ~300 µs unkept.
    """

    def __init__(self, *, files: int, total_bytes: int, file_bytes: int, remembered: int) -> None:
        self._lock = threading.Lock()
        self._read_once: OrderedDict[_FileKey, None] = OrderedDict()
        self._kept: OrderedDict[_FileKey, _KeptFile] = OrderedDict()
        self._by_content: dict[int, _KeptFile] = {}
        self._bytes = 0
        self._max_files = files
        self._max_bytes = total_bytes
        self._max_file_bytes = file_bytes
        self._remembered = remembered

    def content(self, key: _FileKey) -> bytes | None:
        """The kept bytes of this version of a file, if it is kept."""
        with self._lock:
            kept = self._kept.get(key)
            if kept is None:
                return None
            self._kept.move_to_end(key)
            return kept.content

    def read(self, key: _FileKey, content: bytes) -> bytes:
        """Note that this version of a file was read; the second time, keep it. Returns
        the bytes to use (the kept ones, when another thread kept them first)."""
        if len(content) > self._max_file_bytes or time.time_ns() - key[3] < _SETTLED_NS:
            return content
        with self._lock:
            if key in self._kept:
                return self._kept[key].content
            if key not in self._read_once:
                self._read_once[key] = None
                if len(self._read_once) > self._remembered:
                    self._read_once.popitem(last=False)
                return content
            del self._read_once[key]
            kept = self._kept[key] = _KeptFile(content)
            self._by_content[id(content)] = kept
            self._bytes += kept.size
            self._trim()
        return content

    def base64(self, content: bytes) -> bytes:
        """The base64 lines of ``content``: made once for the bytes of a kept file."""
        kept = self._by_content.get(id(content))
        if kept is None or kept.content is not content:
            return encode_binary(content).data
        encoded = kept.base64
        if encoded is None:
            encoded = encode_binary(content).data
            with self._lock:
                if kept.base64 is None and self._by_content.get(id(content)) is kept:
                    kept.base64 = encoded
                    self._bytes += len(encoded)
                    self._trim()
        return encoded

    def _trim(self) -> None:
        while self._kept and (len(self._kept) > self._max_files or self._bytes > self._max_bytes):
            _, old = self._kept.popitem(last=False)
            del self._by_content[id(old.content)]
            self._bytes -= old.size


#: Up to 8 files and 32 MiB (their bytes and base64 together), each under 8 MiB.
_KEPT = _FileCache(
    files=8, total_bytes=32 * 1024 * 1024, file_bytes=8 * 1024 * 1024, remembered=1024
)


def attachment_base64(content: bytes) -> bytes:
    """The base64 body of an attachment part (76-character CRLF lines); made once for a
    file attached to many messages."""
    return _KEPT.base64(content)


def _open_direct(path: str) -> tuple[BinaryIO, _FileKey] | None:
    """A regular file right in the folder (the common case: one name, no symlink), opened
    with one lstat, and what identifies its version; None leaves the decision to the full
    checks of :func:`_open_checked`."""
    try:
        if not stat.S_ISREG(os.lstat(path).st_mode):
            return None
        fd = os.open(path, _DIRECT_OPEN)
    except OSError:
        return None
    try:
        info = os.fstat(fd)
    except OSError:
        info = None
    if info is None or not stat.S_ISREG(info.st_mode):
        os.close(fd)
        return None
    key = (info.st_dev, info.st_ino, info.st_size, info.st_mtime_ns, info.st_ctime_ns)
    return open(fd, "rb"), key


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
