"""Address parsing and validation: lists, display names, IDNA, SMTPUTF8, and the refusals."""

from __future__ import annotations

import pickle
import unicodedata

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mailconduit.address import parse_list
from mailconduit.errors import AddressError, RowError
from mailconduit.message import make_address, parse_address, parse_address_list, require_recipients
from mailconduit.message.chars import HEADER_BREAKERS


def test_list_separated_by_commas_and_semicolons_with_display_names() -> None:
    found = parse_address_list(
        'Zoë Example <zoe@example.com>; "Smith, John" <john@example.org>, bare@example.net;',
        field="to",
    )
    assert [(a.display_name, a.envelope) for a in found] == [
        ("Zoë Example", "zoe@example.com"),
        ("Smith, John", "john@example.org"),
        ("", "bare@example.net"),
    ]


def test_quoted_display_name_keeps_escaped_quotes_and_angle_brackets() -> None:
    (found,) = parse_address_list(r'"A \"B\" <c>; d" <x@example.com>')
    assert found.display_name == 'A "B" <c>; d'
    assert found.envelope == "x@example.com"


def test_display_name_whitespace_is_collapsed() -> None:
    (found,) = parse_address_list("  Zoë \t  Example   <zoe@example.com>  ")
    assert found.display_name == "Zoë Example"


def test_empty_text_and_empty_items_give_nothing() -> None:
    assert parse_address_list("") == []
    assert parse_address_list("  ") == []
    assert parse_address_list(" , ; ") == []


def test_require_recipients_refuses_an_empty_row() -> None:
    with pytest.raises(AddressError, match="no recipient") as caught:
        require_recipients([], [], [], row_key="row 7")
    assert caught.value.row_key == "row 7"
    require_recipients([], [], [make_address("a@example.com")])


def test_idn_domain_becomes_punycode_for_envelope_and_headers() -> None:
    address = parse_address("Zoë <zoe@Bücher.Example>")
    assert address.domain == "bücher.example"
    assert address.ascii_domain == "xn--bcher-kva.example"
    assert address.envelope == "zoe@xn--bcher-kva.example"
    assert not address.needs_smtputf8


def test_punycode_domain_is_decoded_for_display() -> None:
    address = make_address("zoe@xn--bcher-kva.example")
    assert address.domain == "bücher.example"


def test_utf8_local_part_is_valid_but_needs_smtputf8() -> None:
    address = make_address("zoë@example.com")
    assert address.needs_smtputf8
    assert address.envelope == "zoë@example.com"


def test_domain_case_is_normalised_local_part_case_is_kept() -> None:
    address = make_address("John.Smith@EXAMPLE.COM")
    assert address.envelope == "John.Smith@example.com"


def test_ip_literals_are_accepted() -> None:
    assert make_address("a@[192.0.2.1]").envelope == "a@[192.0.2.1]"
    assert make_address("a@[IPv6:2001:db8:0::1]").envelope == "a@[IPv6:2001:db8::1]"


def test_formatted_form_quotes_what_needs_quoting() -> None:
    assert make_address("j@example.com", display_name="Smith, John").formatted == (
        '"Smith, John" <j@example.com>'
    )
    assert str(make_address("j@example.com", display_name="John Smith")) == (
        "John Smith <j@example.com>"
    )
    assert str(make_address("j@example.com")) == "j@example.com"


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("a@", "no domain after the @"),
        ("a b@c.com", "contains a space"),
        ('"x@evil y"@corp', "quoted local parts are refused"),
        ('"x@evil y"@corp.example', "quoted local parts are refused"),
        ("x" * 65 + "@example.com", "longer than 64 octets"),
        ("é" * 33 + "@example.com", "longer than 64 octets"),
        ("a@" + ".".join(["b" * 60] * 5) + ".com", "longer than 255 octets"),
        ("a" * 64 + "@" + ".".join(["b" * 60] * 3 + ["c" * 10]) + ".com", "longer than 254 octets"),
        ("a@localhost", "has no dot"),
        ("a@1.2.3.4", "looks like an IP address"),
        ("a@-bad.example", "letters, digits and inner hyphens"),
        ("a@bad-.example", "letters, digits and inner hyphens"),
        ("a@b_c.example", "letters, digits and inner hyphens"),
        ("a@" + "b" * 64 + ".example", "longer than 63"),
        ("a@b..example", "empty label"),
        ("a@example.com.", "ends with a dot"),
        ("a..b@example.com", "two dots in a row"),
        (".a@example.com", "starts or ends with a dot"),
        ("a(b)@example.com", "a comment inside an address"),
        ("a\\b@example.com", "unexpected"),
        ("@example.com", "nothing before the @"),
        ("plainaddress", "no @"),
        ("a@[999.1.1.1]", "address literal"),
        ("a@xn--zz.example", "punycode"),
        ("a@ex\u2620ample.com", "internationalised domain"),
        ("Zoë <zoe@example.com", "without a closing"),
        ("<zoe@example.com> trailing", "unexpected text after"),
        ('"unbalanced <a@example.com>', "unbalanced double quote"),
        ("<>", "empty address"),
        ("zo\u00a0e@example.com", "contains a space"),
        ("zo\u200be@example.com", "not allowed in the local part"),
    ],
)
def test_invalid_addresses_are_refused_with_a_reason(text: str, reason: str) -> None:
    with pytest.raises(AddressError, match=reason) as caught:
        parse_address_list(f"ok@example.com, {text}", field="cc")
    assert isinstance(caught.value, RowError)
    assert "invalid cc address" in caught.value.message
    assert text.strip() in caught.value.address


@pytest.mark.parametrize(
    "breaker", ["\r", "\n", "\x00", "\x0b", "\x0c", "\x85", "\u2028", "\u2029"]
)
def test_line_breakers_are_refused_before_anything_else(breaker: str) -> None:
    with pytest.raises(AddressError, match="would break a header"):
        parse_address_list(f"a@example.com{breaker}Bcc: evil@example.net")
    with pytest.raises(AddressError, match="would break a header"):
        make_address("a@example.com", display_name=f"x{breaker}y")


def test_parse_address_wants_exactly_one() -> None:
    with pytest.raises(AddressError, match="no address given"):
        parse_address(" ", field="from")
    with pytest.raises(AddressError, match="expected one address, found 2"):
        parse_address("a@example.com, b@example.com", field="from")


def test_parsing_is_cached_and_results_are_independent_lists() -> None:
    first = parse_address_list("a@example.com (A), b@example.com")
    first.append(make_address("c@example.com"))
    second = parse_address_list("a@example.com (A), b@example.com")
    assert len(second) == 2
    assert second[0] is first[0]


def test_address_error_pickles_with_its_fields() -> None:
    with pytest.raises(AddressError) as caught:
        parse_address_list("a@")
    copy = pickle.loads(pickle.dumps(caught.value))
    assert (copy.message, copy.address) == (caught.value.message, "a@")


@settings(max_examples=300, deadline=None)
@given(
    display=st.text(
        alphabet=st.characters(exclude_categories=["Cs"], exclude_characters=HEADER_BREAKERS),
        max_size=40,
    ),
    local=st.from_regex(r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]{1,20}", fullmatch=True).filter(
        lambda local: "=?" not in local  # an encoded-word is refused: tested apart
    ),
    domain=st.sampled_from(["example.com", "bücher.example", "[192.0.2.7]"]),
)
def test_the_formatted_form_parses_back_to_the_same_address(
    display: str, local: str, domain: str
) -> None:
    """A name given apart may hold any character but a line break; written into a cell, a
    control character is refused and anything else reads back as it was."""
    address = make_address(f"{local}@{domain}", display_name=display)
    if any(unicodedata.category(c) == "Cc" for c in address.display_name):
        with pytest.raises(AddressError, match="control character"):
            parse_address_list(address.formatted)
    else:
        assert parse_address_list(address.formatted) == [address]


def test_long_lists_are_parsed_too() -> None:
    text = ", ".join(f"User {i} <user{i}@example.com>" for i in range(100))
    found = parse_address_list(text)
    assert [a.envelope for a in found] == [f"user{i}@example.com" for i in range(100)]
    with pytest.raises(AddressError, match="no domain"):
        parse_address_list(text + ", broken@")


_ATOM = st.one_of(
    st.text(alphabet=st.sampled_from([*"aZ09.!#$%&'*+-/=?^_`{|}~@ -xn", "é", "\n"]), max_size=70),
    st.text(alphabet=st.sampled_from([*"aZ09.-_+"]), min_size=1, max_size=70),  # mostly valid
    st.lists(st.sampled_from(["a", ".", "=?", "?=", "utf-8", "?q?", "=40", "x"]), max_size=8).map(
        "".join  # encoded-words and their pieces: the shortcut must refuse them too
    ),
)


@settings(max_examples=500)
@given(
    _ATOM,
    st.one_of(
        st.sampled_from(["example.com", "EXAMPLE.org", "xn--bcher-kva.example", "a-b.c-d.ex",
                         "-a.com", "a..com", "localhost", "1.2.3.4", "b" * 70 + ".com",
                         "example.com.", "ex_ample.com", "münchen.de", ("a" * 60 + ".") * 4 + "com"]),
        _ATOM,
    ),
)  # fmt: skip
def test_bare_addresses_read_the_same_on_the_shortcut_and_the_full_parser(
    local: str, domain: str
) -> None:
    """The shortcut for one bare ASCII address gives what the full parser gives, error or not."""
    full, shortcut = _read_both_ways(f"{local}@{domain}")
    assert shortcut == full


def _read_both_ways(text: str) -> tuple[object, object]:
    """(the full parser's reading, parse_address_list's with its shortcut), errors as values."""
    from mailconduit.message.addresses import _parse_list_cached

    try:
        full: object = list(_parse_list_cached.__wrapped__(text, "to"))
    except AddressError as exc:
        full = ("error", exc.message)
    try:
        shortcut: object = parse_address_list(text, field="to")
    except AddressError as exc:
        shortcut = ("error", exc.message)
    return full, shortcut


_NAME = st.lists(
    st.sampled_from(
        [*'aZ .,;:<>()@[]"\\\t\x01\x85\xa0\u2028\u3000', "é", "=?", "?=", "Ann", "\udcff"]
    ),
    max_size=12,
).map("".join)
_ENTRY = st.one_of(
    st.builds(
        lambda name, space, local, domain: f"{name}{space}<{local}@{domain}>",
        _NAME,
        st.sampled_from(["", " ", "  ", "\t"]),
        _ATOM,
        st.sampled_from(["example.com", "EXAMPLE.org", "bücher.example", "a..com", "localhost"]),
    ),
    st.builds(lambda name: f'"{name}" <ann@example.com>', _NAME),
    st.builds(lambda local: f"{local}@example.com", _ATOM),
    _NAME,
)


@settings(max_examples=1000)
@given(
    st.lists(_ENTRY, min_size=1, max_size=4),
    st.lists(st.sampled_from([",", ";", ", ", " ; ", ",,", "\t,"]), min_size=3, max_size=3),
    st.sampled_from(["", " ", "\t", "\xa0"]),
)
def test_named_addresses_and_lists_read_the_same_on_the_shortcut_and_the_full_parser(
    entries: list[str], separators: list[str], edge: str
) -> None:
    """The shortcut for ``Name <a@b>`` entries and lists of them gives what the full parser
    gives, error or not, whatever the name holds."""
    text = entries[0]
    for separator, entry in zip(separators, entries[1:], strict=False):
        text += separator + entry
    text = edge + text + edge
    if not text.strip():
        return
    full, shortcut = _read_both_ways(text)
    assert shortcut == full


@pytest.mark.parametrize(
    ("cell", "words"),
    [
        ("ann@corp.example\u200b", "U+200B"),
        ("ann@co\u00adrp.example", "SOFT HYPHEN"),
        ("ann@\uff23\uff2f\uff32\uff30.example", "FULLWIDTH"),
        ("ann@corp\u3002example", "IDEOGRAPHIC FULL STOP"),
        ("ann@\ufb01rm.example", "LIGATURE"),
        ("ann@u\u0308ber.example", "NFC"),
        ("ann@corp.ex\u0430mple", "mixes Latin and Cyrillic"),
        ("ann@corp.xn--exmple-4nf", "mixes Latin and Cyrillic"),
        ("\u0430nn@corp.example", "mixes Cyrillic and Latin"),
        ("Ann <\u0440aypal@corp.example>", "mixes"),
        ("ann@\u03c0xn.example", "mixes Greek and Latin"),
    ],
)
def test_a_domain_idna_would_change_and_look_alikes_are_refused(cell: str, words: str) -> None:
    """UTS 46 silently dropped U+200B and mapped full-width letters, so the envelope named
    a domain other than the one written; mixed-script labels pass for another address."""
    with pytest.raises(AddressError) as info:
        parse_list(cell)
    assert words in str(info.value)


@pytest.mark.parametrize(
    "cell", ["zo\u00eb@b\u00fccher.example", "ann@B\u00fcCHER.example", "\u0438\u0432\u0430\u043d@\u043f\u0440\u0438\u043c\u0435\u0440.\u0440\u0444",
             "\u5c71\u7530@\u4f8b\u3048.jp", "ann@stra\u00dfe.example", "\u1f00\u03bb\u03ad\u03be\u03b7\u03c2@corp.example"],
)
def test_single_script_international_addresses_still_go(cell: str) -> None:
    assert len(parse_list(cell)) == 1


@given(
    label=st.text(
        st.characters(codec="utf-8", categories=("L", "M", "N", "Pd", "Cf", "Zs", "Po")),
        min_size=1, max_size=12,
    )
)
def test_the_envelope_domain_is_the_written_one(label: str) -> None:
    """Whatever a domain holds, it is refused or sent as written (only its case may change):
    IDNA never drops or maps a character on the way to the envelope."""
    import idna

    domain = f"{label}.example"
    try:
        (address,) = parse_list(f"ann@{domain}")
    except AddressError:
        return
    assert idna.decode(address.ascii_domain) == domain.lower()
