"""The MIME builder: structure, headers, transfer encodings, charsets, attachments, refusals."""

from __future__ import annotations

import base64
import datetime as dt
import os
import time
from datetime import UTC, datetime, timedelta, timezone
from email import policy
from email.message import EmailMessage
from email.parser import BytesParser
from pathlib import Path
from typing import Any

import aiosmtplib
import pytest
from hypothesis import given
from hypothesis import strategies as st

from mailconduit.errors import AddressError, ConfigError, RowError
from mailconduit.message import (
    Attachment,
    build_message,
    load_attachment,
    make_address,
    make_message_id,
)
from mailconduit.message.attachment import attachment_base64
from mailconduit.testing.fixtures import run
from mailconduit.testing.server import FaultServer

DATE = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
SENDER = make_address("billing@example.com", display_name="Billing")
RCPT = make_address("jane@example.org", display_name="Jane Doe")


def build(**overrides: Any) -> bytes:
    arguments: dict[str, Any] = {
        "from_": SENDER,
        "to": [RCPT],
        "subject": "Statement",
        "text_body": "Hello\n",
        "message_id": "<id.1@example.com>",
        "date": DATE,
    }
    arguments.update(overrides)
    return build_message(**arguments).data


def parse(data: bytes) -> EmailMessage:
    message = BytesParser(policy=policy.default).parsebytes(data)
    assert isinstance(message, EmailMessage)
    return message


def headers_of(data: bytes) -> list[str]:
    head = data.split(b"\r\n\r\n", 1)[0].decode("utf-8")
    return head.replace("\r\n ", " ").split("\r\n")


def test_simple_text_message_is_exactly_as_expected() -> None:
    assert build() == (
        b"Date: Fri, 02 Jan 2026 03:04:05 +0000\r\n"
        b"From: Billing <billing@example.com>\r\n"
        b"To: Jane Doe <jane@example.org>\r\n"
        b"Subject: Statement\r\n"
        b"Message-ID: <id.1@example.com>\r\n"
        b"MIME-Version: 1.0\r\n"
        b'Content-Type: text/plain; charset="utf-8"\r\n'
        b"Content-Transfer-Encoding: 7bit\r\n"
        b"\r\n"
        b"Hello\r\n"
    )


def test_bcc_is_in_the_envelope_only_and_recipients_are_deduplicated() -> None:
    hidden = make_address("hidden@example.net")
    built = build_message(
        from_=SENDER,
        to=[RCPT, make_address("Jane@Example.ORG")],
        cc=[make_address("jane@EXAMPLE.org"), make_address("JANE@example.org")],
        bcc=[hidden],
        message_id="<x@example.com>",
        date=DATE,
    )
    assert built.envelope_recipients == (
        "jane@example.org",
        "Jane@example.org",
        "JANE@example.org",
        "hidden@example.net",
    )
    assert b"hidden@example.net" not in built.data
    assert not any(h.lower().startswith("bcc:") for h in headers_of(built.data))
    assert built.envelope_from == "billing@example.com"


def test_envelope_sender_can_differ_from_the_from_header() -> None:
    bounce = make_address("bounces@example.com")
    built = build_message(
        from_=SENDER, to=[RCPT], message_id="<x@example.com>", date=DATE, envelope_from=bounce
    )
    assert built.envelope_from == "bounces@example.com"
    assert str(parse(built.data)["From"]) == "Billing <billing@example.com>"


def test_a_message_without_any_recipient_is_refused() -> None:
    with pytest.raises(AddressError, match="no recipient"):
        build(to=[])


def test_long_ascii_subject_is_folded_at_spaces_within_78() -> None:
    subject = " ".join(f"word{i}" for i in range(60))
    data = build(subject=subject)
    head = data.split(b"\r\n\r\n", 1)[0]
    assert max(len(line) for line in head.split(b"\r\n")) <= 78
    assert str(parse(data)["Subject"]) == subject
    assert b"=?" not in head  # plain ASCII stays readable


def test_a_word_longer_than_998_is_encoded_so_no_line_exceeds_998() -> None:
    subject = "x" * 2500
    data = build(subject=subject)
    assert max(len(line) for line in data.split(b"\r\n")) <= 78
    assert str(parse(data)["Subject"]) == subject


def test_text_that_looks_like_an_encoded_word_is_not_decoded_by_readers() -> None:
    subject = "Price =?utf-8?q?=E2=82=AC?= 5"
    assert str(parse(build(subject=subject))["Subject"]) == subject
    name = "=?utf-8?q?Admin?="
    to = [make_address("a@example.com", display_name=name)]
    assert parse(build(to=to))["To"].addresses[0].display_name == name


def test_non_ascii_subject_and_display_name_use_encoded_words() -> None:
    data = build(
        subject="Relevé de compte – Zoë",
        to=[make_address("zoe@bücher.example", display_name="Zoë Ünal")],
    )
    assert data.isascii()
    message = parse(data)
    assert str(message["Subject"]) == "Relevé de compte – Zoë"
    (address,) = message["To"].addresses
    assert (address.display_name, address.addr_spec) == ("Zoë Ünal", "zoe@xn--bcher-kva.example")


def test_many_recipients_are_folded_between_addresses() -> None:
    to = [make_address(f"user{i}@example.com", display_name=f"User {i}") for i in range(30)]
    data = build(to=to)
    head = data.split(b"\r\n\r\n", 1)[0]
    assert max(len(line) for line in head.split(b"\r\n")) <= 78
    assert [a.addr_spec for a in parse(data)["To"].addresses] == [a.envelope for a in to]


@pytest.mark.parametrize(
    ("text", "encoding"),
    [
        ("plain ascii\n", "7bit"),
        ("a" * 999 + "\n", "quoted-printable"),
        ("Viele Grüße aus Köln, wie geht es Ihnen heute? Uns geht es gut.\n", "quoted-printable"),
        ("Привет, как дела? Всё хорошо.\n", "base64"),
        ("line\rwith a lone CR", "base64"),
        ("nul\x00inside", "base64"),
    ],
)
def test_transfer_encoding_follows_the_content(text: str, encoding: str) -> None:
    message = parse(build(text_body=text))
    assert message["Content-Transfer-Encoding"] == encoding


def test_body_with_dots_and_bare_line_ends_arrives_as_documented() -> None:
    """Lines normalised to CRLF (final one added); lone CR keeps every byte (base64)."""
    text = ".\n..\nx\n.\n\n.\r\n. \nend"
    payload = parse(build(text_body=text)).get_payload(decode=True)
    assert payload == b".\r\n..\r\nx\r\n.\r\n\r\n.\r\n. \r\nend\r\n"
    exact = "a\r.\rb\n.\n\r\n.\r\n\x00"
    assert parse(build(text_body=exact)).get_payload(decode=True) == exact.encode()


@pytest.mark.parametrize("body", [".\n", "x\n.\n", "\r.\r", "a\r\n.\r\nb", ".\r\n.\r\n" * 50])
def test_body_arrives_through_a_real_smtp_server_byte_for_byte(body: str) -> None:
    """aiosmtplib dot-stuffs, aiosmtpd un-stuffs: the server holds exactly our bytes."""
    built = build_message(
        from_=SENDER, to=[RCPT], subject="dots", text_body=body, message_id="<d@example.com>"
    )

    async def send(port: int) -> None:
        await aiosmtplib.send(
            built.data,
            sender=built.envelope_from,
            recipients=list(built.envelope_recipients),
            hostname="127.0.0.1",
            port=port,
            timeout=10,
        )

    with FaultServer() as server:
        run(send(server.port), timeout=20)
    (received,) = server.messages
    assert received.data.rstrip(b"\r\n") == built.data.rstrip(b"\r\n")
    decoded = parse(received.data).get_payload(decode=True)
    if "\r" in body.replace("\r\n", ""):
        assert decoded == body.encode()
    else:
        expected = body.replace("\r\n", "\n").replace("\n", "\r\n")
        assert decoded == (expected if expected.endswith("\r\n") else expected + "\r\n").encode()


def test_html_body_makes_alternative_with_generated_text() -> None:
    html = '<p>Dear <b>Zoë</b>,</p><p>see <a href="https://example.com/i/1">your invoice</a></p>'
    message = parse(build(text_body=None, html_body=html))
    assert message.get_content_type() == "multipart/alternative"
    plain, rich = message.iter_parts()
    assert plain.get_content() == "Dear Zoë,\r\n\r\nsee your invoice (https://example.com/i/1)\r\n"
    assert rich.get_content_type() == "text/html"
    assert rich.get_content() == html + "\r\n"


def test_explicit_text_part_wins_over_the_generated_one() -> None:
    message = parse(build(text_body="my text", html_body="<p>html</p>"))
    plain, _ = message.iter_parts()
    assert plain.get_content() == "my text\r\n"


def test_attachments_make_mixed_with_base64_at_76_columns() -> None:
    content = bytes(range(256)) * 10
    data = build(attachments=[Attachment("report.pdf", content, "application/pdf")])
    message = parse(data)
    assert message.get_content_type() == "multipart/mixed"
    body, attached = message.iter_parts()
    assert body.get_content_type() == "text/plain"
    assert attached.get_filename() == "report.pdf"
    assert attached.get_payload(decode=True) == content
    payload = attached.get_payload()
    assert isinstance(payload, str)
    encoded_lines = payload.splitlines()
    assert {len(line) for line in encoded_lines[:-1]} == {76}


def test_non_ascii_attachment_name_has_rfc2231_and_ascii_fallback() -> None:
    name = "Relevé n°1 – Zoë.pdf"
    data = build(attachments=[Attachment(name, b"%PDF", "application/pdf")])
    unfolded = data.decode("ascii").replace("\r\n ", " ")
    disposition = next(
        line for line in unfolded.split("\r\n") if line.startswith("Content-Disposition")
    )
    assert "filename*=utf-8''Relev%C3%A9" in disposition
    assert 'filename="Releve n_1 _ Zoe.pdf"' in disposition
    attached = list(parse(data).iter_parts())[1]
    assert attached.get_filename() == name


def test_very_long_attachment_name_uses_continuations() -> None:
    name = "ü" * 200 + ".txt"
    data = build(attachments=[Attachment(name, b"x", "text/plain")])
    assert max(len(line) for line in data.split(b"\r\n")) <= 78
    assert list(parse(data).iter_parts())[1].get_filename() == name


@pytest.mark.parametrize(
    ("filename", "content_type", "reason"),
    [
        ("", "text/plain", "empty"),
        ("a/b.txt", "text/plain", "path separator"),
        ("a\\b.txt", "text/plain", "path separator"),
        ("a\nBcc: x.txt", "text/plain", "break a header"),
        ("a\x07.txt", "text/plain", "control character"),
        ("a\x7f.txt", "text/plain", "control character"),
        ("a\x9f.txt", "text/plain", "control character"),
        ("ok.txt", "text", "type/subtype"),
        ("ok.txt", "text/plain\r\nX: y", "type/subtype"),
        ("ok.eml", "message/rfc822", "cannot be sent base64"),
    ],
)
def test_bad_attachment_names_and_types_are_row_errors(
    filename: str, content_type: str, reason: str
) -> None:
    with pytest.raises(RowError, match=reason):
        build(attachments=[Attachment(filename, b"x", content_type)])


@pytest.fixture
def attach_dir(tmp_path: Path) -> Path:
    base = tmp_path / "files"
    (base / "sub").mkdir(parents=True)
    (base / "invoice.pdf").write_bytes(b"%PDF-1.4 invoice")
    (base / "sub" / "Zoë.csv").write_bytes(b"a,b\r\n1,2\r\n")
    (base / "old.eml").write_bytes(b"Subject: x\r\n\r\nbody\r\n")
    (tmp_path / "secret.txt").write_bytes(b"secret")
    os.symlink(tmp_path / "secret.txt", base / "escape.txt")
    os.symlink(base / "invoice.pdf", base / "alias.pdf")
    return base


def test_attachment_paths_load_from_inside_the_base_directory(attach_dir: Path) -> None:
    data = build(attachments=["invoice.pdf", "sub/Zoë.csv", "alias.pdf"], attachment_dir=attach_dir)
    parts = list(parse(data).iter_parts())[1:]
    assert [(p.get_filename(), p.get_content_type()) for p in parts] == [
        ("invoice.pdf", "application/pdf"),
        ("Zoë.csv", "text/csv"),
        ("alias.pdf", "application/pdf"),
    ]
    assert parts[1].get_payload(decode=True) == b"a,b\r\n1,2\r\n"
    assert load_attachment("old.eml", base_dir=attach_dir).content_type == (
        "application/octet-stream"
    )


@pytest.mark.parametrize(
    ("path", "reason"),
    [
        ("../secret.txt", "contains '..'"),
        ("sub/../../secret.txt", "contains '..'"),
        ("..\\secret.txt", "contains '..'"),
        ("/etc/passwd", "absolute"),
        ("C:\\Windows\\win.ini", "absolute"),
        ("escape.txt", "outside the attachment directory"),
        ("missing.pdf", "not found"),
        ("sub", "not a regular file"),
        ("", "empty"),
        ("a\nb.pdf", "break a header"),
    ],
)
def test_path_traversal_and_missing_files_are_row_errors(
    attach_dir: Path, path: str, reason: str
) -> None:
    with pytest.raises(RowError, match=reason):
        build(attachments=[path], attachment_dir=attach_dir)


def test_a_name_right_in_the_folder_is_read_through_the_folder_as_given(
    attach_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The shortcut for one plain name keeps the rules: a FIFO is refused without waiting
    for a writer, a symlink is judged by where it leads, and the folder may itself be a
    symlink or relative to the working directory."""
    os.mkfifo(attach_dir / "pipe.pdf")
    with pytest.raises(RowError, match="not a regular file"):
        load_attachment("pipe.pdf", base_dir=attach_dir)
    with pytest.raises(RowError, match="outside the attachment directory"):
        load_attachment("./escape.txt", base_dir=attach_dir)
    assert load_attachment("./alias.pdf", base_dir=attach_dir).content == b"%PDF-1.4 invoice"
    os.symlink(attach_dir, tmp_path / "link-to-files")
    linked = load_attachment("invoice.pdf", base_dir=tmp_path / "link-to-files")
    assert (linked.filename, linked.content) == ("invoice.pdf", b"%PDF-1.4 invoice")
    monkeypatch.chdir(tmp_path)
    assert load_attachment("old.eml", base_dir=Path("files")).content.startswith(b"Subject")
    (attach_dir / "invoice.pdf").write_bytes(b"%PDF-1.4 changed")
    assert load_attachment("invoice.pdf", base_dir=attach_dir).content == b"%PDF-1.4 changed"


def test_a_file_attached_to_many_rows_is_read_and_encoded_once_while_unchanged(
    attach_dir: Path,
) -> None:
    brochure = attach_dir / "brochure.pdf"
    brochure.write_bytes(b"%PDF-1.4 brochure v1")
    hour_ago = time.time() - 3600
    os.utime(brochure, (hour_ago, hour_ago))
    first, second, third = (
        load_attachment("brochure.pdf", base_dir=attach_dir).content for _ in range(3)
    )
    assert first == second == b"%PDF-1.4 brochure v1"
    assert third is second  # kept from its second read on
    assert attachment_base64(third) is attachment_base64(third)
    assert attachment_base64(third) == base64.encodebytes(third).replace(b"\n", b"\r\n")
    brochure.write_bytes(b"%PDF-1.4 brochure v2")  # same size, a new modification time
    assert load_attachment("brochure.pdf", base_dir=attach_dir).content.endswith(b"v2")
    os.utime(brochure, (hour_ago, hour_ago))  # back to the old time: the change time differs
    assert load_attachment("brochure.pdf", base_dir=attach_dir).content.endswith(b"v2")


def test_files_just_written_or_read_once_are_not_kept(attach_dir: Path) -> None:
    fresh = attach_dir / "fresh.pdf"
    fresh.write_bytes(b"%PDF-1.4 fresh")
    loads = [load_attachment("fresh.pdf", base_dir=attach_dir).content for _ in range(3)]
    assert loads[1] is not loads[2]  # modified in the last second: read every time
    many = []
    for n in range(20):
        path = attach_dir / f"invoice-{n}.pdf"
        path.write_bytes(b"%%PDF-1.4 %d" % n)
        os.utime(path, (0, 0))
        many.append(load_attachment(path.name, base_dir=attach_dir).content)
    again = [load_attachment(f"invoice-{n}.pdf", base_dir=attach_dir).content for n in range(20)]
    assert all(a is not b and a == b for a, b in zip(many, again, strict=True))
    third = [load_attachment(f"invoice-{n}.pdf", base_dir=attach_dir).content for n in range(20)]
    assert [a is b for a, b in zip(again, third, strict=True)].count(True) == 8  # the bound


def test_attachment_size_cap_and_missing_base_directory(attach_dir: Path) -> None:
    with pytest.raises(RowError, match="larger than 4 bytes"):
        load_attachment("invoice.pdf", base_dir=attach_dir, max_bytes=4)
    with pytest.raises(ConfigError, match="does not exist"):
        load_attachment("invoice.pdf", base_dir=attach_dir / "nope")
    with pytest.raises(RowError, match="no attachment directory"):
        build(attachments=["invoice.pdf"])


def test_custom_headers_are_encoded_and_structural_ones_refused() -> None:
    data = build(headers={"X-Campaign": "spring", "List-Unsubscribe": "<https://e.example/u?x=1>"})
    message = parse(data)
    assert message["X-Campaign"] == "spring"
    assert message["List-Unsubscribe"] == "<https://e.example/u?x=1>"
    assert str(parse(build(headers={"X-Note": "Grüße"}))["X-Note"]) == "Grüße"


@pytest.mark.parametrize(
    ("headers", "reason"),
    [
        ({"Subject": "x"}, "written by mailconduit"),
        ({"bcc": "x@example.com"}, "written by mailconduit"),
        ({"Content-Type": "text/html"}, "written by mailconduit"),
        ({"X Bad": "x"}, "not a valid field name"),
        ({"X:Bad": "x"}, "not a valid field name"),
        ({"": "x"}, "not a valid field name"),
        ({"X-É": "x"}, "not a valid field name"),
        ({"X-A\r\nBcc": "x"}, "break a header"),
        ({"X-A": "ok\r\nBcc: evil@example.net"}, "header X-A: a value that would break a header"),
        ([("X-A", "1"), ("x-a", "2")], "given twice"),
    ],
)
def test_bad_custom_headers_are_row_errors(headers: Any, reason: str) -> None:
    with pytest.raises(RowError, match=reason):
        build(headers=headers)


@pytest.mark.parametrize(
    "breaker", ["\r", "\n", "\x00", "\x0b", "\x0c", "\x85", "\u2028", "\u2029"]
)
def test_subject_with_any_line_breaker_is_refused(breaker: str) -> None:
    with pytest.raises(RowError, match="subject: a value that would break a header"):
        build(subject=f"Hi{breaker}Bcc: evil@example.net")


def test_output_charset_latin1_works_and_fails_clearly() -> None:
    data = build(subject="Café", text_body="Crème brûlée\n", charset="latin1")
    message = parse(data)
    assert message.get_content_charset() == "iso-8859-1"
    assert message.get_content() == "Crème brûlée\r\n"
    assert str(message["Subject"]) == "Café"
    assert b"=?iso-8859-1?" in data
    with pytest.raises(
        RowError,
        match=r"'€' \(U\+20AC EURO SIGN\) cannot be encoded in the output charset iso-8859-1",
    ):
        build(text_body="5 €", charset="iso-8859-1")
    with pytest.raises(RowError, match="subject"):
        build(subject="5 €", charset="iso-8859-1")


@pytest.mark.parametrize("charset", ["utf-16", "no-such-charset", "utf-7"])
def test_unusable_charsets_are_config_errors(charset: str) -> None:
    with pytest.raises(ConfigError):
        build(charset=charset)


def test_utf8_local_part_needs_the_smtputf8_flag() -> None:
    rcpt = make_address("zoë@example.com")
    with pytest.raises(AddressError, match="needs SMTPUTF8"):
        build(to=[rcpt])
    built = build_message(
        from_=SENDER, to=[rcpt], message_id="<u@example.com>", date=DATE, smtputf8=True
    )
    assert built.needs_smtputf8
    assert "zoë@example.com".encode() in built.data
    plain = build_message(
        from_=SENDER, to=[RCPT], message_id="<u@example.com>", date=DATE, smtputf8=True
    )
    assert not plain.needs_smtputf8
    assert plain.data.isascii()


def test_message_id_is_deterministic_per_run_and_row() -> None:
    first = make_message_id("run-1", "row-1", "bücher.example")
    assert first == make_message_id("run-1", "row-1", "bücher.example")
    assert first != make_message_id("run-1", "row-2", "bücher.example")
    assert first != make_message_id("run-2", "row-1", "bücher.example")
    assert first.startswith("<") and first.endswith("@xn--bcher-kva.example>")
    assert parse(build(message_id=first))["Message-ID"] == first
    with pytest.raises(RowError, match="message id"):
        build(message_id="no-angle-brackets@example.com")
    with pytest.raises(RowError, match="message id"):
        build(message_id="<a@b>\r\nBcc: x@example.com")


def test_date_keeps_its_time_zone() -> None:
    paris = timezone(timedelta(hours=1))
    utc_data = build(date=datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC))
    paris_data = build(date=datetime(2026, 1, 2, 4, 4, 5, tzinfo=paris))
    assert b"Date: Fri, 02 Jan 2026 03:04:05 +0000\r\n" in utc_data
    assert b"Date: Fri, 02 Jan 2026 04:04:05 +0100\r\n" in paris_data


def test_required_headers_are_always_present() -> None:
    message = parse(build_message(from_=SENDER, bcc=[RCPT], message_id="<r@example.com>").data)
    for name in ("Date", "MIME-Version", "Message-ID", "From", "Subject"):
        assert message[name] is not None, name
    assert message["To"] is None


def test_builder_matches_email_message_for_a_typical_message() -> None:
    ours = parse(
        build(
            subject="Relevé 42",
            text_body="Bonjour Zoë,\n\nvotre relevé est prêt.\n",
            html_body="<p>Bonjour Zoë</p>",
            attachments=[Attachment("relevé.pdf", b"%PDF-1.4", "application/pdf")],
        )
    )
    reference = EmailMessage()
    reference["From"] = "Billing <billing@example.com>"
    reference["To"] = "Jane Doe <jane@example.org>"
    reference["Subject"] = "Relevé 42"
    reference.set_content("Bonjour Zoë,\n\nvotre relevé est prêt.\n")
    reference.add_alternative("<p>Bonjour Zoë</p>", subtype="html")
    reference.add_attachment(
        b"%PDF-1.4", maintype="application", subtype="pdf", filename="relevé.pdf"
    )
    theirs = parse(reference.as_bytes(policy=policy.SMTP))
    assert ours["Subject"] == theirs["Subject"]
    assert ours["From"].addresses == theirs["From"].addresses
    assert ours["To"].addresses == theirs["To"].addresses
    ours_parts = [p for p in ours.walk() if not p.is_multipart()]
    theirs_parts = [p for p in theirs.walk() if not p.is_multipart()]
    assert [p.get_content_type() for p in ours_parts] == [
        p.get_content_type() for p in theirs_parts
    ]
    assert [p.get_filename() for p in ours_parts] == [p.get_filename() for p in theirs_parts]
    for mine, reference_part in zip(ours_parts, theirs_parts, strict=True):
        assert mine.get_content() == reference_part.get_content()


@given(
    st.datetimes(min_value=dt.datetime(1900, 1, 1), max_value=dt.datetime(9999, 12, 31)),
    st.one_of(st.none(), st.integers(-14 * 60, 14 * 60).map(lambda m: dt.timezone(dt.timedelta(minutes=m)))),
)  # fmt: skip
def test_date_header_is_written_as_the_email_package_writes_it(
    when: dt.datetime, zone: dt.timezone | None
) -> None:
    from email.utils import format_datetime as reference

    from mailconduit.message.build import format_datetime

    when = when.replace(tzinfo=zone)
    assert format_datetime(when) == reference(when)


# --------------------------------------------------------------------------- inline images

LOGO = Attachment("logo.png", b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 4, "image/png")


def tree(part: EmailMessage) -> Any:
    """A message's structure: content types, multiparts as (type, [children])."""
    if part.is_multipart():
        return (part.get_content_type(), [tree(p) for p in part.iter_parts()])  # type: ignore[arg-type]
    return part.get_content_type()


def test_inline_images_go_in_a_related_part_beside_the_html() -> None:
    html = '<p>Hi</p><img src="cid:logo" alt="Logo">'
    data = build(text_body="Hi, in plain text", html_body=html, inline=[("logo", LOGO)])
    message = parse(data)
    assert tree(message) == (
        "multipart/alternative",
        ["text/plain", ("multipart/related", ["text/html", "image/png"])],
    )
    _, related = message.iter_parts()
    assert related.get_param("type") == "text/html"  # RFC 2387: the type of its root part
    root, image = related.iter_parts()
    assert root.get_content() == html + "\r\n"
    assert image["Content-ID"] == "<logo>"
    assert image.get_content_disposition() == "inline"
    assert image.get_filename() == "logo.png"
    assert image.get_payload(decode=True) == LOGO.content
    assert message.get_body(preferencelist=("html",)) is root
    plain = message.get_body(preferencelist=("plain",))
    assert plain is not None and plain.get_content() == "Hi, in plain text\r\n"
    assert list(message.iter_attachments()) == []  # an inline image is no attachment


def test_inline_images_and_attachments_nest_as_mail_clients_expect() -> None:
    second = Attachment("Signatur Zoë.jpg", b"\xff\xd8\xff\xe0jpeg", "image/jpeg")
    pdf = Attachment("invoice.pdf", b"%PDF-1.4", "application/pdf")
    message = parse(
        build(
            text_body=None,
            html_body='<img src="cid:logo"><img src="cid:sig.2">',
            inline=[("logo", LOGO), ("sig.2", second)],
            attachments=[pdf],
        )
    )
    assert tree(message) == (
        "multipart/mixed",
        [
            ("multipart/alternative",
             ["text/plain", ("multipart/related", ["text/html", "image/png", "image/jpeg"])]),
            "application/pdf",
        ],
    )  # fmt: skip
    images = [p for p in message.walk() if p.get_content_disposition() == "inline"]
    assert [(p["Content-ID"], p.get_filename()) for p in images] == [
        ("<logo>", "logo.png"),
        ("<sig.2>", "Signatur Zoë.jpg"),
    ]
    assert [p.get_filename() for p in message.iter_attachments()] == ["invoice.pdf"]


def test_builder_matches_email_message_with_inline_images() -> None:
    """The structure the email package makes with add_related is the one we write."""
    ours = parse(
        build(
            text_body="Text\n",
            html_body='<p><img src="cid:logo"></p>',
            inline=[("logo", LOGO)],
            attachments=[Attachment("a.pdf", b"%PDF", "application/pdf")],
        )
    )
    reference = EmailMessage()
    reference["Subject"] = "Statement"
    reference.set_content("Text\n")
    reference.add_alternative('<p><img src="cid:logo"></p>', subtype="html")
    _, html_part = reference.iter_parts()
    html_part.add_related(
        LOGO.content, maintype="image", subtype="png", cid="<logo>", filename="logo.png",
        disposition="inline",
    )  # fmt: skip
    reference.add_attachment(b"%PDF", maintype="application", subtype="pdf", filename="a.pdf")
    theirs = parse(reference.as_bytes(policy=policy.SMTP))
    assert tree(ours) == tree(theirs)
    ours_leaves = [p for p in ours.walk() if not p.is_multipart()]
    theirs_leaves = [p for p in theirs.walk() if not p.is_multipart()]
    for mine, reference_part in zip(ours_leaves, theirs_leaves, strict=True):
        assert mine.get_content() == reference_part.get_content()
        assert mine["Content-ID"] == reference_part["Content-ID"]
        assert mine.get_content_disposition() == reference_part.get_content_disposition()
        assert mine.get_filename() == reference_part.get_filename()


def test_inline_images_load_from_the_attachment_folder_with_the_same_checks(
    attach_dir: Path,
) -> None:
    message = parse(
        build(html_body='<img src="cid:doc">', inline=[("doc", "invoice.pdf")],
              attachment_dir=attach_dir)
    )  # fmt: skip
    (image,) = (p for p in message.walk() if p["Content-ID"])
    assert image.get_payload(decode=True) == b"%PDF-1.4 invoice"
    for path, reason in [
        ("../secret.txt", "inline image 'doc' path '../secret.txt' contains '..'"),
        ("escape.txt", "inline image 'doc' 'escape.txt' resolves outside"),
        ("missing.png", "inline image 'doc' 'missing.png' not found in the attachment folder"),
    ]:
        with pytest.raises(RowError, match=reason):
            build(html_body="<p>x</p>", inline=[("doc", path)], attachment_dir=attach_dir)


@pytest.mark.parametrize(
    ("inline", "reason"),
    [
        ([("logo", LOGO)], "inline images need an HTML body"),
        ([("lo go", LOGO)], "cannot be a Content-ID"),
        ([("logo>", LOGO)], "cannot be a Content-ID"),
        ([("a..b", LOGO)], "cannot be a Content-ID"),
        ([("", LOGO)], "cannot be a Content-ID"),
        ([("x" * 65, LOGO)], "cannot be a Content-ID"),
        ([("logo", LOGO), ("LOGO", LOGO)], "given twice"),
    ],
)
def test_inline_images_that_cannot_be_sent_are_row_errors(
    inline: list[tuple[str, Attachment]], reason: str
) -> None:
    html = None if reason.startswith("inline images need") else "<p>x</p>"
    with pytest.raises(RowError, match=reason):
        build(html_body=html, inline=inline)


def test_a_body_quoting_the_related_boundary_gets_other_boundaries() -> None:
    from mailconduit.message.build import _boundaries

    mixed, _, related = _boundaries("<id.1@example.com>", 0)
    html = f"<p>--{related}</p>"
    message = parse(build(html_body=html, inline=[("logo", LOGO)]))
    assert mixed[:-2] not in message["Content-Type"]
    body = message.get_body(preferencelist=("html",))
    assert body is not None and body.get_content() == html + "\r\n"
