"""Reply parsing and classification (pure functions, RFC 5321 4.2 and RFC 3463)."""

from __future__ import annotations

import pickle

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mailconduit.errors import (
    AuthenticationError,
    PermanentSMTPError,
    RecipientRefusedError,
    ThrottledError,
    TransientSMTPError,
)
from mailconduit.smtp.replies import (
    MalformedReplyError,
    Reply,
    ReplyAction,
    ReplyParser,
    classify,
    closes_session,
    error_for,
    is_throttling,
)


def test_single_and_multiline_replies_in_one_chunk() -> None:
    parser = ReplyParser()
    replies = parser.feed(b"250-mx.example\r\n250-PIPELINING\r\n250 SIZE 1000\r\n354 go\r\n")
    assert [r.code for r in replies] == [250, 354]
    assert replies[0].lines == ("mx.example", "PIPELINING", "SIZE 1000")
    assert replies[1].text == "go"
    assert not parser.has_partial


def test_replies_split_across_reads_at_every_byte() -> None:
    wire = b"220 mx ready\r\n250-a\r\n250 b\r\n451 4.3.0 later\r\n"
    for cut in range(1, len(wire)):
        parser = ReplyParser()
        replies = parser.feed(wire[:cut]) + parser.feed(wire[cut:])
        assert [(r.code, r.lines) for r in replies] == [
            (220, ("mx ready",)),
            (250, ("a", "b")),
            (451, ("4.3.0 later",)),
        ], cut


def test_bare_lf_and_code_only_lines_are_accepted() -> None:
    replies = ReplyParser().feed(b"250\n221 bye\n")
    assert [(r.code, r.text) for r in replies] == [(250, ""), (221, "bye")]


@pytest.mark.parametrize(
    "garbage",
    [
        b"\x15\x03\x03\x00\x02\x02\x28",  # a TLS alert: implicit TLS port spoken to in clear
        b"HTTP/1.1 400 Bad Request\r\n",
        b"25x ok\r\n",
        b"250ok\r\n",
        b"ab",
    ],
)
def test_garbage_is_refused_at_once(garbage: bytes) -> None:
    with pytest.raises(MalformedReplyError):
        ReplyParser().feed(garbage)


def test_multiline_reply_with_changing_code_is_malformed() -> None:
    with pytest.raises(MalformedReplyError):
        ReplyParser().feed(b"250-a\r\n251 b\r\n")


def test_endless_line_is_malformed() -> None:
    parser = ReplyParser()
    with pytest.raises(MalformedReplyError):
        for _ in range(10):
            parser.feed(b"250 " + b"x" * 1000)


@given(
    text=st.text(st.characters(codec="utf-8", exclude_characters="\r\n"), max_size=60),
    cut=st.integers(1, 80),
)
def test_reply_text_never_carries_a_control_character(text: str, cut: int) -> None:
    """A peer's banner or reply is printed by the CLI and shown by the console: an ESC or a
    NUL in it once reached the terminal raw. Every reply text is printable, however the bytes
    arrive, and printable text is kept as sent."""
    data = b"220 " + text.encode("utf-8") + b"\r\n"
    parser = ReplyParser()
    replies = parser.feed(data[:cut]) + parser.feed(data[cut:])
    assert len(replies) == 1
    shown = replies[0].text
    assert shown.isprintable()
    if text.isprintable():
        assert shown == text
    else:
        assert "\\x" in shown


def test_a_terminal_escape_is_shown_escaped() -> None:
    reply = ReplyParser().feed(b"220 \x1b]0;owned\x07\x1b[2J ok\r\n")[0]
    assert reply.text == "\\x1b]0;owned\\x07\\x1b[2J ok"


def test_an_overlong_line_is_malformed_in_one_read_too() -> None:
    """8 KiB was the limit of a line split over reads only; in one read any length passed."""
    with pytest.raises(MalformedReplyError):
        ReplyParser().feed(b"220 " + b"A" * 100_000 + b"\r\n")


def test_enhanced_status_and_message() -> None:
    reply = Reply(550, ("5.1.1 <x@example.com>: Recipient address rejected", "second line"))
    assert reply.enhanced == "5.1.1"
    assert reply.message == "<x@example.com>: Recipient address rejected\nsecond line"
    assert Reply(250, ("Ok",)).enhanced == ""
    # an enhanced code of another class than the reply code is not taken as one
    assert Reply(250, ("5.1.1 odd",)).enhanced == ""
    assert Reply(451, ("4.7.1 greylisted",)).enhanced == "4.7.1"


@pytest.mark.parametrize(
    ("code", "enhanced", "text", "action"),
    [
        (250, "2.0.0", "Ok", ReplyAction.SUCCESS),
        (354, "", "go ahead", ReplyAction.SUCCESS),
        (421, "4.7.0", "too many connections", ReplyAction.THROTTLE),
        (421, "", "closing", ReplyAction.THROTTLE),
        (450, "4.7.1", "greylisted, try later", ReplyAction.THROTTLE),
        (451, "", "Rate limit exceeded, slow down", ReplyAction.THROTTLE),
        (452, "4.5.3", "Error: too many recipients", ReplyAction.RETRY),
        (452, "", "too many recipients", ReplyAction.RETRY),
        (451, "4.3.0", "temporary failure", ReplyAction.RETRY),
        (450, "", "mailbox busy", ReplyAction.RETRY),
        (550, "5.1.1", "no such user", ReplyAction.FAIL_ROW),
        (552, "5.3.4", "message too big", ReplyAction.FAIL_ROW),
        (554, "5.7.1", "relay denied", ReplyAction.FAIL_ROW),
        (535, "5.7.8", "bad credentials", ReplyAction.ABORT_RUN),
        (534, "5.7.9", "use an app password", ReplyAction.ABORT_RUN),
        (530, "5.7.0", "authentication required", ReplyAction.ABORT_RUN),
    ],
)
def test_classify(code: int, enhanced: str, text: str, action: ReplyAction) -> None:
    assert classify(code, enhanced, text) is action


def test_throttling_and_closing() -> None:
    assert is_throttling(421)
    assert not is_throttling(550, "", "too many connections")  # 5xx never throttles
    assert closes_session(421)
    assert not closes_session(451)


@pytest.mark.parametrize(
    ("reply", "refused", "cls"),
    [
        (Reply(421, ("4.7.0 slow down",)), False, ThrottledError),
        (Reply(451, ("4.3.0 later",)), False, TransientSMTPError),
        (Reply(550, ("5.1.1 unknown",)), True, RecipientRefusedError),
        (Reply(552, ("5.3.4 too big",)), False, PermanentSMTPError),
        (Reply(535, ("5.7.8 no",)), False, AuthenticationError),
    ],
)
def test_error_for_maps_to_the_error_tree(reply: Reply, refused: bool, cls: type) -> None:
    error = error_for(reply, command="RCPT TO", host="mx.example", recipient_refused=refused)
    assert type(error) is cls
    assert (error.code, error.enhanced, error.command, error.host) == (
        reply.code,
        reply.enhanced,
        "RCPT TO",
        "mx.example",
    )
    assert reply.enhanced not in error.reply  # the text without the status prefix
    clone = pickle.loads(pickle.dumps(error))
    assert type(clone) is cls and str(clone) == str(error)
