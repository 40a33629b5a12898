"""What can go wrong getting an OAuth2 token, one class per thing the user must do next.

Each error carries the provider's error code and the first line of its description
(never a secret: descriptions are scrubbed of the values we sent), the endpoint it came
from, the HTTP status and, once the token provider knows it, the connection's name for
the hint. ``retriable`` says whether trying again later can help. Like every error of
mailconduit, ``args`` equals the constructor arguments, so an error pickles.

These classes belong in :mod:`mailconduit.errors`; they live here until that module is
free to change.
"""

from __future__ import annotations

from urllib.parse import urlsplit

from mailconduit.errors import MailconduitError

__all__ = [
    "AccessDeniedError",
    "ConsentRequiredError",
    "DeviceCodeExpiredError",
    "InvalidClientError",
    "InvalidGrantError",
    "InvalidScopeError",
    "NotSignedInError",
    "OAuthError",
    "SignInRequiredError",
    "TokenEndpointDeniedError",
    "TokenEndpointUnreachableError",
    "TokenServerError",
    "UnauthorizedClientError",
]


def authorize_command(connection: str) -> str:
    """The command that signs a connection in again, as a user would type it."""
    return f"mailconduit connections authorize {connection or 'NAME'}"


class OAuthError(MailconduitError):
    """The token endpoint refused or could not be asked; ``code`` is the provider's error code."""

    retriable = False

    def __init__(
        self,
        code: str,
        description: str = "",
        endpoint: str = "",
        status: int = 0,
        connection: str = "",
    ) -> None:
        super().__init__(code, description, endpoint, status, connection)
        self.code = code
        self.description = description
        self.endpoint = endpoint
        self.status = status
        self.connection = connection

    @property
    def hint(self) -> str:
        """What the user should change or do, in one clause ('' when there is nothing to add)."""
        return ""

    def for_connection(self, connection: str) -> OAuthError:
        """The same error naming the connection it happened on (for the hint)."""
        return type(self)(self.code, self.description, self.endpoint, self.status, connection)

    @property
    def reason(self) -> str:
        """What happened, without the hint (Test Connection shows the two apart)."""
        host = urlsplit(self.endpoint).hostname or self.endpoint
        text = f"token endpoint {host}" if host else "token endpoint"
        text += f" answered HTTP {self.status} {self.code}" if self.status else f": {self.code}"
        if self.description:
            text += f" ({self.description})"
        return text

    def __str__(self) -> str:
        return f"{self.reason}; {self.hint}" if self.hint else self.reason


class SignInRequiredError(OAuthError):
    """Only a new sign-in helps: the run stops and says which command signs in again."""

    @property
    def hint(self) -> str:
        return f"sign in again: {authorize_command(self.connection)}"


class InvalidGrantError(SignInRequiredError):
    """``invalid_grant``: the refresh token was revoked, expired or already rotated away."""


class NotSignedInError(SignInRequiredError):
    """The connection holds no refresh token yet: nobody has signed it in."""

    @property
    def reason(self) -> str:
        return "the connection has not been signed in"

    @property
    def hint(self) -> str:
        return f"sign in: {authorize_command(self.connection)}"


class ConsentRequiredError(OAuthError):
    """Consent or an interactive step (multi-factor, conditional access) is missing.

    Microsoft sends it as ``invalid_grant`` with ``suberror`` consent_required or
    AADSTS65001, or as ``interaction_required``; OpenID Connect as ``consent_required``.
    """

    @property
    def hint(self) -> str:
        if self.code == "interaction_required":
            return (
                "the account needs an interactive sign-in (multi-factor authentication or a "
                f"conditional access policy): {authorize_command(self.connection)}"
            )
        return (
            "the app lacks consent for this scope: have an administrator grant consent to the "
            f"app registration, then sign in again: {authorize_command(self.connection)}"
        )


class InvalidClientError(OAuthError):
    """``invalid_client``: unknown client id, wrong or expired client secret."""

    @property
    def hint(self) -> str:
        return "check the client id and client secret (client secrets expire)"


class UnauthorizedClientError(OAuthError):
    """``unauthorized_client``: the app registration may not use this grant type."""

    @property
    def hint(self) -> str:
        return (
            "the app registration does not allow this flow (Microsoft: allow public client "
            "flows for device sign-in; add the SMTP.SendAsApp permission for app-only)"
        )


class InvalidScopeError(OAuthError):
    """``invalid_scope``: a requested scope is unknown or beyond what was granted."""

    @property
    def hint(self) -> str:
        return (
            "check the scope (Microsoft: https://outlook.office.com/SMTP.Send offline_access, "
            "app-only https://outlook.office365.com/.default; Google: https://mail.google.com/)"
        )


class AccessDeniedError(OAuthError):
    """The user declined the sign-in (device flow ``access_denied`` / ``authorization_declined``)."""

    @property
    def hint(self) -> str:
        return f"the sign-in was declined; run {authorize_command(self.connection)} again"


class DeviceCodeExpiredError(OAuthError):
    """Nobody finished the device sign-in before its code expired."""

    @property
    def hint(self) -> str:
        return f"the code expired before sign-in finished; run {authorize_command(self.connection)} again"


class TokenEndpointUnreachableError(OAuthError):
    """No answer from the token endpoint: name resolution, connection or timeout."""

    retriable = True

    @property
    def hint(self) -> str:
        return "check the network, any proxy, and the token endpoint's address"


class TokenEndpointDeniedError(OAuthError):
    """The token endpoint's address is one the network policy refuses (the SSRF guard that
    also covers SMTP servers): a metadata service, a link-local or a denied network."""

    @property
    def hint(self) -> str:
        return (
            "use the provider's public token endpoint, or let an administrator allow its "
            "network (MAILCONDUIT_ALLOW_NETWORKS)"
        )


class TokenServerError(OAuthError):
    """The provider failed for now (5xx, 429, ``temporarily_unavailable``, ``server_error``)."""

    retriable = True

    @property
    def hint(self) -> str:
        return "the provider reports a temporary problem; try again later"
