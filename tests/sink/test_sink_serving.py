"""ServerThread, the one way a server with coroutine start/stop runs in a thread of its own
(the local sink behind a command, the test servers' ``with``)."""

from __future__ import annotations

import asyncio
import threading

import pytest

from mailconduit.sink.serving import ServerThread


class _Boom(Exception):
    pass


def test_begin_returns_what_start_returned_and_end_runs_stop_in_the_same_loop() -> None:
    loops: list[asyncio.AbstractEventLoop] = []
    threads: list[threading.Thread] = []

    async def start() -> int:
        loops.append(asyncio.get_running_loop())
        threads.append(threading.current_thread())
        return 42

    async def stop() -> None:
        loops.append(asyncio.get_running_loop())

    server = ServerThread(start, stop, what="the test server", name="test-serving", timeout=10)
    assert server.begin() == 42
    assert threads[0] is not threading.current_thread() and threads[0].name == "test-serving"
    assert threads[0].daemon and threads[0].is_alive()
    assert server.end() is True
    assert len(loops) == 2 and loops[0] is loops[1]
    assert not threads[0].is_alive()


def test_a_failed_start_is_raised_in_the_caller_and_the_thread_ends_without_stop() -> None:
    stopped = threading.Event()
    started: list[threading.Thread] = []

    async def start() -> None:
        started.append(threading.current_thread())
        raise _Boom("port taken")

    async def stop() -> None:
        stopped.set()

    server = ServerThread(start, stop, what="the test server", name="test-serving", timeout=10)
    with pytest.raises(_Boom, match="port taken"):
        server.begin()
    assert not started[0].is_alive()
    assert not stopped.is_set()
    assert server.end() is True  # nothing left to stop


def test_an_error_of_stop_is_raised_by_end_or_handed_to_on_error() -> None:
    async def start() -> None:
        return None

    async def stop() -> None:
        raise _Boom("stuck")

    plain = ServerThread(start, stop, what="the test server", name="test-serving", timeout=10)
    plain.begin()
    with pytest.raises(_Boom, match="stuck"):
        plain.end()

    seen: list[BaseException] = []
    handled = ServerThread(
        start, stop, what="the test server", name="test-serving", timeout=10, on_error=seen.append
    )
    handled.begin()
    assert handled.end() is True
    assert [str(e) for e in seen] == ["stuck"]


def test_a_start_that_never_finishes_is_a_timeout_naming_the_server() -> None:
    release = threading.Event()

    async def start() -> None:
        await asyncio.to_thread(release.wait, 10)

    async def stop() -> None:
        return None

    server = ServerThread(start, stop, what="the slow server", name="test-serving", timeout=0.2)
    with pytest.raises(TimeoutError, match="the slow server did not start"):
        server.begin()
    release.set()
    server.timeout = 10  # the stop may take its time
    assert server.end() is True
