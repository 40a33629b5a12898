"""The "SMTP Data Provider" form: every connection field with its label, kind and help text.

One description serves the HTML form, the REST API schema and the tests, so a field's
explanation is written once. Turning form input into connection data is the only logic here;
every rule stays in :func:`mailconduit.config.validate_connection`.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass, fields
from typing import Any

from mailconduit.config import (
    PORT_SECURITY_HINTS,
    AuthMechanism,
    Connection,
    ImplementationType,
    Security,
)

__all__ = [
    "FIELDS",
    "FIELDS_BY_NAME",
    "PORT_SUGGESTIONS",
    "FormField",
    "connection_form_values",
    "form_to_connection_data",
]


@dataclass(frozen=True, slots=True)
class FormField:
    """One input of the connection form.

    ``kind`` is ``text``, ``password``, ``number``, ``checkbox`` or ``select``;
    ``unused`` marks the platform fields this connector ignores (shown disabled);
    ``advanced`` fields sit in the "More settings" group below the seed's fields.
    """

    name: str
    label: str
    kind: str
    help: str
    required: bool = False
    unused: bool = False
    advanced: bool = False
    choices: tuple[tuple[str, str], ...] = ()
    json_type: str = "string"
    placeholder: str = ""


_UNUSED = "Not used by the SMTP connector; it is shown because the platform's form has it."

FIELDS: tuple[FormField, ...] = (
    FormField(
        "name",
        "Connection",
        "text",
        "A short unique alias you will pick this connection by in exports, e.g. office-relay. "
        "Letters, digits, '.', '_' and '-'.",
        required=True,
        placeholder="office-relay",
    ),
    FormField(
        "is_active",
        "Is Active",
        "checkbox",
        "Switch it off to keep the settings while refusing every export through this connection.",
        json_type="boolean",
    ),
    FormField(
        "agent",
        "Cloud Agent",
        "text",
        "Which agent opens the SMTP connection. 'local' means this machine; name another agent "
        "when the mail server is only reachable from inside another network.",
        required=True,
    ),
    FormField(
        "implementation_type",
        "Implementation Type",
        "select",
        "'default' sends from the process that starts the export. 'celery' cuts each export "
        "into chunks for the workers of the agent named above ('mailconduit agent run NAME' "
        "on hosts that reach the mail server), with one shared journal and rate limit.",
        required=True,
        choices=tuple((m.value, m.value) for m in ImplementationType),
    ),
    FormField("is_source", "Is Source", "checkbox", _UNUSED, unused=True, json_type="boolean"),
    FormField(
        "is_target",
        "Is Target",
        "checkbox",
        "Lets exports deliver data through this connection. Leave it on for an SMTP server.",
        json_type="boolean",
    ),
    FormField(
        "timeout_ms",
        "Timeout (ms)",
        "number",
        "How many milliseconds to wait for the server at each step (connect, greeting, TLS, "
        "each reply) before giving up with a timeout. 30000 suits most servers.",
        json_type="integer",
        placeholder="30000",
    ),
    FormField("query", "Query", "text", _UNUSED, unused=True),
    FormField("datetime_format", "DateTime Format", "text", _UNUSED, unused=True),
    FormField(
        "username",
        "Username",
        "text",
        "The account name the server expects at login, often your full e-mail address.",
        required=True,
        placeholder="reports@example.com",
    ),
    FormField(
        "password",
        "Password",
        "password",
        "The secret for that account. It is stored encrypted and never shown again; on edit, "
        "leave it empty to keep the stored one.",
        required=True,
    ),
    FormField(
        "server_url",
        "Server URL",
        "text",
        "Host name or IP address of the outgoing mail server, e.g. smtp.example.com; "
        "smtp://host:587 and smtps://host:465 are accepted too.",
        required=True,
        placeholder="smtp.example.com",
    ),
    FormField(
        "port",
        "Port",
        "number",
        "587: submission with STARTTLS (the usual choice). 465: TLS from the first byte. "
        "25: server-to-server relay. 2525: an alternative some providers open when 587 is blocked.",
        required=True,
        json_type="integer",
        placeholder="587",
    ),
    FormField(
        "use_ssl",
        "Use SSL",
        "checkbox",
        "Encrypt the conversation: TLS from the start on port 465, STARTTLS (upgrade after the "
        "greeting, and refuse to go on without it) on other ports.",
        json_type="boolean",
    ),
    FormField(
        "use_html_body",
        "Use HTML Body",
        "checkbox",
        "Send bodies as HTML together with a plain-text version; off sends plain text only.",
        json_type="boolean",
    ),
    FormField(
        "security",
        "Security",
        "select",
        "Leave on 'derive' to follow Use SSL and the port. Or pick explicitly: tls (implicit), "
        "starttls (required), none (plaintext; only sensible on this machine).",
        advanced=True,
        choices=(("", "derive from Use SSL and port"), *((m.value, m.value) for m in Security)),
    ),
    FormField(
        "from_address",
        "From address",
        "text",
        "Sender address of exported mail. Empty: the username, when it is an address.",
        advanced=True,
        placeholder="reports@example.com",
    ),
    FormField(
        "from_name",
        "From name",
        "text",
        "Display name shown beside the sender address.",
        advanced=True,
    ),
    FormField("reply_to", "Reply-To", "text", "Where replies to exported mail go.", advanced=True),
    FormField(
        "verify_tls",
        "Verify TLS certificate",
        "checkbox",
        "Check that the server's certificate is valid for its name and signed by a trusted "
        "authority. Turn off only for a test server you control.",
        advanced=True,
        json_type="boolean",
    ),
    FormField(
        "ca_file",
        "CA file",
        "text",
        "Path on the server machine to a PEM file of authorities to trust, for a private CA: "
        "the sink's own CA or a file in a folder the operator opened with MAILCONDUIT_CA_DIRS.",
        advanced=True,
    ),
    FormField(
        "ehlo_hostname",
        "EHLO host name",
        "text",
        "The name mailconduit introduces itself with. Empty: this machine's name.",
        advanced=True,
    ),
    FormField(
        "auth_mechanism",
        "Login method",
        "select",
        "auto picks the strongest method the server offers; 'none' skips login for a server "
        "that accepts mail without it.",
        advanced=True,
        choices=tuple((m.value, m.value) for m in AuthMechanism),
    ),
    FormField(
        "allow_insecure_auth",
        "Allow login without encryption",
        "checkbox",
        "Accept sending the password in clear text to a server outside this machine. Risky.",
        advanced=True,
        json_type="boolean",
    ),
    FormField(
        "concurrency",
        "Parallel sessions",
        "number",
        "How many SMTP sessions an export may keep open at once.",
        advanced=True,
        json_type="integer",
        placeholder="4",
    ),
    FormField(
        "rate_per_second",
        "Max messages per second",
        "number",
        "0 means no limit.",
        advanced=True,
        json_type="number",
    ),
    FormField(
        "rate_per_minute",
        "Max messages per minute",
        "number",
        "0 means no limit.",
        advanced=True,
        json_type="number",
    ),
    FormField(
        "rate_per_hour",
        "Max messages per hour",
        "number",
        "0 means no limit.",
        advanced=True,
        json_type="number",
    ),
    FormField(
        "daily_cap",
        "Max messages per day",
        "number",
        "0 means no limit.",
        advanced=True,
        json_type="integer",
    ),
    FormField(
        "messages_per_connection",
        "Messages per session",
        "number",
        "Open a new session after this many messages (some providers require it); 0: no cap.",
        advanced=True,
        json_type="integer",
    ),
)

FIELDS_BY_NAME: dict[str, FormField] = {f.name: f for f in FIELDS}

#: Port → the security it usually goes with, offered next to the port box.
PORT_SUGGESTIONS: tuple[tuple[int, str], ...] = tuple(sorted(PORT_SECURITY_HINTS.items()))

def _connection_default(name: str) -> Any:
    """The dataclass's default of a connection field, as the form shows it."""
    value = next(f.default for f in fields(Connection) if f.name == name)
    return value.value if isinstance(value, enum.Enum) else value


#: A new connection's form: the dataclass's defaults, and the usual submission port with
#: STARTTLS suggested where the dataclass has no port and plaintext.
_DEFAULTS: dict[str, Any] = {
    **{name: _connection_default(name) for name in (
        "is_active", "agent", "implementation_type", "is_source", "is_target", "timeout_ms",
        "verify_tls", "auth_mechanism", "concurrency")},
    "port": 587,
    "use_ssl": True,
}  # fmt: skip


def connection_form_values(public: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Initial form values: a connection's public fields, or the defaults of a new one.

    The password is never among them (``public_dict`` has no password).
    """
    values = dict(_DEFAULTS)
    if public is not None:
        values.update({k: v for k, v in public.items() if k in FIELDS_BY_NAME})
        if public.get("security"):
            values["security"] = public["security"]
    values.pop("password", None)
    return values


def form_to_connection_data(form: Mapping[str, Any], *, editing: bool) -> dict[str, Any]:
    """Connection data from a submitted form (strings as typed, checkboxes as booleans).

    Disabled (unused) fields are not submitted by browsers and are left out. On edit an
    empty password means "keep the stored one", so it is left out too.
    """
    data: dict[str, Any] = {}
    for f in FIELDS:
        if f.unused:
            value = form.get(f.name)
            if isinstance(value, str) and value not in ("", "off"):
                data[f.name] = value  # let validation explain why it must stay empty
            continue
        if f.kind == "checkbox":
            data[f.name] = form.get(f.name) not in (None, "", "off", "false")
            continue
        raw = form.get(f.name)
        text = raw.strip() if isinstance(raw, str) else ""
        if f.name == "password":
            text = raw if isinstance(raw, str) else ""
            if text or not editing:
                data["password"] = text
            continue
        if f.name == "security" and not text:
            continue
        if f.kind == "number" and not text and not f.required:
            continue
        data[f.name] = text
    return data
