"""``mailconduit serve`` in a subprocess with a home of its own, for tests that stop and start
it as an operator would, and the Chromium the browser tests drive (not a test module: the
test files import it)."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
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


@contextmanager
def serving(env: dict[str, str]) -> Iterator[str]:
    """Run ``mailconduit serve`` until the block ends (SIGTERM, as a service manager stops
    it); yields its URL once it answers. Its output goes to serve.log in its home."""
    home = Path(env["MAILCONDUIT_HOME"])
    port = free_port()
    log = (home / "serve.log").open("a")
    process = subprocess.Popen(
        [sys.executable, "-m", "mailconduit", "serve", "--port", str(port)],
        env=env, stdout=log, stderr=subprocess.STDOUT,
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}"

    def up() -> bool:
        if process.poll() is not None:
            pytest.fail("mailconduit serve stopped: " + (home / "serve.log").read_text())
        try:
            return httpx.get(url + "/login", timeout=2).status_code == 200
        except httpx.HTTPError:
            return False

    try:
        for _ in range(STARTUP_POLLS):
            if up():
                break
            threading.Event().wait(0.1)
        else:
            pytest.fail("mailconduit serve did not answer: " + (home / "serve.log").read_text())
        yield url
    finally:
        process.terminate()
        try:
            process.wait(30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(5)
        log.close()
