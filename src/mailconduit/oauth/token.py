"""Value objects of the token exchange: an access token, what a token request returns, and
a device sign-in in progress. Token values are :class:`Secret` throughout."""

from __future__ import annotations

from dataclasses import dataclass, field

from mailconduit.config.secret import Secret

__all__ = ["AccessToken", "DeviceAuthorization", "TokenGrant"]

#: The most a token is renewed ahead of its expiry; shorter lifetimes renew at 90 %.
MAX_RENEW_AHEAD = 300.0


@dataclass(frozen=True, slots=True)
class AccessToken:
    """A bearer token for XOAUTH2 and when it stops working (seconds since the epoch)."""

    value: Secret = field(repr=False)
    expires_at: float
    issued_at: float
    scope: str = ""

    def renew_at(self, *, ahead: float = MAX_RENEW_AHEAD) -> float:
        """When to get the next token: ``ahead`` seconds before expiry, or at 90 % of the
        lifetime when that comes later (a 60-second token is not renewed at birth)."""
        lifetime = max(0.0, self.expires_at - self.issued_at)
        return self.expires_at - min(ahead, lifetime / 10)

    def usable(self, now: float) -> bool:
        """Good to hand out now, with time left for the AUTH it is fetched for."""
        return now < self.renew_at()

    def expired(self, now: float) -> bool:
        return now >= self.expires_at

    def grants(self, scope: str) -> bool:
        """True when every scope in ``scope`` was granted (or the server did not say)."""
        if not self.scope:
            return True
        return set(scope.split()) <= set(self.scope.split())


@dataclass(frozen=True, slots=True)
class TokenGrant:
    """What a successful token request gave: an access token and, maybe, a new refresh token."""

    access_token: AccessToken
    refresh_token: Secret | None = field(default=None, repr=False)


@dataclass(frozen=True, slots=True)
class DeviceAuthorization:
    """A device sign-in waiting for the user (RFC 8628 section 3.2).

    Show ``verification_uri`` and ``user_code`` (or ``message``, the provider's own
    wording); ``device_code`` is what the client polls with and stays secret.
    """

    device_code: Secret = field(repr=False)
    user_code: str
    verification_uri: str
    expires_in: float
    interval: float = 5.0
    verification_uri_complete: str = ""
    message: str = ""

    def instructions(self) -> str:
        """One line telling the user where to go and what to type."""
        if self.message:
            return self.message
        return f"To sign in, open {self.verification_uri} and enter the code {self.user_code}"
