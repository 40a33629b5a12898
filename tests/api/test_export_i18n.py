"""Non-ASCII everywhere, end to end: subjects, display names, bodies, attachment file names
(RFC 2231), IDN domains (punycode in the envelope), UTF-8 local parts (SMTPUTF8 or a clear
per-row failure, never a mangled address) and an output charset other than UTF-8.
"""

from __future__ import annotations

import email
from email import policy
from pathlib import Path
from typing import Any

import pytest

from export_support import (
    assert_wire_safe,
    by_recipient,
    connect_to,
    only,
    server_messages,
    sink_messages,
    write_csv,
)
from mailconduit import api
from mailconduit.testing import FaultServer

PDF = b"%PDF-1.4\n\x00\xff\xfe binary \r\n.\r\n bytes"
FILE_NAME = "Résumé – façade ünïcödé 文件 2024.pdf"


@pytest.fixture
def files(tmp_path: Path) -> Path:
    folder = tmp_path / "files"
    folder.mkdir()
    (folder / FILE_NAME).write_bytes(PDF)
    return folder


def test_non_ascii_fields_and_attachment_names_arrive_intact(tmp_path: Path, files: Path) -> None:
    rows = [
        {"email": "zoe@bücher.example", "name": "Zoë Ärger-Ødegård", "note": "Grüße aus Köln ☕",
         "file": FILE_NAME},
        {"email": "li@例え.テスト", "name": "李伟 (Li Wei)", "note": "你好，世界", "file": FILE_NAME},
        {"email": "ivan@пример.рф", "name": "Иван Петров", "note": "Привет", "file": FILE_NAME},
    ]  # fmt: skip
    data = write_csv(tmp_path / "intl.csv", rows)
    report = api.export(
        str(data),
        connection="local",
        to="{{ name }} <{{ email }}>",
        subject="Überweisung für {{ name }} — €{{ 1000 }}",
        body="{{ note }}\nÄÖÜ äöü ß €\n",
        attach="{{ file }}",
        attach_dir=str(files),
    )
    assert (report.sent, report.failed, report.skipped) == (3, 0, 0)
    got = by_recipient(sink_messages())
    envelopes = ["zoe@xn--bcher-kva.example", "li@xn--r8jz45g.xn--zckzah",
                 "ivan@xn--e1afmkfd.xn--p1ai"]  # fmt: skip
    assert sorted(got) == sorted(envelopes)
    for row, envelope in zip(rows, envelopes, strict=True):
        message = got[envelope]
        assert_wire_safe(message.raw)
        assert not message.smtputf8  # ASCII local parts need no SMTPUTF8
        head = message.raw.split(b"\r\n\r\n", 1)[0]
        assert head.isascii(), "headers are encoded (RFC 2047/2231), not raw UTF-8"
        to = message.message["To"].addresses[0]
        assert to.display_name == row["name"]
        assert to.addr_spec == message.recipients[0]
        assert message.header("Subject") == f"Überweisung für {row['name']} — €1000"
        assert message.text() == f"{row['note']}\nÄÖÜ äöü ß €\n"
        assert message.attachments() == {FILE_NAME: PDF}
        assert b"filename*" in head or b"filename*" in message.raw  # RFC 2231 parameter


@pytest.mark.parametrize("server_has_smtputf8", [True, False])
def test_utf8_local_part_uses_smtputf8_or_fails_that_row_only(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, server_has_smtputf8: bool
) -> None:
    data = write_csv(
        tmp_path / "people.csv",
        [
            {"email": "ascii@example.com", "name": "First"},
            {"email": "zoë.ärger@bücher.example", "name": "Zoë"},
            {"email": "last@example.com", "name": "Last"},
        ],
    )
    with FaultServer(smtputf8=server_has_smtputf8) as server:
        name = connect_to(monkeypatch, server.port)
        report = api.export(
            str(data), connection=name, to="{{ name }} <{{ email }}>", subject="Hi", body="x"
        )
    got = by_recipient(server_messages(server))
    rows = list(report.rows())
    if server_has_smtputf8:
        assert (report.sent, report.failed) == (3, 0)
        utf8 = got["zoë.ärger@xn--bcher-kva.example"]
        assert utf8.recipients == ("zoë.ärger@xn--bcher-kva.example",)
        assert utf8.smtputf8
        # an SMTPUTF8 message carries the address in UTF-8 (RFC 6532), unaltered
        headers = email.message_from_string(utf8.raw.decode("utf-8"), policy=policy.default)
        assert headers["To"].addresses[0].addr_spec == "zoë.ärger@xn--bcher-kva.example"
        assert headers["To"].addresses[0].display_name == "Zoë"
        assert not got["ascii@example.com"].smtputf8 and not got["last@example.com"].smtputf8
    else:
        assert (report.sent, report.failed) == (2, 1)
        assert sorted(got) == ["ascii@example.com", "last@example.com"]
        failed = rows[1]
        assert failed.state == "failed" and failed.row_number == 2
        assert "SMTPUTF8" in failed.reply and "zoë.ärger@" in failed.reply
        # nothing was sent for that row: no transaction named an altered address
        commands = [c for s in server.sessions for c in s.commands]
        assert not [c for c in commands if "rger@" in c]
        assert report.ok is False


def test_output_charset_iso_8859_1(server: FaultServer, target: str, tmp_path: Path) -> None:
    data = write_csv(
        tmp_path / "latin.csv",
        [
            {"email": "a@example.com", "name": "Zoë Ärger", "text": "Grüße, café, naïve façade"},
            {"email": "b@example.com", "name": "Euro", "text": "costs 5 €"},
            {"email": "c@example.com", "name": "Ça va", "text": "très bien"},
        ],
    )
    report = api.export(
        str(data),
        connection=target,
        to="{{ name }} <{{ email }}>",
        subject="Größe für {{ name }}",
        body="{{ text }}\n",
        charset="iso-8859-1",
    )
    assert (report.sent, report.skipped) == (2, 1)
    skipped = next(r for r in report.rows() if r.state == "skipped")
    assert skipped.row_number == 2
    assert "€" in skipped.reply and "iso-8859-1" in skipped.reply
    got = by_recipient(server_messages(server))
    first, third = got["a@example.com"], got["c@example.com"]
    for message, row in ((first, ("Zoë Ärger", "Grüße, café, naïve façade")),
                         (third, ("Ça va", "très bien"))):  # fmt: skip
        assert_wire_safe(message.raw)
        assert message.message.get_content_charset() == "iso-8859-1"
        assert message.header("Subject") == f"Größe für {row[0]}"
        assert message.message["To"].addresses[0].display_name == row[0]
        assert message.text() == row[1] + "\n"
        assert message.text_bytes() == (row[1] + "\r\n").encode("iso-8859-1")
        assert b"=?iso-8859-1?" in message.raw and b"utf-8" not in message.raw.lower()


def test_dry_run_writes_the_same_bytes_the_server_receives(tmp_path: Path) -> None:
    data = write_csv(tmp_path / "one.csv", [{"email": "zoe@bücher.example", "name": "Zoë"}])
    options: dict[str, Any] = {"connection": "local", "to": "{{ name }} <{{ email }}>", "subject": "Grüße",
               "body": "Hallo {{ name }}"}  # fmt: skip
    dry = api.export(str(data), run_id="same", dry_run=str(tmp_path / "out"), **options)
    written = Path(only(dry.rows()).reply).read_bytes()
    api.export(str(data), run_id="same", **options)
    received = only(sink_messages()).raw

    def without_date(raw: bytes) -> bytes:
        return b"\r\n".join(line for line in raw.split(b"\r\n") if not line.startswith(b"Date:"))

    assert without_date(written) == without_date(received)
