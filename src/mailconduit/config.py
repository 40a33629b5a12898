"""Typed, frozen settings: the SMTP connection and its validation. No I/O here.

Every entry point (CLI, REST API, web form, YAML import, environment URL) turns its
input into a ``dict`` and calls :func:`validate_connection`, so there is one set of
rules and one wording of every error. The rules about text that every layer shares live
here too: how a character is named, which encodings read files and which charsets mail
can carry, what a database URL looks like.
"""

from __future__ import annotations

import codecs
import enum
import ipaddress
import os
import re
import unicodedata
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field, fields, replace
from typing import Any, Protocol
from urllib.parse import parse_qsl, unquote, urlsplit

from mailconduit.address import check_display_name, parse_list, parse_mailbox
from mailconduit.errors import AddressError, ConfigError, FieldError

__all__ = [
    "TEXT_LIMITS",
    "AuthMechanism",
    "Connection",
    "ImplementationType",
    "Secret",
    "Security",
    "TokenSource",
    "char_name",
    "connection_from_url",
    "derive_security",
    "is_database_url",
    "is_loopback_host",
    "mime_charset",
    "parse_server_url",
    "source_codec",
    "text_limit",
    "text_limit_errors",
    "url_scheme",
    "validate_connection",
]

TIMEOUT_MS_MIN = 100
TIMEOUT_MS_MAX = 3_600_000
DEFAULT_TIMEOUT_MS = 30_000
NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
_LABEL_RE = re.compile(r"^(?!-)[A-Za-z0-9-]{1,63}(?<!-)$")
#: The longest text each field may hold, in characters (numbers and switches given as text
#: too). Connections, exports and console users: the CLI, interface files, the REST API and
#: the web forms all refuse the same input, and no error ever quotes a huge value.
TEXT_LIMITS: dict[str, dict[str, int]] = {
    "connection": {
        "name": 64, "agent": 64, "implementation_type": 32, "security": 32,
        "auth_mechanism": 32, "username": 320, "password": 8192, "server_url": 300,
        "from_address": 254, "from_name": 256, "reply_to": 254, "ca_file": 4096,
        "ehlo_hostname": 255, "query": 1000, "datetime_format": 100,
        "port": 16, "timeout_ms": 16, "concurrency": 16, "daily_cap": 16,
        "messages_per_connection": 16, "rate_per_second": 32, "rate_per_minute": 32,
        "rate_per_hour": 32, "is_active": 8, "is_source": 8, "is_target": 8, "use_ssl": 8,
        "use_html_body": 8, "verify_tls": 8, "allow_insecure_auth": 8,
    },
    "export": {
        "source": 1 << 20, "connection": 64, "to": 10_000, "cc": 10_000, "bcc": 10_000,
        "reply_to": 10_000, "from_": 10_000, "subject": 10_000, "body": 512 << 10,
        "html_body": 512 << 10, "text_body": 512 << 10, "headers": 10_000, "inline": 10_000,
        "body_file": 4096, "html_body_file": 4096, "text_body_file": 4096, "attach": 4096,
        "attach_dir": 4096, "database_url": 4096, "dry_run": 4096, "report": 4096,
        "where": 10_000, "order_by": 10_000, "key": 1000, "by": 1000, "to_column": 1000,
        "sheet": 255, "encoding": 64, "charset": 64, "delimiter": 8, "kind": 32, "mode": 16,
        "oversize": 16, "report_format": 16, "run_id": 80, "rate": 200, "table_formats": 200,
    },
    "user": {"name": 64, "password": 1024, "label": 200},
}  # fmt: skip
#: The limit of a field the table does not list (a setting given as text, a new field).
_DEFAULT_TEXT_LIMIT = 65_536
#: A field NAME longer than this is no field of ours; it is not quoted back in full.
_FIELD_NAME_LIMIT = 64
#: Ports users commonly type, and the security each one implies.
PORT_SECURITY_HINTS: dict[int, str] = {
    25: "starttls",
    465: "tls",
    587: "starttls",
    2525: "starttls",
}


class Security(enum.StrEnum):
    """How the transport is protected: implicit TLS, required STARTTLS, or nothing."""

    TLS = "tls"
    STARTTLS = "starttls"
    NONE = "none"


class ImplementationType(enum.StrEnum):
    """Where exports run: ``default`` on the agent itself, ``celery`` on a worker queue."""

    DEFAULT = "default"
    CELERY = "celery"


class AuthMechanism(enum.StrEnum):
    """SASL mechanism; ``auto`` picks the strongest the server offers, ``none`` skips AUTH."""

    AUTO = "auto"
    PLAIN = "plain"
    LOGIN = "login"
    CRAM_MD5 = "cram-md5"
    XOAUTH2 = "xoauth2"
    NONE = "none"


class Secret:
    """A string that never shows itself in repr, str, logs or tracebacks."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def reveal(self) -> str:
        return self._value

    def __bool__(self) -> bool:
        return bool(self._value)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and other._value == self._value

    def __hash__(self) -> int:
        return hash(("Secret", self._value))

    def __repr__(self) -> str:
        return "Secret('********')"

    __str__ = __repr__


class TokenSource(Protocol):
    """Where an XOAUTH2 session gets its access token: the connection's OAuth2 sign-in,
    shared by every session of a run (see :mod:`mailconduit.oauth`)."""

    async def bearer(self) -> Secret:
        """A token good for the AUTH about to be sent."""

    async def refused(self, token: Secret) -> None:
        """The server refused ``token`` although it looked valid: the next one is new."""


@dataclass(frozen=True, slots=True)
class Connection:
    """One stored SMTP connection: every field of the "SMTP Data Provider" form and more.

    ``query`` and ``datetime_format`` and ``is_source`` exist because the platform's
    form has them; this connector does not use them, so they are always empty/off.
    """

    name: str
    server_url: str
    port: int
    username: str = ""
    password: Secret | None = field(default=None, compare=False)
    is_active: bool = True
    agent: str = "local"
    implementation_type: ImplementationType = ImplementationType.DEFAULT
    is_source: bool = False
    is_target: bool = True
    timeout_ms: int = DEFAULT_TIMEOUT_MS
    query: str = ""
    datetime_format: str = ""
    use_ssl: bool = False
    use_html_body: bool = False
    security: Security = Security.NONE
    from_address: str = ""
    from_name: str = ""
    reply_to: str = ""
    verify_tls: bool = True
    ca_file: str = ""
    ehlo_hostname: str = ""
    auth_mechanism: AuthMechanism = AuthMechanism.AUTO
    allow_insecure_auth: bool = False
    concurrency: int = 4
    rate_per_second: float = 0.0
    rate_per_minute: float = 0.0
    rate_per_hour: float = 0.0
    daily_cap: int = 0
    messages_per_connection: int = 0
    origin: str = "store"
    #: Set for a run by the API when the connection signs in with OAuth2; never stored.
    token_source: TokenSource | None = field(default=None, compare=False, repr=False)

    @property
    def host(self) -> str:
        """The bare host name or IP address to connect to (IDN as punycode)."""
        return parse_server_url(self.server_url)[1]

    @property
    def sender(self) -> str:
        """The default envelope/From address: from_address, else the username if it is one."""
        if self.from_address:
            return self.from_address
        return self.username if "@" in self.username else ""

    @property
    def timeout(self) -> float:
        return self.timeout_ms / 1000.0

    @property
    def logs_in(self) -> bool:
        """True when a session authenticates: a mechanism other than none, and credentials
        (a password, or tokens from an OAuth2 sign-in for XOAUTH2)."""
        oauth = self.auth_mechanism is AuthMechanism.XOAUTH2 and self.token_source is not None
        return self.auth_mechanism is not AuthMechanism.NONE and bool(
            self.username and (self.password or oauth)
        )

    def with_changes(self, **changes: Any) -> Connection:
        return replace(self, **changes)

    def public_dict(self) -> dict[str, Any]:
        """Every field except the password, as JSON-friendly values; safe to show anyone."""
        out: dict[str, Any] = {}
        for f in fields(self):
            if f.name in ("password", "token_source"):
                continue
            value = getattr(self, f.name)
            out[f.name] = value.value if isinstance(value, enum.Enum) else value
        out["has_password"] = bool(self.password)
        return out

    def storable_dict(self, *, include_password: bool = False) -> dict[str, Any]:
        """The fields a user would write in an export file (no ``origin``)."""
        out = self.public_dict()
        out.pop("origin", None)
        out.pop("has_password", None)
        if include_password and self.password is not None:
            out["password"] = self.password.reveal()
        return out


CONNECTION_FIELDS: tuple[str, ...] = tuple(f.name for f in fields(Connection))
_BOOL_FIELDS = {f.name for f in fields(Connection) if f.type in ("bool", bool)}
_INT_FIELDS = {
    "port",
    "timeout_ms",
    "concurrency",
    "daily_cap",
    "messages_per_connection",
}
_FLOAT_FIELDS = {"rate_per_second", "rate_per_minute", "rate_per_hour"}
_TRUE = {"1", "true", "yes", "on", "y", "t"}
_FALSE = {"0", "false", "no", "off", "n", "f", ""}


def is_loopback_host(host: str) -> bool:
    """True for localhost names and loopback IPs: where plaintext credentials are harmless."""
    h = host.strip("[]").lower()
    if h in ("localhost", "localhost.localdomain") or h.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(h).is_loopback
    except ValueError:
        return False


def _valid_hostname(host: str) -> str | None:
    """Return the ASCII (punycode) form of a host name or IP, or None if it is not one."""
    if not host or len(host) > 253:
        return None
    bare = host[1:-1] if host.startswith("[") and host.endswith("]") else host
    try:
        return str(ipaddress.ip_address(bare))
    except ValueError:
        pass
    if host.startswith("["):
        return None
    try:
        ascii_host = bare.encode("idna").decode("ascii") if not bare.isascii() else bare
    except UnicodeError:
        return None
    ascii_host = ascii_host.rstrip(".")
    labels = ascii_host.split(".")
    if not all(_LABEL_RE.match(label) for label in labels):
        return None
    if labels[-1].isdigit():  # 999.1.1.1 is neither an IP nor a host name
        return None
    return ascii_host.lower()


def parse_server_url(value: str) -> tuple[str, str, int | None]:
    """Split a server URL into (scheme, host, port). Scheme is '' for a bare host.

    Accepts ``smtp.example.com``, ``192.0.2.7``, ``[2001:db8::1]``, ``::1``,
    ``smtp://host[:port]`` and ``smtps://host[:port]``. Raises ValueError with a
    sentence suitable for a field error.
    """
    text = value.strip()
    if not text:
        raise ValueError("is required")
    if any(c.isspace() for c in text):
        raise ValueError(f"{value!r} contains spaces; enter a host name, an IP or a smtp(s):// URL")
    scheme = ""
    port: int | None = None
    if "://" in text:
        parts = urlsplit(text)
        scheme = parts.scheme.lower()
        if scheme not in ("smtp", "smtps"):
            raise ValueError(
                f"scheme {parts.scheme!r} is not supported; use smtp:// or smtps:// or a bare host"
            )
        if parts.path not in ("", "/") or parts.fragment:
            raise ValueError(f"{value!r} has a path; enter only smtp(s)://host[:port]")
        netloc = parts.netloc.rsplit("@", 1)[-1]
        try:
            port = parts.port
        except ValueError as exc:
            raise ValueError(f"{value!r} has an invalid port") from exc
        host = parts.hostname or ""
        if netloc.startswith("[") and host:
            host = f"[{host}]"
    else:
        host = text
        try:
            ipaddress.ip_address(text)
        except ValueError:
            if text.count(":") == 1:
                host, _, port_text = text.partition(":")
                if not port_text.isdigit():
                    raise ValueError(f"{value!r} has an invalid port") from None
                port = int(port_text)
    ascii_host = _valid_hostname(host)
    if ascii_host is None:
        raise ValueError(f"{host or value!r} is not a valid host name or IP address")
    return scheme, ascii_host, port


def derive_security(use_ssl: bool, port: int, scheme: str = "") -> Security:
    """The security a user means by the seed's "Use SSL" checkbox and a port.

    Implicit TLS for smtps:// and port 465; otherwise STARTTLS when SSL is on, and
    plaintext when it is off.
    """
    if scheme == "smtps" or (use_ssl and port == 465):
        return Security.TLS
    return Security.STARTTLS if use_ssl else Security.NONE


def _as_bool(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, int) and value in (0, 1):
        return bool(value)
    if isinstance(value, str) and value.strip().lower() in _TRUE | _FALSE:
        return value.strip().lower() in _TRUE
    raise ValueError("must be true or false")


def _as_int(value: Any) -> int:
    if isinstance(value, bool):
        raise ValueError("must be a whole number")
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, str) and re.fullmatch(r"\s*[+-]?\d+\s*", value):
        return int(value)
    raise ValueError("must be a whole number")


def _as_float(value: Any) -> float:
    if isinstance(value, bool):
        raise ValueError("must be a number")
    try:
        result = float(value)
    except (TypeError, ValueError):
        raise ValueError("must be a number") from None
    if result != result or result in (float("inf"), float("-inf")):
        raise ValueError("must be a finite number")
    return result


def _enum(kind: type[enum.Enum], value: Any) -> Any:
    if isinstance(value, kind):
        return value
    text = str(value).strip().lower().replace("_", "-")
    if kind is AuthMechanism and text == "crammd5":
        text = "cram-md5"
    for member in kind:
        if member.value == text:
            return member
    choices = ", ".join(m.value for m in kind)
    raise ValueError(f"{value!r} is not one of: {choices}")


def text_limit(kind: str, name: str) -> int:
    """The longest text field ``name`` of a ``connection``, ``export`` or ``user`` may hold."""
    if kind == "export":
        name = _EXPORT_ALIASES.get(name, name)
    return TEXT_LIMITS[kind].get(name, _DEFAULT_TEXT_LIMIT)


def text_limit_errors(kind: str, data: Mapping[str, Any]) -> list[FieldError]:
    """One error per field of ``data`` whose text is longer than :data:`TEXT_LIMITS` allows
    (each item of a list counts alone); ``kind`` is ``connection``, ``export`` or ``user``."""
    errors: list[FieldError] = []
    for key, value in data.items():
        name = str(key)
        if len(name) > _FIELD_NAME_LIMIT:
            errors.append(FieldError(name[:32] + "...", f"is no field name ({len(name)} characters)"))
            continue
        limit = text_limit(kind, name)
        if isinstance(value, Secret):
            value = value.reveal()
        if isinstance(value, Mapping):
            items: list[Any] = [f"{k}: {v}" for k, v in value.items()]
        elif isinstance(value, list | tuple) and value and isinstance(value[0], str):
            items = list(value)  # not rows of a Python source: those are data, not settings
        else:
            items = [value]
        for index, item in enumerate(items):
            if isinstance(item, str) and len(item) > limit:
                where = f"item {index + 1} " if len(items) > 1 else ""
                errors.append(
                    FieldError(name, f"{where}is too long: {len(item)} characters, at most {limit}")
                )
                break
    return errors


def _check_addresses(values: Mapping[str, Any], err: Callable[[str, str], None]) -> None:
    """from_address, from_name and reply_to, read by the same grammar as a row's addresses."""
    try:
        check_display_name(values.get("from_name", ""))
    except AddressError as exc:
        err("from_name", exc.message)
    if values.get("from_address"):
        try:
            parse_mailbox(values["from_address"])
        except AddressError as exc:
            err(
                "from_address",
                f"{values['from_address']!r} is not an e-mail address: {exc.message}",
            )
    if values.get("reply_to"):
        try:
            if not parse_list(values["reply_to"]):
                err("reply_to", "no address given")
        except AddressError as exc:
            err("reply_to", f"{exc.address!r} is not an e-mail address: {exc.message}")


def validate_connection(data: Mapping[str, Any], *, origin: str = "store") -> Connection:
    """Build a :class:`Connection` from loose input, naming every wrong field at once.

    Unknown keys are refused (a typo must not be silently ignored). ``security``
    may be given explicitly; otherwise it is derived from ``use_ssl``, port and URL
    scheme, and ``use_ssl`` is then kept consistent with it.
    """
    errors: list[FieldError] = []
    values: dict[str, Any] = {}
    if too_long := text_limit_errors("connection", data):
        raise ConfigError.for_fields("connection", too_long)

    def err(name: str, message: str) -> None:
        errors.append(FieldError(name, message))

    known = set(CONNECTION_FIELDS) - {"origin", "token_source"}
    for key in data:
        if key not in known:
            err(str(key), "is not a connection field")

    def get(name: str) -> Any:
        value = data.get(name)
        return value.strip() if isinstance(value, str) else value

    # Mandatory fields of the seed form (password/username depend on auth, below).
    name = get("name")
    if not name:
        err("name", "is required")
    elif not isinstance(name, str) or not NAME_RE.match(name):
        err(
            "name",
            f"{name!r} must start with a letter or digit and hold only letters, digits, "
            "'.', '_' or '-' (at most 64)",
        )
    else:
        values["name"] = name

    for key in _BOOL_FIELDS:
        if key in data and data[key] is not None:
            try:
                values[key] = _as_bool(data[key])
            except ValueError as exc:
                err(key, str(exc))
    for key in _INT_FIELDS:
        if key in data and data[key] not in (None, ""):
            try:
                values[key] = _as_int(data[key])
            except ValueError as exc:
                err(key, str(exc))
    for key in _FLOAT_FIELDS:
        if key in data and data[key] not in (None, ""):
            try:
                values[key] = _as_float(data[key])
            except ValueError as exc:
                err(key, str(exc))

    enum_fields: dict[str, type[enum.Enum]] = {
        "implementation_type": ImplementationType,
        "auth_mechanism": AuthMechanism,
        "security": Security,
    }
    for key, kind in enum_fields.items():
        if data.get(key) not in (None, ""):
            try:
                values[key] = _enum(kind, data[key])
            except ValueError as exc:
                err(key, str(exc))
    if "implementation_type" in data and data["implementation_type"] in (None, ""):
        err("implementation_type", "is required")

    for key in (
        "agent",
        "username",
        "from_address",
        "from_name",
        "reply_to",
        "ca_file",
        "ehlo_hostname",
    ):
        value = get(key)
        if value is None:
            continue
        if not isinstance(value, str):
            err(key, "must be text")
            continue
        if any(c in value for c in "\r\n\x00"):
            err(key, "must not contain line breaks or NUL characters")
            continue
        values[key] = value

    if "agent" in data and not values.get("agent"):
        if not any(e.field == "agent" for e in errors):
            err("agent", "is required")
    elif values.get("agent") and not NAME_RE.match(values["agent"]):
        err("agent", f"{values['agent']!r} must hold only letters, digits, '.', '_' or '-'")

    # Fields of the platform form this connector does not use.
    for key in ("query", "datetime_format"):
        if data.get(key) not in (None, ""):
            err(key, "is not used by the SMTP connector and must be left empty")
    if values.get("is_source"):
        err("is_source", "the SMTP connector is a target only; it cannot be a source")

    # Server URL, port, security.
    scheme, host, url_port = "", "", None
    server_url = get("server_url")
    if not server_url:
        err("server_url", "is required")
    elif not isinstance(server_url, str):
        err("server_url", "must be text")
    else:
        try:
            scheme, host, url_port = parse_server_url(server_url)
            values["server_url"] = server_url
        except ValueError as exc:
            err("server_url", str(exc))

    port = values.get("port")
    if "port" not in data or data.get("port") in (None, ""):
        if url_port is not None:
            port = values["port"] = url_port
        elif scheme == "smtps":
            port = values["port"] = 465
        elif "port" not in [e.field for e in errors]:
            err("port", "is required")
    if port is not None:
        if not 1 <= port <= 65535:
            err("port", f"{port} is outside 1-65535")
            port = None
        elif url_port is not None and url_port != port:
            err("port", f"{port} differs from the port {url_port} in server_url")
    if port is not None and scheme:
        if scheme == "smtps" and port in (25, 587):
            err(
                "server_url",
                f"smtps:// means implicit TLS, but port {port} is a STARTTLS port; "
                "use smtp:// with security starttls, or port 465",
            )
        if scheme == "smtp" and port == 465:
            err(
                "server_url",
                "port 465 expects implicit TLS from the first byte; use smtps:// "
                "(security tls) or port 587 for STARTTLS",
            )

    timeout = values.get("timeout_ms", DEFAULT_TIMEOUT_MS)
    if not TIMEOUT_MS_MIN <= timeout <= TIMEOUT_MS_MAX:
        err("timeout_ms", f"{timeout} is outside {TIMEOUT_MS_MIN}-{TIMEOUT_MS_MAX} ms")

    security = values.get("security")
    use_ssl_given = "use_ssl" in values
    if security is None:
        security = derive_security(values.get("use_ssl", False), port or 0, scheme)
    else:
        if scheme == "smtps" and security is not Security.TLS:
            err("security", f"{security.value} contradicts the smtps:// scheme of server_url")
        if use_ssl_given and values["use_ssl"] != (security is not Security.NONE):
            err(
                "use_ssl",
                f"use_ssl={str(values['use_ssl']).lower()} contradicts security {security.value}",
            )
    values["security"] = security
    values["use_ssl"] = security is not Security.NONE

    # Credentials.
    auth = values.get("auth_mechanism", AuthMechanism.AUTO)
    password = data.get("password")
    if isinstance(password, Secret):
        password_text = password.reveal()
    elif password is None:
        password_text = ""
    elif isinstance(password, str):
        password_text = password
    else:
        err("password", "must be text")
        password_text = ""
    if auth is not AuthMechanism.NONE:
        if not values.get("username"):
            err("username", "is required (or set auth_mechanism to none for a server without AUTH)")
        # XOAUTH2 takes its tokens from the connection's OAuth2 sign-in (stored beside it).
        if not password_text and auth is not AuthMechanism.XOAUTH2:
            err("password", "is required (or set auth_mechanism to none for a server without AUTH)")
    if password_text:
        values["password"] = Secret(password_text)
    if (
        auth is not AuthMechanism.NONE
        and security is Security.NONE
        and host
        and not is_loopback_host(host)
        and not values.get("allow_insecure_auth", False)
    ):
        err(
            "security",
            "credentials would cross the network unencrypted; use starttls or tls "
            "(or set allow_insecure_auth to accept the risk)",
        )

    _check_addresses(values, err)
    ehlo = values.get("ehlo_hostname", "")
    if ehlo and _valid_hostname(ehlo) is None and not re.fullmatch(r"\[[0-9a-fA-F.:]+\]", ehlo):
        err("ehlo_hostname", f"{ehlo!r} is not a host name")
    if values.get("ca_file") and not values.get("verify_tls", True):
        err("ca_file", "a CA file makes no sense with TLS verification turned off")

    concurrency = values.get("concurrency", 4)
    if not 1 <= concurrency <= 1000:
        err("concurrency", f"{concurrency} is outside 1-1000 sessions")
    for key in ("daily_cap", "messages_per_connection"):
        if values.get(key, 0) < 0:
            err(key, "must not be negative (0 means no limit)")
    for key in _FLOAT_FIELDS:
        if values.get(key, 0.0) < 0:
            err(key, "must not be negative (0 means no limit)")

    if errors:
        raise ConfigError.for_fields("connection", _dedupe(errors))
    values["origin"] = origin
    return Connection(**values)


def _dedupe(errors: list[FieldError]) -> list[FieldError]:
    seen: set[tuple[str, str]] = set()
    out = []
    for e in errors:
        if (e.field, e.message) not in seen:
            seen.add((e.field, e.message))
            out.append(e)
    return out


def connection_from_url(name: str, url: str, *, origin: str = "env") -> Connection:
    """A connection from an Airflow-style URL: ``smtps://user:pass@host:465?from_address=...``.

    User and password may be percent-encoded. Query parameters set any other field.
    Without credentials in the URL the connection uses no AUTH.
    """
    text = url.strip()
    if "://" not in text:
        raise ConfigError.for_fields(
            "connection URL", [FieldError("url", "must look like smtp[s]://user:pass@host:port")]
        )
    parts = urlsplit(text)
    data: dict[str, Any] = {"name": name}
    for key, value in parse_qsl(parts.query, keep_blank_values=True):
        data[key] = value
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    data["server_url"] = f"{parts.scheme}://{host}" if parts.scheme else host
    try:
        if parts.port is not None:
            data["port"] = parts.port
    except ValueError:
        data["server_url"] = text.split("@", 1)[-1]
    if parts.username is not None:
        data["username"] = unquote(parts.username)
    if parts.password is not None:
        data["password"] = unquote(parts.password)
    if parts.scheme.lower() == "smtp" and "security" not in data and "use_ssl" not in data:
        # Plain smtp:// means STARTTLS on the network and plaintext on loopback.
        data["security"] = "none" if is_loopback_host(host) else "starttls"
    if not data.get("username") and not data.get("password"):
        data.setdefault("auth_mechanism", "none")
    return validate_connection(data, origin=origin)


def connection_to_dict(conn: Connection) -> dict[str, Any]:
    """All fields, the password still wrapped in :class:`Secret` (for the store only)."""
    return asdict(conn)


# --------------------------------------------------------------------------- text

_CONTROL_NAMES = {
    "\x00": "NUL",
    "\t": "TAB",
    "\n": "LINE FEED",
    "\x0b": "VERTICAL TAB",
    "\x0c": "FORM FEED",
    "\r": "CARRIAGE RETURN",
    "\x1b": "ESCAPE",
    "\x1c": "FILE SEPARATOR",
    "\x1d": "GROUP SEPARATOR",
    "\x1e": "RECORD SEPARATOR",
    "\x7f": "DELETE",
    "\x85": "NEXT LINE",
}


def char_name(char: str) -> str:
    """``U+000A LINE FEED``: a character as a person can read it in an error message."""
    if "\ud800" <= char <= "\udfff":
        return f"U+{ord(char):04X}, a lone surrogate"
    name = _CONTROL_NAMES.get(char) or unicodedata.name(char, "control character")
    return f"U+{ord(char):04X} {name}"


#: Python codecs that call themselves text encodings but are not a character set of files
#: or mail: IDNA and Punycode (domain names), Python escapes, and the always-failing one.
_NOT_CHARSETS = frozenset(
    {"idna", "punycode", "raw-unicode-escape", "unicode-escape", "undefined", "charmap", "mbcs"}
)
#: The IANA (MIME) name of each Python codec usable as the charset of outgoing mail: ASCII
#: compatible and stateless, so MIME structure and RFC 2047 words stay plain ASCII.
_MIME_CHARSETS: dict[str, str] = {
    "ascii": "us-ascii",
    "utf-8": "utf-8",
    "iso8859-1": "iso-8859-1",
    **{f"iso8859-{n}": f"iso-8859-{n}" for n in (2, 3, 4, 5, 6, 7, 8, 9, 10, 13, 14, 15, 16)},
    **{f"cp125{n}": f"windows-125{n}" for n in range(9)},
    "cp874": "windows-874",
    "cp932": "windows-31j",
    **{f"cp{n}": f"ibm{n}" for n in (437, 775, 850, 852, 855, 857, 860, 861, 862, 863, 865, 866,
                                      869)},
    "cp858": "ibm00858",
    "koi8-r": "koi8-r",
    "koi8-u": "koi8-u",
    "kz1048": "kz-1048",
    "ptcp154": "ptcp154",
    "tis-620": "tis-620",
    "hp-roman8": "hp-roman8",
    "mac-roman": "macintosh",
    "shift_jis": "shift_jis",
    "euc_jp": "euc-jp",
    "euc_kr": "euc-kr",
    "cp949": "ks_c_5601-1987",
    "gb2312": "gb2312",
    "gbk": "gbk",
    "gb18030": "gb18030",
    "big5": "big5",
    "big5hkscs": "big5-hkscs",
}  # fmt: skip


def _lookup_text_codec(name: str) -> codecs.CodecInfo:
    """The codec of a text encoding; ValueError (in words for the user) for anything else."""
    shown = repr(name if len(name) <= 40 else name[:37] + "...")
    try:
        info = codecs.lookup(name.strip())
    except (LookupError, ValueError):
        raise ValueError(f"unknown encoding {shown}") from None
    if not getattr(info, "_is_text_encoding", True) or info.name in _NOT_CHARSETS:
        raise ValueError(
            f"{shown} is not a character encoding of text (it is a Python codec that "
            "transforms data, such as base64, rot13 or zlib); name a character encoding "
            "such as utf-8, cp1252 or latin-1"
        )
    return info


def source_codec(name: str) -> str:
    """The Python codec that reads files written in encoding ``name``; ValueError says why not.

    Any character encoding of text is accepted (UTF-16/32 with or without a byte-order mark,
    EBCDIC code pages...); codecs that transform data (base64, rot13, zlib) are not, nor
    UTF-7, the one text encoding that decodes to lone surrogates (which are not text).
    """
    codec = _lookup_text_codec(name).name
    if codec == "utf-7":
        raise ValueError("utf-7 files are not read; convert the file to utf-8 first")
    return codec


def mime_charset(name: str) -> tuple[str, str]:
    """(MIME name, Python codec) of an outgoing message charset; ValueError says why not.

    Only registered MIME charsets that keep ASCII as it is and need no shift state are
    accepted: headers are encoded word by word, and MIME structure must stay ASCII.
    """
    codec = _lookup_text_codec(name).name
    mime = _MIME_CHARSETS.get(codec)
    if mime is None:
        shown = repr(name if len(name) <= 40 else name[:37] + "...")
        raise ValueError(
            f"{shown} cannot be the charset of a message (it is not an ASCII-compatible MIME "
            "charset without shift states); use utf-8, or e.g. iso-8859-1, windows-1252, "
            "shift_jis"
        )
    return mime, codec


_URL_SCHEME_RE = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]+)://")
#: URL schemes of files elsewhere (not a database): reading them is not supported.
_FILE_SCHEMES = frozenset({"http", "https", "ftp", "ftps", "sftp", "s3", "gs", "gcs", "az",
                           "abfs", "file", "hdfs", "webdav", "smb"})  # fmt: skip


def url_scheme(text: str) -> str:
    """The lower-cased scheme of ``text`` when it is written as a URL (``x://...``), else ""."""
    found = _URL_SCHEME_RE.match(text.strip())
    return found.group(1).lower() if found else ""


def is_database_url(text: str) -> bool:
    """True for a SQLAlchemy-style database URL such as ``postgresql://host/db`` or
    ``sqlite:///data.db`` (a URL whose scheme is not one of a file server)."""
    scheme = url_scheme(text)
    return bool(scheme) and scheme not in _FILE_SCHEMES


# --------------------------------------------------------------------------- exports


class ExportMode(enum.StrEnum):
    """``row``: one e-mail per row; ``table``: the whole container in one; ``group``: one per value."""

    ROW = "row"
    TABLE = "table"
    GROUP = "group"


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """Transient failures (4xx, timeouts, drops) are retried with exponential back-off and jitter."""

    max_attempts: int = 5
    max_seconds: float = 3600.0
    initial_delay: float = 1.0
    max_delay: float = 300.0


@dataclass(frozen=True, slots=True)
class RateLimit:
    """Caps on sending: per second / minute / hour (token buckets) and per day (0 = none)."""

    per_second: float = 0.0
    per_minute: float = 0.0
    per_hour: float = 0.0
    per_day: int = 0

    @property
    def unlimited(self) -> bool:
        return not (self.per_second or self.per_minute or self.per_hour or self.per_day)


@dataclass(frozen=True, slots=True)
class ExportSpec:
    """Everything an export needs, as a user writes it on the CLI or in an interface file.

    ``source`` is a path, ``-`` for stdin, a SQL query (with ``database_url``), or for the
    Python API any iterable of mappings. Message fields are Jinja2 templates over the
    row's columns.
    """

    source: Any
    connection: str = "local"
    to: str = ""
    subject: str = ""
    body: str = ""
    body_file: str = ""
    html_body: str = ""
    html_body_file: str = ""
    text_body: str = ""
    text_body_file: str = ""
    cc: str = ""
    bcc: str = ""
    reply_to: str = ""
    from_: str = ""
    attach: tuple[str, ...] = ()
    attach_dir: str = ""
    inline: tuple[tuple[str, str], ...] = ()
    headers: tuple[tuple[str, str], ...] = ()
    mode: ExportMode = ExportMode.ROW
    by: str = ""
    to_column: str = ""
    table_formats: tuple[str, ...] = ("html",)
    table_row_cap: int = 500
    oversize: str = "fail"
    where: str = ""
    order_by: str = ""
    key: str = ""
    kind: str = ""
    encoding: str = ""
    delimiter: str = ""
    sheet: str = ""
    database_url: str = ""
    charset: str = "utf-8"
    html: bool | None = None
    dry_run: str = ""
    limit: int = 0
    fail_fast: bool = False
    run_id: str = ""
    concurrency: int = 0
    rate: RateLimit = field(default_factory=RateLimit)
    retry: RetryPolicy = field(default_factory=RetryPolicy)
    max_errors: int = 0
    resend_uncertain: bool = True
    journal: bool = True
    messages_per_connection: int = -1
    data_timeout_ms: int = 0
    report: str = ""
    report_format: str = ""


_EXPORT_FIELDS = {f.name for f in fields(ExportSpec)}
_EXPORT_ALIASES = {"from": "from_", "from_address": "from_", "sql": "source"}
_TABLE_FORMATS = ("html", "csv", "xlsx", "json")
_RATE_UNITS = {"s": "per_second", "sec": "per_second", "second": "per_second", "m": "per_minute",
               "min": "per_minute", "minute": "per_minute", "h": "per_hour", "hour": "per_hour",
               "d": "per_day", "day": "per_day"}  # fmt: skip


def parse_rate(text: str) -> dict[str, float]:
    """``"10/s"``, ``"600/min"``, ``"5000/h"``, ``"20000/day"`` (comma-separated) → RateLimit fields."""
    out: dict[str, float] = {}
    for part in str(text).split(","):
        part = part.strip()
        if not part:
            continue
        number, _, unit = part.partition("/")
        key = _RATE_UNITS.get(unit.strip().lower())
        if key is None:
            raise ValueError(f"{part!r} is not a rate like 10/s, 600/min, 5000/h or 20000/day")
        value = _as_float(number)
        if value <= 0:
            raise ValueError(f"{part!r} must be a positive rate")
        out[key] = value
    return out


def validate_export_spec(data: Mapping[str, Any]) -> ExportSpec:
    """Build an :class:`ExportSpec` from CLI options, an interface file or a form; every wrong field named."""
    errors: list[FieldError] = []
    values: dict[str, Any] = {}
    if too_long := text_limit_errors("export", data):
        raise ConfigError.for_fields("export", too_long)

    def err(name: str, message: str) -> None:
        errors.append(FieldError(name, message))

    rate: dict[str, Any] = {}
    retry: dict[str, Any] = {}
    known = _EXPORT_FIELDS | {
        "rate_per_second", "rate_per_minute", "rate_per_hour", "daily_cap", "per_day",
        "max_attempts", "retry_seconds", "max_seconds", "initial_delay", "max_delay",
    }  # fmt: skip
    for raw_key, value in data.items():
        key = _EXPORT_ALIASES.get(raw_key, raw_key)
        if key not in known:
            err(str(raw_key), "is not an export setting")
            continue
        if value is None:
            continue
        if key in ("rate_per_second", "rate_per_minute", "rate_per_hour", "daily_cap", "per_day"):
            rate[key.replace("rate_", "").replace("daily_cap", "per_day")] = value
            continue
        if key in ("max_attempts", "retry_seconds", "max_seconds", "initial_delay", "max_delay"):
            retry[key.replace("retry_seconds", "max_seconds")] = value
            continue
        if key == "rate":
            if isinstance(value, RateLimit):
                values["rate"] = value
            elif isinstance(value, Mapping):
                rate.update(value)
            else:
                try:
                    rate.update(parse_rate(value))
                except ValueError as exc:
                    err("rate", str(exc))
            continue
        if key == "retry":
            if isinstance(value, RetryPolicy):
                values["retry"] = value
            elif isinstance(value, Mapping):
                retry.update(value)
            else:
                err(
                    "retry",
                    "must be a mapping of max_attempts, max_seconds, initial_delay, max_delay",
                )
            continue
        values[key] = value

    _check_value_types(values, err)
    # ``is``/isinstance, not ``in (...)``: == on a DataFrame source has no truth value.
    if values.get("source") is None or (isinstance(values["source"], str) and not values["source"]):
        err("source", "is required (a file, '-' for stdin, or a SQL query with database_url)")

    if isinstance(values.get("table_formats"), str):
        values["table_formats"] = tuple(
            p.strip() for p in values["table_formats"].split(",") if p.strip()
        )
    if isinstance(values.get("attach"), str):
        values["attach"] = (values["attach"],)
    if "headers" in values:
        pairs = _header_pairs(values["headers"], err)
        if pairs is None:
            del values["headers"]
        else:
            values["headers"] = pairs

    if "mode" in values:
        try:
            values["mode"] = _enum(ExportMode, values["mode"])
        except ValueError as exc:
            err("mode", str(exc))
    mode = values.get("mode", ExportMode.ROW)
    if mode is ExportMode.GROUP and not values.get("by"):
        err("by", "group mode needs --by COLUMN")
    if values.get("by") and mode is not ExportMode.GROUP:
        err("by", "is only used in group mode (--mode group)")
    if values.get("to_column") and mode is ExportMode.ROW:
        err(
            "to_column",
            "takes recipients from a column in table or group mode; in row mode use --to '{{column}}'",
        )
    for fmt in values.get("table_formats", ()):
        if fmt not in _TABLE_FORMATS:
            err("table_formats", f"{fmt!r} is not one of: {', '.join(_TABLE_FORMATS)}")
    if values.get("oversize", "fail") not in ("fail", "attach", "split"):
        err("oversize", "must be fail, attach or split")

    if not values.get("to") and not values.get("to_column"):
        err("to", "is required (a template such as '{{email}}', or --to-column in table mode)")
    if not values.get("subject"):
        err("subject", "is required")
    if values.get("attach") and not values.get("attach_dir"):
        err("attach_dir", "attachments need --attach-dir: the folder they must come from")
    if "inline" in values:
        values["inline"] = _inline_pairs(values["inline"], err)
        if values["inline"] and not values.get("attach_dir"):
            err("attach_dir", "inline images need --attach-dir: the folder they must come from")

    for key in (
        "limit",
        "max_errors",
        "table_row_cap",
        "concurrency",
        "messages_per_connection",
        "data_timeout_ms",
    ):
        if key in values:
            try:
                values[key] = _as_int(values[key])
            except ValueError as exc:
                err(key, str(exc))
                del values[key]
                continue
            if values[key] < (-1 if key == "messages_per_connection" else 0):
                err(key, "must not be negative")
    if values.get("concurrency", 0) > 1000:
        err("concurrency", "at most 1000 sessions")
    for key in ("fail_fast", "resend_uncertain", "journal"):
        if key in values:
            try:
                values[key] = _as_bool(values[key])
            except ValueError as exc:
                err(key, str(exc))
    if "html" in values and values["html"] is not None:
        try:
            values["html"] = _as_bool(values["html"])
        except ValueError as exc:
            err("html", str(exc))
    _check_bodies(values, err)
    if values.get("run_id") and not re.fullmatch(
        r"[A-Za-z0-9][A-Za-z0-9_.:-]{0,79}", str(values["run_id"])
    ):
        err("run_id", "must hold only letters, digits, '.', '_', ':' or '-' (at most 80)")
    if values.get("report_format") and values["report_format"] not in ("csv", "json"):
        err("report_format", "must be csv or json")
    if values.get("encoding"):
        try:
            source_codec(values["encoding"])
        except ValueError as exc:
            err("encoding", str(exc))
    if values.get("charset"):
        try:
            mime_charset(values["charset"])
        except ValueError as exc:
            err("charset", str(exc))

    if "rate" not in values:
        try:
            values["rate"] = RateLimit(
                per_second=_as_float(rate.get("per_second", 0)),
                per_minute=_as_float(rate.get("per_minute", 0)),
                per_hour=_as_float(rate.get("per_hour", 0)),
                per_day=_as_int(rate.get("per_day", 0)),
            )
            r = values["rate"]
            if min(r.per_second, r.per_minute, r.per_hour, r.per_day) < 0:
                err("rate", "must not be negative")
        except ValueError as exc:
            err("rate", str(exc))
    if "retry" not in values:
        try:
            policy = RetryPolicy(
                max_attempts=_as_int(retry.get("max_attempts", 5)),
                max_seconds=_as_float(retry.get("max_seconds", 3600.0)),
                initial_delay=_as_float(retry.get("initial_delay", 1.0)),
                max_delay=_as_float(retry.get("max_delay", 300.0)),
            )
            if policy.max_attempts < 1:
                err("max_attempts", "must be at least 1")
            if policy.max_seconds <= 0 or policy.initial_delay < 0 or policy.max_delay < 0:
                err("retry", "times must be positive")
            values["retry"] = policy
        except ValueError as exc:
            err("retry", str(exc))

    if errors:
        raise ConfigError.for_fields("export", _dedupe(errors))
    return ExportSpec(**values)


#: Export settings that are text (templates, column names, SQL, names of things).
#: (The bodies are :func:`_check_bodies`'s.)
_TEXT_SETTINGS = ("connection", "to", "subject", "cc", "bcc", "reply_to", "from_", "by",
                  "to_column", "oversize", "where", "order_by", "key", "kind", "encoding",
                  "delimiter", "database_url", "charset", "run_id", "report_format")  # fmt: skip
#: Export settings naming a file or a folder: text, or a path object from Python.
_PATH_SETTINGS = ("attach_dir", "dry_run", "report")
#: Export settings that are a list of texts (one text stands for a list of one).
_LIST_SETTINGS = ("attach", "table_formats")


def _kind_of(value: Any) -> str:
    """What a wrongly typed value is, in a user's words."""
    if isinstance(value, bool):
        return "true/false"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, Mapping):
        return "a mapping"
    if isinstance(value, list | tuple | set | frozenset):
        return "a list"
    return f"a {type(value).__name__}"


def _check_value_types(values: dict[str, Any], err: Any) -> None:
    """Name every setting of the wrong type (a number for ``where``...) and drop it, so the
    rules after this one see only values of the type they expect."""
    for key in (*_TEXT_SETTINGS, *_PATH_SETTINGS, "sheet", "source"):
        value = values.get(key)
        if value is None or isinstance(value, str):
            continue
        if key in (*_PATH_SETTINGS, "source") and isinstance(value, os.PathLike):
            values[key] = os.fspath(value)
            if isinstance(values[key], str):
                continue
        elif key == "source":
            continue  # Python data (rows, a DataFrame) for the Python API
        elif key == "sheet" and isinstance(value, int) and not isinstance(value, bool):
            values[key] = str(value)
            continue
        err("from" if key == "from_" else key, f"must be text, not {_kind_of(value)}")
        del values[key]
    for key in _LIST_SETTINGS:
        value = values.get(key)
        if value is None or isinstance(value, str):
            continue
        if isinstance(value, list | tuple) and all(isinstance(v, str) for v in value):
            values[key] = tuple(value)
            continue
        err(key, f"must be a text or a list of texts, not {_kind_of(value)}")
        del values[key]


def _header_pairs(headers: Any, err: Any) -> tuple[tuple[str, str], ...] | None:
    """Custom headers as (name, template) pairs from 'Name: template' texts, pairs or a
    mapping; None (with the error noted) for anything else."""
    shape = "must be 'Name: template' texts, [name, template] pairs or a mapping"
    if isinstance(headers, str):
        headers = [headers]
    if isinstance(headers, Mapping):
        items: list[Any] = list(headers.items())
    elif isinstance(headers, list | tuple):
        items = list(headers)
    else:
        err("headers", f"{shape}, not {_kind_of(headers)}")
        return None
    pairs: list[tuple[str, str]] = []
    for item in items:
        if isinstance(item, str):
            name, sep, tmpl = item.partition(":")
            if not sep or not name.strip():
                err("headers", f"{item[:60]!r} must look like 'Name: template'")
                continue
            pairs.append((name.strip(), tmpl.strip()))
        elif (
            isinstance(item, list | tuple)
            and len(item) == 2
            and all(isinstance(part, str) for part in item)
        ):
            pairs.append((item[0].strip(), item[1]))
        else:
            err("headers", f"{shape}; one is {_kind_of(item)}")
    return tuple(pairs)


#: An inline image's NAME: a Content-ID local part that is also safe in a ``cid:`` URL.
INLINE_NAME_RE = re.compile(r"[A-Za-z0-9_+-]+(?:\.[A-Za-z0-9_+-]+)*")
INLINE_NAME_MAX = 64


def _inline_pairs(value: Any, err: Callable[[str, str], None]) -> tuple[tuple[str, str], ...]:
    """``inline`` as (NAME, template) pairs, from a mapping, "NAME=TEMPLATE" lines or pairs."""
    if isinstance(value, Mapping):
        items: list[Any] = list(value.items())
    elif isinstance(value, str):
        items = [line for line in value.splitlines() if line.strip()]
    else:
        try:
            items = list(value)
        except TypeError:
            err("inline", "must be a mapping of NAME to file template, or 'NAME=TEMPLATE' items")
            return ()
    pairs: list[tuple[str, str]] = []
    seen: set[str] = set()
    for item in items:
        if isinstance(item, str):
            name, sep, template = item.partition("=")
            if not sep:
                err("inline", f"{item!r} must look like 'NAME=TEMPLATE', e.g. logo=logo.png")
                continue
        elif isinstance(item, tuple | list) and len(item) == 2:
            name, template = item
        else:
            err("inline", f"{item!r} must look like 'NAME=TEMPLATE', e.g. logo=logo.png")
            continue
        name, template = str(name).strip(), "" if template is None else str(template).strip()
        if len(name) > INLINE_NAME_MAX or not INLINE_NAME_RE.fullmatch(name):
            err("inline", f"name {name[:80]!r} must be 1-{INLINE_NAME_MAX} letters, digits, "
                "'_', '+', '-' or inner dots (it is the image's cid:NAME in the HTML)")  # fmt: skip
        elif name.lower() in seen:
            err("inline", f"name {name!r} is given twice")
        elif not template:
            err("inline", f"{name!r} needs a file template, e.g. {name}=logo.png")
        else:
            seen.add(name.lower())
            pairs.append((name, template))
    return tuple(pairs)


_BODY_KEYS = ("body", "body_file", "html_body", "html_body_file", "text_body", "text_body_file")


def _check_bodies(values: dict[str, Any], err: Callable[[str, str], None]) -> None:
    """One body: ``body``/``body_file`` (format decided later), or an HTML and/or text body."""
    for key in _BODY_KEYS:
        value = values.get(key)
        if key.endswith("_file") and isinstance(value, os.PathLike):
            values[key] = os.fspath(value)
        elif value is not None and not isinstance(value, str):
            err(key, "must be text")
            del values[key]
    given = {k for k in _BODY_KEYS if values.get(k)}
    for one, other in (("body", "body_file"), ("html_body", "html_body_file"),
                       ("text_body", "text_body_file")):  # fmt: skip
        if {one, other} <= given:
            err(one, f"give either {one} or {other}, not both")
    if not given:
        err("body", "is required (--body, --body-file, --html-body[-file] or --text-body[-file])")
        return
    explicit = given - {"body", "body_file"}
    if explicit and given & {"body", "body_file"}:
        err("body", f"give either body/body_file or {'/'.join(sorted(explicit))}, not both "
            "(a hand-written text next to an HTML body: --html-body[-file] with --text-body[-file])")  # fmt: skip
        return
    has_html = bool(explicit & {"html_body", "html_body_file"})
    text_only = bool(explicit) and not has_html
    if values.get("html") is False and (has_html or values.get("inline")):
        what = "the HTML body" if has_html else "inline images, which need an HTML body"
        err("html", f"--text (html: false) contradicts {what}")
    elif values.get("html") is True and text_only:
        err("html", "--html (html: true) needs an HTML body: give --html-body[-file]; "
            "--text-body[-file] alone is sent as plain text")  # fmt: skip
    elif values.get("inline") and text_only:
        err("inline", "inline images need an HTML body (--html-body[-file]); "
            "--text-body[-file] alone is sent as plain text")  # fmt: skip


def export_spec_to_dict(spec: ExportSpec) -> dict[str, Any]:
    """A JSON-friendly copy (for the journal and interface files); iterable sources become a label."""
    if not isinstance(spec.source, str | bytes) and not hasattr(spec.source, "__fspath__"):
        label = "<python iterable>"
    else:
        label = str(spec.source)
    # The label replaces the source before asdict, which would deep-copy rows (a generator
    # cannot be copied at all).
    out = asdict(replace(spec, source=label))
    out["mode"] = spec.mode.value
    out["from"] = out.pop("from_")
    out["headers"] = [list(h) for h in spec.headers]
    out["attach"] = list(spec.attach)
    out["table_formats"] = list(spec.table_formats)
    out["inline"] = [list(pair) for pair in spec.inline]
    return out
