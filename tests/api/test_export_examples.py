"""The shipped example (``make demo``): examples/demo.py runs on a fresh home, and the example
interface file works on its own from any folder.
"""

from __future__ import annotations

import csv
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from export_support import by_recipient, sink_messages, use_free_sink_port

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
CUSTOMERS = list(csv.DictReader((EXAMPLES / "customers.csv").open(encoding="utf-8")))


def test_the_example_data_is_realistic() -> None:
    assert 15 <= len(CUSTOMERS) <= 30
    assert any(not c["name"].isascii() for c in CUSTOMERS)
    assert any(not c["email"].split("@")[1].isascii() for c in CUSTOMERS)  # an IDN domain
    assert len({c["customer_id"] for c in CUSTOMERS}) == len(CUSTOMERS)


def test_demo_runs_on_a_fresh_home_and_says_where_the_messages_are(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    port = use_free_sink_port(monkeypatch)
    env = {**os.environ, "MAILCONDUIT_HOME": str(tmp_path / "fresh-home")}
    done = subprocess.run(
        [sys.executable, str(EXAMPLES / "demo.py")],
        env=env, cwd=EXAMPLES.parent, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    out = done.stdout
    managers = {c["account_manager"] for c in CUSTOMERS}
    assert f"finished: {len(CUSTOMERS)} sent" in out
    assert f"finished: {len(managers)} sent" in out
    assert f"3 .eml files written to {tmp_path / 'fresh-home' / 'demo-dry-run'}" in out
    assert len(list((tmp_path / "fresh-home" / "demo-dry-run").glob("*.eml"))) == 3
    assert f"received {len(CUSTOMERS) + len(managers)} messages (port {port})" in out
    assert "sink list" in out and "sink show" in out
    assert str(tmp_path / "fresh-home" / "sink" / "messages") in out
    assert done.stderr == ""

    monkeypatch.setenv("MAILCONDUIT_HOME", str(tmp_path / "fresh-home"))
    got = by_recipient(sink_messages())
    assert set(got) >= managers
    zoe = got["zoe.arger@example.com"]
    assert zoe.message.get_content_type() == "multipart/mixed"
    assert "Zoë Ärger" in zoe.html() and "1250.00 EUR" in zoe.text()
    assert zoe.attachments() == {
        "terms-and-conditions.txt": (EXAMPLES / "files" / "terms-and-conditions.txt").read_bytes()
    }
    (logo,) = (p for p in zoe.message.walk() if p["Content-ID"] == "<logo>")
    assert logo.get_payload(decode=True) == (EXAMPLES / "files" / "logo.png").read_bytes()
    assert 'src="cid:logo"' in zoe.html()
    anna = got["anna.lindqvist@example.com"]
    mine = [c for c in CUSTOMERS if c["account_manager"] == "anna.lindqvist@example.com"]
    total = sum(float(c["balance"]) for c in mine)
    assert f"Total due: {total:.2f} EUR" in anna.text()
    assert anna.header("Subject") == f"Your {len(mine)} customers and their balances"


def test_the_interface_file_runs_from_anywhere(
    cli: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    use_free_sink_port(monkeypatch)
    monkeypatch.chdir(tmp_path)
    result = cli("run", str(EXAMPLES / "interface.yaml"), "--run-id", "example")
    assert result.code == 0, result.output
    got = by_recipient(sink_messages())
    assert len(got) == len(CUSTOMERS)
    priya = next(c for c in CUSTOMERS if c["name"].startswith("Priya"))
    message = got[priya["email"]]
    assert message.message["To"].addresses[0].display_name == priya["name"]
    assert message.header("X-Customer-Id") == priya["customer_id"]
    assert message.header("Cc") == priya["account_manager"]
    # running it again with the same run id sends nothing more
    again = cli("run", str(EXAMPLES / "interface.yaml"), "--run-id", "example")
    assert again.code == 0 and len(sink_messages()) == len(CUSTOMERS)
    assert not list(EXAMPLES.glob("*report*"))
