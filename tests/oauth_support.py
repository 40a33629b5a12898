"""Shared by the OAuth tests: the authorization server with its two usual clients."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from typing import Any

from mailconduit.testing.oauth import DEVICE_GRANT, ManualClock, OAuthServer

#: The confidential app's secret; odd characters exercise RFC 6749's form-encoding.
SECRET = "s3cret:with/odd+chars"
ANN = "ann@example.com"


@contextmanager
def authorization_server(
    clock: ManualClock, *, scopes: Iterable[str] = (), **options: Any
) -> Iterator[OAuthServer]:
    """An :class:`OAuthServer` on ``clock`` knowing ``app`` (confidential, every grant,
    ``scopes`` or any) and ``tv`` (public: device flow and refresh, any scope)."""
    with OAuthServer(clock=clock, **options) as server:
        server.register_client("app", SECRET, scopes=scopes)
        server.register_client("tv", None, grant_types=[DEVICE_GRANT, "refresh_token"])
        yield server
