"""home.py: the one redactor of database URLs in messages (journal, store engine, sources)."""

from __future__ import annotations

import pytest

from mailconduit.home import redact_url


@pytest.mark.parametrize(
    ("given", "shown"),
    [
        ("postgresql://ada:s3cret@db.example.com/mail", "postgresql://ada:***@db.example.com/mail"),
        ("postgresql+psycopg://ada:pa/ss@h:5432/db", "postgresql+psycopg://ada:***@h:5432/db"),
        ("postgresql://ada:p@ss@h/db", "postgresql://ada:***@h/db"),
        ("'mysql://u:pw@h/db' is a database URL", "'mysql://u:***@h/db' is a database URL"),
        ("postgresql://ada@h/db", "postgresql://ada@h/db"),
        ("sqlite:////var/lib/mailconduit.db", "sqlite:////var/lib/mailconduit.db"),
    ],
)
def test_the_password_of_a_url_never_shows(given: str, shown: str) -> None:
    assert redact_url(given) == shown
    assert "s3cret" not in redact_url(given) and "pa/ss" not in redact_url(given)
