"""Where the sink is: its configured port, and whether one is running for this home.

A running sink writes ``sink.json`` (pid, host, port, start time) in the sink
directory and removes it when it stops. A sink counts as running only when that
pid is alive and the port answers with an SMTP greeting, so a file left by a
killed process is ignored.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import os
import socket
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

from mailconduit.errors import ConfigError, FieldError
from mailconduit.home import sink_dir
from mailconduit.sink.files import write_public_file
from mailconduit.view import Record, Shown

__all__ = [
    "DEFAULT_PORT",
    "HOST",
    "PORT_VARIABLE",
    "SinkInfo",
    "configured_port",
    "is_running",
    "read_state",
    "remove_state",
    "running_sink",
    "write_state",
]

DEFAULT_PORT = 1025
PORT_VARIABLE = "MAILCONDUIT_SINK_PORT"
HOST = "127.0.0.1"
STATE_NAME = "sink.json"
#: How long the liveness probe waits for the sink's greeting.
PROBE_TIMEOUT = 2.0


@dataclass(frozen=True, slots=True)
class SinkInfo(Record):
    """A sink that is (or was) running: its process, address and start time."""

    pid: int
    host: str
    port: int
    started: dt.datetime

    _SHOWN: ClassVar[Shown] = ("pid", "host", "port", "started")


def configured_port() -> int:
    """The port a new sink listens on: MAILCONDUIT_SINK_PORT, else 1025."""
    text = os.environ.get(PORT_VARIABLE, "").strip()
    if not text:
        return DEFAULT_PORT
    if not text.isdigit() or not 1 <= int(text) <= 65535:
        raise ConfigError.for_fields(
            "sink settings", [FieldError(PORT_VARIABLE, f"{text!r} is not a port in 1-65535")]
        )
    return int(text)


def _state_file(directory: Path) -> Path:
    return directory / STATE_NAME


def write_state(directory: Path, info: SinkInfo) -> None:
    write_public_file(_state_file(directory), (json.dumps(info.to_dict()) + "\n").encode())


def remove_state(directory: Path, info: SinkInfo) -> None:
    """Remove sink.json, but only if it still describes this sink."""
    if read_state(directory) == info:
        with contextlib.suppress(FileNotFoundError):
            _state_file(directory).unlink()


def read_state(directory: Path) -> SinkInfo | None:
    """What sink.json says, or None when it is missing or unreadable."""
    try:
        data = json.loads(_state_file(directory).read_text(encoding="utf-8"))
        return SinkInfo(
            pid=int(data["pid"]),
            host=str(data["host"]),
            port=int(data["port"]),
            started=dt.datetime.fromisoformat(data["started"]),
        )
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _pid_alive(pid: int) -> bool:
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, owned by someone else
        return True
    return True


def _answers_smtp(host: str, port: int) -> bool:
    """True when host:port accepts TCP and greets with 220; says QUIT politely."""
    try:
        with socket.create_connection((host, port), timeout=PROBE_TIMEOUT) as sock:
            greeting = sock.makefile("rb").readline(512)
            if not greeting.startswith(b"220"):
                return False
            with contextlib.suppress(OSError):
                sock.sendall(b"QUIT\r\n")
                sock.recv(512)
            return True
    except OSError:
        return False


def running_sink(directory: Path | None = None) -> SinkInfo | None:
    """The sink running for this home (or sink directory), or None."""
    info = read_state(directory if directory is not None else sink_dir())
    if info is None or not _pid_alive(info.pid) or not _answers_smtp(info.host, info.port):
        return None
    return info


def is_running(directory: Path | None = None) -> bool:
    """True when a sink is running for this home (pid alive, port answering SMTP)."""
    return running_sink(directory) is not None
