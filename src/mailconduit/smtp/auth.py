"""SASL for SMTP AUTH (RFC 4954): choosing a mechanism and encoding each step. No I/O.

Mechanisms: PLAIN (RFC 4616), LOGIN, CRAM-MD5 (RFC 2195) and XOAUTH2 (the password
field holds the OAuth 2 access token). The session redacts every line produced here
from transcripts; nothing in this module logs or formats a secret into a message.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
from collections.abc import Sequence
from typing import ClassVar

from mailconduit.config import AuthMechanism
from mailconduit.errors import AuthenticationError
from mailconduit.smtp.replies import Reply

__all__ = [
    "AuthExchange",
    "AuthNotOfferedError",
    "InsecureAuthError",
    "MechanismNotOfferedError",
    "UnusableAuthError",
    "choose_mechanism",
    "mechanism_name",
    "retry_with_new_token",
]


class UnusableAuthError(AuthenticationError):
    """No login was tried: nothing the server offers may be used here; ``hint`` says what to
    change in the connection (Test Connection shows it)."""

    hint: ClassVar[str] = ""


class AuthNotOfferedError(UnusableAuthError):
    """Credentials are configured but the server offers no AUTH at all."""

    hint = "set auth_mechanism to none if this server needs no login"


class MechanismNotOfferedError(UnusableAuthError):
    """The configured mechanism is not among those the server offers."""

    hint = "choose one of the mechanisms the server offers, or auth_mechanism auto"


class InsecureAuthError(UnusableAuthError):
    """The only usable mechanisms would reveal the password on an unencrypted connection."""

    hint = "use security starttls or tls"

#: ``auto`` picks the first of these the server offers.
AUTO_PREFERENCE = ("CRAM-MD5", "PLAIN", "LOGIN")
#: Mechanisms that never reveal the password to an eavesdropper.
_SAFE_IN_CLEAR = frozenset({"CRAM-MD5"})
#: Most 334 challenges one exchange may take before we call it a protocol error.
MAX_STEPS = 4

_NAMES = {
    AuthMechanism.PLAIN: "PLAIN",
    AuthMechanism.LOGIN: "LOGIN",
    AuthMechanism.CRAM_MD5: "CRAM-MD5",
    AuthMechanism.XOAUTH2: "XOAUTH2",
}


def mechanism_name(mechanism: AuthMechanism) -> str:
    """The SASL name of a configured mechanism (``cram-md5`` → ``CRAM-MD5``)."""
    return _NAMES[mechanism]


def choose_mechanism(
    requested: AuthMechanism,
    offered: Sequence[str],
    *,
    encrypted: bool,
    cleartext_allowed: bool,
) -> str:
    """The mechanism to use, or :class:`AuthenticationError` saying why there is none.

    ``encrypted`` is true over TLS; ``cleartext_allowed`` is true on loopback or when
    the connection sets allow_insecure_auth. Only CRAM-MD5 is used in clear otherwise.
    """
    offered_upper = [m.upper() for m in offered]
    shown = ", ".join(offered_upper) if offered_upper else "none"
    if not offered_upper:
        raise AuthNotOfferedError(
            0,
            "the server offers no AUTH but credentials are configured; set auth_mechanism "
            "to none if this server needs no login"
            + ("" if encrypted else " (some servers offer AUTH only after STARTTLS)"),
            command="EHLO",
        )
    may_reveal = encrypted or cleartext_allowed
    if requested is AuthMechanism.AUTO:
        for name in AUTO_PREFERENCE:
            if name in offered_upper and (may_reveal or name in _SAFE_IN_CLEAR):
                return name
        usable = [n for n in AUTO_PREFERENCE if n in offered_upper]
        if usable:
            raise InsecureAuthError(
                0,
                f"refusing to send the password unencrypted ({', '.join(usable)} would reveal "
                "it); use security starttls or tls (or allow_insecure_auth)",
                command="AUTH",
            )
        raise UnusableAuthError(
            0,
            f"none of the server's AUTH mechanisms ({shown}) is supported; we support "
            "PLAIN, LOGIN, CRAM-MD5 and XOAUTH2 (set auth_mechanism explicitly)",
            command="AUTH",
        )
    name = mechanism_name(requested)
    if name not in offered_upper:
        raise MechanismNotOfferedError(
            0,
            f"auth mechanism {name} is not offered by the server (it offers {shown})",
            command="AUTH",
        )
    if not may_reveal and name not in _SAFE_IN_CLEAR:
        raise InsecureAuthError(
            0,
            f"refusing to send credentials with {name} over an unencrypted connection; use "
            "security starttls or tls (or allow_insecure_auth)",
            command="AUTH",
        )
    return name


#: Exchange's 535 5.7.139 refuses for a policy (SMTP AUTH off for the tenant or mailbox,
#: a permission missing): a new token would be refused the same way.
_POLICY_REFUSALS = frozenset({"5.7.139"})


def retry_with_new_token(reply: Reply) -> bool:
    """True when an XOAUTH2 refusal may be the token's fault (535, but not a policy refusal):
    the session then drops the token, fetches a new one and tries AUTH once more."""
    return reply.code == 535 and reply.enhanced not in _POLICY_REFUSALS


def _b64(text: str) -> bytes:
    return base64.b64encode(text.encode("utf-8"))


class AuthExchange:
    """One SASL exchange: the AUTH command, then one response per 334 challenge."""

    __slots__ = ("_password", "_steps", "_username", "mechanism")

    def __init__(self, mechanism: str, username: str, password: str) -> None:
        self.mechanism = mechanism
        self._username = username
        self._password = password
        self._steps = 0

    @property
    def has_initial_response(self) -> bool:
        """True when the AUTH line itself carries credentials (redact all after the name)."""
        return self.mechanism in ("PLAIN", "XOAUTH2")

    def command(self) -> bytes:
        """The ``AUTH <mechanism> [initial-response]`` line."""
        line = b"AUTH " + self.mechanism.encode("ascii")
        if self.mechanism == "PLAIN":
            line += b" " + self._plain()
        elif self.mechanism == "XOAUTH2":
            line += b" " + self._xoauth2()
        return line + b"\r\n"

    def respond(self, challenge: str) -> bytes:
        """The line answering a 334 challenge (``challenge`` is the base64 text after 334)."""
        self._steps += 1
        if self._steps > MAX_STEPS:
            raise AuthenticationError(
                0, f"the server kept challenging {self.mechanism} AUTH", command="AUTH"
            )
        mech = self.mechanism
        if mech == "PLAIN":
            return self._plain() + b"\r\n"
        if mech == "LOGIN":
            return (_b64(self._username) if self._steps == 1 else _b64(self._password)) + b"\r\n"
        if mech == "CRAM-MD5":
            try:
                nonce = base64.b64decode(challenge.strip(), validate=True)
            except (binascii.Error, ValueError):
                raise AuthenticationError(
                    0, "the server sent an invalid CRAM-MD5 challenge", command="AUTH"
                ) from None
            digest = hmac.new(self._password.encode("utf-8"), nonce, hashlib.md5).hexdigest()
            return _b64(f"{self._username} {digest}") + b"\r\n"
        # XOAUTH2: a 334 carries a JSON error; an empty line asks for the final 535.
        return b"\r\n"

    def _plain(self) -> bytes:
        return _b64(f"\0{self._username}\0{self._password}")

    def _xoauth2(self) -> bytes:
        return _b64(f"user={self._username}\x01auth=Bearer {self._password}\x01\x01")
