"""Message templates: up-front checks, sandbox, per-row errors, escaping, size caps, speed paths."""

from __future__ import annotations

import time
import tracemalloc
from decimal import Decimal
from typing import Any

import markupsafe
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mailconduit.errors import RenderError, RowError, TemplateSandboxError
from mailconduit.message import (
    GROUP_MODE_NAMES,
    TABLE_MODE_NAMES,
    MessageTemplate,
    table_context,
)

COLUMNS = ["email", "name", "amount", "First Name"]
ROW = {"email": "zoe@example.com", "name": "Zoë", "amount": 12.5, "First Name": "Zoë"}


def test_every_field_renders_from_the_row() -> None:
    template = MessageTemplate(
        to="{{ name }} <{{ email }}>",
        cc="audit@example.com",
        bcc="{{ email|upper }}",
        from_="Billing <billing@example.com>",
        reply_to="help@example.com",
        subject="Invoice for {{ row['First Name'] }}: {{ amount }} EUR",
        text_body="Dear {{ name }},\n{% for i in range(2) %}line {{ i }}\n{% endfor %}",
        html_body="<p>Dear {{ name }}</p>",
        attachments=["invoices/{{ email }}.pdf", "terms.pdf"],
        headers={"X-Customer": "{{ email }}"},
    )
    template.check(COLUMNS)
    rendered = template.render(ROW, row_key="1")
    assert rendered.to == "Zoë <zoe@example.com>"
    assert rendered.cc == "audit@example.com"
    assert rendered.bcc == "ZOE@EXAMPLE.COM"
    assert rendered.from_ == "Billing <billing@example.com>"
    assert rendered.reply_to == "help@example.com"
    assert rendered.subject == "Invoice for Zoë: 12.5 EUR"
    assert rendered.text_body == "Dear Zoë,\nline 0\nline 1\n"
    assert rendered.html_body == "<p>Dear Zoë</p>"
    assert rendered.attachments == ("invoices/zoe@example.com.pdf", "terms.pdf")
    assert rendered.headers == (("X-Customer", "zoe@example.com"),)


def test_unknown_column_names_field_column_and_suggests() -> None:
    template = MessageTemplate(to="{{ email }}", subject="Hi {{ nmae }}")
    with pytest.raises(RenderError) as caught:
        template.check(COLUMNS)
    error = caught.value
    assert (error.template, error.column) == ("subject", "nmae")
    assert "did you mean 'name'?" in error.message
    assert "the source has: First Name, amount, email, name" in error.message
    assert str(error).startswith("template subject: unknown column 'nmae'")


def test_row_lookups_are_checked_statically() -> None:
    with pytest.raises(RenderError) as caught:
        MessageTemplate(to="{{ row['Last Name'] }}").check(COLUMNS)
    assert caught.value.column == "Last Name"
    with pytest.raises(RenderError, match="unknown column 'mail'"):
        MessageTemplate(to="{{ row.mail }}").check(COLUMNS)
    MessageTemplate(to="{{ row.email }} {{ row.get('x', '') }}").check(COLUMNS)


def test_variables_defined_in_the_template_are_not_columns() -> None:
    template = MessageTemplate(
        to="{{ email }}",
        text_body="{% set total = amount * 2 %}{{ total }}{% for x in [1] %}{{ x }}{% endfor %}",
    )
    template.check(COLUMNS)
    assert template.render(ROW).text_body == "25.01"


def test_mode_names_are_allowed_only_in_their_mode() -> None:
    template = MessageTemplate(to="a@example.com", text_body="{{ count }} rows for {{ group }}")
    with pytest.raises(RenderError, match="unknown columns 'count', 'group'"):
        template.check(COLUMNS)
    with pytest.raises(RenderError, match="unknown column 'group'"):
        template.check(COLUMNS, provided=TABLE_MODE_NAMES)
    template.check(COLUMNS, provided=GROUP_MODE_NAMES)


def test_syntax_error_names_field_and_line() -> None:
    with pytest.raises(RenderError) as caught:
        MessageTemplate(to="x@example.com", text_body="line 1\nline 2 {% if %}\n")
    assert caught.value.template == "text_body"
    assert "syntax error at line 2" in caught.value.message


@pytest.mark.parametrize(
    "source", ["{% include 'x.html' %}", "{% extends 'base' %}", "{% import 'm' as m %}"]
)
def test_loading_other_templates_is_refused_at_construction(source: str) -> None:
    with pytest.raises(RenderError, match="cannot load other templates") as caught:
        MessageTemplate(text_body="ok\n" + source)
    assert caught.value.template == "text_body"
    assert "line 2" in caught.value.message


@pytest.mark.parametrize(
    "source",
    [
        "{{ ''.__class__.__mro__ }}",
        "{{ name.__class__ }}",
        "{{ row['__class__'] }}",
        "{{ name|attr('__class__') }}",
    ],
)
def test_static_sandbox_violations_are_found_before_sending(source: str) -> None:
    with pytest.raises(TemplateSandboxError, match="sandbox violation") as caught:
        MessageTemplate(to="a@example.com", subject=source).check(COLUMNS)
    assert caught.value.template == "subject"


def test_dynamic_sandbox_violation_is_found_by_check_render() -> None:
    template = MessageTemplate(to="a@example.com", subject="{{ name|attr(amount) }}")
    template.check(COLUMNS)
    with pytest.raises(TemplateSandboxError, match="sandbox violation"):
        template.check_render({**ROW, "amount": "__class__"})
    with pytest.raises(TemplateSandboxError, match="sandbox violation"):
        template.render({**ROW, "amount": "__init__"}, row_key="9")


@pytest.mark.parametrize(
    "source",
    [
        "{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}",
        "{% for a in range(2000) %}{% for b in range(2000) %}{{ '' }}{% endfor %}{% endfor %}",
        "{% set s = 'x' * 9000 %}{% for a in s %}{% for b in s %}{% endfor %}{% endfor %}",
    ],
)
def test_loops_that_write_nothing_for_hours_are_a_sandbox_violation(source: str) -> None:
    """The size caps see only what a template writes: empty nested loops ran unbounded (a
    console preview held its worker for hours). Each rendering has a budget of loop steps."""
    from mailconduit.message.sandbox import MAX_LOOP_STEPS

    template = MessageTemplate(to="a@example.com", subject="s", text_body=source)
    template.check(COLUMNS)
    with pytest.raises(TemplateSandboxError, match=f"more than {MAX_LOOP_STEPS:,} steps"):
        template.check_render(ROW)


def test_loops_within_the_budget_render_and_each_rendering_has_its_own() -> None:
    source = "{% for i in range(900) %}{% for j in range(1000) %}{% endfor %}{% endfor %}ok"
    template = MessageTemplate(to="a@example.com", subject="s", text_body=source)
    for key in ("1", "2", "3"):  # 900,000 steps each: the count starts again every time
        assert template.render(ROW, row_key=key).text_body == "ok"


def test_check_render_leaves_data_errors_to_the_row() -> None:
    template = MessageTemplate(to="a@example.com", subject="{{ 10 / amount }}")
    template.check_render({**ROW, "amount": 0})
    with pytest.raises(RenderError, match="ZeroDivisionError") as caught:
        template.render({**ROW, "amount": 0}, row_key="row 3")
    assert (caught.value.row_key, caught.value.template) == ("row 3", "subject")


def test_a_column_missing_in_one_row_fails_that_row_with_the_column() -> None:
    template = MessageTemplate(to="{{ email }}", subject="{{ row['name'] }} {{ name }}")
    with pytest.raises(RenderError) as caught:
        template.render({"email": "a@example.com"}, row_key="7")
    assert isinstance(caught.value, RowError)
    assert (caught.value.row_key, caught.value.column, caught.value.template) == (
        "7",
        "name",
        "subject",
    )


def test_html_body_escapes_values_text_does_not() -> None:
    row = {"email": "a@example.com", "name": '<script>alert("x")</script> & co'}
    template = MessageTemplate(
        to="{{ email }}",
        subject="{{ name }}",
        text_body="{{ name }}",
        html_body="<b>{{ name }}</b>",
    )
    rendered = template.render(row)
    assert rendered.subject == row["name"]
    assert rendered.text_body == row["name"]
    assert rendered.html_body == ("<b>&lt;script&gt;alert(&#34;x&#34;)&lt;/script&gt; &amp; co</b>")


@pytest.mark.parametrize("value", ["R&D", "a<b", "a>b", "it's", 'say "hi"', "plain", "Zoë"])
def test_each_character_html_escapes_is_escaped_on_the_direct_path(value: str) -> None:
    rendered = MessageTemplate(html_body="<p>{{ v }}</p>").render({"v": value})
    assert rendered.html_body == f"<p>{markupsafe.escape(value)}</p>"


def test_none_renders_as_empty_in_both_paths() -> None:
    template = MessageTemplate(
        to="{{ email }}",
        subject="[{{ name }}]",
        text_body="[{{ name }}]{% if true %}[{{ name }}]{% endif %}",
    )
    rendered = template.render({"email": "a@example.com", "name": None})
    assert rendered.subject == "[]"
    assert rendered.text_body == "[][]"


def test_trailing_newline_of_a_line_field_template_is_dropped_bodies_keep_it() -> None:
    template = MessageTemplate(to="a@example.com\n", subject="Hi {{ name }}\n", text_body="Hi\n")
    rendered = template.render(ROW)
    assert (rendered.to, rendered.subject, rendered.text_body) == (
        "a@example.com",
        "Hi Zoë",
        "Hi\n",
    )


VALUES = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.floats(allow_nan=True),
    st.decimals(allow_nan=False, allow_infinity=False, places=3),
    st.text(),
    st.text().map(markupsafe.Markup),
    st.lists(st.integers(), max_size=3),
)


@settings(max_examples=200, deadline=None)
@given(value=VALUES, html=st.booleans())
def test_direct_substitution_path_matches_jinja(value: Any, html: bool) -> None:
    """``{{ x }}``-only templates skip Jinja; the output must be exactly Jinja's."""
    direct = "<{{ x }}|{{ row['x'] }}>"
    forced = direct + "{% if false %}{% endif %}"  # a tag forces the Jinja path
    if html:
        fast = MessageTemplate(html_body=direct).render({"x": value}).html_body
        slow = MessageTemplate(html_body=forced).render({"x": value}).html_body
    else:
        fast = MessageTemplate(subject=direct).render({"x": value}).subject
        slow = MessageTemplate(subject=forced).render({"x": value}).subject
    assert fast == slow


def test_field_and_body_size_caps() -> None:
    template = MessageTemplate(to="a@example.com", subject="{{ name }}", text_body="{{ name }}",
                               max_body_chars=100)  # fmt: skip
    with pytest.raises(RenderError, match="longer than the limit of 10000") as caught:
        template.render({"name": "x" * 10_001})
    assert caught.value.template == "subject"
    with pytest.raises(RenderError, match="longer than the limit of 100") as caught:
        MessageTemplate(text_body="{{ name }}", max_body_chars=100).render({"name": "x" * 101})
    assert caught.value.template == "text_body"
    with pytest.raises(RenderError, match="longer than the limit"):
        MessageTemplate(subject="y" * 10_001).render({})


@pytest.mark.parametrize(
    "source",
    [
        "{{ 'x' * 100000000 }}",
        "{{ 'x' * n }}",
        "{% for i in range(100000) %}{% for j in range(100000) %}xxxxxxxx{% endfor %}{% endfor %}",
        "{{ 'x'|center(1000000000) }}",
        "{{ 'x'.ljust(1000000000) }}",
        "{{ 'x'.zfill(1000000000) }}",
        "{{ '%1000000000d' % 1 }}",
        "{{ '{:>1000000000}'.format(1) }}",
        "{{ '{:>{}}'.format(1, 1000000000) }}",
        "{{ '{x:>{w}}'.format_map({'x': 1, 'w': 1000000000}) }}",
        "{{ '{:.1000000000f}'.format(1.5) }}",
        "{{ '%1000000000d'|format(1) }}",
        "{{ ('x' * 1000)|replace('x', 'y' * 10000) }}",
        "{{ 'x'|indent(1000000000, true) }}",
        "{{ 9 ** 999999999 }}",
    ],
)
def test_huge_template_output_is_refused_quickly(source: str) -> None:
    """Refused within seconds of this process's CPU time (not wall-clock time, which a
    loaded machine stretches)."""
    template = MessageTemplate(to="a@example.com", text_body=source, max_body_chars=1_000_000)
    start = time.process_time()
    tracemalloc.start()
    try:
        with pytest.raises(RenderError) as caught:
            template.render({"n": 10**10})
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert time.process_time() - start < 5
    assert peak < 50_000_000  # refused before the huge string exists, not after
    assert caught.value.template == "text_body"


def test_lipsum_is_not_available() -> None:
    with pytest.raises(RenderError, match="unknown column 'lipsum'"):
        MessageTemplate(text_body="{{ lipsum(100000) }}").check([])


def test_invalid_custom_header_name_is_refused_at_construction() -> None:
    with pytest.raises(RenderError) as caught:
        MessageTemplate(headers={"Bcc": "{{ email }}"})
    assert caught.value.template == "header Bcc"
    with pytest.raises(RenderError, match="not a valid field name"):
        MessageTemplate(headers={"X Bad": "x"})


def test_columns_of_a_field() -> None:
    template = MessageTemplate(to="{{ name }} <{{ row['email'] }}>", subject="Hi")
    assert template.columns("to") == {"name", "row", "email"}
    assert template.columns("subject") == frozenset()


def test_table_and_group_context() -> None:
    rows: list[dict[str, Any]] = [
        {"email": "a@example.com", "amount": 1},
        {"email": "b@example.com", "amount": None},
    ]
    template = MessageTemplate(
        to="{{ group }}",
        subject="{{ count }} rows",
        text_body="{{ table_text }}{% for r in rows %}{{ r.email }};{% endfor %}",
        html_body="<h1>{{ row.email }}</h1>{{ table_html }}",
    )
    template.check(["email", "amount"], provided=GROUP_MODE_NAMES)
    context = table_context(["email", "amount"], rows, group="manager@example.com")
    rendered = template.render(rows[0], extras=context)
    assert rendered.to == "manager@example.com"
    assert rendered.subject == "2 rows"
    assert rendered.text_body is not None and rendered.text_body.endswith(
        "a@example.com;b@example.com;"
    )
    assert rendered.html_body is not None
    assert rendered.html_body.startswith("<h1>a@example.com</h1><table")
    assert "<td>b@example.com</td>" in rendered.html_body


def test_non_string_column_keys_are_usable() -> None:
    row: dict[Any, Any] = {1: "one", "amount": Decimal("2.50")}  # as a JSON source may give
    rendered = MessageTemplate(subject="{{ row['1'] }}|{{ amount }}").render(row)
    assert rendered.subject == "one|2.50"


def test_render_is_fast_for_substitution_templates() -> None:
    template = MessageTemplate(
        to="{{ name }} <{{ email }}>", subject="Invoice {{ amount }}", text_body="Dear {{ name }}"
    )
    start = time.perf_counter()
    for _ in range(2000):
        template.render(ROW)
    assert (time.perf_counter() - start) / 2000 < 200e-6  # generous: ~6 µs measured


# ---------------------------------------------------------------- Jinja-free direct path

_VALUES = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-1000, 1000),
    st.decimals(allow_nan=False, allow_infinity=False, places=2),
    st.text(max_size=8),
)
_LITERALS = st.text(alphabet=st.sampled_from(list("ab {}\r\n<&>\"'-x")), max_size=12).filter(
    lambda t: "{{" not in t and "{%" not in t and "{#" not in t and not t.endswith("{")
)
_SPACE = st.sampled_from(["", " ", "  ", "\n", "\t"])


@st.composite
def _simple_templates(draw: st.DrawFn) -> tuple[str, dict[str, Any]]:
    """Text with ``{{ name }}`` / ``{{ row["key"] }}`` tags, and a row holding every name."""
    names = ["email", "name", "amount", "x_1"]
    row = {n: draw(_VALUES) for n in names}
    source = draw(_LITERALS)
    for _ in range(draw(st.integers(0, 4))):
        inside = draw(
            st.one_of(
                st.sampled_from(names),
                st.sampled_from(names).map(lambda n: f'row["{n}"]'),
                st.sampled_from(names).map(lambda n: f"row[ '{n}' ]"),
            )
        )
        source += "{{" + draw(_SPACE) + inside + draw(_SPACE) + "}}" + draw(_LITERALS)
    return source, row


@settings(max_examples=300)
@given(_simple_templates(), st.booleans(), st.booleans())
def test_direct_path_renders_exactly_as_jinja(
    case: tuple[str, dict[str, Any]], keep_newline: bool, autoescape: bool
) -> None:
    """Templates read without Jinja render the same text, and read the same names, as Jinja."""
    from jinja2 import meta

    from mailconduit.message.render import _Env, _Field
    from mailconduit.message.sandbox import Sandbox

    source, row = case
    options = {"max_chars": 10_000, "autoescape": autoescape}
    if keep_newline:
        options["keep_trailing_newline"] = True
    field = _Field("text_body", source, _Env(**options))
    jinja = Sandbox(**options)
    context = {**row, "row": row}
    expected = jinja.from_string(source).render(context)
    assert field.template is None  # never compiled: the direct path or a constant
    assert field.render(context, escape=autoescape, limit=10_000) == expected
    if field.constant is None:
        assert field.names == meta.find_undeclared_variables(jinja.parse(source))


def test_templates_outside_the_direct_path_still_go_through_jinja() -> None:
    from mailconduit.message.render import _Env, _Field

    env = _Env(max_chars=10_000, autoescape=False)
    for source in ["{{- name }}", "{{ name -}}", "{{ name|upper }}", "{{ none }}", "{{ row._x }}",
                   '{{ row["_x"] }}', "{{ row.name }}", "{% if name %}x{% endif %}", "{{ true }}",
                   "{# note #}{{ name }}", '{{ row["a\\"b"] }}']:  # fmt: skip
        field = _Field("text_body", source, env)
        assert field.template is not None, source


def test_a_missing_name_on_the_direct_path_is_reported_as_jinja_would() -> None:
    template = MessageTemplate(to="{{ email }}", subject="Hello {{ nmae }}")
    with pytest.raises(RenderError) as caught:
        template.render({"email": "a@example.com", "name": "A"}, row_key="7")
    assert caught.value.column == "nmae" and "unknown column 'nmae'" in caught.value.message


def test_sandbox_globals_listed_for_the_direct_path_match_the_sandbox() -> None:
    from mailconduit.message.render import SANDBOX_GLOBALS
    from mailconduit.message.sandbox import Sandbox

    assert frozenset(Sandbox(max_chars=10).globals) == SANDBOX_GLOBALS


def test_plain_substitution_templates_do_not_load_jinja() -> None:
    """Start-up: an export whose fields are plain substitutions never imports Jinja."""
    import subprocess
    import sys

    code = (
        "import sys\n"
        "from mailconduit.message.render import MessageTemplate\n"
        "t = MessageTemplate(to='{{ email }}', subject='Hi {{ row[\"name\"] }}',"
        " text_body='Dear {{ name }},\\n', html_body='<p>{{ name }}</p>\\n')\n"
        "t.check(['email', 'name'])\n"
        "m = t.render({'email': 'a@example.com', 'name': '<A>'})\n"
        "assert m.html_body == '<p>&lt;A&gt;</p>\\n', m.html_body\n"
        "assert 'jinja2' not in sys.modules, 'jinja2 was imported'\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr


@pytest.mark.parametrize(
    ("subject", "text"),
    [
        ("{% if true -%}\n   Hi {{ name }}{%- endif %}\n", "Hi Zoë"),  # Jinja strips these
        ("Hi {{ name }}\n", "Hi Zoë"),  # one final line break is no part of a line template
        ("{{ name }}{# a\nnote #}", "Zoë"),
    ],
)
def test_line_breaks_jinja_removes_are_not_the_templates_own_text(subject: str, text: str) -> None:
    template = MessageTemplate(to="a@example.com", subject=subject)
    template.check(COLUMNS)
    assert template.render(ROW, row_key="1").subject == text


@pytest.mark.parametrize(
    "subject", ["Hi\nthere", "{{ name }}\r\nBcc: e@x.example", "{% for i in [1] %}a\u2028{% endfor %}"]
)
def test_a_line_break_written_in_a_header_template_is_refused_before_sending(subject: str) -> None:
    with pytest.raises(RenderError, match="template's own text") as caught:
        MessageTemplate(to="a@example.com", subject=subject).check(COLUMNS)
    assert caught.value.template == "subject"
