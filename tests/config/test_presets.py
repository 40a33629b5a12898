"""Provider presets: the fields they fill make a valid connection, and check_limits warns
where a connection's settings go beyond a provider's published limits."""

from __future__ import annotations

import dataclasses
import inspect
import json
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mailconduit import presets
from mailconduit.config import AuthMechanism, Security, validate_connection
from mailconduit.errors import ConfigError
from mailconduit.presets import Preset, check_limits, connection_fields, get_preset, list_presets

LIMIT_FIELDS = (
    "rate_per_second",
    "rate_per_minute",
    "rate_per_hour",
    "daily_cap",
    "recipients_per_message",
    "messages_per_connection",
    "max_message_bytes",
)


def test_the_presets_the_issue_asks_for_are_there() -> None:
    names = [p.name for p in list_presets()]
    assert names == [
        "microsoft365",
        "google-workspace",
        "gmail",
        "amazon-ses",
        "sendgrid",
        "mailgun",
        "mailgun-eu",
        "postmark",
        "brevo",
        "mailjet",
        "mailpit",
        "mailhog",
    ]


@pytest.mark.parametrize("preset", list_presets(), ids=lambda p: p.name)
def test_each_preset_fills_a_connection_that_validates(preset: Preset) -> None:
    data: dict[str, Any] = {"name": "conn", **connection_fields(preset)}
    if preset.auth_mechanism is not AuthMechanism.NONE:
        data.setdefault("username", "someone@example.com")
        data["password"] = "placeholder"
    conn = validate_connection(data)
    assert (conn.server_url, conn.port, conn.security) == (
        preset.server_url,
        preset.port,
        preset.security,
    )
    assert conn.auth_mechanism is preset.auth_mechanism
    assert check_limits(conn.public_dict(), preset) == []  # a preset keeps within its own limits


@pytest.mark.parametrize("preset", list_presets(), ids=lambda p: p.name)
def test_every_preset_cites_its_page_in_a_comment(preset: Preset) -> None:
    assert preset.source.startswith("https://")
    host = (urlsplit(preset.source).hostname or "").removeprefix("www.")
    comments = [line for line in inspect.getsource(presets).splitlines() if "# " in line]
    assert any(host in line for line in comments), f"no comment cites {host}"


def test_microsoft365_carries_exchange_onlines_published_limits() -> None:
    m = get_preset("microsoft365")
    assert (m.server_url, m.port, m.security) == ("smtp.office365.com", 587, Security.STARTTLS)
    assert m.auth_mechanism is AuthMechanism.XOAUTH2 and m.oauth_provider == "microsoft"
    assert (m.rate_per_minute, m.daily_cap, m.recipients_per_message) == (30, 10_000, 500)
    assert m.daily_cap_counts == "recipients"


def test_amazon_ses_takes_a_region_and_its_other_ports() -> None:
    ses = get_preset("amazon-ses", region="eu-west-1")
    assert ses.server_url == "email-smtp.eu-west-1.amazonaws.com"
    assert get_preset("amazon-ses").server_url == "email-smtp.us-east-1.amazonaws.com"
    assert (ses.rate_per_second, ses.daily_cap, ses.recipients_per_message) == (1, 200, 50)
    tls = get_preset("amazon-ses", region="us-gov-west-1", port=465)
    assert (tls.port, tls.security) == (465, Security.TLS)
    assert get_preset("amazon-ses", port=2587).security is Security.STARTTLS
    with pytest.raises(ConfigError) as exc:
        get_preset("amazon-ses", region="mars; rm -rf", port=8025)
    assert {e.field for e in exc.value.errors} == {"region", "port"}


def test_sendgrid_sets_the_literal_apikey_user() -> None:
    fields = connection_fields(get_preset("sendgrid"))
    assert fields["username"] == "apikey"
    assert fields["messages_per_connection"] == 5_000


def test_unknown_preset_and_region_where_none_exists_are_named() -> None:
    with pytest.raises(ConfigError, match="'outlook' is not a preset; choose one of: microsoft365"):
        get_preset("outlook")
    with pytest.raises(ConfigError) as exc:
        get_preset("sendgrid", region="eu-west-1")
    assert exc.value.field == "region"


def test_a_faster_rate_than_exchange_allows_is_named_with_the_figure() -> None:
    warnings = check_limits({"rate_per_minute": 60, "daily_cap": 5000}, get_preset("microsoft365"))
    assert warnings == [
        "rate_per_minute 60 exceeds Exchange Online's 30 messages a minute per mailbox"
    ]


def test_an_unset_limit_is_a_warning_too() -> None:
    warnings = check_limits({"rate_per_minute": 30}, get_preset("microsoft365"))
    assert warnings == [
        "daily_cap is not set, so nothing keeps sending within Exchange Online's 10,000 "
        "recipients a day per mailbox"
    ]


def test_a_limit_in_another_unit_counts_by_the_burst_it_allows() -> None:
    m = get_preset("microsoft365")
    # 0.5 a second is 30 a minute: fine. 1,800 an hour could all go in one minute: not.
    assert check_limits({"rate_per_second": 0.5, "daily_cap": 10_000}, m) == []
    warnings = check_limits({"rate_per_hour": 1800, "daily_cap": 10_000}, m)
    assert warnings == [
        "rate_per_minute is not set, so nothing keeps sending within Exchange Online's 30 "
        "messages a minute per mailbox"
    ]


def test_messages_per_connection_over_sendgrids_cap() -> None:
    sendgrid = get_preset("sendgrid")
    assert check_limits({"messages_per_connection": 5000}, sendgrid) == []
    assert check_limits({"messages_per_connection": 10_000}, sendgrid) == [
        "messages_per_connection 10000 exceeds SendGrid's 5,000 messages per SMTP connection"
    ]
    assert "0 (no limit)" in check_limits({}, sendgrid)[0]


def test_unreadable_settings_do_not_break_the_check() -> None:
    warnings = check_limits(
        {"rate_per_minute": "lots", "daily_cap": None}, get_preset("amazon-ses")
    )
    assert len(warnings) == 2  # both unset in effect: per second and per day


@given(
    st.sampled_from([p.name for p in list_presets()]),
    st.dictionaries(
        st.sampled_from(["rate_per_second", "rate_per_minute", "rate_per_hour", "daily_cap"]),
        st.floats(min_value=0, max_value=1e6, allow_nan=False),
    ),
)
def test_a_warning_comes_exactly_when_some_window_can_exceed_a_limit(
    name: str, settings: dict[str, float]
) -> None:
    preset = get_preset(name)
    warnings = check_limits(settings, preset)
    windows = {
        "rate_per_second": 1,
        "rate_per_minute": 60,
        "rate_per_hour": 3600,
        "daily_cap": 86400,
    }

    def most(window: float) -> float:  # simulate: the busiest window the limits allow
        caps = [
            v * -(-window // span) if span <= window else v
            for field, span in windows.items()
            if (v := settings.get(field, 0)) > 0
        ]
        return min(caps, default=float("inf"))

    expected = {
        field
        for field, span in windows.items()
        if getattr(preset, field) and most(span) > getattr(preset, field)
    }
    warned = {w.split(" ", 1)[0] for w in warnings} - {"messages_per_connection"}
    assert warned == expected


def test_local_catchers_need_no_login() -> None:
    for name in ("mailpit", "mailhog"):
        p = get_preset(name)
        assert (p.server_url, p.port, p.security, p.auth_mechanism) == (
            "localhost",
            1025,
            Security.NONE,
            AuthMechanism.NONE,
        )
        assert not any(getattr(p, f) for f in LIMIT_FIELDS)


def _as_json(preset: Preset) -> dict[str, Any]:
    """A preset's fields as JSON keeps them (an int stays an int, a float a float)."""
    fields = dataclasses.asdict(preset)
    fields["security"] = preset.security.value
    fields["auth_mechanism"] = preset.auth_mechanism.value
    fields["ports"] = [[port, security.value] for port, security in preset.ports]
    return fields


def test_every_presets_values_are_the_ones_recorded() -> None:
    # presets.json was written from the presets as they were before the table was shortened;
    # any change to a value (or to its type) must be made there too, on purpose.
    recorded = json.loads((Path(__file__).parent / "presets.json").read_text("utf-8"))
    assert [_as_json(p) for p in list_presets()] == recorded["listed"]
    for preset, fields in zip(list_presets(), recorded["listed"], strict=True):
        # == takes 30 for 30.0: the types are compared as well
        for name, value in _as_json(preset).items():
            assert type(value) is type(fields[name]), (preset.name, name)
