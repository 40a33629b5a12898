"""The HTML to plain-text converter behind the generated text part."""

from __future__ import annotations

from decimal import Decimal

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from markupsafe import Markup

from mailconduit.errors import RenderError
from mailconduit.message import MessageTemplate, html_to_text


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


# ------------------------------------------------------------ the text derived per template

_HTML_BITS = [
    "<p>", "</p>", "<br>", "<b>", "</b>", "<h1>", "</h1>", "<div>", "</div>", "<hr>",
    '<a href="https://pay.example/">', "<a href='", "<a href=", "'>", '">', "</a>",
    '<img alt="', "<img alt=", "<ul>", "<ol>", "<li>", "</li>", "</ul>", "</ol>", "<pre>",
    "</pre>", "<title>", "</title>", "<head>", "</head>", "<script>", "</script>", "<table>",
    "<tr>", "<td>", "</td>", "</table>", "<!--", "-->", "<!", "<![", "<![CDATA[", "]]>", "<?",
    "</", "<", ">", "/>", "&", "&amp;", "&amp", "&co", "&#", "&#x", "&nbsp;", ";", "=", '"',
    "'", " ", "  ", "\n", "\r\n", "\t", "\xa0", "a", "Dear", "x.y", "mailto:", "-", "#", "}",
]  # fmt: skip
_literal = st.lists(
    st.sampled_from(_HTML_BITS) | st.text(st.characters(exclude_characters="{"), max_size=3),
    max_size=8,
).map("".join)
_value = (
    st.lists(
        st.sampled_from([*" \t\n\r\xa0\f\v<>&\"';#/=!-?[]ab1.", "amp", "lt;"]), max_size=8
    ).map("".join)
    | st.text(max_size=6)
    | st.none()
    | st.integers()
    | st.floats()
    | st.sampled_from([Markup("<b>x</b>"), Markup("</title><p>"), Markup("plain")])
)


def _html_template(literals: list[str]) -> str:
    return "".join(f"{text}{{{{ v{n} }}}}" for n, text in enumerate(literals[:-1])) + literals[-1]


@settings(max_examples=600, deadline=None)
@given(literals=st.lists(_literal, min_size=1, max_size=6), data=st.data())
def test_text_derived_from_the_template_is_exactly_the_converted_html(
    literals: list[str], data: st.DataObject
) -> None:
    """Whenever the template gives the text alternative itself, it is the text
    html_to_text makes of the rendered HTML, character for character."""
    template = MessageTemplate(to="a@example.com", html_body=_html_template(literals))
    row = {f"v{n}": data.draw(_value, label=f"v{n}") for n in range(len(literals) - 1)}
    try:
        rendered = template.render(row)
    except RenderError:  # e.g. a value Jinja cannot print: no message either way
        return
    assert rendered.html_body is not None
    if rendered.html_text is not None:
        assert rendered.html_text == html_to_text(rendered.html_body)


@settings(max_examples=300, deadline=None)
@given(
    values=st.lists(
        st.text(st.characters(exclude_categories=["Cs", "Zs", "Cc"]), min_size=1, max_size=5)
        .flatmap(lambda a: st.sampled_from([a, f"{a} {a}", f"{a}&<>\"'{a}"]))
        | st.integers() | st.floats(allow_nan=False),
        min_size=5, max_size=5,
    )
)  # fmt: skip
def test_a_template_of_text_substitutions_never_converts_per_row(values: list[object]) -> None:
    """The usual case (values in paragraphs and cells, words with single spaces, markup
    characters escaped) takes the derived text every time."""
    html = (
        "<html><head><title>Invoice {{ v0 }}</title></head><body><p>Dear {{ v1 }},</p>"
        "<p>invoice <b>{{v0}}</b> of {{ v2 }} EUR &amp; more:</p><table><tr><td>due</td>"
        '<td>{{ row["v3"] }}</td></tr></table><ul><li>{{ v4 }}</li></ul>'
        '<p><a href="https://pay.example/">pay</a></p></body></html>'
    )
    template = MessageTemplate(to="a@example.com", html_body=html)
    rendered = template.render({f"v{n}": value for n, value in enumerate(values)})
    assert rendered.html_body is not None
    assert rendered.html_text == html_to_text(rendered.html_body)


@pytest.mark.parametrize(
    "html",
    [
        '<a href="https://x.example/">{{ v }}</a>',  # the link text decides what is written
        '<a href="https://x.example/{{ v }}">pay</a>',  # in an attribute
        '<img alt="{{ v }}">',
        "<p>&{{ v }}</p>",  # "&" + "amp" would be a character reference
        "<p>&co{{ v }}</p>",
        "<{{ v }}>",  # "<" + "b" would be a tag
        "<!-- {{ v }} -->",
        "<p>\ue000 {{ v }}</p>",  # holds the character that stands for a value
    ],
)
def test_templates_whose_values_could_change_the_markup_convert_per_row(html: str) -> None:
    template = MessageTemplate(to="a@example.com", html_body=html)
    assert template.render({"v": "amp"}).html_text is None


@pytest.mark.parametrize(
    "value", ["", None, " Jane", "Jane ", "Jane  Doe", "Jane\nDoe", "Jane\tDoe", "a\xa0b",
              Markup("<b>Jane</b>"), True, Decimal("1.5")],
)  # fmt: skip
def test_values_that_could_read_differently_convert_the_html_of_their_row(value: object) -> None:
    template = MessageTemplate(to="a@example.com", html_body="<p>Dear {{ name }},</p><p>Hi</p>")
    assert template.render({"name": "Jane Doe"}).html_text == "Dear Jane Doe,\n\nHi\n"
    rendered = template.render({"name": value})
    assert rendered.html_text is None
    assert rendered.html_body is not None


def test_a_dropped_value_needs_no_check_and_a_hand_written_text_no_plan() -> None:
    template = MessageTemplate(to="a@example.com", html_body="<title>{{ t }}</title><p>Hi</p>")
    assert template.render({"t": "  two  spaces "}).html_text == "Hi\n"
    both = MessageTemplate(to="a@example.com", html_body="<p>{{ t }}</p>", text_body="{{ t }}")
    assert both.render({"t": "x"}).html_text is None
