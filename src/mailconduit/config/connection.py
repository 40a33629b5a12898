"""The SMTP connection: its settings as a frozen dataclass, the server URL's grammar, and
the validation every entry point (CLI, REST, form, YAML, environment URL) goes through."""

from __future__ import annotations

import enum
import ipaddress
import re
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field, fields, replace
from typing import Any
from urllib.parse import parse_qsl, unquote, urlsplit

from mailconduit.address import check_display_name, parse_list, parse_mailbox
from mailconduit.config.coerce import FieldErrors, as_bool, as_enum, as_float, as_int
from mailconduit.config.limits import text_limit_errors
from mailconduit.config.secret import Secret, TokenSource
from mailconduit.errors import AddressError, ConfigError, FieldError

TIMEOUT_MS_MIN = 100
TIMEOUT_MS_MAX = 3_600_000
DEFAULT_TIMEOUT_MS = 30_000
NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
_LABEL_RE = re.compile(r"^(?!-)[A-Za-z0-9-]{1,63}(?<!-)$")
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
    def signs_in_with_oauth(self) -> bool:
        """True for a stored XOAUTH2 connection: its tokens come from its OAuth2 sign-in."""
        return self.auth_mechanism is AuthMechanism.XOAUTH2 and self.origin == "store"

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


#: The connection's fields, but the run's token source (never typed in nor stored).
CONNECTION_FIELDS: tuple[str, ...] = tuple(
    f.name for f in fields(Connection) if f.name != "token_source"
)
_BOOL_FIELDS = {f.name for f in fields(Connection) if f.type in ("bool", bool)}
_INT_FIELDS = {
    "port",
    "timeout_ms",
    "concurrency",
    "daily_cap",
    "messages_per_connection",
}
_FLOAT_FIELDS = {"rate_per_second", "rate_per_minute", "rate_per_hour"}


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


#: The connection's typed fields, read from text by the coercer of their type.
_ENUM_FIELDS: dict[str, type[enum.Enum]] = {
    "implementation_type": ImplementationType,
    "auth_mechanism": AuthMechanism,
    "security": Security,
}
#: Free-text fields: one line each, no NUL.
_TEXT_FIELDS = ("agent", "username", "from_address", "from_name", "reply_to", "ca_file",
                "ehlo_hostname")  # fmt: skip
#: Another spelling of an authentication mechanism a user may type.
_AUTH_ALIASES = {"crammd5": "cram-md5"}
_Err = Callable[[str, str], None]


def _given(data: Mapping[str, Any], name: str) -> Any:
    """The value of ``name`` with surrounding spaces removed from text."""
    value = data.get(name)
    return value.strip() if isinstance(value, str) else value


def validate_connection(data: Mapping[str, Any], *, origin: str = "store") -> Connection:
    """Build a :class:`Connection` from loose input, naming every wrong field at once.

    Unknown keys are refused (a typo must not be silently ignored). ``security``
    may be given explicitly; otherwise it is derived from ``use_ssl``, port and URL
    scheme, and ``use_ssl`` is then kept consistent with it.
    """
    if too_long := text_limit_errors("connection", data):
        raise ConfigError.for_fields("connection", too_long)
    err = FieldErrors()
    values: dict[str, Any] = {}
    _check_known_keys(data, err)
    _read_name(data, values, err)
    _read_typed(data, values, err)
    _read_texts(data, values, err)
    _check_platform_fields(data, values, err)
    scheme, host = _read_server(data, values, err)
    _check_timeout(values, err)
    security = _settle_security(values, scheme, err)
    _read_credentials(data, values, security, host, err)
    _check_identity(values, err)
    _check_limits(values, err)
    err.raise_for("connection")
    values["origin"] = origin
    return Connection(**values)


def _check_known_keys(data: Mapping[str, Any], err: FieldErrors) -> None:
    known = set(CONNECTION_FIELDS) - {"origin"}
    for key in data:
        if key not in known:
            err(str(key), "is not a connection field")


def _read_name(data: Mapping[str, Any], values: dict[str, Any], err: FieldErrors) -> None:
    name = _given(data, "name")
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


def _read_typed(data: Mapping[str, Any], values: dict[str, Any], err: FieldErrors) -> None:
    """Switches, numbers and choices, each read by its type's coercer."""
    for key in _BOOL_FIELDS:
        if key in data and data[key] is not None:
            try:
                values[key] = as_bool(data[key])
            except ValueError as exc:
                err(key, str(exc))
    for names, read in ((_INT_FIELDS, as_int), (_FLOAT_FIELDS, as_float)):
        for key in names:
            if key in data and data[key] not in (None, ""):
                try:
                    values[key] = read(data[key])
                except ValueError as exc:
                    err(key, str(exc))
    for key, kind in _ENUM_FIELDS.items():
        if data.get(key) not in (None, ""):
            try:
                values[key] = as_enum(kind, data[key], _AUTH_ALIASES)
            except ValueError as exc:
                err(key, str(exc))
    if "implementation_type" in data and data["implementation_type"] in (None, ""):
        err("implementation_type", "is required")


def _read_texts(data: Mapping[str, Any], values: dict[str, Any], err: FieldErrors) -> None:
    """One-line text fields, then the agent's name rules."""
    for key in _TEXT_FIELDS:
        value = _given(data, key)
        if value is None:
            continue
        if not isinstance(value, str):
            err(key, "must be text")
        elif any(c in value for c in "\r\n\x00"):
            err(key, "must not contain line breaks or NUL characters")
        else:
            values[key] = value
    if "agent" in data and not values.get("agent"):
        if not err.names("agent"):
            err("agent", "is required")
    elif values.get("agent") and not NAME_RE.match(values["agent"]):
        err("agent", f"{values['agent']!r} must hold only letters, digits, '.', '_' or '-'")


def _check_platform_fields(
    data: Mapping[str, Any], values: dict[str, Any], err: FieldErrors
) -> None:
    """Fields of the platform form this connector does not use."""
    for key in ("query", "datetime_format"):
        if data.get(key) not in (None, ""):
            err(key, "is not used by the SMTP connector and must be left empty")
    if values.get("is_source"):
        err("is_source", "the SMTP connector is a target only; it cannot be a source")


def _read_server(
    data: Mapping[str, Any], values: dict[str, Any], err: FieldErrors
) -> tuple[str, str]:
    """server_url and port, which may come from the URL: returns (scheme, host)."""
    scheme, host, url_port = "", "", None
    server_url = _given(data, "server_url")
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
    _read_port(data, values, scheme, url_port, err)
    return scheme, host


def _read_port(
    data: Mapping[str, Any],
    values: dict[str, Any],
    scheme: str,
    url_port: int | None,
    err: FieldErrors,
) -> None:
    """The port as given, else from the URL (or 465 for smtps://), and whether it fits the scheme."""
    port = values.get("port")
    if data.get("port") in (None, ""):
        if url_port is not None:
            port = values["port"] = url_port
        elif scheme == "smtps":
            port = values["port"] = 465
        elif not err.names("port"):
            err("port", "is required")
    if port is None:
        return
    if not 1 <= port <= 65535:
        err("port", f"{port} is outside 1-65535")
        return
    if url_port is not None and url_port != port:
        err("port", f"{port} differs from the port {url_port} in server_url")
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


def _check_timeout(values: dict[str, Any], err: FieldErrors) -> None:
    timeout = values.get("timeout_ms", DEFAULT_TIMEOUT_MS)
    if not TIMEOUT_MS_MIN <= timeout <= TIMEOUT_MS_MAX:
        err("timeout_ms", f"{timeout} is outside {TIMEOUT_MS_MIN}-{TIMEOUT_MS_MAX} ms")


def _settle_security(values: dict[str, Any], scheme: str, err: FieldErrors) -> Security:
    """``security`` as given (checked against scheme and use_ssl) or derived; use_ssl follows it."""
    security = values.get("security")
    if security is None:
        security = derive_security(values.get("use_ssl", False), values.get("port") or 0, scheme)
    else:
        if scheme == "smtps" and security is not Security.TLS:
            err("security", f"{security.value} contradicts the smtps:// scheme of server_url")
        if "use_ssl" in values and values["use_ssl"] != (security is not Security.NONE):
            err(
                "use_ssl",
                f"use_ssl={str(values['use_ssl']).lower()} contradicts security {security.value}",
            )
    values["security"] = security
    values["use_ssl"] = security is not Security.NONE
    return security


def _read_credentials(
    data: Mapping[str, Any],
    values: dict[str, Any],
    security: Security,
    host: str,
    err: FieldErrors,
) -> None:
    """Username and password when the mechanism needs them; never in clear over the network."""
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


def _check_identity(values: dict[str, Any], err: FieldErrors) -> None:
    """Sender addresses, the EHLO name and the CA file."""
    _check_addresses(values, err)
    ehlo = values.get("ehlo_hostname", "")
    if ehlo and _valid_hostname(ehlo) is None and not re.fullmatch(r"\[[0-9a-fA-F.:]+\]", ehlo):
        err("ehlo_hostname", f"{ehlo!r} is not a host name")
    if values.get("ca_file") and not values.get("verify_tls", True):
        err("ca_file", "a CA file makes no sense with TLS verification turned off")


def _check_limits(values: dict[str, Any], err: FieldErrors) -> None:
    concurrency = values.get("concurrency", 4)
    if not 1 <= concurrency <= 1000:
        err("concurrency", f"{concurrency} is outside 1-1000 sessions")
    for key in ("daily_cap", "messages_per_connection"):
        if values.get(key, 0) < 0:
            err(key, "must not be negative (0 means no limit)")
    for key in _FLOAT_FIELDS:
        if values.get(key, 0.0) < 0:
            err(key, "must not be negative (0 means no limit)")


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
