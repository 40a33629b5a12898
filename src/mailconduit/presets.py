"""Presets for the services people send through: server, port, security, sign-in, and the
sending limits each provider publishes, with where each figure comes from.

A limit of 0 means the provider publishes none we could check (or it depends on the plan);
the comment next to it says which. Figures were read from the cited pages in 2026; providers
change them, so a preset only fills the form: every field stays the user's to change, and
:func:`check_limits` warns when a connection's settings go beyond a preset's known limits.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any, Final

from mailconduit.config.connection import AuthMechanism, Security
from mailconduit.errors import ConfigError, FieldError

__all__ = ["Preset", "check_limits", "connection_fields", "get_preset", "list_presets"]

MB: Final = 1024 * 1024
_REGION_RE: Final = re.compile(r"^[a-z]{2}(-[a-z]+)+-\d{1,2}$")
#: Connection rate fields and the window each one counts over, in seconds.
_WINDOWS: Final = {
    "rate_per_second": 1.0,
    "rate_per_minute": 60.0,
    "rate_per_hour": 3600.0,
    "daily_cap": 86400.0,
}
_WINDOW_WORDS: Final = {
    "rate_per_second": "a second",
    "rate_per_minute": "a minute",
    "rate_per_hour": "an hour",
    "daily_cap": "a day",
}


@dataclass(frozen=True, slots=True)
class Preset:
    """A provider's connection settings and published limits (0: none known). Without a
    port, security and sign-in, a preset takes mail the way most providers do: on the
    submission port 587, with STARTTLS and a login."""

    name: str
    title: str
    server_url: str
    port: int = 587
    security: Security = Security.STARTTLS
    auth_mechanism: AuthMechanism = AuthMechanism.AUTO
    #: Other ports the provider listens on, with the security each one takes.
    ports: tuple[tuple[int, Security], ...] = ()
    oauth_provider: str = ""
    #: A fixed username (SendGrid's ``apikey``), or '' when it is the user's own.
    username: str = ""
    username_hint: str = ""
    #: What goes in the password field.
    credential_hint: str = ""
    rate_per_second: float = 0.0
    rate_per_minute: float = 0.0
    rate_per_hour: float = 0.0
    daily_cap: int = 0
    #: What ``daily_cap`` counts at this provider: ``messages`` or ``recipients``.
    daily_cap_counts: str = "messages"
    recipients_per_message: int = 0
    messages_per_connection: int = 0
    max_message_bytes: int = 0
    #: Whose limits they are ("per mailbox", "per account", "in the sandbox").
    limits_apply: str = "per account"
    #: The provider's page for these settings and limits.
    source: str = ""
    note: str = ""


_MICROSOFT_LIMITS = (
    "https://learn.microsoft.com/en-us/office365/servicedescriptions/"
    "exchange-online-service-description/exchange-online-limits"
)
_GOOGLE_WORKSPACE_LIMITS = "https://support.google.com/a/answer/166852"
_SES_QUOTAS = "https://docs.aws.amazon.com/ses/latest/dg/quotas.html"

_MAILGUN_US: Final = Preset(
    name="mailgun",
    title="Mailgun (US)",
    server_url="smtp.mailgun.org",
    ports=((2525, Security.STARTTLS), (25, Security.STARTTLS), (465, Security.TLS)),
    username_hint="the SMTP login of your sending domain, e.g. postmaster@mg.example.com",
    credential_hint="that login's SMTP password",
    # "Send via HTTP" (documentation.mailgun.com): "The maximum message size Mailgun
    # supports is 25MB". Rate limits exist but are not published; recipients per
    # message are not documented for SMTP.
    max_message_bytes=25 * MB,
    source="https://documentation.mailgun.com/docs/mailgun/user-manual/sending-messages/send-http",
    note="Pick the region your domain lives in: US and EU accounts do not see each other.",
)

_GOOGLE_WORKSPACE: Final = Preset(
    name="google-workspace",
    title="Google Workspace",
    server_url="smtp.gmail.com",
    auth_mechanism=AuthMechanism.XOAUTH2,
    ports=((465, Security.TLS),),
    oauth_provider="google",
    username_hint="the account's address",
    # "Gmail sending limits in Google Workspace" (support.google.com/a/answer/166852):
    # 2,000 messages per day (500 for trial accounts), 100 recipients per message sent
    # via SMTP, 10,000 total recipients per day (a second cap the connection cannot
    # express; daily_cap counts messages). Message size: Gmail's 25 MB is not on that
    # page and was not checked here, so none is set.
    daily_cap=2_000,
    recipients_per_message=100,
    source=_GOOGLE_WORKSPACE_LIMITS,
    note="Trial accounts may send 500 messages a day until the account is paid.",
)

_MAILPIT: Final = Preset(
    name="mailpit",
    title="Mailpit (local testing)",
    server_url="localhost",
    port=1025,
    security=Security.NONE,
    auth_mechanism=AuthMechanism.NONE,
    # Mailpit's README (github.com/axllent/mailpit): "SMTP server (default
    # 0.0.0.0:1025)"; TLS and AUTH are off unless configured. No limits.
    source="https://github.com/axllent/mailpit",
    note="Catches every message; nothing is delivered.",
)

_PRESETS: Final[tuple[Preset, ...]] = (
    Preset(
        name="microsoft365",
        title="Exchange Online",
        server_url="smtp.office365.com",
        auth_mechanism=AuthMechanism.XOAUTH2,
        oauth_provider="microsoft",
        username_hint="the mailbox's address",
        # "Exchange Online limits" (learn.microsoft.com), section "Sending limits": message
        # rate limit 30 messages per minute (SMTP client submission), recipient rate limit
        # 10,000 recipients per day, recipient limit 500 per message (admins may set up to
        # 1,000). Message size: 35 MB by default for sending (admins may raise it to 150 MB).
        # No per-connection message limit is published.
        rate_per_minute=30,
        daily_cap=10_000,
        daily_cap_counts="recipients",
        recipients_per_message=500,
        max_message_bytes=35 * MB,
        limits_apply="per mailbox",
        source=_MICROSOFT_LIMITS,
        note="SMTP AUTH must be enabled for the tenant and the mailbox; sign in with OAuth2.",
    ),
    _GOOGLE_WORKSPACE,
    # Personal accounts: Google's same servers, other limits.
    replace(
        _GOOGLE_WORKSPACE,
        name="gmail",
        title="Gmail",
        username_hint="your Gmail address",
        # Google's consumer help page ("Gmail sending limits",
        # support.google.com/mail/answer/22839) could not be read here. 500 recipients a
        # day and 100 recipients per message over SMTP are the figures third-party guides
        # repeat; they are used as the known limits but are NOT verified at the source.
        daily_cap=500,
        daily_cap_counts="recipients",
        source="https://support.google.com/mail/answer/22839",
        note="Sign in with OAuth2, or with an app password if the account has 2-Step Verification.",
    ),
    Preset(
        name="amazon-ses",
        title="Amazon SES",
        server_url="email-smtp.{region}.amazonaws.com",
        # "Connecting to an Amazon SES SMTP endpoint" (docs.aws.amazon.com/ses/latest/dg/
        # smtp-connect.html): STARTTLS on 25, 587 and 2587; TLS Wrapper on 465 and 2465.
        ports=(
            (2587, Security.STARTTLS),
            (25, Security.STARTTLS),
            (465, Security.TLS),
            (2465, Security.TLS),
        ),
        username_hint="the SMTP user name from the SES console (not your access key id)",
        credential_hint="the SMTP password from the SES console",
        # "Service quotas in Amazon SES" (docs.aws.amazon.com/ses/latest/dg/quotas.html):
        # in the sandbox 1 email per second and 200 emails per 24 hours, counted per
        # recipient; out of the sandbox both depend on the account. 50 recipients per
        # message; 40 MB per message over SMTP (after base64 encoding).
        rate_per_second=1,
        daily_cap=200,
        daily_cap_counts="recipients",
        recipients_per_message=50,
        max_message_bytes=40 * MB,
        limits_apply="in the sandbox (production quotas are per account: raise these)",
        source=_SES_QUOTAS,
        note="Quotas are per AWS Region; the sandbox sends only to verified addresses.",
    ),
    Preset(
        name="sendgrid",
        title="SendGrid",
        server_url="smtp.sendgrid.net",
        # "Integrating with the SMTP API" (twilio.com/docs/sendgrid/for-developers/
        # sending-email/integrating-with-the-smtp-api): 25, 2525 or 587 with TLS, 465 SSL;
        # user name is the string "apikey", the password an API key with Mail permission;
        # up to 5,000 messages per SMTP connection. Recipients per message and message size
        # are documented for the Web API only, so none is set here.
        ports=((2525, Security.STARTTLS), (25, Security.STARTTLS), (465, Security.TLS)),
        username="apikey",
        username_hint="apikey (literally)",
        credential_hint="an API key with Mail Send permission",
        messages_per_connection=5_000,
        source="https://www.twilio.com/docs/sendgrid/for-developers/sending-email/integrating-with-the-smtp-api",
        note="Daily volume depends on the plan.",
    ),
    _MAILGUN_US,
    replace(_MAILGUN_US, name="mailgun-eu", title="Mailgun (EU)", server_url="smtp.eu.mailgun.org"),
    Preset(
        name="postmark",
        title="Postmark",
        server_url="smtp.postmarkapp.com",
        # "Sending email with SMTP" (postmarkapp.com/developer/user-guide/
        # send-email-with-smtp): ports 25, 2525 or 587; the Server API token is both the
        # user name and the password. Postmark publishes no SMTP rate limit; its API's
        # 50-recipient and 10 MB caps are not stated for SMTP, so none is set.
        ports=((2525, Security.STARTTLS), (25, Security.STARTTLS)),
        username_hint="your Server API token",
        credential_hint="the same Server API token",
        source="https://postmarkapp.com/developer/user-guide/send-email-with-smtp",
        note="Transactional mail only; broadcasts go to smtp-broadcasts.postmarkapp.com.",
    ),
    Preset(
        name="brevo",
        title="Brevo",
        server_url="smtp-relay.brevo.com",
        # "SMTP relay integration" (developers.brevo.com/docs/smtp-integration): ports 587
        # or 2525, 465 with TLS; an SMTP key, not an API key. Limits depend on the plan and
        # are not on that page.
        ports=((2525, Security.STARTTLS), (465, Security.TLS)),
        username_hint="the SMTP login shown under SMTP & API",
        credential_hint="an SMTP key (not an API key)",
        source="https://developers.brevo.com/docs/smtp-integration",
        note="Daily volume depends on the plan.",
    ),
    Preset(
        name="mailjet",
        title="Mailjet",
        server_url="in-v3.mailjet.com",
        # "What are the API Key and Secret Keys?" (mailjet.com/support): the API key is the
        # SMTP user name, the secret key the password. Port 587 with STARTTLS (25 also, 465
        # with TLS) as Mailjet's SMTP settings page gives them; not re-checked here. Limits
        # depend on the plan and are not published per SMTP connection.
        ports=((25, Security.STARTTLS), (465, Security.TLS)),
        username_hint="your API key",
        credential_hint="your secret key",
        source="https://www.mailjet.com/support/what-are-the-api-key-and-secret-keys-how-should-i-use-them,109.htm",
        note="Daily volume depends on the plan.",
    ),
    _MAILPIT,
    replace(
        _MAILPIT,
        name="mailhog",
        title="MailHog (local testing)",
        # "Configuring MailHog" (github.com/mailhog/MailHog, docs/CONFIG.md): the SMTP
        # server binds 0.0.0.0:1025 by default. No limits.
        source="https://github.com/mailhog/MailHog/blob/master/docs/CONFIG.md",
        note="Catches every message; nothing is delivered. No longer maintained: prefer Mailpit.",
    ),
)


def list_presets() -> list[Preset]:
    """Every preset, in the order a form shows them (Amazon SES in us-east-1)."""
    return [get_preset(p.name) for p in _PRESETS]


def get_preset(name: str, *, region: str = "", port: int | None = None) -> Preset:
    """The preset called ``name``; ``region`` for Amazon SES (default us-east-1), ``port``
    to choose one of the provider's other ports (security follows the port)."""
    found = next((p for p in _PRESETS if p.name == name.strip().lower()), None)
    if found is None:
        choices = ", ".join(p.name for p in _PRESETS)
        raise ConfigError.for_fields(
            "preset", [FieldError("preset", f"{name!r} is not a preset; choose one of: {choices}")]
        )
    errors: list[FieldError] = []
    if "{region}" in found.server_url:
        region = (region or "us-east-1").strip().lower()
        if not _REGION_RE.match(region):
            errors.append(
                FieldError("region", f"{region!r} is not an AWS Region such as eu-west-1")
            )
        found = replace(found, server_url=found.server_url.format(region=region))
    elif region:
        errors.append(FieldError("region", f"{found.title} has no regions"))
    if port is not None and port != found.port:
        security = dict(found.ports).get(port)
        if security is None:
            offered = ", ".join(str(p) for p in [found.port, *dict(found.ports)])
            errors.append(FieldError("port", f"{found.title} listens on {offered}"))
        else:
            found = replace(found, port=port, security=security)
    if errors:
        raise ConfigError.for_fields("preset", errors)
    return found


def connection_fields(preset: Preset) -> dict[str, Any]:
    """The connection fields a preset fills (for ``connections create --preset`` and the
    form); every one of them may be changed afterwards."""
    fields: dict[str, Any] = {
        "server_url": preset.server_url,
        "port": preset.port,
        "security": preset.security.value,
        "use_ssl": preset.security is not Security.NONE,
        "auth_mechanism": preset.auth_mechanism.value,
    }
    if preset.username:
        fields["username"] = preset.username
    for name in ("rate_per_second", "rate_per_minute", "rate_per_hour", "daily_cap"):
        if getattr(preset, name):
            fields[name] = getattr(preset, name)
    if preset.messages_per_connection:
        fields["messages_per_connection"] = preset.messages_per_connection
    return fields


def _number(value: Any) -> float:
    """A setting as a number; 0 for empty or unreadable (the connection's own checks name those)."""
    try:
        number = float(value or 0)
    except (TypeError, ValueError):
        return 0.0
    return number if math.isfinite(number) and number > 0 else 0.0


def _most_in(window: float, settings: Mapping[str, Any]) -> float:
    """The most messages the settings' rate limits and daily cap let through in ``window``
    seconds (infinite when nothing limits them)."""
    most = math.inf
    for name, span in _WINDOWS.items():
        value = _number(settings.get(name))
        if value:
            most = min(most, value * math.ceil(window / span) if span <= window else value)
    return most


def check_limits(settings: Mapping[str, Any], preset: Preset) -> list[str]:
    """Warnings, one line each, where a connection's settings allow more than the preset's
    known limits, e.g. "rate_per_minute 60 exceeds Exchange Online's 30 messages a minute
    per mailbox". ``settings`` holds connection fields (a mapping or ``public_dict()``)."""
    warnings = []
    for name, window in _WINDOWS.items():
        limit = float(getattr(preset, name))
        if not limit or _most_in(window, settings) <= limit:
            continue
        counted = preset.daily_cap_counts if name == "daily_cap" else "messages"
        allowed = (
            f"{preset.title}'s {limit:,g} {counted} {_WINDOW_WORDS[name]} {preset.limits_apply}"
        )
        own = _number(settings.get(name))
        if own:
            warnings.append(f"{name} {own:g} exceeds {allowed}")
        else:
            warnings.append(f"{name} is not set, so nothing keeps sending within {allowed}")
    limit_per_connection = preset.messages_per_connection
    own_per_connection = int(_number(settings.get("messages_per_connection")))
    if limit_per_connection and not 0 < own_per_connection <= limit_per_connection:
        shown = own_per_connection or "0 (no limit)"
        warnings.append(
            f"messages_per_connection {shown} exceeds {preset.title}'s "
            f"{limit_per_connection:,} messages per SMTP connection"
        )
    return warnings
