"""The catalogue of broken inputs (issue 3 §6), end to end through the CLI and a real server.

Whole-export problems stop before anything is sent: exit 2, one line naming the file,
template and column, and the server sees no connection at all. Per-row problems skip just
that row (row number, column, reason) while the others go out. No value can add a header
or an SMTP command, and dot lines in a body arrive as the builder documents.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from export_support import (
    assert_wire_safe,
    by_recipient,
    connect_to,
    header_names,
    only,
    server_messages,
    write_csv,
)
from mailconduit import api
from mailconduit.errors import ConfigError, SourceError
from mailconduit.testing import FaultServer, SmtpSink


@pytest.fixture
def good_csv(tmp_path: Path) -> Path:
    return write_csv(
        tmp_path / "people.csv",
        [{"name": "Ann", "email": "ann@example.com"}, {"name": "Bob", "email": "bob@example.com"}],
    )


def export_cli(cli: Any, source: Path | str, target: str, *extra: str) -> Any:
    return cli("export", str(source), "--connection", target, *extra)


def assert_refused(result: Any, server: FaultServer, *words: str) -> None:
    """Exit 2, one line on stderr naming ``words``, nothing on stdout, no SMTP session."""
    assert result.code == 2, result.output
    assert result.out == ""
    lines = result.err.strip().splitlines()
    assert len(lines) == 1, result.err
    for word in words:
        assert word in lines[0], (word, lines[0])
    assert "Traceback" not in result.err
    assert server.session_count == 0 and server.messages == []


# --------------------------------------------------------------------------- before sending


@pytest.mark.parametrize(
    ("name", "content", "words"),
    [
        ("short.csv", b"name,email\nAnn,ann@example.com\nBob\n", ("short.csv:3", "fields")),
        ("zip.csv", b"PK\x03\x04\x14\x00\x00\x00\x08\x00name,email", ("zip.csv", "not a text")),
        ("latin.csv", b"name,email\nZo\xeb,zoe@example.com\n", ("latin.csv:2", "--encoding")),
        ("quote.csv", b'name,email\n"Ann,ann@example.com\n', ("quote.csv", "quote")),
        ("empty.csv", b"", ("empty.csv",)),
        ("dup.csv", b"email,email\na@example.com,b@example.com\n", ("dup.csv", "email")),
        ("broken.json", b'[{"name": "Ann", "email": "ann@example.com"},', ("broken.json",)),
        ("lines.jsonl", b'{"email": "a@example.com"}\n{"email": \n', ("lines.jsonl:2",)),
        ("twice.json", b'[{"email": "ann@example.com", "email": "eve@evil.example"}]',
         ("twice.json:1", "'email' more than once")),
        ("twice.jsonl",
         b'{"email": "a@example.com"}\n\n{"email": "b@example.com", "email": "e@evil.example"}\n',
         ("twice.jsonl:3", "record 2", "'email' more than once")),
    ],
)
def test_a_malformed_source_sends_nothing(
    cli: Any, tmp_path: Path, server: FaultServer, target: str,
    name: str, content: bytes, words: tuple[str, ...],
) -> None:  # fmt: skip
    path = tmp_path / name
    path.write_bytes(content)
    result = export_cli(cli, path, target, "--to", "{{ email }}", "--subject", "s", "--body", "b")
    assert_refused(result, server, *words)


@pytest.mark.parametrize(
    ("content", "words"),
    [
        (b"source: people.csv\nsubject: Ren\xe9\n", ("job.yaml", "0xe9", "not UTF-8")),
        (b"source: people.csv\nconcurrency: " + b"9" * 5000 + b"\n",
         ("job.yaml", "number too long")),
        (b"source: people.csv\nx: " + b"[" * 5000 + b"]" * 5000 + b"\n",
         ("job.yaml", "nested too deeply")),
        (b"export: [1, 2]\n", ("job.yaml", "expected a mapping")),
        (b"export: text\n", ("job.yaml", "expected a mapping")),
    ],
)  # fmt: skip
def test_an_interface_file_that_cannot_be_read_is_one_line(
    cli: Any, tmp_path: Path, server: FaultServer, content: bytes, words: tuple[str, ...]
) -> None:
    """Not UTF-8, a number Python will not read, nesting past the recursion limit: each was a
    traceback from ``mailconduit run``."""
    job = tmp_path / "job.yaml"
    job.write_bytes(content)
    assert_refused(cli("run", str(job)), server, *words)


def test_a_bad_row_late_in_a_file_still_sends_nothing(
    cli: Any, tmp_path: Path, server: FaultServer, target: str
) -> None:
    """The whole source is checked before the first message: no half-sent export."""
    lines = [f"Name {i},user{i}@example.com" for i in range(500)] + ["Broken row"]
    path = tmp_path / "late.csv"
    path.write_text("name,email\n" + "\n".join(lines) + "\n", encoding="utf-8")
    result = export_cli(cli, path, target, "--to", "{{ email }}", "--subject", "s", "--body", "b")
    assert_refused(result, server, "late.csv:502")


def test_a_missing_source_file(cli: Any, tmp_path: Path, server: FaultServer, target: str) -> None:
    missing = tmp_path / "nowhere.csv"
    result = export_cli(cli, missing, target, "--to", "{{email}}", "--subject", "s", "--body", "b")
    assert_refused(result, server, "nowhere.csv", "no such file")


@pytest.mark.parametrize(
    ("options", "words"),
    [
        (("--to", "{{ emial }}", "--subject", "s", "--body", "b"),
         ("people.csv", "template to", "'emial'", "did you mean 'email'")),
        (("--to", "{{ email }}", "--subject", "Hi {{ nmae }}", "--body", "b"),
         ("people.csv", "subject", "'nmae'")),
        (("--to", "{{ email }}", "--subject", "s", "--body", "{{ row['phone'] }}"),
         ("people.csv", "body", "'phone'")),
        (("--to", "{{ email }}", "--subject", "s", "--body", "b", "--header", "X-Id: {{ id }}"),
         ("people.csv", "X-Id", "'id'")),
        (("--to", "{{ email }}", "--subject", "{{ name", "--body", "b"),
         ("subject", "syntax error")),
        (("--to", "{{ email }}", "--subject", "s", "--body", "{% for x in rows %}"),
         ("body", "syntax error")),
        (("--to", "{{ email }}", "--subject", "s", "--body", "{{ ''.__class__.__mro__ }}"),
         ("body", "sandbox", "__mro__")),
        (("--to", "{{ email }}", "--subject", "s", "--body", "{{ name|attr('_' ~ '_class__') }}"),
         ("body", "sandbox")),
        (("--to", "{{ email }}", "--subject", "s", "--body", "{% include 'x.txt' %}"),
         ("body", "include")),
        (("--to", "{{ email }}", "--subject", "s", "--body", "{{ 'x' * 100000000 }}"),
         ("body",)),
        (("--to", "{{ email }}", "--subject", "s", "--mode", "group", "--by", "city", "--body", "b"),
         ("city", "people.csv")),
        (("--to", "{{ email }}", "--subject", "s", "--body-file", "no-such-body.txt"),
         ("no-such-body.txt",)),
        # a line break written in a header template: every row was skipped, one by one
        (("--to", "{{ email }}", "--subject", "Hi {{ name }}\r\nBcc: eve@evil.example",
          "--body", "b"), ("subject", "LINE FEED", "template's own text")),
        (("--to", "{{ email }},\nboss@example.com", "--subject", "s", "--body", "b"),
         ("template to", "LINE FEED")),
        (("--to", "{{ email }}", "--subject", "s", "--body", "b", "--header",
          "X-Note: {% if name %}a\u2028b{% endif %}"), ("X-Note", "LINE SEPARATOR")),
    ],
)  # fmt: skip
def test_a_template_problem_sends_nothing(
    cli: Any, good_csv: Path, server: FaultServer, target: str,
    options: tuple[str, ...], words: tuple[str, ...],
) -> None:  # fmt: skip
    result = export_cli(cli, good_csv, target, *options)
    assert_refused(result, server, *words)


def test_the_python_api_raises_before_sending(
    good_csv: Path, server: FaultServer, target: str
) -> None:
    with pytest.raises(ConfigError, match="emial"):
        api.export(str(good_csv), connection=target, to="{{ emial }}", subject="s", body="b")
    with pytest.raises(SourceError, match=r"nowhere\.csv"):
        api.export("nowhere.csv", connection=target, to="{{ email }}", subject="s", body="b")
    assert server.session_count == 0


# --------------------------------------------------------------------------- per row

CATALOGUE: list[tuple[dict[str, str], str, str]] = [
    # (row, column named in the report, words of the reason)
    ({"email": "a@"}, "email", "no domain"),
    ({"email": "a b@c.example"}, "email", "space"),
    ({"email": '"x@evil y"@corp.example'}, "email", "quoted local part"),
    ({"email": "x" * 65 + "@example.com"}, "email", "longer than 64"),
    ({"email": "user@" + "d" * 64 + ".example"}, "email", ""),
    ({"email": ""}, "email", "no recipient"),
    ({"email": "   "}, "email", "no recipient"),
    ({"email": "<>"}, "email", ""),
    ({"email": "a@b@example.com"}, "email", ""),
    ({"subject": "Hi\r\nBcc: victim@evil.example"}, "subject", "CARRIAGE RETURN"),
    ({"subject": "Hi\nX-Injected: yes"}, "subject", "LINE FEED"),
    ({"subject": "Hi\rX-Injected: yes"}, "subject", "CARRIAGE RETURN"),
    ({"subject": "Hi\u2028X-Injected: yes"}, "subject", "LINE SEPARATOR"),
    ({"subject": "Hi\u2029X-Injected: yes"}, "subject", "PARAGRAPH SEPARATOR"),
    ({"subject": "Hi\x85X-Injected: yes"}, "subject", "NEXT LINE"),
    ({"subject": "Hi\x00there"}, "subject", "NUL"),
    ({"email": "ok@example.com\r\nRCPT TO:<victim@evil.example>"}, "email", "CARRIAGE RETURN"),
    ({"email": "ok@example.com>\r\nDATA"}, "email", ""),
    ({"name": "Evil\r\nBcc: victim@evil.example"}, "name", "CARRIAGE RETURN"),
    ({"tag": "v\r\nX-Injected: yes"}, "tag", "CARRIAGE RETURN"),
    ({"subject": "x" * 20_000}, "", "longer than the limit"),
    ({"repeat": "100000000"}, "", "sandbox"),
]
GOOD = {"email": "good@example.com", "name": "Good", "subject": "Hello", "tag": "t", "repeat": "2",
        "file": "report.txt"}  # fmt: skip


def test_per_row_problems_skip_that_row_and_the_others_go_on(
    tmp_path: Path, server: FaultServer, target: str
) -> None:
    rows: list[dict[str, str]] = []
    for n, (bad, _, _) in enumerate(CATALOGUE):
        rows.append({**GOOD, "email": f"good{n}@example.com"})
        rows.append({**GOOD, "email": f"bad{n}@example.com", **bad})
    data = tmp_path / "catalogue.json"  # JSON holds any character, even NUL
    data.write_text(json.dumps(rows), encoding="utf-8")
    report = api.export(
        str(data),
        connection=target,
        to="{{ email }}",
        reply_to="{{ name }} <replies@example.com>",
        subject="{{ subject }}",
        body="{{ 'ab' * (repeat|int) }}",
        headers={"X-Tag": "{{ tag }}"},
    )
    results = list(report.rows())
    assert len(results) == 2 * len(CATALOGUE)
    for n, (bad, column, words) in enumerate(CATALOGUE):
        good, skipped = results[2 * n], results[2 * n + 1]
        assert good.state == "sent", good
        assert skipped.state == "skipped", (bad, skipped)
        assert skipped.row_number == 2 * n + 2
        if column:
            assert skipped.column == column, (bad, skipped)
        assert words in skipped.reply, (bad, skipped.reply)
    assert report.sent == len(CATALOGUE) and report.skipped == len(CATALOGUE)
    assert report.status == "finished" and not report.ok

    received = server_messages(server)
    assert sorted(m.recipients for m in received) == sorted(
        (f"good{n}@example.com",) for n in range(len(CATALOGUE))
    )
    commands = [c for s in server.sessions for c in s.commands]
    assert not [c for c in commands if "victim" in c or "bad" in c]
    assert [c.split()[0] for c in commands].count("DATA") == len(CATALOGUE)
    for message in received:
        assert_wire_safe(message.raw)
        assert b"victim" not in message.raw and b"X-Injected" not in message.raw
        assert header_names(message.raw) == [
            "Date", "From", "Reply-To", "To", "Subject", "Message-ID", "MIME-Version", "X-Tag",
            "Content-Type", "Content-Transfer-Encoding",
        ]  # fmt: skip


def test_attachment_problems_skip_the_row(tmp_path: Path, server: FaultServer, target: str) -> None:
    files = tmp_path / "files"
    files.mkdir()
    (files / "report.txt").write_text("the report\n")
    (tmp_path / "secret.txt").write_text("SECRET")
    (files / "link.txt").symlink_to(tmp_path / "secret.txt")
    names = ["report.txt", "missing.txt", "../secret.txt", "/etc/passwd", "link.txt",
             "sub/../../secret.txt", "report.txt\r\nX-Injected: yes", "report.txt"]  # fmt: skip
    data = write_csv(
        tmp_path / "files.csv",
        [{"email": f"user{n}@example.com", "file": name} for n, name in enumerate(names)],
    )
    report = api.export(
        str(data),
        connection=target,
        to="{{ email }}",
        subject="Your file",
        body="attached",
        attach="{{ file }}",
        attach_dir=str(files),
    )
    states = [(r.row_number, r.state) for r in report.rows()]
    assert states == [(1, "sent"), *((n, "skipped") for n in range(2, 8)), (8, "sent")]
    reasons = [r.reply for r in report.rows()][1:7]
    assert "not found" in reasons[0]
    assert ".." in reasons[1] and "absolute" in reasons[2] and "outside" in reasons[3]
    assert "CARRIAGE RETURN" in reasons[5]
    received = server_messages(server)
    assert sorted(m.recipients for m in received) == [
        ("user0@example.com",),
        ("user7@example.com",),
    ]
    for message in received:
        assert message.attachments() == {"report.txt": b"the report\n"}
        assert b"SECRET" not in message.raw and b"root:" not in message.raw


@pytest.mark.parametrize(
    ("options", "row"),
    [
        pytest.param(
            {"attach": "{{ file }}"},
            {"email": "a@example.com", "file": "missing.txt", "subject": "s"},
            id="missing-attachment",
        ),
        pytest.param(
            {"attach": "{{ file }}"},
            {"email": "a@example.com", "file": "../up.txt", "subject": "s"},
            id="attachment-traversal",
        ),
        pytest.param(
            {},
            {"email": "a@example.com", "file": "x", "subject": "x" * 20_000},
            id="huge-subject",
        ),
        pytest.param(
            {"to": "{{ subject }} <{{ email }}>"},
            {"email": "a@", "file": "x", "subject": "Ann"},
            id="address-built-from-two-columns",
        ),
    ],
)
def test_row_errors_name_the_column(
    tmp_path: Path, server: FaultServer, target: str, options: dict[str, str],
    row: dict[str, str],
) -> None:  # fmt: skip
    files = tmp_path / "files"
    files.mkdir()
    data = write_csv(
        tmp_path / "f.csv", [{"email": "ok@example.com", "file": "x", "subject": "s"}, row]
    )
    (files / "x").write_text("x")
    settings: dict[str, Any] = {"to": "{{ email }}", "subject": "{{ subject }}", "body": "b", **options}
    report = api.export(str(data), connection=target, attach_dir=str(files), **settings)
    skipped = only(r for r in report.rows() if r.state == "skipped")
    wrong = {"a@": "email", "missing.txt": "file", "../up.txt": "file"}
    assert skipped.column == wrong.get(row["email"], wrong.get(row["file"], "subject"))


# --------------------------------------------------------------------------- dot lines

#: No lone CR: goes out as lines, every line CRLF-terminated (message/transfer.py).
DOT_LINES = ".\n..\n. \n.\nfoo\n.\n\n.\n.\r\n.\r\n...\n.end\n."
#: Lone CRs: goes out base64 and decodes to exactly these bytes.
DOT_CRS = "a\r.\rb\n.\n\r\n.\r\n.\r.\r"


def test_dot_lines_arrive_intact_through_aiosmtpd(
    tmp_path: Path, server: FaultServer, target: str
) -> None:
    data = tmp_path / "dots.json"
    data.write_text(
        json.dumps(
            [
                {"email": "one@example.com", "body": DOT_LINES},
                {"email": "two@example.com", "body": DOT_CRS},
                {"email": "three@example.com", "body": "after"},
            ]
        )
    )
    report = api.export(
        str(data), connection=target, to="{{ email }}", subject="dots", body="{{ body }}"
    )
    assert report.sent == 3
    got = by_recipient(server_messages(server))
    one, two, three = (got[f"{n}@example.com"] for n in ("one", "two", "three"))
    assert (
        one.text_bytes() == DOT_LINES.replace("\r\n", "\n").replace("\n", "\r\n").encode() + b"\r\n"
    )
    assert two.text_bytes() == DOT_CRS.encode()
    assert three.text() == "after\n"
    # each message was one transaction: no early end of DATA, no extra command
    commands = [c.split()[0] for s in server.sessions for c in s.commands]
    assert commands.count("MAIL") == 3 and commands.count("DATA") == 3
    assert set(commands) <= {"EHLO", "MAIL", "RCPT", "DATA", "RSET", "NOOP", "QUIT"}


@pytest.mark.postfix
def test_dot_lines_arrive_intact_through_postfix(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    data = tmp_path / "dots.json"
    data.write_text(json.dumps([{"email": "one@example.com", "body": DOT_LINES}]))
    with SmtpSink(dump=True) as postfix:
        target = connect_to(monkeypatch, postfix.port, name="postfix")
        report = api.export(
            str(data), connection=target, to="{{ email }}", subject="dots", body="{{ body }}"
        )
    assert report.sent == 1
    assert postfix.counters()["messages"] == 1
    dumped = only(postfix.dumped())
    # smtp-sink writes the message as received (dot-unstuffed), LF-terminated
    # and ends it with an empty line of its own
    body = dumped.split(b"\n\n", 1)[1]
    assert body == (DOT_LINES.replace("\r\n", "\n") + "\n\n").encode()


# --------------------------------------------------------------------------- more inputs


def test_a_bom_and_quoted_newlines_are_data_not_errors(
    tmp_path: Path, server: FaultServer, target: str
) -> None:
    data = tmp_path / "bom.csv"
    data.write_bytes(
        "\ufeffemail,note\r\n"
        'ann@example.com,"two\r\nlines, and a comma"\r\n'
        'bob@example.com,"say ""hi"""\r\n'.encode()
    )
    report = api.export(
        str(data), connection=target, to="{{ email }}", subject="s", body="{{ note }}"
    )
    assert report.sent == 2
    got = by_recipient(server_messages(server))
    assert got["ann@example.com"].text() == "two\nlines, and a comma\n"
    assert got["bob@example.com"].text() == 'say "hi"\n'


def test_stdin_is_a_source(cli: Any, server: FaultServer, target: str) -> None:
    result = cli(
        "export", "-", "-c", target, "--to", "{{ email }}", "--subject", "from stdin",
        "--body", "{{ n }}", stdin="email,n\nann@example.com,1\nbob@example.com,2\n",
    )  # fmt: skip
    assert result.code == 0, result.output
    got = by_recipient(server_messages(server))
    assert {a: m.text() for a, m in got.items()} == {
        "ann@example.com": "1\n",
        "bob@example.com": "2\n",
    }


_ANY_TEXT = st.text(st.characters(exclude_categories=["Cs"]), max_size=60)
_SHORT_TEXT = st.text(st.characters(exclude_categories=["Cs"]), max_size=10)


def test_any_row_values_parse_back_with_no_header_injected(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Whatever a row holds, the message either parses back to exactly those values or the
    row is skipped; it never carries a header or a recipient that was not asked for."""
    with FaultServer() as server:
        name = connect_to(monkeypatch, server.port)

        @settings(max_examples=40, deadline=None)
        # Display names stay short enough for one encoded-word: Python's address parser puts
        # a space between two adjacent encoded-words of a phrase (RFC 2047 says to drop it),
        # even in what its own generator writes, so a longer name would not compare equal.
        @given(display=_SHORT_TEXT, subject=_ANY_TEXT, tag=_ANY_TEXT, body=st.text(max_size=200))
        def check(display: str, subject: str, tag: str, body: str) -> None:
            before = len(server.messages)
            row = {"email": "someone@example.com", "display": display, "subject": subject,
                   "tag": tag, "body": body}  # fmt: skip
            report = api.export(
                [row], connection=name, to='"{{ display }}" <{{ email }}>',
                subject="{{ subject }}", body="{{ body }}", headers={"X-Tag": "{{ tag }}"},
                journal=False,
            )  # fmt: skip
            if report.sent == 0:
                assert report.skipped == 1 and len(server.messages) == before
                return
            message = server_messages(server)[-1]
            assert message.recipients == ("someone@example.com",)
            assert_wire_safe(message.raw)
            assert header_names(message.raw) == [
                "Date", "From", "To", "Subject", "Message-ID", "MIME-Version", "X-Tag",
                "Content-Type", "Content-Transfer-Encoding",
            ]  # fmt: skip
            assert message.header("Subject") == subject
            assert message.header("X-Tag") == tag
            to = message.message["To"].addresses[0]
            assert to.addr_spec == "someone@example.com"
            # a display name is a phrase: runs of white space read as one space, and inside
            # the template's quotes a backslash escapes the next character (RFC 5322)
            unescaped = re.sub(r"\\(.)", r"\1", display, flags=re.DOTALL)
            assert to.display_name == " ".join(unescaped.split())

        check()
