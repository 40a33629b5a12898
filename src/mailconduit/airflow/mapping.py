"""Airflow's words in mailconduit's terms: connections, run ids, literal template text.

Pure functions, no Airflow import, so the main test suite covers them (property tests).
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from typing import Any
from urllib.parse import quote, urlencode

from mailconduit.config.connection import Connection, Security, validate_connection
from mailconduit.errors import ConfigError, FieldError

__all__ = [
    "ENV_PREFIX",
    "connection_name",
    "connection_of",
    "connection_url",
    "jinja_literal",
    "run_id_for",
]

#: mailconduit reads a connection named ``x`` from this variable plus ``X`` (README).
ENV_PREFIX = "MAILCONDUIT_CONN_"

#: Extras of Airflow's ``smtp`` connection that only its own sending code uses.
_SMTP_PROVIDER_ONLY = frozenset(
    {"retry_limit", "subject_template", "html_content_template", "client_id", "client_secret",
     "tenant_id", "scope"}
)  # fmt: skip
#: Extras read here in the smtp provider's meaning, not passed on as mailconduit fields.
_SMTP_PROVIDER_READ = frozenset(
    {"from_email", "disable_ssl", "disable_tls", "timeout", "ssl_context", "auth_type",
     "access_token"}
)  # fmt: skip
#: Connection fields that come from Airflow's own form fields, never from the extras.
_FROM_FORM = {"name": "conn_id", "server_url": "host", "port": "port",
              "username": "login", "password": "password"}  # fmt: skip
_TRUE = frozenset({"true", "1", "yes", "on"})
_FALSE = frozenset({"false", "0", "no", "off", ""})


def connection_name(conn_id: str) -> str:
    """The mailconduit name of an Airflow connection: ``airflow_`` and the id in lower-case
    letters, digits and ``_`` (so its variable name is just the upper-cased name), with a
    digest of the exact id when anything had to change."""
    plain = re.sub(r"[^a-z0-9_]", "_", conn_id.lower())
    if plain == conn_id and len(plain) <= 48:
        return f"airflow_{plain}"
    digest = hashlib.sha256(conn_id.encode()).hexdigest()[:10]
    return f"airflow_{plain[:40]}_{digest}"


def _flag(extra: Mapping[str, Any], key: str, errors: list[FieldError]) -> bool | None:
    """An extra given as a boolean, or as text (extras from a URI are always text)."""
    value = extra.get(key)
    if value is None or isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in _TRUE | _FALSE:
        return text in _TRUE
    errors.append(FieldError(f"extra.{key}", f"{value!r} must be true or false"))
    return None


def _security(conn_type: str, port: int | None, extra: Mapping[str, Any],
              errors: list[FieldError]) -> str | None:  # fmt: skip
    """What the smtp provider means by disable_ssl/disable_tls; a ``mailconduit`` connection
    without them chooses by port (465 implicit TLS, else STARTTLS). None: ``security`` or
    ``use_ssl`` in the extras decide."""
    if "security" in extra or "use_ssl" in extra:
        return None
    no_ssl = _flag(extra, "disable_ssl", errors)
    no_tls = _flag(extra, "disable_tls", errors)
    if conn_type == "smtp" or no_ssl is not None or no_tls is not None:
        if not no_ssl:
            return Security.TLS.value
        return Security.NONE.value if no_tls else Security.STARTTLS.value
    return Security.TLS.value if port == 465 else Security.STARTTLS.value


@dataclass
class _Draft:
    """The connection fields read so far, where the user wrote each one (so that an error
    names it as Airflow shows it), and the mistakes found on the way."""

    data: dict[str, Any]
    shown: dict[str, str] = field(default_factory=lambda: dict(_FROM_FORM))
    errors: list[FieldError] = field(default_factory=list)

    def set(self, name: str, value: Any, where: str) -> None:
        self.data[name] = value
        self.shown[name] = where


def connection_of(
    conn_id: str,
    *,
    conn_type: str,
    host: str | None,
    port: int | None,
    login: str | None,
    password: str | None,
    extra: Mapping[str, Any],
) -> Connection:
    """A mailconduit connection from the fields of an Airflow ``smtp`` or ``mailconduit``
    connection, validated by mailconduit; a wrong field is named as Airflow shows it.

    The extras are the smtp provider's (from_email, disable_ssl, disable_tls, timeout in
    seconds, ssl_context, auth_type oauth2 with access_token) and any mailconduit
    connection field (from_name, security, verify_tls, concurrency, rate_per_second...).
    """
    # A form field left empty means "not set"; Airflow 2's forms prefixed the keys.
    prefix = f"extra__{conn_type}__"
    extra = {k.removeprefix(prefix): v for k, v in extra.items() if v not in (None, "")}
    draft = _Draft({"name": connection_name(conn_id), "server_url": host or "", "port": port,
                    "username": login or "", "password": password or ""})  # fmt: skip
    if conn_type not in ("smtp", "mailconduit"):
        draft.errors.append(
            FieldError("conn_type", f"{conn_type!r} is not an SMTP connection (smtp or mailconduit)")
        )
    _take_own_fields(draft, extra)
    _take_security(draft, conn_type, port, extra)
    _take_provider_extras(draft, extra)
    _take_sign_in(draft, extra)
    if draft.errors:
        raise ConfigError.for_fields(f"Airflow connection {conn_id!r}", draft.errors)
    return _validated(conn_id, draft)


def _take_own_fields(draft: _Draft, extra: Mapping[str, Any]) -> None:
    """Extras that are mailconduit connection fields pass as they are; those Airflow's form
    holds are refused, the smtp provider's own are left to the steps below."""
    for key, value in extra.items():
        if key in _FROM_FORM:
            draft.errors.append(
                FieldError(f"extra.{key}", f"set it in the connection's {_FROM_FORM[key]} field")
            )
        elif key not in _SMTP_PROVIDER_ONLY | _SMTP_PROVIDER_READ:
            draft.set(key, value, f"extra.{key}")


def _take_security(draft: _Draft, conn_type: str, port: int | None,
                   extra: Mapping[str, Any]) -> None:  # fmt: skip
    """The security the provider's flags (or the port) mean, and smtplib's default port."""
    security = _security(conn_type, port, extra, draft.errors)
    if security is not None:
        draft.set("security", security, "extra.disable_ssl" if conn_type == "smtp" else "port")
    if port is None and conn_type == "smtp":  # as Python's smtplib, which the provider uses
        draft.data["port"] = 465 if security == Security.TLS.value else 25


def _take_provider_extras(draft: _Draft, extra: Mapping[str, Any]) -> None:
    """from_email, timeout (seconds) and ssl_context, unless the mailconduit field is given."""
    if extra.get("from_email") and "from_address" not in extra:
        draft.set("from_address", extra["from_email"], "extra.from_email")
    if extra.get("timeout") not in (None, "") and "timeout_ms" not in extra:
        try:
            draft.data["timeout_ms"] = round(float(extra["timeout"]) * 1000)
        except (TypeError, ValueError):
            draft.errors.append(
                FieldError("extra.timeout", f"{extra['timeout']!r} is not a number of seconds")
            )
        draft.shown["timeout_ms"] = "extra.timeout (seconds)"
    context = extra.get("ssl_context")
    if context is not None and "verify_tls" not in extra:
        if context not in ("default", "none"):
            draft.errors.append(
                FieldError("extra.ssl_context", f"{context!r} must be default or none")
            )
        draft.data["verify_tls"] = context != "none"


def _take_sign_in(draft: _Draft, extra: Mapping[str, Any]) -> None:
    """auth_type oauth2 signs in with the access_token extra; no credentials, no AUTH."""
    data = draft.data
    if str(extra.get("auth_type") or "basic") != "basic":
        if extra.get("auth_type") != "oauth2" or not extra.get("access_token"):
            draft.errors.append(
                FieldError("extra.auth_type", "only basic, or oauth2 with an access_token extra")
            )
        else:
            draft.set("password", extra["access_token"], "extra.access_token")
            data["auth_mechanism"] = "xoauth2"
            data["username"] = data["username"] or extra.get("from_email") or ""
    if not data["username"] and not data["password"]:
        data.setdefault("auth_mechanism", "none")


def _validated(conn_id: str, draft: _Draft) -> Connection:
    """The connection mailconduit makes of the draft; its errors name Airflow's fields."""
    try:
        conn = validate_connection(draft.data, origin="airflow")
    except ConfigError as exc:
        named = [FieldError(draft.shown.get(e.field, e.field), e.message) for e in exc.errors]
        raise ConfigError.for_fields(f"Airflow connection {conn_id!r}", named) from None
    mismatch = _port_mismatch(conn)
    if mismatch:
        where = draft.shown.get("security", "extra.security")
        raise ConfigError.for_fields(
            f"Airflow connection {conn_id!r}", [FieldError(where, mismatch)]
        )
    return conn


def _port_mismatch(conn: Connection) -> str:
    """The classic mix-ups of implicit TLS and STARTTLS ports, which mailconduit's URL form
    (how the connection reaches it) refuses: said here in the connection's terms."""
    tls = conn.security is Security.TLS
    if tls and conn.port in (25, 587):
        return (f"implicit TLS (the smtp provider's default) on port {conn.port}, a STARTTLS "
                "port: set disable_ssl to true, or use port 465")  # fmt: skip
    if not tls and conn.port == 465:
        return "port 465 expects implicit TLS: leave disable_ssl false (security tls)"
    return ""


#: Fields the URL carries in its scheme, user, host and port, or that follow from others.
_IN_URL = frozenset({"name", "server_url", "port", "username", "password", "origin", "use_ssl"})
_DEFAULTS = {f.name: f.default for f in fields(Connection)}


def connection_url(conn: Connection) -> str:
    """``conn`` as the URL of a ``MAILCONDUIT_CONN_<NAME>`` variable, which mailconduit
    reads back into the same connection (every field that differs from its default
    goes in the query)."""
    scheme = "smtps" if conn.security is Security.TLS else "smtp"
    host = f"[{conn.host}]" if ":" in conn.host else conn.host
    userinfo = ""
    if conn.username or conn.password:
        userinfo = quote(conn.username, safe="")
        if conn.password:
            userinfo += ":" + quote(conn.password.reveal(), safe="")
        userinfo += "@"
    query: dict[str, str] = {"security": conn.security.value}
    for name, default in _DEFAULTS.items():
        value = getattr(conn, name)
        if name in _IN_URL or name == "security" or value == default:
            continue
        if isinstance(value, bool):
            query[name] = "true" if value else "false"
        elif isinstance(value, float):
            query[name] = repr(value)
        else:
            query[name] = str(getattr(value, "value", value))
    return f"{scheme}://{userinfo}{host}:{conn.port}?{urlencode(query)}"


_RUN_ID_CHARS = re.compile(r"[^A-Za-z0-9_.:-]+")


def run_id_for(dag_id: str, task_id: str, run_id: str, map_index: int) -> str:
    """The mailconduit run id of one Airflow task instance, the same on every try: readable
    (dag, task, Airflow run, map index) and made unique by a digest of the four, within
    mailconduit's 80 characters of letters, digits, ``. _ : -``."""
    exact = json.dumps([dag_id, task_id, run_id, map_index])
    digest = hashlib.sha256(exact.encode()).hexdigest()[:12]
    parts = [dag_id, task_id, run_id] + ([str(map_index)] if map_index >= 0 else [])
    readable = _RUN_ID_CHARS.sub("-", ".".join(parts))[:63].strip("-.:_")
    return f"af-{readable}-{digest}" if readable else f"af-{digest}"


def jinja_literal(text: str) -> str:
    """``text`` as a Jinja expression that renders to exactly ``text``: how a value Airflow
    rendered joins a row template without being read as one."""
    return "{{ " + json.dumps(text, ensure_ascii=False) + " }}" if text else ""
