"""The one account the sink accepts: user ``mailconduit`` and a random password.

The password is created on first use and kept in ``credentials.json`` (mode 0600)
under the sink directory; that file is the single source of truth for both the
sink and the built-in ``local`` connection. It is never printed.
"""

from __future__ import annotations

import hmac
import json
import os
import secrets
from dataclasses import dataclass
from pathlib import Path

from mailconduit.config.secret import Secret
from mailconduit.errors import ConfigError, FieldError
from mailconduit.sink.files import write_private_file

__all__ = ["USERNAME", "SinkCredentials", "credentials_file", "ensure_credentials"]

USERNAME = "mailconduit"


@dataclass(frozen=True, slots=True)
class SinkCredentials:
    """The user name and password the sink's AUTH accepts."""

    username: str
    password: Secret

    def accepts(self, username: bytes, password: bytes) -> bool:
        """True when both match, compared in constant time."""
        user_ok = hmac.compare_digest(username, self.username.encode("utf-8"))
        password_ok = hmac.compare_digest(password, self.password.reveal().encode("utf-8"))
        return user_ok and password_ok


def credentials_file(directory: Path) -> Path:
    return directory / "credentials.json"


def ensure_credentials(directory: Path) -> SinkCredentials:
    """Read the sink's credentials, creating them with a random password on first use.

    The caller holds the sink directory lock. A file a user broke is reported, not
    silently replaced (clients may already be configured with its password).
    """
    path = credentials_file(directory)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        password = secrets.token_urlsafe(24)
        body = {"username": USERNAME, "password": password}
        write_private_file(path, (json.dumps(body, indent=2) + "\n").encode("utf-8"))
        return SinkCredentials(USERNAME, Secret(password))
    if os.stat(path).st_mode & 0o077:
        os.chmod(path, 0o600)
    try:
        data = json.loads(text)
        username, password = data["username"], data["password"]
    except (ValueError, KeyError, TypeError):
        raise ConfigError.for_fields(
            "sink credentials",
            [
                FieldError(
                    str(path),
                    'must be JSON with "username" and "password"; delete it to create new ones',
                )
            ],
        ) from None
    if (
        not isinstance(username, str)
        or not isinstance(password, str)
        or not username
        or not password
    ):
        raise ConfigError.for_fields(
            "sink credentials",
            [FieldError(str(path), '"username" and "password" must be non-empty text')],
        )
    return SinkCredentials(username, Secret(password))
