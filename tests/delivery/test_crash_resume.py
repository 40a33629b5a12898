"""The crash test (issue 4 section 6): kill -9 the sender at random points, resume, repeat.

A counting server (aiosmtpd) writes the Message-ID and recipient of every message it
accepted to a file. ``mailconduit export`` runs a few thousand rows as a subprocess and
is killed with SIGKILL at seeded random points (by the server's count, and once by the
clock), then ``mailconduit runs resume`` is killed the same way several times, and
finally allowed to finish. Afterwards: no row lost, no row the journal had confirmed
sent again, every other duplicate carries the same Message-ID as its first copy, and the
journal says every row is sent. A variant drops the connection right after the final
"." (the message was stored, the confirmation lost) and checks those rows are counted and
resent with the same Message-ID.

Set MAILCONDUIT_CRASH_SEED to try another kill schedule.
"""

from __future__ import annotations

import asyncio
import collections
import json
import os
import random
import re
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import pytest
from aiosmtpd.smtp import SMTP, Envelope, Session

from delivery_support import (
    MAILCONDUIT,
    export_args,
    fault_env,
    people_csv,
    wait_until,
)
from mailconduit.journal import Journal, RowStatus

pytestmark = pytest.mark.slow

ROWS = 3000
SEED = int(os.environ.get("MAILCONDUIT_CRASH_SEED", "4106"))
_MESSAGE_ID = re.compile(rb"^message-id:[ \t]*(<[^>\r\n]+>)", re.IGNORECASE | re.MULTILINE)


class CountingServer:
    """An aiosmtpd server on 127.0.0.1 (own thread and loop) that appends
    ``<Message-ID>\\t<recipient>`` to ``path`` for every message it accepts, before
    answering 250, so the record outlives every client process.

    ``lose_reply(recipient)`` chooses messages whose reply is lost: stored, then the
    connection is closed instead of answering (first copy only).
    """

    def __init__(self, path: Path, *, lose_reply: Callable[[str], bool] | None = None) -> None:
        self.path = path
        self.lose_reply = lose_reply
        self.accepted = 0
        self.lost_replies = 0
        self.open_connections = 0
        self._seen: set[str] = set()
        self._lock = threading.Lock()
        self._file = open(path, "a", encoding="utf-8")  # noqa: SIM115 - closed in stop()
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._server: asyncio.base_events.Server | None = None
        self.port = 0

    # aiosmtpd handler hook
    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        content = envelope.original_content or b""
        header = content.split(b"\r\n\r\n", 1)[0]
        found = _MESSAGE_ID.search(header)
        message_id = found.group(1).decode() if found else "<none>"
        lose = False
        with self._lock:
            for rcpt in envelope.rcpt_tos:
                self._file.write(f"{message_id}\t{rcpt}\n")
                if self.lose_reply is not None and rcpt not in self._seen and self.lose_reply(rcpt):
                    lose = True
                self._seen.add(rcpt)
            self._file.flush()
            self.accepted += 1
            if lose:
                self.lost_replies += 1
        if lose and server.transport is not None:
            server.transport.close()
            await asyncio.Event().wait()  # cancelled when the connection is torn down
        return "250 2.0.0 OK: stored"

    def _protocol(self) -> SMTP:
        owner = self

        class Counted(SMTP):
            def connection_made(self, transport: asyncio.BaseTransport) -> None:
                owner.open_connections += 1
                super().connection_made(transport)

            def connection_lost(self, error: Exception | None) -> None:
                owner.open_connections -= 1
                super().connection_lost(error)

        return Counted(self, hostname="counting.test", loop=self._loop)

    def __enter__(self) -> CountingServer:
        self._thread.start()

        async def start() -> None:
            self._server = await self._loop.create_server(self._protocol, "127.0.0.1", 0)

        asyncio.run_coroutine_threadsafe(start(), self._loop).result(10)
        assert self._server is not None
        self.port = int(self._server.sockets[0].getsockname()[1])
        return self

    def __exit__(self, *exc: object) -> None:
        async def stop() -> None:
            assert self._server is not None
            self._server.close()
            await self._server.wait_closed()

        asyncio.run_coroutine_threadsafe(stop(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
        self._loop.close()
        self._file.close()

    def settle(self) -> None:
        """Wait until every client connection is gone (a killed client's sockets closed)."""
        wait_until(lambda: self.open_connections == 0, timeout=15, what="connections to close")

    def copies(self) -> dict[str, list[str]]:
        """recipient → Message-IDs of every accepted copy, in order (read from the file)."""
        out: dict[str, list[str]] = collections.defaultdict(list)
        with open(self.path, encoding="utf-8") as fh:
            for line in fh:
                message_id, rcpt = line.rstrip("\n").split("\t")
                out[rcpt].append(message_id)
        return dict(out)


def key_of(recipient: str) -> str:
    return recipient.removeprefix("user").removesuffix("@example.com")


def start(args: Iterable[str], env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    with open(log, "ab") as out:
        return subprocess.Popen(
            [MAILCONDUIT, *args], env=env, stdout=out, stderr=out, stdin=subprocess.DEVNULL
        )


def kill_when(
    proc: subprocess.Popen[bytes], condition: Callable[[], bool], *, timeout: float = 60
) -> bool:
    """SIGKILL ``proc`` once ``condition()`` holds; False if it exited on its own first."""
    deadline = time.monotonic() + timeout
    while proc.poll() is None:
        if condition():
            proc.send_signal(signal.SIGKILL)
            proc.wait(10)
            return True
        if time.monotonic() > deadline:
            proc.kill()
            proc.wait(10)
            pytest.fail("the sender made no progress before the kill point")
        time.sleep(0.002)
    return False


def test_kill_9_at_random_points_then_resume_loses_nothing_and_resends_nothing_confirmed(
    tmp_path: Path,
) -> None:
    rng = random.Random(SEED)
    source = people_csv(tmp_path, ROWS)
    log = tmp_path / "sender.log"
    journal_states: list[dict[str, tuple[RowStatus, int]]] = []
    claim_marks: list[int] = []  # the run's claim mark at each kill: rows 1..mark were claimed
    server_copies: list[dict[str, int]] = []
    kills = 0
    with CountingServer(tmp_path / "accepted.tsv") as server:
        env = fault_env(server.port)
        commands = [
            export_args(source, "crash", "--concurrency", "4", "--quiet"),
            *[["runs", "resume", "crash", "--quiet"]] * 5,
        ]
        for number, args in enumerate(commands):
            proc = start(args, env, log)
            born, before = time.monotonic(), server.accepted
            target = before + rng.randint(100, 400)
            # twice by the clock as well: possibly while starting up, reading or claiming
            delay = rng.uniform(0.2, 2.5) if number in (2, 4) else float("inf")
            killed = kill_when(
                proc,
                lambda: server.accepted >= target or time.monotonic() - born > delay,  # noqa: B023
            )
            if not killed:
                break  # finished before the kill point
            kills += 1
            server.settle()
            if number == 0:
                wait_until(lambda: Journal().run_exists("crash"), timeout=1, what="the run")
            journal_states.append(Journal().states("crash"))
            claim_marks.append(Journal().get_run("crash").claimed_seq)
            server_copies.append({k: len(v) for k, v in server.copies().items()})
        final = subprocess.run(
            [MAILCONDUIT, "runs", "resume", "crash", "--json"],
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )
        server.settle()
        copies = server.copies()
    assert final.returncode == 0, final.stdout[-2000:] + final.stderr[-2000:]
    assert kills >= 4, f"only {kills} kills happened; the schedule needs more rows"

    journal = Journal()
    info = journal.get_run("crash")
    rows = {r.row_key: r for r in journal.rows("crash")}
    assert info.status == "finished"
    assert len(rows) == ROWS and {r.state for r in rows.values()} == {"sent"}

    # zero rows lost: every row reached the server at least once
    delivered = {key_of(rcpt): ids for rcpt, ids in copies.items()}
    assert sorted(delivered, key=int) == [str(i) for i in range(ROWS)]
    # every copy of a row carries the row's one Message-ID, and Message-IDs are distinct
    for key, ids in delivered.items():
        assert set(ids) == {rows[key].message_id}, key
    assert len({r.message_id for r in rows.values()}) == ROWS

    # a row the journal had confirmed at a kill was never sent again after it,
    # and the journal never confirmed a row the server had not accepted
    possibly_lost: set[str] = set()
    for states, mark, counts in zip(journal_states, claim_marks, server_copies, strict=True):
        by_key = {key_of(rcpt): n for rcpt, n in counts.items()}
        unconfirmed = set()
        for key, (state, _attempts) in states.items():
            if state == "sent":
                assert by_key.get(key, 0) >= 1, f"row {key} journaled sent but never accepted"
                assert len(delivered[key]) == by_key[key], f"confirmed row {key} sent again"
            elif by_key.get(key, 0) >= 1:
                unconfirmed.add(key)  # accepted, its 250 not yet journaled when killed
        # accepted rows with no journal entry were claimed by the mark; their 250 was not journaled
        unconfirmed |= {key for key in by_key if key not in states}
        # the journal keeps up: only the last group commit's worth can be unconfirmed
        assert len(unconfirmed) <= 300
        # rows are claimed in order (row i has position i + 1): nothing past the mark was sent
        never_claimed = {key for key in by_key if key not in states and int(key) + 1 > mark}
        assert never_claimed == set(), "the server got a row never claimed"
        possibly_lost |= unconfirmed
    duplicated = {key for key, ids in delivered.items() if len(ids) > 1}
    print(f"seed {SEED}: {kills} kills, {len(possibly_lost)} rows accepted but unconfirmed "
          f"at a kill, {len(duplicated)} delivered twice")  # fmt: skip
    # duplicates only where the confirmation may have been lost in a kill
    assert duplicated <= possibly_lost
    report = json.loads(final.stdout)
    assert report["counts"]["sent"] == ROWS
    assert report["status"] == "finished"


def test_lost_confirmations_are_counted_and_resent_with_the_same_message_id(
    tmp_path: Path,
) -> None:
    source = people_csv(tmp_path, ROWS)
    chosen = {f"user{i}@example.com" for i in range(ROWS) if i % 97 == 13}
    with CountingServer(tmp_path / "accepted.tsv", lose_reply=chosen.__contains__) as server:
        env = fault_env(server.port)
        args = export_args(source, "lost", "--concurrency", "4", "--json")
        done = subprocess.run(
            [MAILCONDUIT, *args], env=env, capture_output=True, text=True, timeout=120
        )
        server.settle()
        copies = server.copies()
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    report: dict[str, Any] = json.loads(done.stdout)
    assert server.lost_replies == len(chosen) == 31
    # the count of rows whose confirmation was lost is reported
    assert report["uncertain_resent"] == len(chosen)
    assert report["counts"] == {"sent": ROWS}
    rows = {r["row_key"]: r for r in report["rows"]}
    assert {r["status"] for r in rows.values()} == {"sent"}
    for rcpt, ids in copies.items():
        expected = 2 if rcpt in chosen else 1
        assert len(ids) == expected, rcpt
        assert set(ids) == {rows[key_of(rcpt)]["message_id"]}
    assert len(copies) == ROWS
