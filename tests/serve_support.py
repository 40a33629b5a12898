"""``mailconduit serve`` in a subprocess with a home of its own, for tests that stop and start
it as an operator would, and the Chromium the browser tests drive (not a test module: the
test files import it)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from mailconduit.testing import free_port

#: Debian's Chromium, as the browser tests drive it (make system-deps installs it).
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
#: How many times (0.1 s apart, after a check of up to 2 s) :func:`serving` asks the console.
STARTUP_POLLS = 600
#: How long a browser test waits for one thing on a page.
TIMEOUT_MS = 15_000


def poll(condition: Callable[[], object], pause: float = 0.2) -> None:
    """Wait until ``condition()`` holds (the test's timeout is the only limit)."""
    done = threading.Event()
    while not done.wait(pause):
        if condition():
            done.set()


def serve_env(home: Path, **extra: str) -> dict[str, str]:
    """This process's environment without MAILCONDUIT_*, then the home and ``extra``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("MAILCONDUIT_")}
    return {**env, "MAILCONDUIT_HOME": str(home), **extra}


def create_user(env: dict[str, str], user: str, password: str) -> None:
    created = subprocess.run(
        [sys.executable, "-m", "mailconduit", "users", "create", user, "--password-stdin"],
        input=password + "\n", env=env, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert created.returncode == 0, created.stderr


@dataclass
class LoggedProcess:
    """A mailconduit process a test started, its output going to ``log``."""

    process: subprocess.Popen[bytes]
    log: Path

    @property
    def pid(self) -> int:
        return self.process.pid

    def output(self) -> str:
        return self.log.read_text(encoding="utf-8", errors="replace") if self.log.exists() else ""


@dataclass
class Serve(LoggedProcess):
    """A ``mailconduit serve`` process answering at ``url``."""

    url: str

    def up(self) -> bool:
        """Whether it answers (the test fails at once when the process has ended)."""
        if self.process.poll() is not None:
            pytest.fail("mailconduit serve stopped: " + self.output())
        try:
            return httpx.get(self.url + "/login", timeout=2).status_code == 200
        except httpx.HTTPError:
            return False

    def stop(self) -> None:
        """SIGTERM, as a service manager stops it (it lets its lease go)."""
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)

    def kill(self) -> None:
        """kill -9: no chance to let anything go."""
        os.kill(self.process.pid, signal.SIGKILL)
        self.process.wait(10)


def start_serve(env: dict[str, str], log: Path, *options: str) -> Serve:
    """``mailconduit serve`` on a free port with ``options``; its output is appended to ``log``."""
    port = free_port()
    with log.open("a") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "mailconduit", "serve", "--port", str(port), *options],
            env=env, stdout=out, stderr=subprocess.STDOUT,
        )  # fmt: skip
    return Serve(process, log, f"http://127.0.0.1:{port}")


@contextmanager
def serving(env: dict[str, str]) -> Iterator[str]:
    """Run ``mailconduit serve`` until the block ends (SIGTERM, as a service manager stops
    it); yields its URL once it answers. Its output goes to serve.log in its home."""
    served = start_serve(env, Path(env["MAILCONDUIT_HOME"]) / "serve.log")
    try:
        for _ in range(STARTUP_POLLS):
            if served.up():
                break
            threading.Event().wait(0.1)
        else:
            pytest.fail("mailconduit serve did not answer: " + served.output())
        yield served.url
    finally:
        served.stop()
