"""EHLO capabilities, envelope commands and message data on the wire (pure functions)."""

from __future__ import annotations

import re

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from mailconduit.config import AuthMechanism
from mailconduit.errors import AddressError
from mailconduit.smtp import Envelope
from mailconduit.smtp.auth import AuthExchange, choose_mechanism
from mailconduit.smtp.esmtp import (
    check_envelope_address,
    dot_starts_a_line,
    mail_command,
    normalise_line_endings,
    parse_ehlo,
    rcpt_command,
    wire_data,
)


def test_parse_ehlo_reads_every_capability() -> None:
    caps = parse_ehlo(
        [
            "mx.example greets you",
            "PIPELINING",
            "SIZE 10240000",
            "STARTTLS",
            "AUTH PLAIN LOGIN CRAM-MD5",
            "AUTH=LOGIN",
            "SMTPUTF8",
            "8BITMIME",
            "ENHANCEDSTATUSCODES",
            "CHUNKING",
            "DSN",
        ]
    )
    assert caps.size == 10240000
    assert caps.max_size == 10240000
    assert caps.auth_mechanisms == ("PLAIN", "LOGIN", "CRAM-MD5")
    assert caps.pipelining and caps.starttls and caps.smtputf8 and caps.eightbitmime
    assert caps.enhanced_status_codes and caps.chunking and caps.dsn
    assert caps.to_dict()["8bitmime"] is True


def test_parse_ehlo_size_without_limit_and_nothing_else() -> None:
    caps = parse_ehlo(["mx", "SIZE"])
    assert caps.size == 0 and caps.max_size == 0
    bare = parse_ehlo(["mx"])
    assert bare.size is None and not bare.pipelining and bare.auth_mechanisms == ()


@pytest.mark.parametrize(
    "address",
    [
        "a@b.example>\r\nRCPT TO:<evil@x.example",
        "a@b.example\nDATA",
        "a@b.example\x00",
        "a b@c.example",
        "<a@b.example>",
        "a@b.example> SIZE=1",
        "a@b.example\t",
    ],
)
def test_unsafe_envelope_addresses_are_refused(address: str) -> None:
    with pytest.raises(AddressError):
        check_envelope_address(address, role="recipient")
    with pytest.raises(AddressError):
        Envelope("ok@example.com", (address,), b"x")
    with pytest.raises(AddressError):
        Envelope(address, ("ok@example.com",), b"x")


def test_envelope_rules() -> None:
    assert Envelope("", ("a@example.com",), b"").recipients == ("a@example.com",)  # null sender
    with pytest.raises(AddressError):
        Envelope("a@example.com", (), b"")
    with pytest.raises(TypeError):
        Envelope("a@example.com", "b@example.com", b"")  # type: ignore[arg-type]
    assert Envelope("a@example.com", ("zoë@example.com",), b"").smtputf8  # needs SMTPUTF8
    assert not Envelope("a@example.com", ("zoe@example.com",), b"").smtputf8


def test_mail_and_rcpt_commands() -> None:
    assert (
        mail_command("a@example.com", size=120, smtputf8=False, eight_bit=True)
        == b"MAIL FROM:<a@example.com> SIZE=120 BODY=8BITMIME\r\n"
    )
    assert (
        mail_command("zoë@example.com", size=None, smtputf8=True, eight_bit=False)
        == "MAIL FROM:<zoë@example.com> SMTPUTF8\r\n".encode()
    )
    assert rcpt_command("b@example.com", smtputf8=False) == b"RCPT TO:<b@example.com>\r\n"


@pytest.mark.parametrize(
    ("data", "wire"),
    [
        (b"", b".\r\n"),
        (b"a\r\nb\r\n", b"a\r\nb\r\n.\r\n"),
        (b"a\r\nb", b"a\r\nb\r\n.\r\n"),
        (b".first\r\n", b"..first\r\n.\r\n"),
        (b"a\r\n.\r\nb\r\n", b"a\r\n..\r\nb\r\n.\r\n"),
        (b"a\n.\nb", b"a\r\n..\r\nb\r\n.\r\n"),
        (b"a\r.\rb", b"a\r\n..\r\nb\r\n.\r\n"),
        (b"x\r\n.", b"x\r\n..\r\n.\r\n"),
        (b"\r\n.\r\n", b"\r\n..\r\n.\r\n"),
        (b"a\r\r\nb", b"a\r\n\r\nb\r\n.\r\n"),
    ],
)
def test_wire_data(data: bytes, wire: bytes) -> None:
    assert wire_data(data) == wire


def test_crlf_data_is_returned_untouched() -> None:
    data = b"Subject: x\r\n\r\nbody\r\n"
    assert normalise_line_endings(data) is data


def _unstuff(wire: bytes) -> bytes:
    """What a receiver keeps (RFC 5321 4.5.2): cut at CRLF.CRLF, drop one leading dot."""
    assert wire.endswith(b".\r\n")
    body = wire[:-3]
    lines = body.split(b"\r\n")
    return b"\r\n".join(line[1:] if line.startswith(b".") else line for line in lines)


@settings(max_examples=500, deadline=None)
@given(
    st.lists(
        st.one_of(
            st.binary(max_size=20),
            st.sampled_from([b".", b"\r", b"\n", b"\r\n", b"\r\n.\r\n", b"\n.\n", b"\r.\r", b".."]),
        ),
        max_size=30,
    ).map(b"".join)
)
def test_dot_stuffing_round_trip(data: bytes) -> None:
    wire = wire_data(data)
    # no line break other than CRLF, and the only CRLF.CRLF is the terminator
    assert re.search(rb"\r(?!\n)|(?<!\r)\n", wire) is None
    assert (b"\r\n" + wire).find(b"\r\n.\r\n") == len(wire) - 3
    expected = normalise_line_endings(data)
    if expected and not expected.endswith(b"\r\n"):
        expected += b"\r\n"
    assert _unstuff(wire) == expected


@settings(max_examples=300, deadline=None)
@given(
    st.lists(
        st.one_of(
            st.sampled_from([b".", b"\r\n", b"\r\n.", b"\n", b"..", b"a.b", b"\r\n\r\n."]),
            st.binary(max_size=8),
            st.integers(0, 12_000).map(lambda n: (b"QUJD" * (n // 4 + 1))[:n]),  # base64-like
        ),
        max_size=80,
    ).map(b"".join)
)
@example(b"a." * 40 + b"\r\n.x")  # more dots than are looked at one by one
@example(b"a." * 40 + b"\r\n")
@example(b"a." * 31 + b"\r\n.")
def test_a_dot_at_a_line_start_is_found_in_messages_of_any_size(data: bytes) -> None:
    """Large messages are searched dot by dot; the answer is the plain search's."""
    assert dot_starts_a_line(data) == (b"\n." in data)
    big = b"QUJD" * 3000
    for padded in (big + data, data + big, big + data + big):
        assert dot_starts_a_line(padded) == (b"\n." in padded)


def test_auth_choice_and_payloads() -> None:
    offered = ["LOGIN", "PLAIN", "CRAM-MD5"]
    assert (
        choose_mechanism(AuthMechanism.AUTO, offered, encrypted=True, cleartext_allowed=False)
        == "CRAM-MD5"
    )
    assert (
        choose_mechanism(
            AuthMechanism.AUTO, ["LOGIN", "PLAIN"], encrypted=True, cleartext_allowed=False
        )
        == "PLAIN"
    )
    # in clear, to a host that is not loopback, only CRAM-MD5 may be used
    assert (
        choose_mechanism(AuthMechanism.AUTO, offered, encrypted=False, cleartext_allowed=False)
        == "CRAM-MD5"
    )
    from mailconduit.errors import AuthenticationError

    with pytest.raises(AuthenticationError, match="unencrypted"):
        choose_mechanism(
            AuthMechanism.AUTO, ["PLAIN", "LOGIN"], encrypted=False, cleartext_allowed=False
        )
    with pytest.raises(AuthenticationError, match="unencrypted"):
        choose_mechanism(AuthMechanism.PLAIN, ["PLAIN"], encrypted=False, cleartext_allowed=False)
    with pytest.raises(AuthenticationError, match=r"offers PLAIN, LOGIN"):
        choose_mechanism(
            AuthMechanism.XOAUTH2, ["PLAIN", "LOGIN"], encrypted=True, cleartext_allowed=False
        )
    with pytest.raises(AuthenticationError, match="offers no AUTH"):
        choose_mechanism(AuthMechanism.AUTO, [], encrypted=True, cleartext_allowed=False)
    plain = AuthExchange("PLAIN", "user", "pässword")
    assert plain.command() == b"AUTH PLAIN AHVzZXIAcMOkc3N3b3Jk\r\n"
    login = AuthExchange("LOGIN", "user", "pw")
    assert login.command() == b"AUTH LOGIN\r\n"
    assert login.respond("VXNlcm5hbWU6") == b"dXNlcg==\r\n"
    assert login.respond("UGFzc3dvcmQ6") == b"cHc=\r\n"
    # RFC 2195's own example
    cram = AuthExchange("CRAM-MD5", "tim", "tanstaaftanstaaf")
    challenge = "PDE4OTYuNjk3MTcwOTUyQHBvc3RvZmZpY2UucmVzdG9uLm1jaS5uZXQ+"
    assert cram.respond(challenge) == b"dGltIGI5MTNhNjAyYzdlZGE3YTQ5NWI0ZTZlNzMzNGQzODkw\r\n"


@given(st.lists(st.binary(max_size=20).map(lambda b: b.replace(b"\r", b"").replace(b"\n", b"")),
                max_size=8))  # fmt: skip
def test_wire_data_of_crlf_data_is_the_same_with_the_shortcut(lines: list[bytes]) -> None:
    """``crlf=True`` (data built by mailconduit.message) skips only a no-op normalisation."""
    from mailconduit.smtp.esmtp import wire_data

    data = b"\r\n".join(lines)
    assert wire_data(data, crlf=True) == wire_data(data)
