"""Property tests: every message the fast builder makes parses back, with the email package,
to exactly the fields it was given, with no header injected and no line over 998 octets."""

from __future__ import annotations

import base64
import os
import random
import re
import unicodedata
import urllib.parse
from datetime import UTC, datetime
from email import policy
from email.header import decode_header, make_header
from email.message import EmailMessage, MIMEPart
from email.parser import BytesParser, Parser
from typing import Any

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from mailconduit.errors import RowError
from mailconduit.message import (
    Address,
    Attachment,
    BuiltMessage,
    build_message,
    make_address,
    normalise_text,
    parse_address_list,
)
from mailconduit.message.chars import HEADER_BREAKERS
from mailconduit.message.transfer import encode_binary

PROPERTY_SETTINGS = settings(
    max_examples=int(os.environ.get("MESSAGE_PROPERTY_EXAMPLES", "200")),
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
MESSAGE_ID = "<prop.test@example.com>"
DATE = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)

# Text that may hold anything a row can hold except what must be refused in a header.
header_text = st.text(
    alphabet=st.characters(exclude_categories=["Cs"], exclude_characters=HEADER_BREAKERS),
    max_size=200,
)
any_text = st.text(alphabet=st.characters(exclude_categories=["Cs"]), max_size=400) | st.builds(
    lambda piece, count, tail: piece * count + tail,  # lines beyond 998 octets
    st.sampled_from(["a", "é", ". ", " ", "a\n", "\r."]),
    st.integers(500, 2500),
    st.text(max_size=5),
)
line_text = st.text(
    alphabet=st.sampled_from(list("ab .\r\n\x00=é€ \t-"))
    | st.characters(exclude_categories=["Cs"]),
    max_size=400,
)
atext = re.escape(
    "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789!#$%&'*+-/=?^_`{|}~"
)
local_parts = st.from_regex(rf"[{atext}]{{1,12}}(\.[{atext}]{{1,8}})?", fullmatch=True)
domains = st.sampled_from(
    ["example.com", "EXAMPLE.org", "mail.example.net", "bücher.example", "xn--bcher-kva.example"]
)


@st.composite
def addresses(draw: st.DrawFn) -> Address:
    local = draw(local_parts)
    assume(local and not local.startswith(".") and not local.endswith(".") and ".." not in local)
    return make_address(f"{local}@{draw(domains)}", display_name=draw(header_text))


address_lists = st.lists(addresses(), max_size=4)
header_names = st.from_regex(r"X-[A-Za-z0-9-]{1,20}", fullmatch=True)
attachments = st.builds(
    Attachment,
    filename=st.text(
        alphabet=st.characters(
            exclude_categories=("Cs", "Cc"), exclude_characters=HEADER_BREAKERS + "/\\"
        ),
        min_size=1,
        max_size=120,
    ).filter(lambda s: s.strip() != ""),
    content=st.binary(max_size=3000),
    content_type=st.sampled_from(["application/pdf", "text/plain", "image/png", "text/csv"]),
)


def as_parsed_filename(name: str) -> str:
    """The file name as Python's parser returns it: its ``unquote`` drops one pair of
    enclosing ``<>`` even from an RFC 2231 value (the wire form keeps them; checked by the
    builder's own tests)."""
    name = name.strip()
    return name[1:-1] if len(name) > 1 and name[0] == "<" and name[-1] == ">" else name


def parse(data: bytes, *, smtputf8: bool = False) -> EmailMessage:
    """Parse like a receiving client; SMTPUTF8 messages are UTF-8 text by definition."""
    if smtputf8:
        message = Parser(policy=policy.default).parsestr(data.decode("utf-8"))
    else:
        message = BytesParser(policy=policy.default).parsebytes(data)
    assert isinstance(message, EmailMessage)
    return message


def build(**fields: Any) -> BuiltMessage:
    """build_message from sender@example.com to rcpt@example.org with this module's
    Message-ID and date; ``fields`` adds to or replaces them."""
    defaults: dict[str, Any] = {
        "from_": make_address("sender@example.com"),
        "to": [make_address("rcpt@example.org")],
        "message_id": MESSAGE_ID,
        "date": DATE,
    }
    return build_message(**{**defaults, **fields})


def assert_wire_form(data: bytes) -> None:
    """CRLF only, no line over 998 octets, header lines within 998."""
    assert b"\r" not in data.replace(b"\r\n", b""), "a lone CR on the wire"
    assert b"\n" not in data.replace(b"\r\n", b""), "a lone LF on the wire"
    assert max(len(line) for line in data.split(b"\r\n")) <= 998


def expected_text_bytes(text: str, charset: str = "utf-8") -> bytes:
    """What the documented contract says a reader decodes from a text part."""
    lines = normalise_text(text)
    if lines is None:
        return text.encode(charset)
    return lines.replace("\n", "\r\n").encode(charset)


def header_names_of(message: EmailMessage) -> list[str]:
    return sorted(name.lower() for name in message)


def address_pairs(message: EmailMessage, name: str) -> list[tuple[str, str]]:
    header = message[name]
    if header is None:
        return []
    return [(a.display_name, a.addr_spec) for a in header.addresses]


def assert_addresses(message: EmailMessage, name: str, expected: list[Address]) -> None:
    """Every address and display name comes back.

    One allowance, checked precisely: Python 3.11's parser puts a space between two adjacent
    encoded-words of a display name, where RFC 2047 (6.2) says to drop the whitespace (a
    long non-ASCII name needs several 75-character words, also from EmailMessage). Then the
    name must match without spaces, and an RFC 2047 decoder must give it back exactly.
    """
    pairs = address_pairs(message, name)
    assert [spec for _, spec in pairs] == [a.envelope for a in expected]
    raw = next((v for k, v in message.raw_items() if k.lower() == name.lower()), "")
    for (got, _), address in zip(pairs, expected, strict=True):
        if got != address.display_name:
            assert "?= =?" in raw.replace("\r\n", ""), (got, address.display_name)
            assert got.replace(" ", "") == address.display_name.replace(" ", "")
            phrase = raw.replace("\r\n", "")
            if not phrase.isascii():  # a raw UTF-8 address (SMTPUTF8): decode the name only
                phrase = phrase.rpartition("<")[0]
            decoded = str(make_header(decode_header(phrase)))
            assert address.display_name in decoded


#: The envelope and header fields of a text message, named as build_message takes them.
text_message_fields = st.fixed_dictionaries(
    {
        "from_": addresses(),
        "to": address_lists,
        "cc": address_lists,
        "bcc": address_lists,
        "reply_to": address_lists,
        "subject": header_text,
        "text_body": any_text,
        "headers": st.dictionaries(header_names, header_text, max_size=3),
    }
)


@PROPERTY_SETTINGS
@given(fields=text_message_fields)
def test_text_message_parses_back_to_every_field(fields: dict[str, Any]) -> None:
    sender, to, cc, bcc, reply_to = (fields[k] for k in ("from_", "to", "cc", "bcc", "reply_to"))
    subject, text, custom = fields["subject"], fields["text_body"], fields["headers"]
    assume(to or cc or bcc)
    assume(len({k.lower() for k in custom}) == len(custom))
    built = build(**fields)
    assert_wire_form(built.data)
    message = parse(built.data)
    assert message.defects == []
    expected_headers = {"date", "from", "subject", "message-id", "mime-version", "content-type"}
    expected_headers |= {"content-transfer-encoding"} | {k.lower() for k in custom}
    expected_headers |= {
        name for name, given in (("to", to), ("cc", cc), ("reply-to", reply_to)) if given
    }
    assert header_names_of(message) == sorted(expected_headers)
    assert_addresses(message, "From", [sender])
    assert_addresses(message, "To", to)
    assert_addresses(message, "Cc", cc)
    assert_addresses(message, "Reply-To", reply_to)
    assert str(message["Subject"]) == subject
    for name, value in custom.items():
        assert str(message[name]) == value
    assert message.get_content_type() == "text/plain"
    assert message.get_payload(decode=True) == expected_text_bytes(text)
    recipients = [a.envelope for a in [*to, *cc, *bcc]]
    assert built.envelope_recipients == tuple(dict.fromkeys(recipients))
    assert built.envelope_from == sender.envelope
    assert built.size == len(built.data)


#: Names an inline image may have (its Content-ID and the HTML's cid:NAME).
inline_names = st.from_regex(r"[A-Za-z0-9_+-]{1,12}(\.[A-Za-z0-9_+-]{1,8})?", fullmatch=True)


@PROPERTY_SETTINGS
@given(
    text=st.none() | line_text,
    html=line_text,
    files=st.lists(attachments, max_size=3),
    images=st.lists(
        st.tuples(inline_names, attachments), max_size=3, unique_by=lambda i: i[0].lower()
    ),
    subject=header_text,
)
def test_multipart_message_parses_back_to_every_part(
    text: str | None,
    html: str,
    files: list[Attachment],
    images: list[tuple[str, Attachment]],
    subject: str,
) -> None:
    """Every part comes back where a mail client looks for it: mixed(alternative(text,
    related(html, inline images)), attachments), each level only when needed."""
    built = build(
        subject=subject, text_body=text, html_body=html, attachments=files, inline=images
    )
    assert_wire_form(built.data)
    message = parse(built.data)
    assert str(message["Subject"]) == subject
    assert all(part.defects == [] for part in message.walk())
    if files:
        assert message.get_content_type() == "multipart/mixed"
        alternative, *attached = message.iter_parts()
    else:
        alternative, attached = message, []
    assert alternative.get_content_type() == "multipart/alternative"
    plain, rich = alternative.iter_parts()
    assert plain.get_content_type() == "text/plain"
    if text is not None:
        assert plain.get_payload(decode=True) == expected_text_bytes(text)
    else:
        assert plain.get_payload(decode=True) is not None
    shown: list[MIMEPart] = []
    if images:
        assert rich.get_content_type() == "multipart/related"
        assert rich.get_param("type") == "text/html"
        rich, *shown = rich.iter_parts()
    assert rich.get_content_type() == "text/html"
    assert rich.get_payload(decode=True) == expected_text_bytes(html)
    assert message.get_body(preferencelist=("html",)) is rich
    assert message.get_body(preferencelist=("plain",)) is plain
    assert len(shown) == len(images)
    for part, (name, image) in zip(shown, images, strict=True):
        assert part["Content-ID"] == f"<{name}>"
        assert part.get_content_disposition() == "inline"
        assert part.get_content_type() == image.content_type
        assert part.get_filename() == as_parsed_filename(image.filename)
        assert part.get_payload(decode=True) == image.content
    assert len(attached) == len(files)
    assert list(message.iter_attachments()) == attached
    for part, given_file in zip(attached, files, strict=True):
        assert part.get_content_type() == given_file.content_type
        assert part.get_content_disposition() == "attachment"
        assert part.get_filename() == as_parsed_filename(given_file.filename)
        assert part.get_payload(decode=True) == given_file.content


@PROPERTY_SETTINGS
@given(
    prefix=header_text,
    breaker=st.sampled_from(list(HEADER_BREAKERS)),
    suffix=header_text,
    where=st.sampled_from(["subject", "header", "header_name", "display", "filename"]),
)
def test_line_breakers_in_any_header_value_are_refused(
    prefix: str, breaker: str, suffix: str, where: str
) -> None:
    bad = prefix + breaker + suffix
    arguments: dict[str, Any] = {"subject": "ok", "text_body": "body"}
    if where == "subject":
        arguments["subject"] = bad
    elif where == "header":
        arguments["headers"] = {"X-Test": bad}
    elif where == "header_name":
        arguments["headers"] = {f"X-{bad}": "value"}
    elif where == "display":
        arguments["to"] = [Address("rcpt", "example.org", "example.org", bad)]
    else:
        arguments["attachments"] = [Attachment(f"a{bad}.txt", b"x", "text/plain")]
    with pytest.raises(RowError):
        build(**arguments)


@PROPERTY_SETTINGS
@given(prefix=header_text, breaker=st.sampled_from(list(HEADER_BREAKERS)), suffix=header_text)
def test_line_breakers_in_address_text_are_refused(prefix: str, breaker: str, suffix: str) -> None:
    with pytest.raises(RowError, match="break a header"):
        parse_address_list(f"{prefix}a@example.com{breaker}{suffix}", field="to")


@PROPERTY_SETTINGS
@given(
    local=st.text(
        alphabet=st.characters(
            min_codepoint=0xA1, exclude_categories=("Cs", "Cc", "Z", "Cf", "Co", "Cn")
        ),
        min_size=1,
        max_size=10,
    ).filter(  # local parts are taken as written: in NFC, none reading as ASCII (U+FF20 is "@"),
        # letters of one of the look-alike scripts at most (Latin, Cyrillic, Greek)
        lambda text: (
            unicodedata.is_normalized("NFC", text)
            and not any(c.isascii() for c in unicodedata.normalize("NFKC", text))
            and len({unicodedata.name(c, "").split(" ")[0] for c in text if c.isalpha()}
                    & {"LATIN", "CYRILLIC", "GREEK"}) <= 1
        )
    ),
    display=header_text,
    subject=header_text,
)
def test_utf8_local_parts_need_and_survive_smtputf8(local: str, display: str, subject: str) -> None:
    recipient = make_address(f"{local}@bücher.example", display_name=display)
    assert recipient.needs_smtputf8
    arguments: dict[str, Any] = {"to": [recipient], "subject": subject, "text_body": "hello"}
    with pytest.raises(RowError, match="SMTPUTF8"):
        build(**arguments)
    built = build(**arguments, smtputf8=True)
    assert built.needs_smtputf8
    assert built.envelope_recipients == (recipient.envelope,)
    assert_wire_form(built.data)
    message = parse(built.data, smtputf8=True)
    assert_addresses(message, "To", [recipient])
    assert str(message["Subject"]) == subject


@settings(max_examples=150, deadline=None)
@given(
    subject=header_text.filter(lambda s: s == s.strip() and "  " not in s),
    text=st.text(
        alphabet=st.characters(
            exclude_categories=["Cs"],
            exclude_characters="\r\x00\x0b\x0c\x1c\x1d\x1e\x85\u2028\u2029",
        ),
        max_size=300,
    ),
    display=st.text(alphabet="abcdeé ZÜ", max_size=20).filter(lambda s: s == s.strip()),
)
def test_same_fields_as_email_message(subject: str, text: str, display: str) -> None:
    """The email package and our builder give a reader the same fields for the same input.

    (Except an empty text: the email package turns it into one empty line, we keep it empty.)
    """
    assume(text)
    recipient = make_address("rcpt@example.org", display_name=display)
    ours = parse(build(to=[recipient], subject=subject, text_body=text).data)
    reference = EmailMessage()
    reference["From"] = "sender@example.com"
    reference["To"] = recipient.formatted
    reference["Subject"] = subject
    reference.set_content(text)
    theirs = parse(reference.as_bytes(policy=policy.SMTP))
    assert str(ours["Subject"]) == str(theirs["Subject"])
    assert address_pairs(ours, "To") == address_pairs(theirs, "To")
    assert ours.get_content() == theirs.get_content().replace("\n", "\r\n").replace(
        "\r\r\n", "\r\n"
    )


@settings(max_examples=300, deadline=None)
@given(
    st.binary(max_size=2_000)
    | st.integers(0, 600_000).map(lambda n: random.Random(n).randbytes(n))  # 256-line blocks
)
def test_base64_parts_are_the_standard_encoding_in_76_character_crlf_lines(data: bytes) -> None:
    assert encode_binary(data).data == base64.encodebytes(data).replace(b"\n", b"\r\n")


@PROPERTY_SETTINGS
@given(inner=st.from_regex(r"[A-Za-z0-9 ._-]{0,20}", fullmatch=True))
def test_angle_brackets_around_a_file_name_reach_the_wire(inner: str) -> None:
    """A name such as ``<report>.pdf`` or ``<>`` is written whole in RFC 2231 form, even
    though Python's own parser then drops the enclosing brackets (see as_parsed_filename)."""
    name = f"<{inner}>"
    built = build(
        subject="s",
        text_body="t",
        attachments=[Attachment(filename=name, content=b"x", content_type="text/plain")],
    )
    unfolded = re.sub(rb"\r\n[ \t]", b" ", built.data).decode("ascii")
    found = re.search(r"filename\*=utf-8''([^;\s]*)", unfolded)
    assert found is not None
    assert urllib.parse.unquote(found.group(1)) == name.strip()
