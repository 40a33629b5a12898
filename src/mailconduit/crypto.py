"""Secrets at rest: Fernet (AES-128-CBC + HMAC) with a key from MAILCONDUIT_KEY or a 0600 key file.

Connection passwords and OAuth2 secrets in the store, and a run's database URL in the journal,
are sealed with it; the key never leaves this module's callers' machine unless the operator
shares MAILCONDUIT_KEY (as every host of an agent must).
"""

from __future__ import annotations

import base64
import binascii
import os

from cryptography.fernet import Fernet, InvalidToken

from mailconduit.errors import ConfigError, FieldError
from mailconduit.home import key_file

__all__ = ["decrypt", "encrypt", "load_key"]


def load_key() -> bytes:
    """The Fernet key: MAILCONDUIT_KEY if set, else the key file, created 0600 on first use."""
    env = os.environ.get("MAILCONDUIT_KEY", "").strip()
    if env:
        _check_key(env.encode(), "MAILCONDUIT_KEY")
        return env.encode()
    path = key_file()
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        key = path.read_bytes().strip()
        _check_key(key, str(path))
        return key
    key = Fernet.generate_key()
    with os.fdopen(fd, "wb") as fh:
        fh.write(key + b"\n")
    return key


def _check_key(key: bytes, where: str) -> None:
    try:
        raw = base64.urlsafe_b64decode(key)
    except (binascii.Error, ValueError):
        raw = b""
    if len(raw) != 32:
        raise ConfigError.for_fields(
            "encryption key",
            [FieldError(where, "is not a Fernet key (32 url-safe base64-encoded bytes)")],
        )


def encrypt(plain: str) -> str:
    return Fernet(load_key()).encrypt(plain.encode("utf-8")).decode("ascii")


def decrypt(token: str, *, name: str, kind: str = "connection", field: str = "password") -> str:
    """The plain text of ``token``; a :class:`ConfigError` naming ``kind`` ``name``'s ``field``
    when this key cannot open it."""
    try:
        return Fernet(load_key()).decrypt(token.encode("ascii")).decode("utf-8")
    except InvalidToken:
        raise ConfigError.for_fields(
            kind,
            [
                FieldError(
                    field,
                    f"the stored {field} of {name!r} cannot be decrypted with this key "
                    "(MAILCONDUIT_KEY or the key file changed?); enter it again",
                )
            ],
        ) from None
