"""A redacted record of an SMTP conversation ("C:" lines sent, "S:" lines received).

Users see it in Test Connection (``--verbose``) and the web console. It must never
hold a password or an AUTH payload: the session marks those lines secret, and as a
second guard :meth:`Transcript.client` redacts anything after ``AUTH <mechanism>``.
Message content is summarised by its size.
"""

from __future__ import annotations

__all__ = ["REDACTED", "Transcript"]

REDACTED = "<redacted>"


def _printable(text: str) -> str:
    return "".join(c if c.isprintable() else f"\\x{ord(c):02x}" for c in text)


class Transcript:
    """Collects conversation lines, oldest first, up to ``max_lines`` (then counts the rest)."""

    __slots__ = ("dropped", "lines", "max_lines")

    def __init__(self, *, max_lines: int = 2000) -> None:
        self.lines: list[str] = []
        self.max_lines = max_lines
        self.dropped = 0

    def _add(self, line: str) -> None:
        if len(self.lines) < self.max_lines:
            self.lines.append(line)
        else:
            self.dropped += 1

    def client(self, line: str) -> None:
        """A command we sent (without CRLF); AUTH arguments are always redacted."""
        head = line[:5].upper()
        if head == "AUTH ":
            parts = line.split(" ", 2)
            if len(parts) > 2:
                line = f"{parts[0]} {parts[1]} {REDACTED}"
        self._add("C: " + _printable(line))

    def client_secret(self) -> None:
        """A line that carried credentials (an AUTH step): only its existence is recorded."""
        self._add("C: " + REDACTED)

    def client_data(self, size: int) -> None:
        """Message content: only its size."""
        self._add(f"C: <{size} bytes of message data>")

    def server(self, code: int, lines: tuple[str, ...]) -> None:
        """A complete reply, one transcript line per reply line."""
        last = len(lines) - 1
        for index, text in enumerate(lines or ("",)):
            sep = " " if index >= last else "-"
            self._add(f"S: {code}{sep}{_printable(text)}".rstrip())

    def note(self, text: str) -> None:
        """Something that is not a protocol line (TLS established, connection closed)."""
        self._add(f"-- {_printable(text)}")

    def text(self) -> str:
        return "\n".join(self.lines)
