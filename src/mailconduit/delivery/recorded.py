"""A run's settings as the journal keeps them: a database URL's password sealed, not in clear.

The journal is read by ``runs show``, the console and REST, and may sit on a shared
PostgreSQL; the URL is kept there redacted for people to read, beside a sealed copy that
``runs resume`` opens with the store's key.
"""

from __future__ import annotations

from typing import Any

from mailconduit.crypto import decrypt, encrypt
from mailconduit.home import redact_url

__all__ = ["SEALED_URL", "seal_spec", "unseal_spec"]

#: The key of the sealed database URL in a recorded spec.
SEALED_URL = "database_url_sealed"


def seal_spec(spec: dict[str, Any]) -> dict[str, Any]:
    """``spec`` (as :func:`export_spec_to_dict` writes it) with the database URL's password
    replaced by ``***`` and the whole URL sealed beside it; a URL without one stays as is."""
    url = spec.get("database_url") or ""
    shown = redact_url(url)
    if shown == url:
        return spec
    return {**spec, "database_url": shown, SEALED_URL: encrypt(url)}


def unseal_spec(spec: dict[str, Any], *, run_id: str) -> dict[str, Any]:
    """The recorded ``spec`` with its database URL opened again (a ConfigError naming the run's
    ``database_url`` when this key cannot open it)."""
    if SEALED_URL not in spec:
        return spec
    opened = dict(spec)
    sealed = opened.pop(SEALED_URL)
    opened["database_url"] = decrypt(str(sealed), name=run_id, kind="run", field="database_url")
    return opened
