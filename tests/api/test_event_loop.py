"""Exports run on uvloop when it is installed, and on asyncio's loop when asked: both work.

The ``local`` connection goes through the embedded sink with STARTTLS and AUTH, so the
TLS upgrade, the pipelined sends and the journal are exercised on each loop.
"""

from __future__ import annotations

from pathlib import Path

import pytest

import mailconduit
from export_support import by_recipient, sink_messages, write_csv
from mailconduit.delivery import loop as event_loop


def test_uvloop_is_the_default_when_installed(monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("uvloop")
    monkeypatch.delenv("MAILCONDUIT_EVENT_LOOP", raising=False)
    assert event_loop.loop_name() == "uvloop"
    monkeypatch.setenv("MAILCONDUIT_EVENT_LOOP", "asyncio")
    assert event_loop.loop_name() == "asyncio"


@pytest.mark.parametrize("loop", ["uvloop", "asyncio"])
def test_an_export_delivers_every_row_on_either_loop(
    loop: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MAILCONDUIT_EVENT_LOOP", loop)
    assert event_loop.loop_name() == loop
    rows = [{"email": f"user{i}@example.com", "n": str(i)} for i in range(60)]
    data = write_csv(tmp_path / "rows.csv", rows)
    report = mailconduit.export(
        data, connection="local", to="{{ email }}", subject="Row {{ n }}", body="n={{ n }}\n",
        concurrency=3,
    )  # fmt: skip
    assert report.status == "finished" and report.sent == 60
    got = by_recipient(sink_messages())
    assert sorted(got) == sorted(r["email"] for r in rows)
    for r in rows:
        assert got[r["email"]].header("Subject") == f"Row {r['n']}"
        assert got[r["email"]].text() == f"n={r['n']}\n"
