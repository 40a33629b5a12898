"""Guessing passwords at the sign-in form: limits per client address (forwarded headers only
from named proxies) and per account name, forms good for one attempt; over real HTTP, and the
limiter's arithmetic with a hand-held clock."""

from __future__ import annotations

import contextlib
import os
import re
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest
from hypothesis import given
from hypothesis import strategies as st

from mailconduit.accounts import signin, users
from mailconduit.accounts.signin import (
    ACCOUNT_FREE_FAILURES,
    ADDRESS_FAILURES_ALLOWED,
    account_wait,
    attempt_succeeded,
    begin_attempt,
)
from mailconduit.testing import free_port
from webconsole import ADMIN, ADMIN_PASSWORD, Console, running_console

WINDOW = signin.ADDRESS_WINDOW_SECONDS


def sign_in(
    http: httpx.Client, user: str, password: str, *, forwarded_for: str = ""
) -> httpx.Response:
    """One attempt with a fresh form, as a browser (or a proxy passing one on) sends it."""
    form = http.get("/login")
    token = re.search(r'name="csrf_token" value="([^"]+)"', form.text)
    assert token, form.text
    headers = {"Origin": str(http.base_url).rstrip("/")}
    if forwarded_for:
        headers["X-Forwarded-For"] = forwarded_for
    return http.post(
        "/login",
        data={"username": user, "password": password, "csrf_token": token.group(1), "next": "/"},
        headers=headers,
    )


@pytest.fixture
def admin() -> str:
    users.create_user(ADMIN, ADMIN_PASSWORD)
    return ADMIN


# --------------------------------------------------------------------------- over HTTP


def test_a_new_forwarded_for_on_each_attempt_does_not_escape_the_address_limit(
    admin: str,
) -> None:
    with running_console() as console, console.client() as http:
        codes = [
            sign_in(
                http, f"guess-{n}", "wrong password", forwarded_for=f"198.51.100.{n}"
            ).status_code
            for n in range(ADDRESS_FAILURES_ALLOWED)
        ]
        assert set(codes) == {401}
        blocked = sign_in(http, admin, ADMIN_PASSWORD, forwarded_for="198.51.100.200")
    assert blocked.status_code == 429
    assert "Too many failed attempts" in blocked.text
    assert 0 < int(blocked.headers["retry-after"]) <= WINDOW


def test_a_named_proxy_may_tell_the_client_address(admin: str) -> None:
    with (
        running_console(forwarded_allow_ips=("127.0.0.1",)) as console,
        console.client() as http,
    ):
        for n in range(ADDRESS_FAILURES_ALLOWED):
            assert (
                sign_in(http, f"guess-{n}", "wrong", forwarded_for="203.0.113.7").status_code == 401
            )
        assert sign_in(http, admin, ADMIN_PASSWORD, forwarded_for="203.0.113.7").status_code == 429
        other = sign_in(http, admin, ADMIN_PASSWORD, forwarded_for="203.0.113.8")
    assert other.status_code == 303  # another client behind the same proxy is not punished


@pytest.mark.parametrize("account", [ADMIN, "no-such-user"])
def test_guesses_from_many_addresses_are_slowed_per_account(admin: str, account: str) -> None:
    """The same answers whether the account exists or not (the clock stands still)."""
    with (
        running_console(forwarded_allow_ips=("127.0.0.0/8",), clock=lambda: 1_000_000.0) as console,
        console.client() as http,
    ):
        codes = [
            sign_in(http, account, f"guess {n}", forwarded_for=f"192.0.2.{n}").status_code
            for n in range(ACCOUNT_FREE_FAILURES)
        ]
        slowed = sign_in(http, account, ADMIN_PASSWORD, forwarded_for="192.0.2.99")
        other = sign_in(http, "someone-else", "guess", forwarded_for="192.0.2.98")
    assert codes == [401] * ACCOUNT_FREE_FAILURES
    assert slowed.status_code == 429 and slowed.headers["retry-after"] == "2"
    assert "wait 2 seconds" in slowed.text
    assert other.status_code == 401  # another account name is not held back


def test_a_sign_in_form_serves_one_attempt(admin: str) -> None:
    with running_console() as console, console.client() as http:
        form = http.get("/login")
        token = re.search(r'name="csrf_token" value="([^"]+)"', form.text)
        assert token
        cookie = http.cookies["mailconduit_login"]
        post = {"username": admin, "password": "wrong", "csrf_token": token.group(1), "next": "/"}
        headers = {"Origin": console.url, "Cookie": f"mailconduit_login={cookie}"}
        first = httpx.post(f"{console.url}/login", data=post, headers=headers)
        replays = [
            httpx.post(
                f"{console.url}/login", data={**post, "password": f"guess {n}"}, headers=headers
            )
            for n in range(ADDRESS_FAILURES_ALLOWED + ACCOUNT_FREE_FAILURES)
        ]
        fresh = sign_in(http, admin, ADMIN_PASSWORD)
    assert first.status_code == 401
    assert {r.status_code for r in replays} == {403}
    assert all("already sent once" in r.text for r in replays)
    assert all('name="csrf_token" value="' in r.text for r in replays)  # with a fresh form
    assert fresh.status_code == 303  # the replays were not counted as guesses


def test_an_oversized_name_or_password_is_a_wrong_guess(admin: str) -> None:
    with running_console() as console, console.client() as http:
        huge = sign_in(http, "x" * 900_000, "y" * 100_000)
        page = sign_in(http, admin, "z" * (users.MAX_PASSWORD_LENGTH + 1))
    assert huge.status_code == page.status_code == 401
    assert len(huge.text) < 20_000  # the name is not echoed back in full


@pytest.fixture
def serve_command(home: Path) -> Iterator[Callable[..., Console]]:
    """Start 'mailconduit serve' as a user would, on a free port; yields a starter."""
    started: list[subprocess.Popen[str]] = []

    def start(*options: str) -> Console:
        port = free_port()
        process = subprocess.Popen(
            [sys.executable, "-m", "mailconduit", "serve", "--port", str(port), "--no-sink",
             *options],
            env={**os.environ, "MAILCONDUIT_HOME": str(home)},
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )  # fmt: skip
        started.append(process)
        ready = threading.Event()

        def watch() -> None:
            assert process.stderr is not None
            for line in process.stderr:
                if "console on http://" in line:
                    ready.set()

        threading.Thread(target=watch, daemon=True).start()
        assert ready.wait(60), "mailconduit serve did not start"
        # The line comes just before uvicorn binds the port: wait until it accepts.
        for _ in range(600):
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port)):
                break
            assert process.poll() is None, "mailconduit serve stopped"
            time.sleep(0.1)
        return Console(f"http://127.0.0.1:{port}")

    yield start
    for process in started:
        process.terminate()
        process.wait(30)


@pytest.mark.parametrize("proxies", ["", "10.0.0.0/8,::1"])
def test_serve_believes_forwarded_headers_only_from_named_proxies(
    admin: str,
    serve_command: Callable[..., Console],
    proxies: str,
) -> None:
    console = serve_command(*(["--forwarded-allow-ips", proxies] if proxies else []))
    with console.client() as http:
        for n in range(ADDRESS_FAILURES_ALLOWED):
            response = sign_in(http, f"guess-{n}", "wrong", forwarded_for=f"198.51.100.{n}")
            assert response.status_code == 401
        assert sign_in(http, admin, ADMIN_PASSWORD, forwarded_for="192.0.2.1").status_code == 429


def test_serve_refuses_a_malformed_proxy_list(cli) -> None:  # type: ignore[no-untyped-def]
    result = cli("serve", "--forwarded-allow-ips", "10.0.0.0/8, proxy.example")
    assert result.code == 2
    assert "--forwarded-allow-ips" in result.err and "'proxy.example'" in result.err
    assert "Traceback" not in result.output


# --------------------------------------------------------------------------- the limiter


def test_account_wait_doubles_and_is_bounded() -> None:
    waits = [account_wait(n) for n in range(40)]
    assert waits[:ACCOUNT_FREE_FAILURES] == [0.0] * ACCOUNT_FREE_FAILURES
    assert waits[ACCOUNT_FREE_FAILURES : ACCOUNT_FREE_FAILURES + 4] == [2.0, 4.0, 8.0, 16.0]
    assert max(waits) == signin.ACCOUNT_MAX_WAIT == waits[-1]
    assert account_wait(10**9) == signin.ACCOUNT_MAX_WAIT


def test_account_back_off_runs_out_and_success_forgives_it() -> None:
    now = 1_000_000.0
    for n in range(ACCOUNT_FREE_FAILURES):
        assert begin_attempt(f"192.0.2.{n}", "ann", now=now).allowed
    refused = begin_attempt("192.0.2.50", "ann", now=now + 1)
    assert not refused.allowed and refused.limit == "account" and refused.wait_seconds == 1.0
    assert begin_attempt("192.0.2.51", "ann", now=now + 2).allowed  # the wait has passed
    assert begin_attempt("192.0.2.52", "ann", now=now + 5).wait_seconds == 1.0  # now 4 s
    assert begin_attempt("192.0.2.53", "ann", now=now + 6).allowed
    attempt_succeeded("192.0.2.53", "ann")
    assert all(begin_attempt(f"192.0.2.{n}", "ann", now=now + 7).allowed for n in range(5))


def test_account_failures_are_forgotten_after_an_hour_of_quiet() -> None:
    now = 2_000_000.0
    for n in range(ACCOUNT_FREE_FAILURES + 3):
        begin_attempt(f"198.51.100.{n}", "bob", now=now + n * signin.ACCOUNT_MAX_WAIT)
    last = now + (ACCOUNT_FREE_FAILURES + 2) * signin.ACCOUNT_MAX_WAIT
    assert not begin_attempt("198.51.100.99", "bob", now=last + 1).allowed
    later = last + signin.ACCOUNT_MEMORY_SECONDS
    assert all(
        begin_attempt("198.51.100.99", "bob", now=later + n).allowed
        for n in range(ACCOUNT_FREE_FAILURES)
    )


def test_address_window() -> None:
    now = 3_000_000.0
    for n in range(ADDRESS_FAILURES_ALLOWED):
        assert begin_attempt("203.0.113.9", f"name-{n}", now=now + n).allowed
    refused = begin_attempt("203.0.113.9", "another", now=now + 10)
    assert not refused.allowed and refused.limit == "address"
    assert refused.wait_seconds == WINDOW - 10
    attempt_succeeded("203.0.113.9", "name-9")  # the last one was right after all
    assert begin_attempt("203.0.113.9", "another", now=now + 11).allowed
    assert not begin_attempt("203.0.113.9", "more", now=now + 12).allowed
    assert begin_attempt("203.0.113.9", "more", now=now + WINDOW).allowed  # a new window


@given(gaps=st.lists(st.floats(0.0, 2000.0, allow_nan=False), min_size=1, max_size=25))
def test_no_account_is_tried_faster_than_its_back_off(gaps: list[float]) -> None:
    """Whatever the timing of the attempts, an allowed one never comes before the wait the
    account's failures so far impose (every attempt here fails)."""
    account = f"acct-{time.monotonic_ns()}"
    now = 4_000_000.0
    failures, last = 0, None
    for index, gap in enumerate(gaps):
        now += gap
        verdict = begin_attempt(f"{account}/{index}", account, now=now)
        if last is not None and now - last >= signin.ACCOUNT_MEMORY_SECONDS:
            failures = 0
        due = 0.0 if last is None else last + account_wait(failures) - now
        assert verdict.allowed == (due <= 0), (failures, due, verdict)
        if verdict.allowed:
            failures, last = failures + 1, now


@pytest.mark.parametrize(
    "database", ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)]
)
def test_parallel_guesses_cannot_slip_past_the_count(
    database: str, request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch
) -> None:
    if database == "postgres":
        monkeypatch.setenv("MAILCONDUIT_DB", request.getfixturevalue("pg_url"))
    now = 5_000_000.0
    barrier = threading.Barrier(12)
    verdicts: list[signin.AttemptVerdict] = []

    def guess(n: int) -> None:
        barrier.wait(30)
        verdicts.append(begin_attempt(f"192.0.2.{n}", "carol", now=now))

    threads = [threading.Thread(target=guess, args=(n,)) for n in range(12)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    allowed = sum(v.allowed for v in verdicts)
    assert len(verdicts) == 12 and 1 <= allowed <= ACCOUNT_FREE_FAILURES
    more = 0
    while begin_attempt(f"198.51.100.{more}", "carol", now=now).allowed:
        more += 1
        assert more <= ACCOUNT_FREE_FAILURES
    assert allowed + more == ACCOUNT_FREE_FAILURES  # every allowed guess was counted
