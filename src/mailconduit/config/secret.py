"""A secret value (password, token) that never shows itself, and where XOAUTH2 tokens come from."""

from __future__ import annotations

from typing import Protocol


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
