"""What an XOAUTH2 connection holds, the providers' published endpoints and scopes, and
the one validation every entry point goes through. No I/O here."""

from __future__ import annotations

import enum
import hashlib
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Final
from urllib.parse import urlsplit

from mailconduit.config.connection import is_loopback_host
from mailconduit.config.secret import Secret
from mailconduit.errors import ConfigError, FieldError

__all__ = [
    "ClientAuth",
    "Flow",
    "OAuthSettings",
    "Provider",
    "default_scope",
    "validate_oauth_settings",
]


class Provider(enum.StrEnum):
    """Whose identity platform issues the tokens; ``generic`` takes any RFC 6749 server."""

    MICROSOFT = "microsoft"
    GOOGLE = "google"
    GENERIC = "generic"


class Flow(enum.StrEnum):
    """``refresh_token``: a user signed in once (delegated); ``client_credentials``: the app
    itself (Microsoft app-only, SMTP.SendAsApp)."""

    REFRESH_TOKEN = "refresh_token"  # noqa: S105 - a grant type, not a secret
    CLIENT_CREDENTIALS = "client_credentials"


class ClientAuth(enum.StrEnum):
    """How the client secret reaches the token endpoint (RFC 6749 section 2.3.1)."""

    POST = "client_secret_post"
    BASIC = "client_secret_basic"


#: (token endpoint, device authorization endpoint) per provider. Microsoft: identity
#: platform v2.0 ("Microsoft identity platform and the OAuth 2.0 device authorization grant
#: flow", learn.microsoft.com). Google: "OAuth 2.0 for TV and Limited-Input Device
#: Applications" (developers.google.com); Google's device flow grants only a short list of
#: scopes and https://mail.google.com/ is not on it, so Gmail accounts sign in through a
#: browser flow instead.
_ENDPOINTS: Final = {
    Provider.MICROSOFT: (
        "https://login.microsoftonline.com/{tenant}/oauth2/v2.0/token",
        "https://login.microsoftonline.com/{tenant}/oauth2/v2.0/devicecode",
    ),
    Provider.GOOGLE: (
        "https://oauth2.googleapis.com/token",
        "https://oauth2.googleapis.com/device/code",
    ),
}
#: Scopes for SMTP, from "Authenticate an IMAP, POP or SMTP connection using OAuth"
#: (Microsoft) and "OAuth 2.0 Mechanism" (Google's XOAUTH2 protocol page).
_SCOPES: Final = {
    (Provider.MICROSOFT, Flow.REFRESH_TOKEN): "https://outlook.office.com/SMTP.Send offline_access",
    (Provider.MICROSOFT, Flow.CLIENT_CREDENTIALS): "https://outlook.office365.com/.default",
    (Provider.GOOGLE, Flow.REFRESH_TOKEN): "https://mail.google.com/",
}
#: Tenants that name no directory; app-only tokens need a real one.
_MULTI_TENANT: Final = frozenset({"common", "organizations", "consumers"})
_TENANT_RE: Final = re.compile(r"^[A-Za-z0-9][A-Za-z0-9.-]{0,252}$")
_CLIENT_ID_RE: Final = re.compile(r"^[\x21-\x7e]{1,256}$")


def default_scope(provider: Provider, flow: Flow) -> str:
    """The scope a provider's SMTP service wants for a flow ('' when the provider has none)."""
    return _SCOPES.get((provider, flow), "")


@dataclass(frozen=True, slots=True)
class OAuthSettings:
    """Everything needed to get access tokens for one connection, endpoints resolved.

    Build it with :func:`validate_oauth_settings`, which fills the provider's endpoints and
    scope. The client secret and refresh token are :class:`Secret` and never compared,
    printed or logged.
    """

    provider: Provider
    client_id: str
    token_endpoint: str
    scope: str = ""
    tenant: str = ""
    device_endpoint: str = ""
    flow: Flow = Flow.REFRESH_TOKEN
    client_auth: ClientAuth = ClientAuth.POST
    client_secret: Secret | None = field(default=None, compare=False, repr=False)
    refresh_token: Secret | None = field(default=None, compare=False, repr=False)

    @property
    def fingerprint(self) -> str:
        """Identifies who the tokens are for: a cached token from other settings is not reused."""
        text = "\x00".join(
            (self.provider, self.tenant, self.client_id, self.token_endpoint, self.scope, self.flow)
        )
        return hashlib.sha256(text.encode("utf-8")).hexdigest()[:32]

    def public_dict(self) -> dict[str, Any]:
        """Every field except the secrets, which show only whether they are set."""
        return {
            "provider": self.provider.value,
            "tenant": self.tenant,
            "client_id": self.client_id,
            "scope": self.scope,
            "token_endpoint": self.token_endpoint,
            "device_endpoint": self.device_endpoint,
            "flow": self.flow.value,
            "client_auth": self.client_auth.value,
            "has_client_secret": bool(self.client_secret),
            "has_refresh_token": bool(self.refresh_token),
        }


def _choice(kind: type[enum.StrEnum], value: Any, name: str, errors: list[FieldError]) -> Any:
    if isinstance(value, kind):
        return value
    text = str(value or "").strip().lower().replace("-", "_")
    if not text:
        errors.append(FieldError(name, "is required"))
        return None
    for member in kind:
        if text in (member.value, member.name.lower()):
            return member
    errors.append(FieldError(name, f"{value!r} is not one of: {', '.join(m.value for m in kind)}"))
    return None


def _endpoint(value: str, name: str, errors: list[FieldError]) -> str:
    """An http(s) URL without credentials; plain http only to a loopback host."""
    parts = urlsplit(value)
    if parts.scheme not in ("https", "http") or not parts.hostname:
        errors.append(FieldError(name, f"{value!r} is not an http(s) URL"))
    elif parts.username is not None or parts.password is not None or parts.fragment:
        errors.append(FieldError(name, "must not carry credentials or a #fragment"))
    elif parts.scheme == "http" and not is_loopback_host(parts.hostname):
        errors.append(
            FieldError(name, "must use https: the client secret and tokens would cross in clear")
        )
    return value


def _secret(value: Any, name: str, errors: list[FieldError]) -> Secret | None:
    if isinstance(value, Secret):
        return value if value else None
    if value is None or value == "":
        return None
    if not isinstance(value, str) or any(c in value for c in "\r\n\x00"):
        errors.append(FieldError(name, "must be text on one line"))
        return None
    return Secret(value.strip())


def validate_oauth_settings(data: Mapping[str, Any]) -> OAuthSettings:
    """Build :class:`OAuthSettings` from loose input, naming every wrong field at once.

    Keys are the field names of :class:`OAuthSettings`. Microsoft and Google endpoints come
    from the provider (a given ``token_endpoint`` is refused there: tokens go to the
    provider only); ``generic`` needs ``token_endpoint``. An empty scope means the
    provider's SMTP scope for the flow.
    """
    errors: list[FieldError] = []
    known = set(OAuthSettings.__dataclass_fields__)
    errors.extend(FieldError(str(k), "is not an OAuth field") for k in data if k not in known)

    def text(name: str) -> str:
        value = data.get(name)
        if value is None:
            return ""
        if not isinstance(value, str) or any(c in value for c in "\r\n\x00"):
            errors.append(FieldError(name, "must be text on one line"))
            return ""
        return value.strip()

    provider = _choice(Provider, data.get("provider") or "", "provider", errors)
    flow = _choice(Flow, data.get("flow") or Flow.REFRESH_TOKEN, "flow", errors)
    client_auth = _choice(
        ClientAuth, data.get("client_auth") or ClientAuth.POST, "client_auth", errors
    )
    client_id = _client_id(text("client_id"), errors)
    client_secret = _secret(data.get("client_secret"), "client_secret", errors)
    refresh_token = _secret(data.get("refresh_token"), "refresh_token", errors)
    scope = text("scope")
    tenant = _tenant(provider, flow, text("tenant"), errors)
    token_endpoint, device_endpoint = _endpoints(
        provider, tenant, text("token_endpoint"), text("device_endpoint"), errors
    )
    if provider is Provider.GOOGLE and flow is Flow.CLIENT_CREDENTIALS:
        errors.append(
            FieldError(
                "flow", "Google offers no client-credentials sign-in for Gmail; use refresh_token"
            )
        )
    if flow is Flow.CLIENT_CREDENTIALS and not client_secret:
        errors.append(FieldError("client_secret", "is required for client_credentials"))

    if errors:
        raise ConfigError.for_fields("OAuth settings", errors)
    return OAuthSettings(
        provider=provider,
        client_id=client_id,
        token_endpoint=token_endpoint,
        scope=scope or default_scope(provider, flow),
        tenant=tenant,
        device_endpoint=device_endpoint,
        flow=flow,
        client_auth=client_auth,
        client_secret=client_secret,
        refresh_token=refresh_token,
    )


def _client_id(client_id: str, errors: list[FieldError]) -> str:
    if not client_id:
        errors.append(FieldError("client_id", "is required"))
    elif not _CLIENT_ID_RE.match(client_id):
        errors.append(FieldError("client_id", "must be printable ASCII without spaces"))
    return client_id


def _tenant(provider: Provider, flow: Flow, tenant: str, errors: list[FieldError]) -> str:
    """Microsoft's tenant ("common" unless given; app-only sign-in needs a real one)."""
    if provider is not Provider.MICROSOFT:
        if tenant:
            errors.append(FieldError("tenant", "only Microsoft connections have a tenant"))
        return tenant
    if flow is Flow.CLIENT_CREDENTIALS and tenant.lower() in _MULTI_TENANT | {""}:
        errors.append(
            FieldError("tenant", "app-only sign-in needs your tenant's id or domain name")
        )
    tenant = tenant or "common"
    if not _TENANT_RE.match(tenant):
        errors.append(FieldError("tenant", f"{tenant!r} is not a tenant id or domain name"))
    return tenant


def _endpoints(
    provider: Provider, tenant: str, token: str, device: str, errors: list[FieldError]
) -> tuple[str, str]:
    """The token and device endpoints: the provider's own, or the given ones (generic)."""
    if provider in (Provider.MICROSOFT, Provider.GOOGLE):
        for name, value in (("token_endpoint", token), ("device_endpoint", device)):
            if value:
                errors.append(
                    FieldError(name, f"is set by the {provider.value} provider; leave it empty")
                )
        token, device = (url.format(tenant=tenant) for url in _ENDPOINTS[provider])
    elif provider is Provider.GENERIC:
        if not token:
            errors.append(FieldError("token_endpoint", "is required for a generic provider"))
        else:
            _endpoint(token, "token_endpoint", errors)
        if device:
            _endpoint(device, "device_endpoint", errors)
    return token, device
