"""SMTP replies: parsing (multi-line, RFC 3463 enhanced status) and what each one means next.

Pure functions and small value objects, no I/O: the session feeds bytes in, and the
delivery engine asks :func:`classify` whether to go on, retry, slow down, fail the row
or abort the run. :func:`error_for` turns a reply into the matching class of
``mailconduit.errors``.
"""

from __future__ import annotations

import enum
import re

from mailconduit.errors import (
    AuthenticationError,
    PermanentSMTPError,
    RecipientRefusedError,
    SMTPError,
    ThrottledError,
    TransientSMTPError,
)

__all__ = [
    "MalformedReplyError",
    "Reply",
    "ReplyAction",
    "ReplyParser",
    "classify",
    "closes_session",
    "error_for",
    "is_throttling",
]

#: Longest reply line we accept (RFC 5321 4.5.3.1.5 says 512; servers exceed it a bit).
MAX_LINE = 8192
#: Most lines in one multi-line reply (EHLO lists are the longest, a few dozen lines).
MAX_LINES = 512

_ENHANCED_RE = re.compile(r"^([245])\.(\d{1,3})\.(\d{1,3})(?=\s|$)")

#: Phrases of 4xx replies without an enhanced code that ask us to send slower.
_THROTTLE_PHRASES = (
    "too many connections",
    "too many concurrent",
    "too many sessions",
    "too many messages",
    "rate limit",
    "ratelimit",
    "rate-limit",
    "throttl",
    "slow down",
    "too fast",
    "sending rate",
)


class MalformedReplyError(Exception):
    """The server sent bytes that are not an SMTP reply (wrong port or protocol).

    Internal: the session translates it into ``TransientSMTPError`` and keeps it as
    ``__cause__`` so Test Connection can tell garbage from a silent server.
    """

    def __init__(self, sample: bytes) -> None:
        super().__init__(sample)
        self.sample = sample

    def __str__(self) -> str:
        return f"the server sent something that is not an SMTP reply: {self.sample[:40]!r}"


class Reply:
    """One complete SMTP reply: the code and the text of every line (joined by newlines)."""

    __slots__ = ("_enhanced", "_message", "code", "lines")

    def __init__(self, code: int, lines: tuple[str, ...]) -> None:
        self.code = code
        self.lines = lines
        self._enhanced: str | None = None
        self._message: str | None = None

    @property
    def text(self) -> str:
        """All lines' text, newline-joined, without the code (enhanced status kept)."""
        return "\n".join(self.lines)

    @property
    def enhanced(self) -> str:
        """The RFC 3463 status (``5.1.1``) of the first line when it matches the code's class."""
        enhanced = self._enhanced
        if enhanced is None:
            match = _ENHANCED_RE.match(self.lines[0]) if self.lines else None
            if match is None or match.group(1) != str(self.code)[0]:
                enhanced = ""
            else:
                enhanced = match.group(0)
            self._enhanced = enhanced
        return enhanced

    @property
    def message(self) -> str:
        """The text without the enhanced status prefix, for people to read."""
        message = self._message
        if message is None:
            enhanced = self.enhanced
            first = self.lines[0][len(enhanced) :].lstrip() if self.lines else ""
            message = "\n".join((first, *self.lines[1:])) if len(self.lines) > 1 else first
            self._message = message
        return message

    @property
    def is_success(self) -> bool:
        return 200 <= self.code < 400

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Reply) and (self.code, self.lines) == (other.code, other.lines)

    def __hash__(self) -> int:
        return hash((self.code, self.lines))

    def __repr__(self) -> str:
        return f"Reply({self.code}, {self.text!r})"

    def __str__(self) -> str:
        return f"{self.code} {self.text}".rstrip()


#: Single-line replies seen before, by their raw bytes: servers repeat "250 2.1.5 Ok"
#: thousands of times, and a Reply is immutable, so one object serves them all.
_SEEN: dict[bytes, Reply] = {}
_SEEN_MAX = 1024


class ReplyParser:
    """Incremental parser: feed it what the socket delivered, get back complete replies.

    Lenient on line endings (bare LF accepted), strict on shape: every line must start
    with three digits followed by space, hyphen or end of line. Anything else raises
    :class:`MalformedReplyError` as soon as the first wrong byte is seen.
    """

    __slots__ = ("_code", "_lines", "_pending")

    def __init__(self) -> None:
        self._pending = b""
        self._lines: list[str] = []
        self._code = 0

    @property
    def has_partial(self) -> bool:
        """True when bytes of an unfinished reply are buffered."""
        return bool(self._pending or self._lines)

    def feed(self, data: bytes) -> list[Reply]:
        if self._pending:
            data = self._pending + data
        lines = data.split(b"\n")
        rest = lines.pop()
        replies: list[Reply] = []
        seen = _SEEN
        for line in lines:
            if not self._lines:
                reply = seen.get(line)
                if reply is not None:
                    replies.append(reply)
                    continue
            raw = line
            if line[-1:] == b"\r":
                line = line[:-1]
            head = line[:3]
            if len(line) < 3 or not head.isdigit() or (len(line) > 3 and line[3] not in b" -"):
                raise MalformedReplyError(line)
            if len(line) > MAX_LINE:  # whether it came in one read or several
                raise MalformedReplyError(line[:80])
            code = int(head)
            if self._lines and code != self._code:
                raise MalformedReplyError(line)
            self._code = code
            self._lines.append(_shown(line[4:].decode("utf-8", "replace")))
            if len(line) == 3 or line[3] == 32:
                reply = Reply(code, tuple(self._lines))
                if len(self._lines) == 1 and len(raw) <= 200 and len(seen) < _SEEN_MAX:
                    seen[raw] = reply
                replies.append(reply)
                self._lines = []
            elif len(self._lines) > MAX_LINES:
                raise MalformedReplyError(b"more than %d lines in one reply" % MAX_LINES)
        if rest and (not rest[:3].isdigit() or (len(rest) > 3 and rest[3] not in b" -")):
            raise MalformedReplyError(rest)
        if len(rest) > MAX_LINE:
            raise MalformedReplyError(rest[:80])
        self._pending = rest
        return replies


def _shown(text: str) -> str:
    """Reply text as it may be printed: a control character (a terminal escape, a NUL) from
    the peer becomes ``\\xNN``, so no reply can drive the terminal or the page it is shown on."""
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() else f"\\x{ord(c):02x}" for c in text)


class ReplyAction(enum.StrEnum):
    """What to do after a reply."""

    SUCCESS = "success"  # go on
    RETRY = "retry"  # this message later, same session may go on (4xx)
    THROTTLE = "throttle"  # retry later AND slow the whole pool down (421, 4.7.x, rate phrases)
    FAIL_ROW = "fail_row"  # this message fails for good (5xx)
    ABORT_RUN = "abort_run"  # nothing more can succeed: bad credentials (535 and kin)


#: 5xx codes that mean our credentials (or their absence) are the problem.
_AUTH_CODES = frozenset({530, 534, 535, 538})


def is_throttling(code: int, enhanced: str = "", text: str = "") -> bool:
    """True for replies that ask the client to slow down (421, 4.7.x, rate-limit wording)."""
    if code == 421:
        return True
    if not 400 <= code < 500:
        return False
    if enhanced:
        return enhanced.startswith("4.7.")
    lowered = text.lower()
    return any(phrase in lowered for phrase in _THROTTLE_PHRASES)


def closes_session(code: int) -> bool:
    """421: the server is closing the channel; we close too, without RSET or QUIT."""
    return code == 421


def classify(code: int, enhanced: str = "", text: str = "") -> ReplyAction:
    """Decide what a reply means for the message and the run (RFC 5321 4.2.1, RFC 3463)."""
    if 200 <= code < 400:
        return ReplyAction.SUCCESS
    if 400 <= code < 500:
        return ReplyAction.THROTTLE if is_throttling(code, enhanced, text) else ReplyAction.RETRY
    if code in _AUTH_CODES or (code >= 500 and enhanced.startswith("5.7.8")):
        return ReplyAction.ABORT_RUN
    if 500 <= code < 600:
        return ReplyAction.FAIL_ROW
    return ReplyAction.RETRY


def error_for(
    reply: Reply, *, command: str = "", host: str = "", recipient_refused: bool = False
) -> SMTPError:
    """The ``mailconduit.errors`` class a failed reply maps to, carrying code and text.

    ``recipient_refused`` marks a 5xx that refused every recipient of a message.
    """
    enhanced = reply.enhanced
    action = classify(reply.code, enhanced, reply.text)
    cls: type[SMTPError]
    if action is ReplyAction.THROTTLE:
        cls = ThrottledError
    elif action is ReplyAction.RETRY:
        cls = TransientSMTPError
    elif action is ReplyAction.ABORT_RUN:
        cls = AuthenticationError
    elif recipient_refused:
        cls = RecipientRefusedError
    else:
        cls = PermanentSMTPError
    return cls(reply.code, reply.message, enhanced=enhanced, command=command, host=host)
