"""Bodies as users really write them, end to end through real servers: .html body files and
HTML documents sent as HTML (and saying so), hand-written text parts beside HTML, inline
images (multipart/related), and optional attachments (an empty cell attaches nothing)."""

from __future__ import annotations

import struct
import zlib
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from export_support import (
    assert_wire_safe,
    by_recipient,
    connect_to,
    only,
    parse,
    server_messages,
    write_csv,
)
from mailconduit import api
from mailconduit.config import export_spec_to_dict, validate_export_spec
from mailconduit.errors import ConfigError
from mailconduit.testing import FaultServer

DOCUMENT = "<!DOCTYPE html>\n<html><body><p>Hello {{ name }}</p></body></html>\n"
PEOPLE = [
    {"email": "ann@example.com", "name": "Ann", "pdf": "ann.pdf", "logo": "logo.png"},
    {"email": "bob@example.com", "name": "Bob <B>", "pdf": "", "logo": ""},
    {"email": "cy@example.com", "name": "Cy", "pdf": "missing.pdf", "logo": "logo.png"},
]


def png(width: int = 2, height: int = 2) -> bytes:
    """A real PNG image (grey pixels), as a logo file would be."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return (
            struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
        )

    rows = b"".join(b"\x00" + b"\x80" * width for _ in range(height))
    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(rows))
        + chunk(b"IEND", b"")
    )


LOGO = png()
#: The structure of an HTML message with a text part, an inline image and an attachment.
WITH_LOGO_AND_PDF = (
    "multipart/mixed",
    [("multipart/alternative", ["text/plain", ("multipart/related", ["text/html", "image/png"])]),
     "application/pdf"],
)  # fmt: skip


@pytest.fixture
def files(tmp_path: Path) -> Path:
    folder = tmp_path / "files"
    folder.mkdir()
    (folder / "logo.png").write_bytes(LOGO)
    (folder / "ann.pdf").write_bytes(b"%PDF-1.4 Ann's invoice")
    return folder


@pytest.fixture
def people(tmp_path: Path) -> Path:
    return write_csv(tmp_path / "people.csv", PEOPLE)


def tree(part: EmailMessage) -> Any:
    """A message's structure: content types, multiparts as (type, [children])."""
    if part.is_multipart():
        return (part.get_content_type(), [tree(p) for p in part.iter_parts()])  # type: ignore[arg-type]
    return part.get_content_type()


def html_of(message: EmailMessage) -> str:
    body = message.get_body(preferencelist=("html",))
    assert isinstance(body, EmailMessage), "no HTML part"
    return str(body.get_content()).replace("\r\n", "\n")


def text_of(message: EmailMessage) -> str:
    body = message.get_body(preferencelist=("plain",))
    assert isinstance(body, EmailMessage), "no text part"
    return str(body.get_content()).replace("\r\n", "\n")


def inline_parts(message: EmailMessage) -> dict[str, tuple[str, bytes]]:
    """Content-ID → (file name, content) of every inline part."""
    out: dict[str, tuple[str, bytes]] = {}
    for part in message.walk():
        if part.get_content_disposition() == "inline" and part["Content-ID"]:
            payload = part.get_payload(decode=True)
            assert isinstance(payload, bytes)
            out[str(part["Content-ID"])] = (part.get_filename() or "", payload)
    return out


def note_lines(output: str) -> list[str]:
    return [line for line in output.splitlines() if "is an HTML document" in line]


# --------------------------------------------------------------------------- which format


@pytest.mark.parametrize(
    "name",
    ["card.html", "card.htm", "CARD.HTML", "card.html.j2", "card.htm.jinja", "card.html.jinja2"],
)
def test_a_body_file_named_html_is_sent_as_html(
    cli: Any, tmp_path: Path, server: FaultServer, target: str, people: Path, name: str
) -> None:
    body = tmp_path / name
    body.write_text("<p>Hello <b>{{ name }}</b></p>\n", encoding="utf-8")
    result = cli("export", str(people), "-c", target, "--to", "{{ email }}", "--subject", "s",
                 "--body-file", str(body), "--limit", "2")  # fmt: skip
    assert result.code == 0, result.output
    assert note_lines(result.output) == []  # the name said it: nothing to explain
    bob = by_recipient(server_messages(server))["bob@example.com"].message
    assert tree(bob) == ("multipart/alternative", ["text/plain", "text/html"])
    assert html_of(bob) == "<p>Hello <b>Bob &lt;B&gt;</b></p>\n"
    assert text_of(bob) == "Hello Bob <B>\n"


@pytest.mark.parametrize(
    "document",
    [
        DOCUMENT,
        "<html lang='en'><body>Hello {{ name }}</body></html>",
        "\ufeff  \n<!doctype HTML><title>x</title>Hello {{ name }}",
        "<?xml version='1.0'?>\n<!-- generated -->\n{# a note #}<HTML>\n<p>Hello {{ name }}</p></HTML>",
        "{%- set greeting = 'Hello' -%}\n{% if true %}<!DOCTYPE html>{% endif %}<p>{{ greeting }} {{ name }}</p>",
        "<!-- x -->\n" * 40 + "<!DOCTYPE html><p>Hello {{ name }}</p>",
    ],
    ids=["doctype", "html-tag", "bom-and-blanks", "xml-and-comments", "template-tags-first",
         "forty-comments"],
)
@pytest.mark.parametrize("given_as", ["--body", "--body-file"])
def test_an_html_document_is_sent_as_html_and_the_output_says_why(
    cli: Any, tmp_path: Path, server: FaultServer, target: str, people: Path, document: str,
    given_as: str,
) -> None:  # fmt: skip
    value = document
    if given_as == "--body-file":
        (tmp_path / "statement.txt").write_text(document, encoding="utf-8")
        value = str(tmp_path / "statement.txt")
    result = cli("export", str(people), "-c", target, "--to", "{{ email }}", "--subject", "s",
                 given_as, value, "--limit", "1")  # fmt: skip
    assert result.code == 0, result.output
    (note,) = note_lines(result.err)
    what = "body file 'statement.txt'" if given_as == "--body-file" else "the body"
    assert note.startswith(f"{what} is an HTML document (it starts with ")
    assert "sent as HTML" in note and "--text" in note
    message = only(server_messages(server)).message
    assert tree(message) == ("multipart/alternative", ["text/plain", "text/html"])
    assert "Hello Ann" in html_of(message) and "Hello Ann" in text_of(message)
    assert "<" not in text_of(message)


def test_the_note_is_in_the_dry_run_output_and_the_json_report(
    cli: Any, tmp_path: Path, people: Path
) -> None:
    out = tmp_path / "out"
    result = cli("export", str(people), "--to", "{{ email }}", "--subject", "s", "--body",
                 DOCUMENT, "--limit", "1", "--dry-run", str(out))  # fmt: skip
    assert result.code == 0, result.output
    assert len(note_lines(result.out)) == 1 and note_lines(result.err) == []
    (eml,) = out.glob("*.eml")
    assert parse(eml.read_bytes()).get_content_type() == "multipart/alternative"
    report = api.export(str(people), connection="local", to="{{ email }}", subject="s",
                        body=DOCUMENT, limit=1)  # fmt: skip
    assert [n for n in report.notes if "is an HTML document" in n] == list(report.notes)
    assert report.to_dict()["notes"] == list(report.notes) and len(report.notes) == 1


@pytest.mark.parametrize(
    ("options", "content_type"),
    [
        (("--body", DOCUMENT, "--text"), "text/plain"),
        (("--text-body", DOCUMENT), "text/plain"),
        (("--body", "<p>Hello {{ name }}</p>"), "text/plain"),  # a fragment is no document
        (("--body", "Hello {{ name }}", "--html"), "multipart/alternative"),
    ],
    ids=["text-flag", "text-body", "fragment", "html-flag"],
)
def test_an_explicit_choice_wins_and_says_nothing(
    cli: Any, server: FaultServer, target: str, people: Path, options: tuple[str, ...],
    content_type: str,
) -> None:  # fmt: skip
    result = cli("export", str(people), "-c", target, "--to", "{{ email }}", "--subject", "s",
                 *options, "--limit", "1")  # fmt: skip
    assert result.code == 0, result.output
    assert note_lines(result.output) == []
    message = only(server_messages(server)).message
    assert message.get_content_type() == content_type
    if content_type == "text/plain":
        assert text_of(message) == options[1].replace("{{ name }}", "Ann") + (
            "" if options[1].endswith("\n") else "\n"
        )


def test_an_html_connection_needs_no_note(
    cli: Any, monkeypatch: pytest.MonkeyPatch, server: FaultServer, people: Path
) -> None:
    name = connect_to(monkeypatch, server.port, name="htmlconn", use_html_body="true")
    result = cli("export", str(people), "-c", name, "--to", "{{ email }}", "--subject", "s",
                 "--body", DOCUMENT, "--limit", "1")  # fmt: skip
    assert result.code == 0 and note_lines(result.output) == []
    assert only(server_messages(server)).message.get_content_type() == "multipart/alternative"


# --------------------------------------------------------------------------- hand-written text


def test_html_body_with_a_hand_written_text_part(
    cli: Any, tmp_path: Path, server: FaultServer, target: str, people: Path
) -> None:
    html = tmp_path / "statement.tpl"
    html.write_text("<h1>Statement</h1><p>Dear {{ name }}</p>\n", encoding="utf-8")
    text = tmp_path / "statement.text"
    text.write_text("STATEMENT\n=========\nDear {{ name }},\n\n-- \nAccounts\n", encoding="utf-8")
    result = cli("export", str(people), "-c", target, "--to", "{{ email }}", "--subject", "s",
                 "--html-body-file", str(html), "--text-body-file", str(text))  # fmt: skip
    assert result.code == 0, result.output
    got = by_recipient(server_messages(server))
    bob = got["bob@example.com"].message
    assert tree(bob) == ("multipart/alternative", ["text/plain", "text/html"])
    assert text_of(bob) == "STATEMENT\n=========\nDear Bob <B>,\n\n-- \nAccounts\n"  # not escaped
    assert html_of(bob) == "<h1>Statement</h1><p>Dear Bob &lt;B&gt;</p>\n"

    # the same as strings, from Python; without the text one, it is made from the HTML
    report = api.export(str(people), connection=target, to="{{ email }}", subject="again",
                        html_body="<p>Hi {{ name }}</p>", text_body="Hi {{ name }}, in text.")  # fmt: skip
    generated = api.export(str(people), connection=target, to="{{ email }}", subject="made",
                           html_body="<p>Hi <i>{{ name }}</i></p>")  # fmt: skip
    assert report.sent == generated.sent == 3
    by_subject = {
        (m.header("Subject"), m.recipients[0]): m.message for m in server_messages(server)
    }
    assert text_of(by_subject["again", "cy@example.com"]) == "Hi Cy, in text.\n"
    assert text_of(by_subject["made", "cy@example.com"]) == "Hi Cy\n"


@pytest.mark.parametrize(
    ("options", "field", "words"),
    [
        (("--body", "b", "--html-body", "<p>h</p>"), "body", "not both"),
        (("--body-file", "x.html", "--text-body", "t"), "body", "not both"),
        (("--html-body", "<p>h</p>", "--html-body-file", "x.html"), "html_body", "not both"),
        (("--text-body", "t", "--text-body-file", "x.txt"), "text_body", "not both"),
        (("--subject", "s"), "body", "is required"),
        (("--html-body", "<p>h</p>", "--text"), "html", "contradicts"),
        (("--text-body", "t", "--html"), "html", "needs an HTML body"),
        (("--text-body", "t", "--inline", "logo=logo.png"), "inline", "need an HTML body"),
        (("--body", "b", "--text", "--inline", "logo=logo.png"), "html", "contradicts"),
        (("--html-body", "h", "--inline", "lo go=logo.png"), "inline", "'lo go'"),
        (("--html-body", "h", "--inline", "logo"), "inline", "NAME=TEMPLATE"),
        (("--html-body", "h", "--inline", "logo="), "inline", "needs a file template"),
        (("--html-body", "h", "--inline", "a=x.png", "--inline", "A=y.png"), "inline", "twice"),
        (("--body", "Hello", "--inline", "logo=logo.png"), "inline", "sent as plain text"),
        (("--html-body-file", "missing.html"), "html_body_file", "missing.html"),
        (
            ("--html-body", "h", "--inline", "logo={{ nope }}"),
            "inline logo",
            "unknown column 'nope'",
        ),
    ],
)
def test_body_mistakes_exit_2_with_one_line_naming_the_field(
    cli: Any, tmp_path: Path, server: FaultServer, target: str, people: Path,
    options: tuple[str, ...], field: str, words: str, files: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:  # fmt: skip
    monkeypatch.chdir(tmp_path)
    (tmp_path / "x.html").write_text("<p>x</p>")
    (tmp_path / "x.txt").write_text("x")
    subject = () if "--subject" in options else ("--subject", "s")
    result = cli("export", str(people), "-c", target, "--to", "{{ email }}", *subject,
                 "--attach-dir", str(files), *options)  # fmt: skip
    assert result.code == 2, result.output
    assert result.out == "" and "Traceback" not in result.err
    (line,) = result.err.strip().splitlines()
    assert f"{field}:" in line and words in line, line
    assert server.session_count == 0


# --------------------------------------------------------------------------- inline images


def test_inline_images_from_the_cli_and_an_empty_cell_means_none(
    cli: Any, tmp_path: Path, server: FaultServer, target: str, people: Path, files: Path
) -> None:
    result = cli("export", str(people), "-c", target, "--to", "{{ email }}", "--subject", "s",
                 "--html-body", '<p>Hi {{ name }}</p><img src="cid:logo" alt="Our logo">',
                 "--text-body", "Hi {{ name }}", "--inline", "logo={{ logo }}",
                 "--attach", "{{ pdf }}", "--attach-dir", str(files))  # fmt: skip
    assert result.code == 1, result.output  # Cy's invoice is missing
    got = by_recipient(server_messages(server))
    assert sorted(got) == ["ann@example.com", "bob@example.com"]
    ann = got["ann@example.com"].message
    assert tree(ann) == WITH_LOGO_AND_PDF
    assert inline_parts(ann) == {"<logo>": ("logo.png", LOGO)}
    assert 'src="cid:logo"' in html_of(ann) and text_of(ann) == "Hi Ann\n"
    assert got["ann@example.com"].attachments() == {"ann.pdf": b"%PDF-1.4 Ann's invoice"}
    # Bob's cells are empty: no image, no attachment; the cid: left in the HTML is no error
    bob = got["bob@example.com"].message
    assert tree(bob) == ("multipart/alternative", ["text/plain", "text/html"])
    assert 'src="cid:logo"' in html_of(bob) and inline_parts(bob) == {}
    for delivered in got.values():
        assert_wire_safe(delivered.raw)
    assert "row 3" in result.out and "missing.pdf" in result.out


def test_inline_images_in_an_interface_file_with_relative_body_files(
    cli: Any, tmp_path: Path, server: FaultServer, target: str, people: Path, files: Path
) -> None:
    folder = tmp_path / "job"
    (folder / "templates").mkdir(parents=True)
    (folder / "templates" / "mail.html").write_text(
        '<p>Dear {{ name }}</p><img src="cid:logo"><img src="cid:sig">', encoding="utf-8"
    )
    (folder / "templates" / "mail.txt").write_text("Dear {{ name }}\n", encoding="utf-8")
    (files / "sig.png").write_bytes(png(3, 1))
    settings: dict[str, Any] = {
        "source": str(people), "connection": target, "to": "{{ email }}", "subject": "s",
        "html_body_file": "templates/mail.html", "text_body_file": "templates/mail.txt",
        "inline": {"logo": "{{ logo }}", "sig": "sig.png"},
        "attach": ["{{ pdf }}"], "attach_dir": str(files), "where": "name <> 'Cy'",
    }  # fmt: skip
    interface = folder / "statements.yaml"
    interface.write_text(yaml.safe_dump({"export": settings}), encoding="utf-8")
    result = cli("run", str(interface))
    assert result.code == 0, result.output
    got = by_recipient(server_messages(server))
    ann, bob = got["ann@example.com"].message, got["bob@example.com"].message
    assert inline_parts(ann) == {"<logo>": ("logo.png", LOGO), "<sig>": ("sig.png", png(3, 1))}
    assert inline_parts(bob) == {"<sig>": ("sig.png", png(3, 1))}
    assert text_of(ann) == "Dear Ann\n"
    assert tree(bob) == (
        "multipart/alternative",
        ["text/plain", ("multipart/related", ["text/html", "image/png"])],
    )


@pytest.mark.parametrize(
    "inline",
    [{"logo": "{{ logo }}"}, ["logo={{ logo }}"], [("logo", "{{ logo }}")], "logo={{ logo }}\n"],
    ids=["mapping", "strings", "pairs", "lines"],
)
def test_inline_images_from_python_in_every_spelling(
    server: FaultServer, target: str, people: Path, files: Path, inline: Any
) -> None:
    report = api.export(str(people), connection=target, to="{{ email }}", subject="s",
                        html_body='<img src="cid:logo">', inline=inline, attach_dir=str(files),
                        limit=1)  # fmt: skip
    assert report.sent == 1
    assert inline_parts(only(server_messages(server)).message) == {"<logo>": ("logo.png", LOGO)}


def test_the_spec_keeps_inline_images_in_the_journal_form() -> None:
    spec = validate_export_spec({"source": "x.csv", "to": "t", "subject": "s",
                                 "html_body": "<p>h</p>", "text_body": "t",
                                 "inline": {"logo": "{{ logo }}", "sig": "sig.png"},
                                 "attach_dir": "files"})  # fmt: skip
    assert spec.inline == (("logo", "{{ logo }}"), ("sig", "sig.png"))
    again = validate_export_spec(
        {k: v for k, v in export_spec_to_dict(spec).items() if v is not None}
    )
    assert again == spec


def test_inline_images_need_the_attachment_folder() -> None:
    with pytest.raises(ConfigError) as caught:
        validate_export_spec({"source": "x.csv", "to": "t", "subject": "s", "html_body": "h",
                              "inline": ["logo=logo.png"]})  # fmt: skip
    assert [e.field for e in caught.value.errors] == ["attach_dir"]


# --------------------------------------------------------------------------- optional attachments


def test_a_missing_file_names_row_columns_and_file_but_no_server_path(
    server: FaultServer, target: str, tmp_path: Path, files: Path
) -> None:
    (files / "2024").mkdir()
    (files / "2024" / "a.pdf").write_bytes(b"%PDF a")
    rows = [
        {"email": "a@example.com", "year": "2024", "file": "a.pdf", "logo": "logo.png"},
        {"email": "b@example.com", "year": "2023", "file": "b.pdf", "logo": "logo.png"},
        {"email": "c@example.com", "year": "2024", "file": "a.pdf", "logo": "gone.png"},
        {"email": "d@example.com", "year": "", "file": "", "logo": ""},
    ]
    report = api.export(str(write_csv(tmp_path / "d.csv", rows)), connection=target,
                        to="{{ email }}", subject="s", html_body='<img src="cid:logo">',
                        attach="{{ year }}{{ '/' if year }}{{ file }}", inline={"logo": "{{ logo }}"},
                        attach_dir=str(files))  # fmt: skip
    states = {r.row_number: r for r in report.rows()}
    assert [states[n].state for n in (1, 2, 3, 4)] == ["sent", "skipped", "skipped", "sent"]
    assert states[2].column == "file, year"
    assert (
        states[2].reply
        == "column file, year: attachment '2023/b.pdf' not found in the attachment folder"
    )
    assert states[3].column == "logo"
    assert "inline image 'logo' file 'gone.png' not found" in states[3].reply
    for row in states.values():
        assert str(files) not in row.reply and str(tmp_path) not in row.reply
    got = by_recipient(server_messages(server))
    assert got["a@example.com"].attachments() == {"a.pdf": b"%PDF a"}
    assert (
        got["d@example.com"].attachments() == {}
        and inline_parts(got["d@example.com"].message) == {}
    )


def test_a_constant_attachment_that_is_missing_blames_no_column(
    server: FaultServer, target: str, people: Path, files: Path
) -> None:
    report = api.export(str(people), connection=target, to="{{ email }}", subject="s", body="b",
                        attach="terms.pdf", attach_dir=str(files), limit=1)  # fmt: skip
    row = only(report.rows())
    assert (row.state, row.column) == ("skipped", "")
    assert row.reply == "attachment 1: attachment 'terms.pdf' not found in the attachment folder"


def test_group_and_table_modes_skip_an_empty_attachment_too(
    server: FaultServer, target: str, tmp_path: Path, files: Path
) -> None:
    # A column a group/table template reads is the same in every row of a message (a
    # column that differs within one is refused before sending: test_export_hostile_data).
    rows = [
        {"manager": "m1@example.com", "pdf": "ann.pdf", "logo": "logo.png", "n": "1"},
        {"manager": "m1@example.com", "pdf": "ann.pdf", "logo": "logo.png", "n": "2"},
        {"manager": "m2@example.com", "pdf": "", "logo": "", "n": "3"},
        {"manager": "m3@example.com", "pdf": "nope.pdf", "logo": "", "n": "4"},
        {"manager": "m2@example.com", "pdf": "", "logo": "", "n": "5"},
    ]
    data = write_csv(tmp_path / "g.csv", rows)
    common: dict[str, Any] = {"connection": target, "subject": "s", "attach": "{{ pdf }}", "attach_dir": str(files),
              "inline": {"logo": "{{ logo }}"}, "body": '<p>Rows</p><img src="cid:logo">',
              "html": True}  # fmt: skip
    grouped = api.export(str(data), mode="group", by="manager", to="{{ group }}", **common)
    assert {r.row_key: r.state for r in grouped.rows()} == {
        "group:m1@example.com": "sent", "group:m2@example.com": "sent",
        "group:m3@example.com": "skipped",
    }  # fmt: skip
    skipped = only(r for r in grouped.rows() if r.state == "skipped")
    assert skipped.column == "pdf" and "'nope.pdf' not found" in skipped.reply
    got = by_recipient(server_messages(server))
    m1, m2 = got["m1@example.com"], got["m2@example.com"]
    assert m1.attachments() == {"ann.pdf": b"%PDF-1.4 Ann's invoice"}
    assert inline_parts(m1.message) == {"<logo>": ("logo.png", LOGO)}
    assert m2.attachments() == {} and inline_parts(m2.message) == {}
    assert "<td>3</td>" in html_of(m2.message)  # the group's table still follows the body

    table = api.export(str(data), mode="table", to="board@example.com", where="n IN ('3', '5')",
                       table_formats=["html", "csv"], **common)  # fmt: skip
    assert table.sent == 1
    board = by_recipient(server_messages(server))["board@example.com"]
    assert list(board.attachments()) == ["data.csv"]
    assert inline_parts(board.message) == {}


# One example = one export through the real test server; a few dozen cover the mixes.
@settings(max_examples=25, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])  # fmt: skip
@given(
    cells=st.lists(
        st.tuples(*[st.sampled_from(["", "  ", "a.pdf", "b.txt", "gone.pdf"])] * 2),
        min_size=1,
        max_size=6,
    )
)
def test_every_row_goes_with_exactly_its_non_empty_attachments_or_names_the_missing_file(
    monkeypatch: pytest.MonkeyPatch, tmp_path_factory: pytest.TempPathFactory,
    cells: list[tuple[str, str]],
) -> None:  # fmt: skip
    folder = tmp_path_factory.mktemp("mix")
    (folder / "a.pdf").write_bytes(b"%PDF A")
    (folder / "b.txt").write_bytes(b"B text\n")
    rows = [
        {"email": f"r{n}@example.com", "first": a, "second": b} for n, (a, b) in enumerate(cells)
    ]
    data = write_csv(folder / "rows.csv", rows)
    with FaultServer() as server:
        name = connect_to(monkeypatch, server.port, name="mix")
        report = api.export(str(data), connection=name, to="{{ email }}", subject="s", body="b",
                            attach=["{{ first }}", "{{ second }}"], attach_dir=str(folder),
                            journal=False)  # fmt: skip
        got = by_recipient(server_messages(server))
    states = {r.row_number: r for r in report.rows()}
    for number, (row, (first, second)) in enumerate(zip(rows, cells, strict=True), 1):
        wanted = [c for c in (first, second) if c.strip()]
        missing = [(column, c) for column, c in (("first", first), ("second", second))
                   if c == "gone.pdf"]  # fmt: skip
        if missing:
            assert row["email"] not in got
            state = states[number]
            assert state.state == "skipped" and state.column == missing[0][0]
            assert f"'{missing[0][1]}' not found" in state.reply
        else:
            message = got[row["email"]]
            files = [(p.get_filename(), p.get_payload(decode=True))
                     for p in message.message.iter_attachments()]  # fmt: skip
            assert files == [(c, (folder / c).read_bytes()) for c in wanted]
            expected_type = "multipart/mixed" if wanted else "text/plain"
            assert message.message.get_content_type() == expected_type
    assert report.sent == len(got) == sum(1 for a, b in cells if "gone.pdf" not in (a, b))


# --------------------------------------------------------------------------- a real Postfix


@pytest.mark.postfix
def test_postfix_receives_html_with_hand_written_text_inline_logo_and_optional_files(
    monkeypatch: pytest.MonkeyPatch, people: Path, files: Path
) -> None:
    from mailconduit.testing import SmtpSink

    with SmtpSink(dump=True) as postfix:
        name = connect_to(monkeypatch, postfix.port, name="postfix")
        report = api.export(str(people), connection=name, to="{{ email }}", subject="Hi {{ name }}",
                            html_body='<p>Hi {{ name }}</p><img src="cid:logo">',
                            text_body="Hi {{ name }} (text)", inline={"logo": "{{ logo }}"},
                            attach="{{ pdf }}", attach_dir=str(files))  # fmt: skip
    assert (report.sent, report.skipped) == (2, 1)
    received: dict[str, EmailMessage] = {}
    for dumped in postfix.dumped():
        lines = dumped.split(b"\n")
        start = next(i for i, line in enumerate(lines) if line.startswith(b"Date: "))
        message = parse(b"\r\n".join(lines[start:]))
        received[str(message["To"])] = message
    assert sorted(received) == ["ann@example.com", "bob@example.com"]
    ann, bob = received["ann@example.com"], received["bob@example.com"]
    assert tree(ann) == WITH_LOGO_AND_PDF
    assert inline_parts(ann) == {"<logo>": ("logo.png", LOGO)}
    assert text_of(ann) == "Hi Ann (text)\n"
    assert html_of(ann) == '<p>Hi Ann</p><img src="cid:logo">\n'
    assert tree(bob) == ("multipart/alternative", ["text/plain", "text/html"])
    assert text_of(bob) == "Hi Bob <B> (text)\n"


@pytest.mark.parametrize("key", ["body", "body_file", "html_body", "text_body", "text_body_file"])
def test_a_body_that_is_not_text_is_a_field_error(key: str) -> None:
    with pytest.raises(ConfigError) as caught:
        validate_export_spec({"source": "x.csv", "to": "t", "subject": "s", key: 5})
    assert (key, "must be text") in [(e.field, e.message) for e in caught.value.errors]


def test_body_files_may_be_paths_and_lose_a_byte_order_mark(
    server: FaultServer, target: str, people: Path, tmp_path: Path
) -> None:
    html = tmp_path / "mail.html"
    html.write_bytes("\ufeff<p>Grüße {{ name }}</p>\n".encode())
    text = tmp_path / "mail.txt"
    text.write_bytes("\ufeffGrüße {{ name }}\n".encode())
    report = api.export(str(people), connection=target, to="{{ email }}", subject="s",
                        html_body_file=html, text_body_file=text, limit=1)  # fmt: skip
    assert report.sent == 1
    message = only(server_messages(server)).message
    assert html_of(message) == "<p>Grüße Ann</p>\n" and text_of(message) == "Grüße Ann\n"


def test_a_body_of_many_comments_is_judged_at_once(people: Path, tmp_path: Path) -> None:
    """Sniffing ``<!DOCTYPE html`` backtracked exponentially over leading comments: 30 of
    them held an export (and a console preview) for minutes. The exports run in a worker
    that must finish within a bounded wait."""
    import threading

    bodies = ["<!-- a --> " * 5000 + "plain", "{% if 1 %} {% endif %}" * 3000 + "plain",
              "<!--" * 16000, "{# x #}" * 5000 + "<html>{{ name }}"]  # fmt: skip
    kinds: list[list[str]] = []
    done = threading.Event()

    def send() -> None:
        for index, body in enumerate(bodies):
            folder = tmp_path / f"dry{index}"
            api.export(str(people), connection="local", to="{{ email }}", subject="s",
                       body=body, dry_run=folder, limit=1, journal=False)  # fmt: skip
            kinds.append([parse(p.read_bytes()).get_content_type() for p in folder.glob("*.eml")])
        done.set()

    threading.Thread(target=send, daemon=True).start()
    assert done.wait(timeout=300)
    assert kinds == [["text/plain"], ["text/plain"], ["text/plain"], ["multipart/alternative"]]


def test_a_body_file_in_utf16_with_a_bom_is_read(
    server: FaultServer, target: str, people: Path, tmp_path: Path
) -> None:
    """Windows editors save "Unicode" text as UTF-16 with a BOM; it was "not UTF-8 text"."""
    body = tmp_path / "mail.txt"
    body.write_bytes("Grüße {{ name }}\n".encode("utf-16"))
    report = api.export(str(people), connection=target, to="{{ email }}", subject="s",
                        body_file=body, limit=1)  # fmt: skip
    assert report.sent == 1
    assert text_of(only(server_messages(server)).message) == "Grüße Ann\n"
