"""Fixtures of the OAuth tests: a manual clock and the authorization server on it.

A module that wants other server options (token lifetime, scopes) names them in
``AUTH_SERVER``; the default is a one-hour access token.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from mailconduit.testing.oauth import ManualClock, OAuthServer
from oauth_support import authorization_server

DEFAULT_AUTH_SERVER: dict[str, Any] = {"access_token_lifetime": 3600}


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


@pytest.fixture
def auth(request: pytest.FixtureRequest, clock: ManualClock) -> Iterator[OAuthServer]:
    """:func:`oauth_support.authorization_server` on ``clock``, with the module's AUTH_SERVER."""
    options = getattr(request.module, "AUTH_SERVER", DEFAULT_AUTH_SERVER)
    with authorization_server(clock, **options) as server:
        yield server
