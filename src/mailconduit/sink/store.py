"""The sink's mailbox: each message's exact bytes in an .eml file, plus a SQLite index.

:class:`MailboxWriter` (used by the server) writes the file and commits its index
row before the SMTP 250 is sent, on a store thread, in batches shared by concurrent
sessions ("group commit"); optionally (``fsync``) both are flushed to the device.
The reading functions serve the CLI and the web inbox: list, search, read one
message parsed into headers, text, HTML and attachments, and clear.
The .eml files are never modified after they are written.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import json
import logging
import os
import secrets
import sqlite3
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from email import policy
from email.errors import HeaderParseError
from email.header import decode_header, make_header
from email.message import EmailMessage, Message
from email.parser import BytesHeaderParser, BytesParser
from pathlib import Path
from typing import Any, ClassVar

from mailconduit.errors import NotFoundError
from mailconduit.home import sink_dir
from mailconduit.view import Record, Shown, view

__all__ = [
    "MailboxWriter",
    "MessageSummary",
    "ReceivedAttachment",
    "StoredMessage",
    "clear",
    "count_messages",
    "get_message",
    "list_messages",
    "message_summary",
    "parse_stored_message",
    "raw_message",
]

log = logging.getLogger("mailconduit.sink")

INDEX_NAME = "index.sqlite3"
MESSAGES_DIR = "messages"
SCHEMA_VERSION = 1
_SCHEMA = """
CREATE TABLE IF NOT EXISTS messages (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    received TEXT NOT NULL,
    envelope_from TEXT NOT NULL,
    envelope_recipients TEXT NOT NULL,
    smtputf8 INTEGER NOT NULL,
    from_header TEXT NOT NULL,
    to_header TEXT NOT NULL,
    subject TEXT NOT NULL,
    message_id TEXT NOT NULL,
    size INTEGER NOT NULL,
    path TEXT NOT NULL,
    search_text TEXT NOT NULL
)
"""
#: Threads writing one batch's files at once: parallel fsyncs share journal commits.
FILE_WRITERS = 8
_COLUMNS = (
    "id, received, envelope_from, envelope_recipients, smtputf8, from_header, "
    "to_header, subject, message_id, size, path"
)


@dataclass(frozen=True, slots=True)
class MessageSummary(Record):
    """One index row: what a list of received messages shows."""

    id: int
    received: dt.datetime
    envelope_from: str
    envelope_recipients: tuple[str, ...]
    smtputf8: bool
    from_header: str
    to_header: str
    subject: str
    message_id: str
    size: int
    path: Path

    _SHOWN: ClassVar[Shown] = (
        "id",
        "received",
        "envelope_from",
        "envelope_recipients",
        "smtputf8",
        ("from", "from_header"),
        ("to", "to_header"),
        "subject",
        "message_id",
        "size",
        "path",
    )


@dataclass(frozen=True, slots=True)
class ReceivedAttachment(Record):
    """A non-body part of a message: a file, an inline image, a forwarded message.

    ``index`` is its position among the message's attachments (stable, for links);
    ``content`` is the decoded payload.
    """

    index: int
    filename: str
    content_type: str
    disposition: str
    content_id: str
    content: bytes = field(repr=False)

    @property
    def size(self) -> int:
        return len(self.content)

    #: Metadata only, never the payload.
    _SHOWN: ClassVar[Shown] = (
        "index",
        "filename",
        "content_type",
        "disposition",
        "content_id",
        "size",
    )


@dataclass(frozen=True, slots=True)
class StoredMessage:
    """One received message, parsed for reading: headers, text and HTML bodies, attachments.

    ``raw`` holds the exact bytes received (after SMTP dot-unstuffing).
    """

    summary: MessageSummary
    headers: tuple[tuple[str, str], ...]
    text: str | None
    html: str | None
    attachments: tuple[ReceivedAttachment, ...]
    raw: bytes = field(repr=False)

    _SHOWN: ClassVar[Shown] = ("headers", "text", "html", "attachments")

    @property
    def id(self) -> int:
        return self.summary.id

    def header(self, name: str) -> str | None:
        """The first header of that name (case-insensitive), decoded, or None."""
        wanted = name.lower()
        return next((value for key, value in self.headers if key.lower() == wanted), None)

    def attachment(self, index: int) -> ReceivedAttachment:
        """The attachment at that position; NotFoundError when there is none."""
        if 0 <= index < len(self.attachments):
            return self.attachments[index]
        raise NotFoundError("attachment", f"{self.id}/{index}")

    def to_dict(self) -> dict[str, Any]:
        """Everything but the raw bytes and attachment payloads, JSON-friendly."""
        return {**self.summary.to_dict(), **view(self, self._SHOWN)}


# ---------------------------------------------------------------------------
# Index database


def _connect(directory: Path, *, check_same_thread: bool = True) -> sqlite3.Connection:
    """Open the index (creating it on first use) in WAL mode with a busy timeout."""
    db = sqlite3.connect(
        directory / INDEX_NAME,
        timeout=30.0,
        isolation_level=None,
        check_same_thread=check_same_thread,
    )
    try:
        if db.execute("PRAGMA user_version").fetchone()[0] != SCHEMA_VERSION:
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("BEGIN IMMEDIATE")
            db.execute(_SCHEMA)
            db.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
            db.execute("COMMIT")
        # FULL: a commit reaches the device before it returns (the writer may relax it).
        db.execute("PRAGMA synchronous=FULL")
    except BaseException:
        db.close()
        raise
    return db


def _display(text: str) -> str:
    """Text safe to store and print: undecodable bytes become U+FFFD, no line breaks."""
    clean = text.encode("utf-8", "surrogateescape").decode("utf-8", "replace")
    return " ".join(clean.split()) if ("\n" in clean or "\r" in clean) else clean


def _summary(row: sqlite3.Row | tuple[Any, ...], directory: Path) -> MessageSummary:
    (id_, received, env_from, env_rcpts, smtputf8, from_h, to_h, subject, msg_id, size, path) = row
    return MessageSummary(
        id=id_,
        received=dt.datetime.fromisoformat(received),
        envelope_from=env_from,
        envelope_recipients=tuple(json.loads(env_rcpts)),
        smtputf8=bool(smtputf8),
        from_header=from_h,
        to_header=to_h,
        subject=subject,
        message_id=msg_id,
        size=size,
        path=directory / path,
    )


def _search_clause(search: str | None) -> tuple[str, list[str]]:
    """A WHERE clause matching every whitespace-separated term, case-insensitively."""
    terms = (search or "").casefold().split()
    if not terms:
        return "", []
    escaped = [
        "%" + t.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%" for t in terms
    ]
    clause = " AND ".join("search_text LIKE ? ESCAPE '\\'" for _ in terms)
    return f"WHERE {clause}", escaped


# ---------------------------------------------------------------------------
# Reading


@contextlib.contextmanager
def _reading(directory: Path | None) -> Iterator[tuple[sqlite3.Connection, Path]]:
    where = directory if directory is not None else sink_dir()
    db = _connect(where)
    try:
        yield db, where
    finally:
        db.close()


def list_messages(
    *,
    search: str | None = None,
    limit: int = 100,
    offset: int = 0,
    directory: Path | None = None,
) -> list[MessageSummary]:
    """Received messages, newest first; with ``search``, only those whose subject, From,
    To, envelope sender or recipients contain every word of it (case-insensitive)."""
    where, params = _search_clause(search)
    with _reading(directory) as (db, base):
        rows = db.execute(
            f"SELECT {_COLUMNS} FROM messages {where} ORDER BY id DESC LIMIT ? OFFSET ?",
            [*params, max(0, limit), max(0, offset)],
        ).fetchall()
    return [_summary(row, base) for row in rows]


def count_messages(*, search: str | None = None, directory: Path | None = None) -> int:
    """How many messages :func:`list_messages` pages through with this search."""
    where, params = _search_clause(search)
    with _reading(directory) as (db, _):
        row = db.execute(f"SELECT count(*) FROM messages {where}", params).fetchone()
    return int(row[0])


def message_summary(message_id: int, *, directory: Path | None = None) -> MessageSummary:
    """The index row of one message; NotFoundError for an unknown id."""
    with _reading(directory) as (db, base):
        row = db.execute(
            f"SELECT {_COLUMNS} FROM messages WHERE id = ?",
            (message_id,),
        ).fetchone()
    if row is None:
        raise NotFoundError("message", str(message_id))
    return _summary(row, base)


def raw_message(message_id: int, *, directory: Path | None = None) -> bytes:
    """The exact bytes received for one message; NotFoundError for an unknown id."""
    return _read_file(message_summary(message_id, directory=directory))


def get_message(message_id: int, *, directory: Path | None = None) -> StoredMessage:
    """One message parsed for reading; NotFoundError for an unknown id."""
    summary = message_summary(message_id, directory=directory)
    return parse_stored_message(summary, _read_file(summary))


def _read_file(summary: MessageSummary) -> bytes:
    try:
        return summary.path.read_bytes()
    except FileNotFoundError:
        raise NotFoundError("message file", str(summary.path)) from None


def clear(*, directory: Path | None = None) -> int:
    """Remove every indexed message (rows and files); return how many were removed.

    A message being received at that moment is kept: only files whose index row
    this call deleted are removed.
    """
    with _reading(directory) as (db, base):
        db.execute("BEGIN IMMEDIATE")
        paths = [row[0] for row in db.execute("SELECT path FROM messages")]
        db.execute("DELETE FROM messages")
        db.execute("COMMIT")
    for relative in paths:
        with contextlib.suppress(FileNotFoundError):
            (base / relative).unlink()
    return len(paths)


# ---------------------------------------------------------------------------
# Parsing


def _decoded_headers(msg: Message) -> tuple[tuple[str, str], ...]:
    out = []
    for name, raw in msg.raw_items():
        try:
            value = str(msg.policy.header_fetch_parse(name, raw))
        except Exception:  # keep the raw text rather than hide the header
            value = str(raw)
        out.append((name, _display(value)))
    return tuple(out)


def _part_text(part: Message) -> str:
    """The text of a part decoded by its charset (never failing on bad bytes), LF line ends."""
    payload = part.get_payload(decode=True)
    if not isinstance(payload, bytes):
        return ""
    charset = part.get_content_charset() or "utf-8"
    try:
        text = payload.decode(charset, "replace")
    except LookupError:  # an unknown charset name
        text = payload.decode("utf-8", "replace")
    return text.replace("\r\n", "\n")


def _attachment_bytes(part: Message) -> bytes:
    if part.get_content_maintype() == "message":
        inner = part.get_payload()
        if isinstance(inner, list) and inner:
            first = inner[0]
            return first.as_bytes() if isinstance(first, Message) else b""
        return inner.encode("utf-8", "surrogateescape") if isinstance(inner, str) else b""
    payload = part.get_payload(decode=True)
    return payload if isinstance(payload, bytes) else b""


def _leaf_parts(part: Message) -> Iterator[Message]:
    """Every non-multipart part in order; a message/* part counts as one leaf."""
    if part.is_multipart() and part.get_content_maintype() == "multipart":
        for sub in part.get_payload():
            if isinstance(sub, Message):
                yield from _leaf_parts(sub)
    else:
        yield part


def parse_stored_message(summary: MessageSummary, raw: bytes) -> StoredMessage:
    """Parse raw message bytes into the reading view (the stdlib email package, policy.default)."""
    msg = BytesParser(policy=policy.default).parsebytes(raw)
    assert isinstance(msg, EmailMessage)
    text_part = msg.get_body(preferencelist=("plain",))
    html_part = msg.get_body(preferencelist=("html",))
    bodies = [p for p in (text_part, html_part) if p is not None]
    attachments: list[ReceivedAttachment] = []
    for part in _leaf_parts(msg):
        if any(part is body for body in bodies):
            continue
        attachments.append(
            ReceivedAttachment(
                index=len(attachments),
                filename=_display(part.get_filename() or ""),
                content_type=part.get_content_type(),
                disposition=part.get_content_disposition() or "",
                content_id=_display(str(part.get("Content-ID", "")).strip("<> ")),
                content=_attachment_bytes(part),
            )
        )
    return StoredMessage(
        summary=summary,
        headers=_decoded_headers(msg),
        text=_part_text(text_part) if text_part is not None else None,
        html=_part_text(html_part) if html_part is not None else None,
        attachments=tuple(attachments),
        raw=raw,
    )


# ---------------------------------------------------------------------------
# Writing


@dataclass(frozen=True, slots=True)
class _PendingMessage:
    """A received message waiting for its batch: bytes to write and the row to index."""

    content: bytes = field(repr=False)
    received: str
    envelope_from: str
    envelope_recipients: str
    smtputf8: bool
    from_header: str
    to_header: str
    subject: str
    message_id: str
    path: str
    search_text: str


def _decode_for_display(value: str) -> str:
    """Unfold a raw header value and decode its RFC 2047 encoded words."""
    if "=?" in value:
        # On a malformed encoded word keep the raw text: better than hiding the header.
        with contextlib.suppress(HeaderParseError, LookupError, UnicodeError, ValueError):
            value = str(make_header(decode_header(value)))
    return _display(value)


def _index_fields(content: bytes) -> tuple[str, str, str, str]:
    """From, To, Subject and Message-ID decoded for display.

    Only the header block is parsed, with the fast compat32 policy: this runs for
    every message received and the full policy costs several times more.
    """
    # Only the header block (up to the first empty line) is needed here.
    ends = [
        i + len(eol)
        for eol, i in ((b"\r\n", content.find(b"\r\n\r\n")), (b"\n", content.find(b"\n\n")))
        if i >= 0
    ]
    head = content[: min(ends)] if ends else content
    headers = BytesHeaderParser(policy=policy.compat32).parsebytes(head)
    found: dict[str, str] = {}
    for name, raw in headers.raw_items():  # raw: UTF-8 bytes (RFC 6532) stay recoverable
        found.setdefault(name.lower(), raw)
    values = [
        _decode_for_display(found[name]) if name in found else ""
        for name in ("from", "to", "subject", "message-id")
    ]
    return values[0], values[1], values[2], values[3]


def _write_new_file(path: Path, content: bytes, fsync: bool) -> None:
    """Create the file (never overwrite an existing one), write every byte, fsync if asked."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        view = memoryview(content)
        while view:
            written = os.write(fd, view)
            view = view[written:]
        if fsync:
            os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_directory(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class MailboxWriter:
    """The writing side of the store, owned by one running sink (one event loop).

    A message's file is written and its index row committed before :meth:`store`
    returns, so the 250 that follows never acknowledges a message that is not in
    the mailbox. By default the bytes are handed to the operating system (they
    survive the sink being killed at any moment); with ``fsync`` they are also
    flushed to the device (they survive a power loss).

    Disk work never blocks the event loop: a store thread writes the files and
    commits their rows, and messages arriving meanwhile wait to form the next
    batch (group commit), so concurrent sessions share each commit and fsync.
    """

    def __init__(self, directory: Path, *, fsync: bool = False) -> None:
        self.directory = directory
        self.fsync = fsync
        (directory / MESSAGES_DIR).mkdir(mode=0o700, exist_ok=True)
        self._db = _connect(directory, check_same_thread=False)  # used on the store thread
        if not fsync:
            self._db.execute("PRAGMA synchronous=NORMAL")  # WAL: a commit survives a crash
        self._worker = ThreadPoolExecutor(1, thread_name_prefix="sink-store")
        self._writers = ThreadPoolExecutor(FILE_WRITERS, thread_name_prefix="sink-file")
        self._pending: list[tuple[_PendingMessage, asyncio.Future[int]]] = []
        self._flusher: asyncio.Task[None] | None = None
        self._closed = False

    async def store(
        self,
        content: bytes,
        *,
        envelope_from: str,
        envelope_recipients: Sequence[str],
        smtputf8: bool,
    ) -> int:
        """Write one received message (file and index row) and return its id."""
        if self._closed:
            raise RuntimeError("the mailbox writer is closed")
        received = dt.datetime.now(dt.UTC)
        relative = (
            f"{MESSAGES_DIR}/{received:%Y-%m-%d}/{received:%H%M%S.%f}-{secrets.token_hex(4)}.eml"
        )
        try:
            from_h, to_h, subject, message_id = _index_fields(content)
        except Exception:  # headers beyond what the parser tolerates: index them blank
            from_h = to_h = subject = message_id = ""
        sender = _display(envelope_from)
        recipients = [_display(r) for r in envelope_recipients]
        pending = _PendingMessage(
            content=content,
            received=received.isoformat(),
            envelope_from=sender,
            envelope_recipients=json.dumps(recipients, ensure_ascii=False),
            smtputf8=smtputf8,
            from_header=from_h,
            to_header=to_h,
            subject=subject,
            message_id=message_id,
            path=relative,
            search_text="\n".join([subject, from_h, to_h, sender, *recipients]).casefold(),
        )
        done: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        self._pending.append((pending, done))
        if self._flusher is None or self._flusher.done():
            self._flusher = asyncio.create_task(self._flush())
        # Shielded: a session that drops while waiting must not lose the batch for others.
        return await asyncio.shield(done)

    async def _flush(self) -> None:
        loop = asyncio.get_running_loop()
        while self._pending:
            batch, self._pending = self._pending, []
            try:
                ids = await loop.run_in_executor(self._worker, self._persist, [m for m, _ in batch])
            except Exception as exc:
                log.exception("the sink could not store %d message(s)", len(batch))
                for _, done in batch:
                    if not done.done():
                        done.set_exception(exc)
            else:
                for (_, done), message_id in zip(batch, ids, strict=True):
                    if not done.done():
                        done.set_result(message_id)

    def _persist(self, batch: list[_PendingMessage]) -> list[int]:
        """Write the files (and with fsync make them and their names durable), index them."""
        days = {(self.directory / m.path).parent for m in batch}
        for day in days:
            try:
                day.mkdir(mode=0o700)
            except FileExistsError:
                pass
            else:
                if self.fsync:
                    _fsync_directory(day.parent)
        paths = [self.directory / m.path for m in batch]
        contents = [m.content for m in batch]
        if len(batch) > 1:
            # Concurrent writes (and fsyncs) share the file system's journal commits.
            flags = [self.fsync] * len(batch)
            for _ in self._writers.map(_write_new_file, paths, contents, flags):
                pass  # iterating re-raises the first failure
        else:
            for path, content in zip(paths, contents, strict=True):
                _write_new_file(path, content, self.fsync)
        if self.fsync:
            for day in days:
                _fsync_directory(day)
        return self._insert(batch)

    def _insert(self, batch: list[_PendingMessage]) -> list[int]:
        ids = []
        self._db.execute("BEGIN IMMEDIATE")
        try:
            for m in batch:
                cursor = self._db.execute(
                    "INSERT INTO messages (received, envelope_from, envelope_recipients, "
                    "smtputf8, from_header, to_header, subject, message_id, size, path, "
                    "search_text) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    (
                        m.received,
                        m.envelope_from,
                        m.envelope_recipients,
                        int(m.smtputf8),
                        m.from_header,
                        m.to_header,
                        m.subject,
                        m.message_id,
                        len(m.content),
                        m.path,
                        m.search_text,
                    ),
                )
                assert cursor.lastrowid is not None
                ids.append(cursor.lastrowid)
            self._db.execute("COMMIT")
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        return ids

    async def close(self) -> None:
        """Finish the pending batch, then release the store thread and the database."""
        self._closed = True
        if self._flusher is not None:
            with contextlib.suppress(Exception):
                await self._flusher
        self._worker.shutdown(wait=True)
        self._writers.shutdown(wait=True)
        self._db.close()
