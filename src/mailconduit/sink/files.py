"""Small file helpers of the sink: atomic writes with the right mode, and a directory lock.

Credentials, keys and the running-state file are replaced atomically (write a
temporary file, then rename), so a reader never sees half a file.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import time
from collections.abc import Iterator
from pathlib import Path

from mailconduit.errors import MailconduitError

__all__ = ["directory_lock", "write_private_file", "write_public_file"]


def _write_atomically(path: Path, data: bytes, mode: int) -> None:
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    try:
        os.fchmod(fd, mode)  # the umask must not widen or narrow what we chose
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(temporary, path)


def write_private_file(path: Path, data: bytes) -> None:
    """Write a secret (key, password) readable by its owner only (mode 0600)."""
    _write_atomically(path, data, 0o600)


def write_public_file(path: Path, data: bytes) -> None:
    """Write a file anyone may read (certificates, the running-state file)."""
    _write_atomically(path, data, 0o644)


@contextlib.contextmanager
def directory_lock(directory: Path, *, timeout: float = 30.0) -> Iterator[None]:
    """Hold an exclusive lock on the sink directory while creating or claiming its state.

    Serialises first-use generation (credentials, certificates) and sink start-up
    between processes sharing one MAILCONDUIT_HOME. Gives up after ``timeout`` seconds.
    """
    path = directory / ".lock"
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        deadline = time.monotonic() + timeout
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    raise MailconduitError(
                        f"{path} stayed locked by another mailconduit process for {timeout:.0f} s"
                    ) from None
                time.sleep(0.02)
        yield
    finally:
        os.close(fd)  # closing releases the lock
