"""One row to one message: render + addresses + build, with the failing column named."""

from __future__ import annotations

import pickle
from datetime import UTC, datetime
from email import policy
from email.parser import BytesParser
from pathlib import Path
from typing import Any

import pytest

from mailconduit.errors import AddressError, RenderError, RowError
from mailconduit.message import (
    MessageTemplate,
    compose_message,
    make_address,
    make_message_id,
    table_attachment,
)

DATE = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
TEMPLATE = MessageTemplate(
    to="{{ name }} <{{ email }}>",
    cc="{{ manager }}",
    subject="Statement {{ account }}",
    text_body="Dear {{ name }},\nyour balance is {{ balance }}.\n",
    attachments=["{{ account }}.pdf"],
    headers={"X-Account": "{{ account }}"},
)
ROW = {"name": "Zoë", "email": "zoe@bücher.example", "manager": "", "account": "A-1", "balance": 5}


def compose(row: dict[str, Any], tmp_path: Path, **overrides: Any) -> bytes:
    (tmp_path / "A-1.pdf").write_bytes(b"%PDF-1.4")
    arguments: dict[str, Any] = {
        "row_key": "row 1",
        "message_id": make_message_id("run", "row 1", "example.com"),
        "default_from": make_address("billing@example.com", display_name="Billing"),
        "attachment_dir": tmp_path,
        "date": DATE,
    }
    arguments.update(overrides)
    return compose_message(TEMPLATE, row, **arguments).data


def test_a_row_becomes_a_complete_message(tmp_path: Path) -> None:
    message = BytesParser(policy=policy.default).parsebytes(compose(ROW, tmp_path))
    assert str(message["From"]) == "Billing <billing@example.com>"
    (to,) = message["To"].addresses
    assert (to.display_name, to.addr_spec) == ("Zoë", "zoe@xn--bcher-kva.example")
    assert message["Cc"] is None
    assert message["X-Account"] == "A-1"
    body, pdf = message.iter_parts()
    assert body.get_content() == "Dear Zoë,\r\nyour balance is 5.\r\n"
    assert (pdf.get_filename(), pdf.get_payload(decode=True)) == ("A-1.pdf", b"%PDF-1.4")


def test_invalid_address_names_the_column(tmp_path: Path) -> None:
    with pytest.raises(AddressError) as caught:
        compose({**ROW, "manager": "boss@"}, tmp_path)
    assert (caught.value.row_key, caught.value.column) == ("row 1", "manager")
    assert "invalid cc address 'boss@'" in caught.value.message


def test_value_breaking_a_header_names_the_column(tmp_path: Path) -> None:
    with pytest.raises(RowError) as caught:
        compose({**ROW, "account": "A-1\r\nBcc: evil@example.net"}, tmp_path)
    assert caught.value.column == "account"
    assert "would break a header" in caught.value.message


def test_a_row_error_carries_its_field_and_keeps_it_across_processes(tmp_path: Path) -> None:
    """The column is worked out from the field the error names by attribute, not by its words."""
    template = MessageTemplate(to="{{ email }}", subject="About {{ title }}", text_body="Hi")
    with pytest.raises(RowError) as caught:
        compose_message(
            template,
            {"email": "a@example.com", "title": "A-1\x0b"},
            row_key="row 1",
            message_id="<a@example.com>",
            default_from=make_address("billing@example.com"),
        )
    error = caught.value
    assert (error.field, error.column, error.row_key) == ("subject", "title", "row 1")
    copy = pickle.loads(pickle.dumps(error))  # as an agent's worker hands it back
    assert (type(copy), copy.field, copy.column) == (RowError, "subject", "title")
    assert str(copy) == str(error)
    with pytest.raises(AddressError) as refused:
        compose({**ROW, "manager": "boss@"}, tmp_path)
    assert (refused.value.field, refused.value.column) == ("cc", "manager")


def test_empty_recipient_is_a_row_error(tmp_path: Path) -> None:
    template = MessageTemplate(to="{{ email }}", subject="x", text_body="x")
    with pytest.raises(AddressError, match="no recipient") as caught:
        compose_message(template, {"email": ""}, row_key="r", message_id="<a@example.com>",
                        default_from=make_address("a@example.com"))  # fmt: skip
    assert caught.value.column == "email"


def test_missing_sender_and_several_senders_are_row_errors(tmp_path: Path) -> None:
    with pytest.raises(AddressError, match="no sender address"):
        compose(ROW, tmp_path, default_from=None)
    template = MessageTemplate(to="a@example.com", from_="{{ sender }}")
    with pytest.raises(AddressError, match="expected one sender address") as caught:
        compose_message(template, {"sender": "a@example.com, b@example.com"}, row_key="r",
                        message_id="<a@example.com>")  # fmt: skip
    assert caught.value.column == "sender"


def test_missing_attachment_is_a_row_error(tmp_path: Path) -> None:
    with pytest.raises(RowError, match="not found"):
        compose({**ROW, "account": "B-2"}, tmp_path)


def test_render_errors_pass_through(tmp_path: Path) -> None:
    with pytest.raises(RenderError) as caught:
        compose({k: v for k, v in ROW.items() if k != "balance"}, tmp_path)
    assert caught.value.column == "balance"


def test_utf8_local_part_is_flagged_not_mangled(tmp_path: Path) -> None:
    (tmp_path / "A-1.pdf").write_bytes(b"x")
    built = compose_message(
        TEMPLATE,
        {**ROW, "email": "zoë@example.com"},
        row_key="r",
        message_id="<a@example.com>",
        default_from=make_address("a@example.com"),
        attachment_dir=tmp_path,
        extra_attachments=[table_attachment("csv", ["a"], [{"a": 1}])],
    )
    assert built.needs_smtputf8
    assert built.envelope_recipients == ("zoë@example.com",)
    assert "zoë@example.com".encode() in built.data
    assert b'filename="data.csv"' in built.data
    with pytest.raises(AddressError, match="needs SMTPUTF8"):
        compose({**ROW, "email": "zoë@example.com"}, tmp_path, smtputf8=False)
