"""Connections that sign in with OAuth2, and connections made from a provider preset.

Input from the CLI, the REST API and the console is one flat mapping: the connection's
fields, the OAuth2 fields prefixed ``oauth_`` (``oauth_client_id``...), and ``preset``
(with ``region`` for Amazon SES). A preset fills server, port, security, AUTH mechanism
and the provider's limits; what the user typed wins. Both parts are validated together, so
every wrong field is named in one error, and nothing is stored unless all of it is valid.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, ClassVar, Final

from mailconduit.config.connection import AuthMechanism, Connection, validate_connection
from mailconduit.config.secret import Secret
from mailconduit.connections import oauth as oauth_store
from mailconduit.connections import store
from mailconduit.errors import ConfigError, FieldError, MailconduitError
from mailconduit.home import database_url
from mailconduit.oauth import (
    DeviceAuthorization,
    Flow,
    OAuthError,
    OAuthSettings,
    Provider,
    TokenProvider,
    poll_device_authorization,
    start_device_authorization,
    validate_oauth_settings,
)
from mailconduit.presets import Preset, check_limits, connection_fields, get_preset, list_presets
from mailconduit.view import Shown, view

__all__ = [
    "OAUTH_KEYS",
    "DeviceSignIn",
    "authorize",
    "create",
    "limit_warnings",
    "oauth_view",
    "preset_for",
    "sign_in_status",
    "start_sign_in",
    "stored_fields",
    "token_provider",
    "update",
    "validate",
    "with_tokens",
]

log = logging.getLogger("mailconduit.oauth")

PREFIX: Final = "oauth_"
#: The flat input names of the OAuth2 fields.
OAUTH_KEYS: Final = tuple(PREFIX + name for name in oauth_store.OAUTH_FIELDS)
_SETUP_KEYS: Final = ("preset", "region")


def _split(data: Mapping[str, Any]) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any]]:
    """(connection fields, OAuth2 fields without their prefix, preset and region)."""
    conn: dict[str, Any] = {}
    oauth: dict[str, Any] = {}
    setup: dict[str, Any] = {}
    for key, value in data.items():
        if key in OAUTH_KEYS:
            oauth[key.removeprefix(PREFIX)] = value
        elif key in _SETUP_KEYS:
            setup[key] = value
        else:
            conn[key] = value
    return conn, oauth, setup


def _prefixed(error: ConfigError) -> list[FieldError]:
    return [FieldError(PREFIX + e.field, e.message) for e in error.errors]


def _preset(setup: Mapping[str, Any], port: Any) -> Preset | None:
    name = str(setup.get("preset") or "").strip()
    region = str(setup.get("region") or "").strip()
    if not name:
        if region:
            raise ConfigError.for_fields(
                "connection", [FieldError("region", "is used only with a preset")]
            )
        return None
    found = get_preset(name, region=region)
    try:
        number = int(port) if port not in (None, "") else None
    except (TypeError, ValueError):
        number = None
    if number is not None and number in dict(found.ports):
        found = get_preset(name, region=region, port=number)
    return found


def _fill(conn: dict[str, Any], preset: Preset) -> dict[str, Any]:
    """The preset's fields under the user's own (a given one wins, also security vs use_ssl)."""
    filled = connection_fields(preset)
    if conn.get("security") not in (None, "") or conn.get("use_ssl") is not None:
        filled.pop("security", None)
        filled.pop("use_ssl", None)
    given = {k: v for k, v in conn.items() if v not in (None, "")}
    return {**filled, **given}


def _oauth_wanted(oauth: Mapping[str, Any]) -> bool:
    """True when any OAuth2 field is given."""
    return any(v not in (None, "") for v in oauth.values())


def _check(
    conn_data: Mapping[str, Any], oauth_data: Mapping[str, Any] | None
) -> tuple[Connection, OAuthSettings | None]:
    """Validate both parts at once; one ConfigError naming every wrong field."""
    errors: list[FieldError] = []
    conn: Connection | None = None
    settings: OAuthSettings | None = None
    try:
        conn = validate_connection(conn_data)
    except ConfigError as exc:
        errors.extend(exc.errors)
    if oauth_data is not None:
        try:
            settings = validate_oauth_settings(oauth_data)
        except ConfigError as exc:
            errors.extend(_prefixed(exc))
    if conn is not None and not errors:
        if settings is not None and conn.auth_mechanism is not AuthMechanism.XOAUTH2:
            errors.append(FieldError("auth_mechanism", "must be xoauth2 to sign in with OAuth2"))
        if settings is None and conn.auth_mechanism is AuthMechanism.XOAUTH2 and not conn.password:
            errors.append(
                FieldError(
                    "oauth_client_id",
                    "is required for xoauth2: give the app's OAuth2 settings (or an access "
                    "token as password)",
                )
            )
    if errors:
        raise ConfigError.for_fields("connection", errors)
    assert conn is not None
    return conn, settings


def _prepare(data: Mapping[str, Any]) -> tuple[dict[str, Any], dict[str, Any], Preset | None]:
    conn_data, oauth_data, setup = _split(data)
    preset = _preset(setup, conn_data.get("port"))
    # OAuth2 fields typed by the user mean XOAUTH2, whatever a preset's login method is.
    if _oauth_wanted(oauth_data) and conn_data.get("auth_mechanism") in (None, ""):
        conn_data["auth_mechanism"] = AuthMechanism.XOAUTH2.value
    if preset is not None:
        conn_data = _fill(conn_data, preset)
        if preset.oauth_provider and _oauth_wanted(oauth_data):
            oauth_data.setdefault("provider", preset.oauth_provider)
    return conn_data, oauth_data, preset


def validate(data: Mapping[str, Any]) -> Connection:
    """Check a new connection's input (connection, preset and OAuth2 fields) without storing."""
    conn_data, oauth_data, _ = _prepare(data)
    return _check(conn_data, oauth_data if _oauth_wanted(oauth_data) else None)[0]


def stored_fields(name: str, *, include_secrets: bool = False) -> dict[str, Any]:
    """The preset and ``oauth_*`` input that recreates the connection's sign-in (for
    ``connections export``); the secrets only with ``include_secrets``."""
    raw = oauth_store.get_raw(name)
    out: dict[str, Any] = {}
    preset = oauth_store.get_preset_name(name)
    if preset:
        out["preset"] = preset
    for key, value in raw.items():
        if key in oauth_store.SECRET_FIELDS:
            if include_secrets and isinstance(value, Secret):
                out[PREFIX + key] = value.reveal()
        else:
            out[PREFIX + key] = value
    return out


def create(data: Mapping[str, Any]) -> Connection:
    """Store a new connection with its OAuth2 settings and preset, all validated first."""
    conn_data, oauth_data, preset = _prepare(data)
    wanted = _oauth_wanted(oauth_data)
    _check(conn_data, oauth_data if wanted else None)
    conn = store.create(conn_data)
    if wanted or preset is not None:
        try:
            if wanted:
                oauth_store.set_oauth(conn.name, oauth_data, preset=preset.name if preset else "")
            else:
                oauth_store.set_preset(conn.name, preset.name if preset else "")
        except BaseException:
            store.delete_connection(conn.name)
            raise
    return conn


def update(name: str, changes: Mapping[str, Any]) -> Connection:
    """Change a stored connection and its OAuth2 settings (``oauth_provider: ''`` removes
    them); the OAuth2 part is checked before anything is written."""
    conn_changes, oauth_changes, setup = _split(changes)
    preset = _preset(setup, conn_changes.get("port"))
    current = oauth_store.get_raw(name)
    remove = oauth_changes.get("provider") == ""
    given = _oauth_wanted(oauth_changes) and not remove
    if given and not current and conn_changes.get("auth_mechanism") in (None, ""):
        conn_changes["auth_mechanism"] = AuthMechanism.XOAUTH2.value
    if preset is not None:
        conn_changes = _fill(conn_changes, preset)
    if given and not current and preset is not None and preset.oauth_provider:
        oauth_changes.setdefault("provider", preset.oauth_provider)
    merged = {} if remove else oauth_store.merge(current, oauth_changes)
    existing = store.get(name)
    auth = conn_changes.get("auth_mechanism") or existing.auth_mechanism.value
    errors: list[FieldError] = []
    if merged:
        try:
            validate_oauth_settings(merged)
        except ConfigError as exc:
            errors.extend(_prefixed(exc))
        if str(auth).lower() != AuthMechanism.XOAUTH2.value:
            errors.append(FieldError("auth_mechanism", "must be xoauth2 to sign in with OAuth2"))
    elif str(auth).lower() == AuthMechanism.XOAUTH2.value and not (
        conn_changes.get("password") or existing.password
    ):
        errors.append(
            FieldError("oauth_client_id", "is required for xoauth2 without an access token")
        )
    if errors:
        raise ConfigError.for_fields("connection", errors)
    conn = store.update_connection(name, conn_changes)
    if conn.name != name:
        oauth_store.rename_oauth(name, conn.name)
    if remove:
        oauth_store.clear_oauth(conn.name)
    elif given:
        oauth_store.set_oauth(conn.name, oauth_changes, preset=preset.name if preset else None)
    elif preset is not None:
        oauth_store.set_preset(conn.name, preset.name)
    return conn


def oauth_view(name: str) -> dict[str, Any] | None:
    """The connection's OAuth2 settings as anyone may see them (secrets: only whether set)."""
    settings = oauth_store.get_oauth(name)
    return settings.public_dict() if settings is not None else None


def preset_for(conn: Connection) -> Preset | None:
    """The preset the connection was made from, else the one whose server it uses (None
    when neither): whose published limits its settings are held to."""
    chosen = oauth_store.get_preset_name(conn.name) if conn.origin == "store" else ""
    presets = list_presets()
    for preset in presets:
        if preset.name == chosen:
            return preset
    host = conn.host.lower()
    for preset in presets:
        server = preset.server_url.lower()
        regional = server.endswith(".amazonaws.com") and host.endswith(".amazonaws.com")
        if server == host or regional:  # SES: any region's endpoint
            return preset
    return None


def limit_warnings(conn: Connection) -> list[str]:
    """Where the connection's settings allow more than its provider's published limits."""
    preset = preset_for(conn)
    return check_limits(conn.public_dict(), preset) if preset is not None else []


def token_provider(
    conn: Connection,
    *,
    clock: Callable[[], float] = time.time,
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
) -> TokenProvider | None:
    """One token provider for ``conn`` (None unless it is a stored XOAUTH2 connection with
    OAuth2 settings): tokens cached in the store's database, a rotated refresh token saved."""
    if not conn.signs_in_with_oauth:
        return None
    settings = oauth_store.get_oauth(conn.name)
    if settings is None:
        return None
    name = conn.name

    async def save(token: Secret) -> None:
        await asyncio.to_thread(oauth_store.save_refresh_token, name, token)

    return TokenProvider(
        settings,
        name=name,
        cache=oauth_store.token_cache(),
        on_refresh_token=save,
        clock=clock,
        sleep=sleep,
    )


def with_tokens(conn: Connection, **options: Any) -> Connection:
    """``conn`` with a token provider attached for one run (unchanged when not OAuth2)."""
    provider = token_provider(conn, **options)
    return conn if provider is None else conn.with_changes(token_source=provider)


async def authorize(
    name: str,
    *,
    show: Callable[[DeviceAuthorization], None],
    clock: Callable[[], float] = time.time,
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
) -> OAuthSettings:
    """Sign a connection in with the device-code flow: ``show`` tells the user where to go
    and which code to type; the refresh token is stored when they are done."""
    settings = oauth_store.get_oauth(name)
    if settings is None:
        raise ConfigError.for_fields(
            "connection",
            [FieldError("oauth_provider", f"{name!r} has no OAuth2 settings to sign in with")],
        )
    if settings.flow is Flow.CLIENT_CREDENTIALS:
        raise ConfigError.for_fields(
            "connection",
            [
                FieldError(
                    "oauth_flow", "client_credentials needs no sign-in: the app signs itself in"
                )
            ],
        )
    if settings.provider is Provider.GOOGLE:
        raise ConfigError.for_fields(
            "connection",
            [
                FieldError(
                    "oauth_provider",
                    "Google's device sign-in cannot grant the Gmail scope; get a refresh token "
                    "with a browser sign-in (see the README) and set it with "
                    "--refresh-token-env",
                )
            ],
        )
    try:
        pending = await start_device_authorization(settings)
        show(pending)
        grant = await poll_device_authorization(settings, pending, clock=clock, sleep=sleep)
    except OAuthError as exc:
        raise exc.for_connection(name) from None  # the hint names the command to run
    if grant.refresh_token is None:
        raise ConfigError.for_fields(
            "connection",
            [
                FieldError(
                    "oauth_scope",
                    "the sign-in gave no refresh token: add offline_access to the scope",
                )
            ],
        )
    await asyncio.to_thread(oauth_store.save_refresh_token, name, grant.refresh_token)
    await asyncio.to_thread(oauth_store.forget_tokens, name)
    return settings


class DeviceSignIn:
    """A device sign-in started from the console or the REST API and finished in the
    background: the page shows ``user_code`` and ``verification_uri`` and asks ``state``.

    ``state`` is ``pending``, ``done`` or ``failed`` (then ``message`` says why and what to
    do). The device code never leaves this object.
    """

    _SHOWN: ClassVar[Shown] = (
        "state",
        "user_code",
        "verification_uri",
        "instructions",
        "expires_at",
        "message",
    )

    def __init__(self, name: str) -> None:
        self.name = name
        #: When the code stops working (seconds since the epoch); 0 until it is known.
        self.expires_at = 0.0
        self.user_code = ""
        self.verification_uri = ""
        self.instructions = ""
        self.state = "starting"
        self.message = ""
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"sign-in {name}", daemon=True)

    def start(self, timeout: float) -> None:
        """Ask for the code (waits up to ``timeout`` s for it), then poll in the background."""
        self._thread.start()
        self._ready.wait(timeout)

    def _show(self, pending: DeviceAuthorization) -> None:
        self.user_code = pending.user_code
        self.verification_uri = pending.verification_uri
        self.instructions = pending.instructions()
        self.expires_at = time.time() + pending.expires_in
        self.state = "pending"
        self._ready.set()

    def view(self) -> dict[str, Any]:
        """What a page or the REST API shows (never the device code)."""
        return view(self, self._SHOWN)

    def _run(self) -> None:
        try:
            asyncio.run(authorize(self.name, show=self._show))
        except MailconduitError as exc:
            self.state, self.message = "failed", str(exc)
        except Exception as exc:  # reported on the page; the console keeps serving
            log.exception("the device sign-in of %s failed", self.name)
            self.state, self.message = "failed", f"internal error: {type(exc).__name__}"
        else:
            self.state, self.message = "done", "signed in: the refresh token is stored"
        finally:
            self._ready.set()


#: By store (database URL) and connection name: a console serves one store, tests many.
_sign_ins: dict[tuple[str, str], DeviceSignIn] = {}
_sign_ins_lock = threading.Lock()


def start_sign_in(name: str, *, timeout: float = 30.0) -> DeviceSignIn:
    """Start (or return the one under way) a background device sign-in for ``name``."""
    key = (database_url(), name)
    with _sign_ins_lock:
        current = _sign_ins.get(key)
        if current is not None and current.state in ("starting", "pending"):
            return current
        sign_in = _sign_ins[key] = DeviceSignIn(name)
    sign_in.start(timeout)
    return sign_in


def sign_in_status(name: str) -> DeviceSignIn | None:
    """The latest device sign-in started in this process for ``name``."""
    with _sign_ins_lock:
        return _sign_ins.get((database_url(), name))
