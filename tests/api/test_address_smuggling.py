"""Addresses that smuggle (issue 9 §3): a cell is exactly one valid address list, or its row
is refused with the reason; the envelope is exactly the addresses written in the cell.

The oracle of the property tests is the generator itself: a cell is built from fragments
whose addresses (or whose hostility) are known by construction, never from the product's
parser. A hostile fragment is one no context can make valid: it holds a control character,
an encoded-word or a quoted local part, or an opening bracket, quote or parenthesis whose
every possible closing leaves a comment holding '@' or text that cannot follow.
"""

from __future__ import annotations

import email
import email.utils
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from email import policy
from typing import Any, Literal

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from export_support import connect_to, only, server_messages
from mailconduit import api
from mailconduit.address import ENCODED_WORD_REASON
from mailconduit.errors import AddressError
from mailconduit.message import make_address, parse_address_list
from mailconduit.testing import FaultServer

# --------------------------------------------------------------------------- fragments

#: How a domain is written in a cell → how it must appear in the envelope.
DOMAINS = {
    "example.com": "example.com",
    "Example.ORG": "example.org",
    "sub.corp.example": "sub.corp.example",
    "bücher.example": "xn--bcher-kva.example",
    "xn--bcher-kva.example": "xn--bcher-kva.example",
    "[192.0.2.1]": "[192.0.2.1]",
}
LOCALS = st.sampled_from(
    ["ann", "a.b", "x+tag", "o'neil", "a%b", "a!b", "_", "UPPER", "x-y", "z{1}", "zoë", "用户"]
) | st.from_regex(r"[a-z0-9][a-z0-9+_=?-]{0,10}", fullmatch=True).filter(
    lambda local: "=?" not in local
)
#: Display-name words: atoms (dots allowed, as in "J. Smith"), non-ASCII, encoded-word look-alikes.
PHRASE = st.lists(
    st.sampled_from(["Ann", "J.", "Smith", "Zoë", "Ünal", "=?utf-8?q?Zo=C3=AB?=", "O'Neil", "x"]),
    min_size=1,
    max_size=3,
).map(" ".join)
#: Quoted display names: any printable text with the specials; '"' and '\' get escaped.
QUOTED = st.lists(st.sampled_from([*'abc ,;:<>()@[]."\\é=?', "=?utf-8?q?x?="]), max_size=20).map(
    "".join
)
#: Comment text: no '@' (refused there), no parentheses or backslash (kept simple).
COMMENT = st.text(alphabet=st.sampled_from(list('abc ,;:<>".é')), min_size=1, max_size=12)
SEPARATORS = st.sampled_from([", ", ",", "; ", ";", " , ", " ;  ", ", ,"])
#: Every character refused anywhere in a cell: controls but TAB, U+2028, U+2029.
CONTROLS = [chr(c) for c in [*range(0x00, 0x09), *range(0x0A, 0x20), *range(0x7F, 0xA0)]]
CONTROLS += ["\u2028", "\u2029"]


@dataclass(frozen=True)
class Fragment:
    """A piece of a cell and the envelope addresses it stands for; None when hostile."""

    text: str
    rcpts: tuple[str, ...] | None


@st.composite
def mailboxes(draw: st.DrawFn) -> Fragment:
    local = draw(LOCALS)
    domain = draw(st.sampled_from(sorted(DOMAINS)))
    spec = f"{local}@{domain}"
    form = draw(st.sampled_from(["bare", "comment", "name", "quoted", "spaced", "name-comment"]))
    if form == "bare":
        text = spec
    elif form == "comment":
        text = f"{spec} ({draw(COMMENT)})"
    elif form == "name":
        text = f"{draw(PHRASE)} <{spec}>"
    elif form == "quoted":
        quoted = draw(QUOTED).replace("\\", "\\\\").replace('"', '\\"')
        text = f'"{quoted}" <{spec}>'
    elif form == "spaced":
        text = f"< {spec} >"
    else:
        text = f"{draw(PHRASE)} ({draw(COMMENT)}) <{spec}>"
    return Fragment(text, (f"{local}@{DOMAINS[domain]}",))


@st.composite
def groups(draw: st.DrawFn) -> Fragment:
    members = draw(st.lists(mailboxes(), max_size=3))
    text = f"{draw(PHRASE)}: {', '.join(m.text for m in members)};"
    return Fragment(text, tuple(r for m in members for r in m.rcpts or ()))


#: Forms known to smuggle or to be read differently by lenient parsers; each refused
#: whatever surrounds it.
HOSTILE_FORMS = [
    "=?utf-8?q?victim=40evil.example?=@corp.example",
    "=?utf-8?b?dmljdGltQGV2aWwuZXhhbXBsZQ==?=@corp.example",
    "<=?utf-8?q?victim=40evil.example?=@corp.example>",
    "Ann <=?utf-7?q?victim&AEA-evil.example?=@corp.example>",
    "victim=?x?q?y?=@corp.example",
    "ann@=?utf-8?q?evil.example?=",
    "victim@evil.example)<ann@corp.example>",
    "alice@evil.example]<ann@corp.example>",
    "(victim@evil.example <ann@corp.example>",
    '"victim@evil.example <ann@corp.example>',
    "Ann <ann@corp.example",
    "ann@corp.example>",
    "<<ann@corp.example>>",
    "<ann@corp.example> victim@evil.example",
    "Ann <ann@corp.example>victim@evil.example",
    "victim@evil.example<ann@corp.example>",
    '"victim@evil.example"@corp.example',
    '"victim"@corp.example',
    'ann."x"@corp.example',
    "ann(victim)@corp.example",
    "ann@(victim)corp.example",
    "<(x)ann@corp.example>",
    "ann@corp.example (victim@evil.example)",
    "(victim@evil.example) ann@corp.example",
    "<@evil.example:ann@corp.example>",
    "<@evil.example,@relay.example:ann@corp.example>",
    "ann@corp.example@evil.example",
    "ann\\@corp.example",
    "ann@corp.example\\",
    "A: B: ann@corp.example;;",
    "ann@corp.example (x (y)",
    "ann@evil.example>, Ann <ann@corp.example",
    "victim\uff20evil.example@corp.example",
    "victim\ufe6bevil.example@corp.example",
    "a\u037eb@corp.example",
    "ann @corp.example",
    "ann@ corp.example",
    "< ann @corp.example>",
    "Ann ann@corp.example",
]


@st.composite
def hostile(draw: st.DrawFn) -> Fragment:
    kind = draw(st.sampled_from(["form", "control", "encoded-local"]))
    if kind == "form":
        return Fragment(draw(st.sampled_from(HOSTILE_FORMS)), None)
    good = draw(mailboxes())
    if kind == "control":
        at = draw(st.integers(0, len(good.text)))
        control = draw(st.sampled_from(CONTROLS))
        return Fragment(good.text[:at] + control + good.text[at:], None)
    local = draw(LOCALS.filter(str.isascii))
    return Fragment(f"=?utf-8?q?{local}?=@corp.example", None)


@dataclass(frozen=True)
class Cell:
    text: str
    #: Every address in order, as the To header lists them; None when the cell is hostile.
    addresses: tuple[str, ...] | None

    @property
    def envelope(self) -> tuple[str, ...]:
        """What RCPT TO must carry: each address once, in order."""
        return tuple(dict.fromkeys(self.addresses or ()))


@st.composite
def cells(draw: st.DrawFn) -> Cell:
    fragments = draw(st.lists(st.one_of(mailboxes(), groups()), min_size=1, max_size=4))
    if draw(st.booleans()):
        fragments.insert(draw(st.integers(0, len(fragments))), draw(hostile()))
    text = fragments[0].text
    for fragment in fragments[1:]:
        text += draw(SEPARATORS) + fragment.text
    text = draw(st.sampled_from(["", " ", ", "])) + text + draw(st.sampled_from(["", " ", ";"]))
    if any(f.rcpts is None for f in fragments):
        return Cell(text, None)
    return Cell(text, tuple(r for f in fragments for r in f.rcpts or ()))


# --------------------------------------------------------------------------- the parser


@settings(max_examples=1500)
@given(cells())
def test_a_cell_is_read_as_written_or_refused(cell: Cell) -> None:
    try:
        found = parse_address_list(cell.text, field="to")
    except AddressError as exc:
        assert cell.addresses is None, f"{cell.text!r} refused: {exc.message}"
        assert exc.message.startswith("invalid to address ") and ": " in exc.message
        assert exc.address and exc.address in cell.text
        return
    assert cell.addresses is not None, f"{cell.text!r} accepted as {found}"
    assert tuple(a.envelope for a in found) == cell.addresses


@settings(max_examples=500)
@given(cells().filter(lambda cell: cell.addresses is not None))
def test_what_is_accepted_is_written_into_a_header_that_reads_back_the_same(cell: Cell) -> None:
    """The formatted list parses back to the same addresses and names, and the email
    package reads the same addr-specs from it: no display name or comment leaks out."""
    found = parse_address_list(cell.text)
    written = ", ".join(a.formatted for a in found)
    assert parse_address_list(written) == found
    ascii_only = [a for a in found if a.local.isascii()]
    header = ", ".join(a.formatted for a in ascii_only)
    if header:
        reader = email.message_from_string(f"To: {header}\n\n", policy=policy.default)
        got = [a.addr_spec for a in reader["To"].addresses]
        assert got == [a.envelope for a in ascii_only]


@pytest.mark.parametrize("text", HOSTILE_FORMS)
def test_each_known_form_is_refused_alone_and_in_a_list(text: str) -> None:
    for cell in (text, f"ok@example.com, {text}", f"{text}; ok@example.com"):
        with pytest.raises(AddressError, match=r"^invalid cc address "):
            parse_address_list(cell, field="cc")


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("=?utf-8?q?victim=40evil.example?=@corp.example", ENCODED_WORD_REASON),
        ("Ann <=?utf-8?b?dmljdGlt?=@corp.example>", ENCODED_WORD_REASON),
        ("ann@=?utf-8?q?evil.example?=", ENCODED_WORD_REASON),
        ("victim@evil.example)<ann@corp.example>", "')' without an opening '('"),
        ("(victim <ann@corp.example>", "'(' without a closing ')'"),
        ('"victim <ann@corp.example>', "unbalanced double quote"),
        ("Ann <ann@corp.example", "'<' without a closing '>'"),
        ("ann@corp.example>", "'>' without an opening '<'"),
        ("<ann@corp.example> victim@evil.example", "unexpected text after '>'"),
        ("alice@evil.example]<ann@corp.example>", "unexpected text after the address"),
        ("ann@corp.example@evil.example", "more than one @"),
        ('"victim@evil.example"@corp.example', "quoted local parts are refused"),
        ("ann(x)@corp.example", "a comment inside an address"),
        ("<ann@(x)corp.example>", "a comment inside an address"),
        ("ann@corp.example (victim@evil.example)", "comment holding '@'"),
        ("<@evil.example:ann@corp.example>", "source route"),
        ("A: B: ann@corp.example;;", "a group inside a group"),
        ("Team: ann@corp.example", "without its closing ';'"),
        ("(just a comment)", "a comment without an address"),
        ("<a@corp.example <b@corp.example>>", "'<' inside '<...>'"),
        ("victim\uff20evil.example@corp.example", "reads as '@'"),
        ("zoe\u0301@corp.example", "normal form NFC"),
        ("ann\x01@corp.example", "U+0001 (a control character)"),
        ('"Ann\x7f" <ann@corp.example>', "U+007F (a control character)"),
        ("ann@corp.example\u2028", "U+2028 LINE SEPARATOR"),
        ("Ann\udcff <ann@corp.example>", "U+DCFF (a lone surrogate)"),
    ],
)
def test_refusals_say_why(text: str, reason: str) -> None:
    with pytest.raises(AddressError) as caught:
        parse_address_list(f"ok@example.com, {text}", field="to")
    assert reason in caught.value.message, caught.value.message


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ('"Smith, John" <john@example.com>', [("Smith, John", "john@example.com")]),
        ("John Q. Public <jq@example.com>", [("John Q. Public", "jq@example.com")]),
        ('"Ann" B <ab@example.com>', [('"Ann" B', "ab@example.com")]),
        ('"Priya "PJ" Patel" <pj@example.com>', [('Priya "PJ" Patel', "pj@example.com")]),
        ('Priya "PJ" Patel <pj@example.com>', [('Priya "PJ" Patel', "pj@example.com")]),
        ("ann@example.com (Ann Smith)", [("Ann Smith", "ann@example.com")]),
        ("(Sales) Ann <ann@example.com> (Team A)", [("(Sales) Ann", "ann@example.com")]),
        ("李伟 (Li Wei) <li@example.com>", [("李伟 (Li Wei)", "li@example.com")]),
        ("< ann@example.com >", [("", "ann@example.com")]),
        (
            "Team: a@example.com, B <b@example.com>;, c@example.com",
            [("", "a@example.com"), ("B", "b@example.com"), ("", "c@example.com")],
        ),
        ("undisclosed-recipients:;", []),
        ("=?utf-8?q?Zo=C3=AB?= <zoe@example.com>", [("=?utf-8?q?Zo=C3=AB?=", "zoe@example.com")]),
        ('"=?utf-8?q?victim=40evil.example?=" <ann@example.com>',
         [("=?utf-8?q?victim=40evil.example?=", "ann@example.com")]),
        ('"victim@evil.example" <ann@corp.example>', [("victim@evil.example", "ann@corp.example")]),
        ("a=?b@example.com", [("", "a=?b@example.com")]),
        ("user%relay@example.com", [("", "user%relay@example.com")]),
        ("用户@例子.example", [("", "用户@xn--fsqu00a.example")]),
    ],
)  # fmt: skip
def test_valid_but_unusual_forms_are_read_as_written(
    text: str, expected: list[tuple[str, str]]
) -> None:
    assert [(a.display_name, a.envelope) for a in parse_address_list(text)] == expected


@pytest.mark.parametrize(
    "text",
    [
        "victim@evil.example)<ann@corp.example>",
        "alice@evil.example]<ann@corp.example>",
        "victim@evil.example<ann@corp.example>",
        "<ann@corp.example> victim@evil.example",
        "ann@corp.example>",
    ],
)
def test_what_email_utils_reads_leniently_is_refused(text: str) -> None:
    """CVE-2023-27043: the email package reads these as some address (another one than
    getaddresses, or several); the strict grammar refuses them."""
    lenient = {address for _, address in email.utils.getaddresses([text]) if address}
    lenient.add(email.utils.parseaddr(text)[1])
    assert lenient - {""}, "the email package reads an address here"
    with pytest.raises(AddressError):
        parse_address_list(text)


def test_the_stdlib_reader_would_decode_an_encoded_word_local_part() -> None:
    """Why encoded-words in an addr-spec are refused, not sent as written: a reader of
    the To line decodes them into another address."""
    text = "=?utf-8?q?victim=40evil.example?=@corp.example"
    reader = email.message_from_string(f"To: {text}\n\n", policy=policy.default)
    assert reader["To"].addresses[0].addr_spec == '"victim@evil.example"@corp.example'
    with pytest.raises(AddressError, match="encoded-word"):
        parse_address_list(text)
    with pytest.raises(AddressError, match="encoded-word"):
        make_address(text)


# --------------------------------------------------------------------------- through a server


@pytest.fixture(scope="module")
def recording_server() -> Iterator[FaultServer]:
    with FaultServer() as server:
        yield server


def rcpt_commands(server: FaultServer, since: int) -> list[str]:
    commands = [c for s in server.sessions for c in s.commands]
    return [c for c in commands[since:] if c.startswith("RCPT")]


def test_every_cell_ends_sent_to_exactly_its_addresses_or_refused(
    monkeypatch: pytest.MonkeyPatch, recording_server: FaultServer
) -> None:
    server = recording_server
    name = connect_to(monkeypatch, server.port)

    @settings(max_examples=80, deadline=None)
    @given(cells())
    def check(cell: Cell) -> None:
        messages = len(server.messages)
        commands = sum(len(s.commands) for s in server.sessions)
        report = api.export(
            [{"cell": cell.text}], connection=name, to="{{ cell }}", subject="s", body="b",
            journal=False,
        )  # fmt: skip
        if cell.addresses is None or not cell.envelope:
            row = only(report.rows())  # without a journal, the report lists the rows not sent
            assert (report.skipped, row.state) == (1, "skipped"), (cell, row)
            assert row.column == "cell" and row.reply, row
            assert len(server.messages) == messages and not rcpt_commands(server, commands)
            return
        assert report.sent == 1, (cell, list(report.rows()))
        assert rcpt_commands(server, commands) == [f"RCPT TO:<{r}>" for r in cell.envelope]
        message = server.messages[-1]
        assert message.rcpt_tos == cell.envelope
        reader = email.message_from_string(message.data.decode("utf-8"), policy=policy.default)
        assert tuple(a.addr_spec for a in reader["To"].addresses) == cell.addresses

    check()


#: Every field that holds addresses, and how a hostile value reaches it.
FIELDS: dict[str, Any] = {
    "to": {"to": "{{ value }}"},
    "cc": {"to": "ok@example.com", "cc": "{{ value }}"},
    "bcc": {"to": "ok@example.com", "bcc": "{{ value }}"},
    "reply_to": {"to": "ok@example.com", "reply_to": "{{ value }}"},
    "from": {"to": "ok@example.com", "from_": "{{ value }}"},
}


@pytest.mark.parametrize("field", sorted(FIELDS))
def test_every_address_field_refuses_the_hostile_forms(
    monkeypatch: pytest.MonkeyPatch, recording_server: FaultServer, field: str
) -> None:
    server = recording_server
    name = connect_to(monkeypatch, server.port)
    rows = [{"value": text} for text in HOSTILE_FORMS] + [{"value": "Good <good@example.com>"}]
    messages = len(server.messages)
    report = api.export(rows, connection=name, subject="s", body="b", **FIELDS[field])
    results = list(report.rows())
    assert [r.state for r in results] == ["skipped"] * len(HOSTILE_FORMS) + ["sent"]
    for result in results[:-1]:
        assert result.column == "value" and f"{field}" in result.reply, result
    received = server.messages[messages:]
    assert len(received) == 1
    assert "victim" not in repr(received[0]) and "evil" not in repr(received[0])


def _connection(**fields: str) -> dict[str, Any]:
    return {"name": "c", "server_url": "127.0.0.1", "port": 2525, "auth_mechanism": "none",
            **fields}  # fmt: skip


@pytest.mark.parametrize(
    ("field", "value", "words"),
    [
        ("from_address", "=?utf-8?q?victim=40evil.example?=@corp.example", "encoded-word"),
        ("from_address", '"victim@evil.example"@corp.example', "quoted local parts"),
        ("from_address", "Ann <ann@corp.example>", "not a bare address"),
        ("from_address", "ann@corp.example (x)", "not a bare address"),
        ("from_address", "ann@corp.example)", "')' without"),
        ("from_address", "ann@localhost", "no dot"),
        ("from_name", "Ann\x01", "U+0001"),
        ("reply_to", "victim@evil.example)<ann@corp.example>", "')' without"),
        ("reply_to", "ann@corp.example (victim@evil.example)", "comment holding '@'"),
        ("reply_to", " , ", "no address given"),
    ],
)
def test_a_connections_addresses_are_read_by_the_same_grammar(
    field: str, value: str, words: str
) -> None:
    from mailconduit.config import validate_connection
    from mailconduit.errors import ConfigError

    with pytest.raises(ConfigError) as caught:
        validate_connection(_connection(**{field: value}))
    assert [f.field for f in caught.value.errors] == [field]
    assert words in caught.value.errors[0].message, caught.value.errors[0].message


def test_a_connections_unusual_but_valid_addresses_are_kept() -> None:
    from mailconduit.config import validate_connection

    conn = validate_connection(
        _connection(
            from_address="billing+eu@bücher.example",
            from_name='Billing, "EU" (Zoë)',
            reply_to='"Help, desk" <help@example.com>; Team: a@example.com;',
        )
    )
    assert conn.from_address == "billing+eu@bücher.example"


def test_a_hostile_from_address_from_the_environment_is_refused_before_sending(
    cli: Any, monkeypatch: pytest.MonkeyPatch, recording_server: FaultServer, tmp_path: Any
) -> None:
    server = recording_server
    sessions = len(server.sessions)
    monkeypatch.setenv(
        "MAILCONDUIT_CONN_EVIL",
        f"smtp://127.0.0.1:{server.port}?from_address=%3D%3Futf-8%3Fq%3Fvictim%3D40evil.example"
        "%3F%3D%40corp.example",
    )
    data = tmp_path / "one.csv"
    data.write_text("email\nann@example.com\n")
    result = cli("export", str(data), "-c", "evil", "--to", "{{ email }}", "--subject", "s",
                 "--body", "b")  # fmt: skip
    assert result.code == 2, result.output
    assert "from_address" in result.err and "encoded-word" in result.err
    assert "Traceback" not in result.err
    assert len(server.sessions) == sessions


# --------------------------------------------------------------------------- the to-column


#: Export rows in table or group mode (by team) to the column ``who``: the report and the
#: messages the server received.
ToColumnExport = Callable[[list[dict[str, Any]], Literal["table", "group"]], tuple[Any, list[Any]]]


@pytest.fixture
def export_to_column(
    monkeypatch: pytest.MonkeyPatch, recording_server: FaultServer
) -> ToColumnExport:
    """A :data:`ToColumnExport` through the recording server."""
    name = connect_to(monkeypatch, recording_server.port)

    def export(rows: list[dict[str, Any]], mode: Literal["table", "group"]) -> tuple[Any, list[Any]]:
        messages = len(recording_server.messages)
        report = api.export(
            rows, connection=name, mode=mode, by="team" if mode == "group" else "",
            to_column="who", subject="s", body="b",
        )  # fmt: skip
        return report, recording_server.messages[messages:]

    return export


@pytest.mark.parametrize("mode", ["table", "group"])
def test_to_column_cells_are_read_by_the_grammar(
    export_to_column: ToColumnExport, mode: Literal["table", "group"]
) -> None:
    """Display names with commas and groups are whole addresses; every distinct mailbox once."""
    rows: list[dict[str, Any]] = [
        {"team": "a", "who": '"Smith, John" <john@example.com>; ann@example.com'},
        {"team": "a", "who": "Leads: ANN@example.com, zoë@bücher.example;"},
        {"team": "a", "who": None},
    ]
    report, received = export_to_column(rows, mode)
    assert report.sent == 1, list(report.rows())
    (message,) = received
    assert message.rcpt_tos == (
        "john@example.com",
        "ann@example.com",
        "zoë@xn--bcher-kva.example",
    )
    reader = email.message_from_string(message.data.decode("utf-8"), policy=policy.default)
    assert [(a.display_name, a.addr_spec) for a in reader["To"].addresses] == [
        ("Smith, John", "john@example.com"),
        ("", "ann@example.com"),
        ("", "zoë@xn--bcher-kva.example"),
    ]


@pytest.mark.parametrize("mode", ["table", "group"])
def test_a_hostile_to_column_cell_refuses_its_message_naming_the_row(
    export_to_column: ToColumnExport, mode: Literal["table", "group"]
) -> None:
    rows = [
        {"team": "a", "who": "ann@example.com"},
        {"team": "a", "who": "victim@evil.example)<bob@example.com>"},
        {"team": "b", "who": "carl@example.com"},
    ]
    report, received = export_to_column(rows, mode)
    results = {r.row_key: r for r in report.rows()}
    refused = results["table" if mode == "table" else "group:a"]
    assert refused.state == "skipped" and refused.column == "who"
    assert "row 2" in refused.reply and "')' without an opening '('" in refused.reply
    assert [m.rcpt_tos for m in received] == ([] if mode == "table" else [("carl@example.com",)])


def test_the_reply_names_the_entry_as_written() -> None:
    with pytest.raises(AddressError) as caught:
        parse_address_list('Good <g@example.com>, "Bad, one" <b@example.com> x, c@example.com')
    assert caught.value.address == '"Bad, one" <b@example.com> x'
    assert re.search(r"unexpected text after '>'$", caught.value.message)


def test_server_messages_helper_sees_utf8_envelopes(
    monkeypatch: pytest.MonkeyPatch, recording_server: FaultServer
) -> None:
    """An SMTPUTF8 local part goes out exactly as written (NFC), flagged SMTPUTF8."""
    server = recording_server
    name = connect_to(monkeypatch, server.port)
    messages = len(server.messages)
    report = api.export(
        [{"e": "Zoë <zoë.ünal@bücher.example>"}], connection=name, to="{{ e }}", subject="s",
        body="b", journal=False,
    )  # fmt: skip
    assert report.sent == 1
    (message,) = server_messages(server)[messages:]
    assert message.recipients == ("zoë.ünal@xn--bcher-kva.example",) and message.smtputf8


# --------------------------------------------------------------------------- through Postfix

#: Unusual but valid cells and what Postfix must receive: RCPT TO and the To line's
#: (display name, addr-spec) pairs as the email package reads them back.
POSTFIX_VALID = {
    '"Smith, John" <john@example.com>': (["john@example.com"], [("Smith, John", "john@example.com")]),
    "ann@example.com (Ann Smith)": (["ann@example.com"], [("Ann Smith", "ann@example.com")]),
    "Team: a@example.com, b@example.com;": (
        ["a@example.com", "b@example.com"], [("", "a@example.com"), ("", "b@example.com")]
    ),
    '"victim@evil.example" <ann@corp.example>': (
        ["ann@corp.example"], [("victim@evil.example", "ann@corp.example")]
    ),
    '"=?utf-8?q?victim=40evil.example?=" <bob@corp.example>': (
        ["bob@corp.example"], [("=?utf-8?q?victim=40evil.example?=", "bob@corp.example")]
    ),
    "=?utf-8?q?Zo=C3=AB?= <zoe@example.com>": (
        ["zoe@example.com"], [("=?utf-8?q?Zo=C3=AB?=", "zoe@example.com")]
    ),
    "Zoë <zoe@bücher.example>": (
        ["zoe@xn--bcher-kva.example"], [("Zoë", "zoe@xn--bcher-kva.example")]
    ),
    "user%relay@example.com": (["user%relay@example.com"], [("", "user%relay@example.com")]),
    "a=?b@example.com": (["a=?b@example.com"], [("", "a=?b@example.com")]),
}  # fmt: skip


@pytest.mark.postfix
def test_the_catalogue_through_postfix(monkeypatch: pytest.MonkeyPatch) -> None:
    """Known smuggling forms are refused with their reason; unusual valid forms arrive at
    Postfix's smtp-sink with exactly their addresses, and read back the same."""
    from mailconduit.testing import SmtpSink

    rows = [{"email": text} for text in [*HOSTILE_FORMS, *POSTFIX_VALID]]
    with SmtpSink(dump=True) as postfix:
        target = connect_to(monkeypatch, postfix.port, name="postfix")
        report = api.export(rows, connection=target, to="{{ email }}", subject="s", body="b")
    results = list(report.rows())
    for row, result in zip(rows, results, strict=True):
        if row["email"] in POSTFIX_VALID:
            assert result.state == "sent", (row, result.reply)
        else:
            assert result.state == "skipped", (row, result)
            assert result.column == "email" and "invalid to address" in result.reply, result
    received: dict[tuple[str, ...], list[tuple[str, str]]] = {}
    for raw in postfix.dumped():
        dumped = email.message_from_bytes(raw, policy=policy.compat32)
        rcpts = tuple(r.strip("<>") for r in dumped.get_all("X-Rcpt-Args") or [])
        to = email.message_from_bytes(raw, policy=policy.default)["To"]
        received[rcpts] = [(a.display_name, a.addr_spec) for a in to.addresses]
    assert received == {tuple(rcpts): to for rcpts, to in POSTFIX_VALID.values()}
    assert not [r for r in received if "evil" in " ".join(r) or "victim" in " ".join(r)]
