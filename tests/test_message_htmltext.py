"""The HTML to plain-text converter behind the generated text part."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mailconduit.message import html_to_text


def test_a_typical_mail_body_reads_well() -> None:
    html = """<html><head><title>Invoice</title><style>p { color: red }</style></head>
    <body><h1>Hello &amp; welcome</h1>
    <p>Dear <b>Zoë</b>,<br>your   invoice
    is ready: <a href="https://example.com/i/1">view invoice</a>.</p>
    <script>alert(1)</script>
    <p>Regards,<br>Billing</p></body></html>"""
    assert html_to_text(html) == (
        "Hello & welcome\n\n"
        "Dear Zoë,\nyour invoice is ready: view invoice (https://example.com/i/1).\n\n"
        "Regards,\nBilling\n"
    )


def test_lists_are_bulleted_numbered_and_nested() -> None:
    html = (
        "<ul><li>one</li><li>two<ol><li>a</li><li>b</li></ol></li><li>three</li></ul><p>after</p>"
    )
    assert html_to_text(html) == "- one\n- two\n  1. a\n  2. b\n- three\n\nafter\n"


def test_table_cells_are_joined() -> None:
    html = "<table><tr><th>Name</th><th>Total</th></tr><tr><td>A</td><td>1&nbsp;€</td></tr></table>"
    assert html_to_text(html) == "Name | Total\nA | 1 €\n"


@pytest.mark.parametrize(
    ("html", "text"),
    [
        ('<a href="https://example.com">https://example.com</a>', "https://example.com\n"),
        ('<a href="mailto:help@example.com">write to us</a>', "write to us (help@example.com)\n"),
        ('<a href="#top">top</a>', "top\n"),
        ('<a href="javascript:evil()">click</a>', "click\n"),
        ('<a href="https://example.com/x"></a>', "https://example.com/x\n"),
        ('<img src="logo.png" alt="Logo"> Shop', "Logo Shop\n"),
        ("<pre>  code\n    indented</pre>", "  code\n    indented\n"),
        ("a &lt;b&gt; &#233; &eacute;", "a <b> é é\n"),
        ("<p>one</p><hr><p>two</p>", "one\n\n--------------------\n\ntwo\n"),
        ("<div>a</div><div>b</div>", "a\nb\n"),
        ("", ""),
        ("<p>unclosed <b>bold", "unclosed bold\n"),
        ("<!-- hidden --><p>shown</p>", "shown\n"),
    ],
)
def test_elements(html: str, text: str) -> None:
    assert html_to_text(html) == text


@settings(max_examples=200, deadline=None)
@given(html=st.text(alphabet=st.sampled_from(list("<>/=\"' ab&#;!-\n\tpliua")) | st.characters()))
def test_any_input_gives_tidy_text_without_crashing(html: str) -> None:
    text = html_to_text(html)
    assert text == "" or (text.endswith("\n") and not text.startswith("\n"))
    assert "\n\n\n" not in text


@pytest.mark.parametrize("html", ["<![0", "<p>a<![x]>b</p>", "<!x<![0 <p>z"])
def test_malformed_declarations_are_text_not_a_crash(html: str) -> None:
    # Python's html.parser raises AssertionError on these (found by hypothesis).
    text = html_to_text(html)
    assert text.endswith("\n") and "<p>" not in text
