"""Postfix's ``smtp-sink`` as a second, independent SMTP server for tests and benchmarks.

It speaks PIPELINING, 8BITMIME, DSN and ENHANCEDSTATUSCODES, and injects faults of its
own (``-q``: disconnect at a command, ``-Q``: 421, ``-r``/``-f``: 4xx/5xx replies).
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import IO

__all__ = ["SMTP_SINK", "SmtpSink", "free_port"]

SMTP_SINK = "/usr/sbin/smtp-sink"


def free_port(host: str = "127.0.0.1") -> int:
    """A port nothing listens on right now (bind to 0 and release)."""
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def _socket_states(port: int) -> list[str]:
    """TCP states (hex, /proc/net/tcp) of sockets whose local address is 127.0.0.1:port."""
    want = f"0100007F:{port:04X}"
    with open("/proc/net/tcp") as table:
        return [
            fields[3]
            for fields in (line.split() for line in table)
            if len(fields) > 3 and fields[1] == want
        ]


def _is_listening(port: int) -> bool:
    return "0A" in _socket_states(port)


class SmtpSink:
    """``smtp-sink`` on 127.0.0.1 and a free port for the duration of a ``with`` block.

    ``options`` are extra smtp-sink flags (e.g. ``["-Q", "rcpt"]``). With ``dump``
    every transaction is written to a scratch folder (``-d``; smtp-sink writes as
    ``nobody`` when started by root, so the folder lives in the system temp directory)
    and :meth:`dumped` returns them once the block has ended.
    """

    def __init__(
        self, options: Sequence[str] = (), *, dump: bool = False, backlog: int = 100
    ) -> None:
        if not os.access(SMTP_SINK, os.X_OK) and shutil.which("smtp-sink") is None:
            raise FileNotFoundError(f"{SMTP_SINK} is not installed (Debian package postfix)")
        self.options = list(options)
        self.dump = dump
        self.dump_dir: Path | None = None
        self._dumped: list[bytes] = []
        self.backlog = backlog
        self.port = 0
        self.output = ""
        self._proc: subprocess.Popen[bytes] | None = None
        self._out: IO[bytes] | None = None

    def __enter__(self) -> SmtpSink:
        for _ in range(5):
            self.port = free_port()
            argv = [SMTP_SINK, "-c", *self.options]
            if os.geteuid() == 0:
                argv += ["-u", "nobody"]
            if self.dump:
                self.dump_dir = Path(tempfile.mkdtemp(prefix="mailconduit-smtp-sink-"))
                os.chmod(self.dump_dir, 0o777)  # noqa: S103 - smtp-sink writes as nobody
                argv += ["-d", f"{self.dump_dir}/%Y%m%d%H/%M."]
            argv += [f"127.0.0.1:{self.port}", str(self.backlog)]
            self._out = tempfile.TemporaryFile()
            self._proc = subprocess.Popen(
                argv, stdout=self._out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL
            )
            if self._wait_listening():
                return self
            self._stop()
        raise RuntimeError(f"smtp-sink did not start: {self.output[-300:]}")

    def _wait_listening(self, timeout: float = 10.0) -> bool:
        """Wait until the port listens, without a probe session that the counters would show."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._proc is not None and self._proc.poll() is not None:
                return False
            if _is_listening(self.port):
                return True
            time.sleep(0.02)
        return False

    def _stop(self) -> None:
        proc = self._proc
        if proc is None:
            return
        # smtp-sink counts a session when it has ended: let it see the last ones end
        deadline = time.monotonic() + 2.0
        while time.monotonic() < deadline and any(
            state not in ("0A", "06") for state in _socket_states(self.port)
        ):
            time.sleep(0.01)
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=5)
        if self._out is not None:
            self._out.seek(0)
            self.output = self._out.read().decode("ascii", "replace")
            self._out.close()
            self._out = None
        self._proc = None

    def __exit__(self, *exc: object) -> None:
        self._stop()
        if self.dump_dir is not None:
            files = sorted(p for p in self.dump_dir.rglob("*") if p.is_file())
            self._dumped = [p.read_bytes() for p in files]
            shutil.rmtree(self.dump_dir, ignore_errors=True)
            self.dump_dir = None

    def counters(self) -> dict[str, int]:
        """The last ``-c`` counters (messages, sessions), read after the block ended."""
        mesg = re.findall(r"mesg=(\d+)", self.output)
        sess = re.findall(r"sess=(\d+)", self.output)
        return {"messages": int(mesg[-1]) if mesg else 0, "sessions": int(sess[-1]) if sess else 0}

    def dumped(self) -> list[bytes]:
        """Every dumped transaction (with ``dump``), read when the block ended."""
        return list(self._dumped)
