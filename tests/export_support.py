"""Helpers shared by the export tests: real servers behind named connections, and reading
what they received back as bytes and as parsed messages.

Two targets are used: the embedded sink through the built-in ``local`` connection (started
in-process by the export on a free port), and the fault-injecting test server or Postfix's
smtp-sink behind a connection defined by a ``MAILCONDUIT_CONN_<NAME>`` URL.
"""

from __future__ import annotations

import csv
import email
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from email import policy
from email.message import EmailMessage
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import pytest

from mailconduit import sink
from mailconduit.testing import FaultServer, free_port

#: The From address of connections made by :func:`connect_to`.
SENDER = "exports@example.com"
#: RFC 5322 2.1.1: a line is at most 998 characters, CRLF excluded.
MAX_LINE = 998


@dataclass(frozen=True)
class Delivered:
    """One message as a server received it: the envelope and the exact bytes."""

    envelope_from: str
    recipients: tuple[str, ...]
    raw: bytes
    smtputf8: bool = False

    @property
    def message(self) -> EmailMessage:
        return parse(self.raw)

    def header(self, name: str) -> str:
        """The decoded value of a header (empty when absent)."""
        value = self.message[name]
        return "" if value is None else str(value)

    def text(self) -> str:
        """The decoded text/plain body, line ends as "\\n" (the wire form is CRLF)."""
        return self._part("plain").get_content().replace("\r\n", "\n")

    def html(self) -> str:
        """The decoded text/html body, line ends as "\\n"."""
        return self._part("html").get_content().replace("\r\n", "\n")

    def text_bytes(self) -> bytes:
        """The text/plain body exactly as decoded from its transfer encoding (CRLF kept)."""
        payload = self._part("plain").get_payload(decode=True)
        assert isinstance(payload, bytes)
        return payload

    def _part(self, subtype: str) -> EmailMessage:
        part = self.message.get_body(preferencelist=(subtype,))
        assert isinstance(part, EmailMessage), f"no text/{subtype} part"
        return part

    def attachments(self) -> dict[str, bytes]:
        """File name → decoded content of every attachment."""
        out: dict[str, bytes] = {}
        for part in self.message.iter_attachments():
            name = part.get_filename()
            assert name, "an attachment without a file name"
            payload = part.get_payload(decode=True)
            assert isinstance(payload, bytes)
            out[name] = payload
        return out


def parse(raw: bytes) -> EmailMessage:
    message = email.message_from_bytes(raw, policy=policy.default)
    assert isinstance(message, EmailMessage)
    return message


def use_free_sink_port(monkeypatch: pytest.MonkeyPatch) -> int:
    """Make the ``local`` connection start its sink on a port no other test uses."""
    port = free_port()
    monkeypatch.setenv("MAILCONDUIT_SINK_PORT", str(port))
    return port


def sink_messages() -> list[Delivered]:
    """Every message the embedded sink of this home stored, oldest first."""
    summaries = sink.list_messages(limit=10_000)
    return [
        Delivered(
            s.envelope_from,
            s.envelope_recipients,
            sink.raw_message(s.id),
            s.smtputf8,
        )
        for s in reversed(summaries)
    ]


def server_messages(server: FaultServer) -> list[Delivered]:
    """Every message the fault server accepted, in order."""
    return [Delivered(m.mail_from, m.rcpt_tos, m.data, m.smtputf8) for m in list(server.messages)]


def connect_to(
    monkeypatch: pytest.MonkeyPatch, port: int, *, name: str = "target", **fields: Any
) -> str:
    """Define connection ``name`` to 127.0.0.1:``port`` (no TLS, no AUTH) and return its name.

    ``fields`` are any other connection fields (``use_html_body="true"``...).
    """
    query = {"from_address": SENDER, **{k: str(v) for k, v in fields.items()}}
    monkeypatch.setenv(
        f"MAILCONDUIT_CONN_{name.upper()}", f"smtp://127.0.0.1:{port}?{urlencode(query)}"
    )
    return name


def write_csv(path: Path, rows: Sequence[Mapping[str, Any]], *, encoding: str = "utf-8") -> Path:
    """A CSV file with a header row from the keys of the first row."""
    with open(path, "w", encoding=encoding, newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return path


def assert_wire_safe(raw: bytes) -> None:
    """CRLF line ends only, no line beyond 998 characters, the headers every message needs."""
    assert b"\r" not in raw.replace(b"\r\n", b""), "a lone CR"
    assert b"\n" not in raw.replace(b"\r\n", b""), "a lone LF"
    longest = max(len(line) for line in raw.split(b"\r\n"))
    assert longest <= MAX_LINE, f"a line of {longest} octets"
    head = raw.split(b"\r\n\r\n", 1)[0].decode("utf-8")
    names = [line.split(":", 1)[0].lower() for line in head.split("\r\n") if line[:1] not in " \t"]
    for required in ("date", "from", "message-id", "mime-version", "subject"):
        assert names.count(required) == 1, f"{required} appears {names.count(required)} times"


def header_names(raw: bytes) -> list[str]:
    """The names of the top-level header fields, in order."""
    head = raw.split(b"\r\n\r\n", 1)[0].decode("utf-8")
    return [line.split(":", 1)[0] for line in head.split("\r\n") if line[:1] not in " \t"]


def by_recipient(messages: Iterable[Delivered]) -> dict[str, Delivered]:
    """Messages keyed by their first envelope recipient (sessions deliver in any order)."""
    out: dict[str, Delivered] = {}
    for message in messages:
        assert message.recipients[0] not in out, f"{message.recipients[0]} received two"
        out[message.recipients[0]] = message
    return out


def unfold(text: str) -> str:
    return re.sub(r"\r\n[ \t]", " ", text)


def only(items: Iterable[Any]) -> Any:
    """The single element of ``items`` (fails when there are none or several)."""
    found = list(items)
    assert len(found) == 1, f"expected one, found {len(found)}: {found!r}"
    return found[0]


#: (setting, value, words of the error) — one per class of wrong value (CLI, API and console).
BAD_TEXT_SETTINGS: list[tuple[str, str, str]] = [
    ("encoding", "rot13", "not a character encoding"),
    ("encoding", "base64", "not a character encoding"),
    ("encoding", "zlib_codec", "not a character encoding"),
    ("encoding", "idna", "not a character encoding"),
    ("encoding", "undefined", "not a character encoding"),
    ("encoding", "klingon-8", "unknown encoding"),
    ("charset", "rot13", "not a character encoding"),
    ("charset", "utf-16", "cannot be the charset of a message"),
    ("charset", "cp037", "cannot be the charset of a message"),
    ("charset", "iso2022_jp", "cannot be the charset of a message"),
]
#: (setting, JSON value) that is not of the setting's type.
BAD_JSON_TYPES: list[tuple[str, Any]] = [
    ("where", 5),
    ("order_by", ["name"]),
    ("key", 1),
    ("subject", 3.5),
    ("to", True),
    ("encoding", 8),
    ("charset", {"name": "utf-8"}),
    ("by", ["region"]),
    ("table_formats", [1, 2]),
    ("delimiter", 44),
    ("limit", "many"),
]
