"""mailconduit: deliver rows of data as e-mail through an SMTP server."""

from __future__ import annotations

__version__ = "0.1.0"

__all__ = ["__version__"]
