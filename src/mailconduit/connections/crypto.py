"""The secrets-at-rest functions under their earlier name (they live in :mod:`mailconduit.crypto`)."""

from __future__ import annotations

from mailconduit.crypto import decrypt, encrypt, load_key

__all__ = ["decrypt", "encrypt", "load_key"]
