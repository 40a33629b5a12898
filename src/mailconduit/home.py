"""Where mailconduit keeps its state: one home directory, chosen by MAILCONDUIT_HOME.

Everything a command writes (database, key file, sink mailbox and certificate,
uploads) lives under it, so tests and users can isolate state by setting one variable.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import re
from collections.abc import Callable, Iterator
from pathlib import Path

__all__ = [
    "LOCAL_CONNECTION",
    "database_url",
    "home",
    "home_lock",
    "key_file",
    "redact_url",
    "sink_dir",
    "uploads_dir",
]

#: The built-in connection to this home's embedded SMTP server (the sink); no stored or
#: environment connection may take the name. (The agent named "local" is another thing.)
LOCAL_CONNECTION = "local"

#: ``//user:PASSWORD@``: up to the last ``@`` before a blank, so a password holding ``/`` or
#: ``@`` is hidden whole (a host after a stray ``@`` may be hidden too: never too little).
_URL_PASSWORD = re.compile(r"(//[^:/@\s]*:)\S*@")


def home() -> Path:
    """The home directory (created with mode 0700 on first use)."""
    env = os.environ.get("MAILCONDUIT_HOME", "").strip()
    if env:
        path = Path(env).expanduser()
    else:
        import platformdirs

        path = Path(platformdirs.user_data_dir("mailconduit", appauthor=False))
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    return path


def database_url() -> str:
    """The store: MAILCONDUIT_DB (a SQLAlchemy URL), else SQLite under the home directory."""
    url = os.environ.get("MAILCONDUIT_DB", "").strip()
    if url:
        if url.startswith("postgresql://"):
            url = "postgresql+psycopg://" + url[len("postgresql://") :]
        elif url.startswith("postgres://"):
            url = "postgresql+psycopg://" + url[len("postgres://") :]
        return url
    return f"sqlite:///{home() / 'mailconduit.db'}"


def redact_url(text: str) -> str:
    """``text`` with the password of any URL in it (``scheme://user:PASSWORD@host``) shown as
    ``***``: the one redactor for database URLs in messages."""
    return _URL_PASSWORD.sub(r"\1***@", text)


def key_file() -> Path:
    """The Fernet key file used when MAILCONDUIT_KEY is not set."""
    return home() / "secret.key"


def sink_dir() -> Path:
    path = home() / "sink"
    path.mkdir(mode=0o700, exist_ok=True)
    return path


def uploads_dir() -> Path:
    path = home() / "uploads"
    path.mkdir(mode=0o700, exist_ok=True)
    return path


@contextlib.contextmanager
def home_lock(folder: str, name: str, *, busy: Callable[[], Exception]) -> Iterator[Path]:
    """Hold ``<home>/<folder>/<name>.lock`` while the block runs: one process of this home
    at a time; ``busy()`` is raised at once when another holds it. Yields the folder."""
    path = home() / folder
    path.mkdir(mode=0o700, exist_ok=True)
    with open(path / f"{name}.lock", "a+b") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise busy() from None
        yield path
