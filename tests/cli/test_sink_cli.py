"""`mailconduit sink` and its subcommands, in-process and as the installed console script."""

from __future__ import annotations

import json
import os
import selectors
import signal
import socket
import ssl
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from mailconduit import sink
from mailconduit.home import sink_dir
from mailconduit.testing.postfix import free_port
from sink_support import configure_sink_port, deliver, simple_message, sink_client

MAILCONDUIT = Path(__file__).resolve().parents[2] / ".venv" / "bin" / "mailconduit"


@pytest.fixture
def sink_port(monkeypatch: pytest.MonkeyPatch) -> int:
    return configure_sink_port(monkeypatch)


@pytest.fixture
def three_messages(sink_port: int) -> Iterator[list[int]]:
    """Three delivered messages (ids oldest first), with the sink still running."""
    with sink.ensure_running() as info, sink_client(info.port) as client:
        ids = [
            deliver(client, simple_message("Invoice March", to="alice@example.com")),
            deliver(client, simple_message("Weekly report", to="bob@example.com")),
            deliver(client, simple_message("Invoice April", to="carol@example.com")),
        ]
        yield ids


def the_password() -> str:
    password = sink.local_connection().password
    assert password is not None
    return password.reveal()


def test_list_on_an_empty_mailbox(cli: Any) -> None:
    result = cli("sink", "list")
    assert result.code == 0
    assert result.out.strip() == "no messages"


def test_list_shows_newest_first_and_filters(cli: Any, three_messages: list[int]) -> None:
    result = cli("sink", "list")
    assert result.code == 0
    rows = result.out.splitlines()
    assert rows[0].split()[:3] == ["ID", "RECEIVED", "(UTC)"]
    assert [int(r.split()[0]) for r in rows[1:]] == three_messages[::-1]
    assert "Invoice April" in rows[1] and "carol@example.com" in rows[1]

    found = cli("sink", "list", "--search", "invoice")
    assert [int(r.split()[0]) for r in found.out.splitlines()[1:]] == [
        three_messages[2],
        three_messages[0],
    ]
    assert cli("sink", "list", "--search", "nothing-like-this").out.strip() == (
        "no messages matching 'nothing-like-this'"
    )

    paged = cli("sink", "list", "--limit", "1")
    assert "(3 in all; use --offset 1 for more)" in paged.out

    as_json = json.loads(cli("sink", "list", "--json", "--search", "report").out)
    assert [m["subject"] for m in as_json] == ["Weekly report"]
    assert as_json[0]["envelope_recipients"] == ["rcpt@example.com"]
    assert as_json[0]["id"] == three_messages[1]


def test_show_prints_headers_and_text(cli: Any, three_messages: list[int]) -> None:
    result = cli("sink", "show", str(three_messages[1]))
    assert result.code == 0
    assert f"Message {three_messages[1]}, received" in result.out
    assert "Envelope: from <sender@example.com> to <rcpt@example.com>" in result.out
    assert "Subject: Weekly report" in result.out
    assert "To: bob@example.com" in result.out
    assert result.out.rstrip().endswith("Hello.")

    data = json.loads(cli("sink", "show", str(three_messages[1]), "--json").out)
    assert data["subject"] == "Weekly report"
    assert data["text"] == "Hello.\n"
    assert ["Subject", "Weekly report"] in data["headers"]

    raw = cli("sink", "show", str(three_messages[1]), "--raw").out
    assert raw.encode() == sink.raw_message(three_messages[1])


def test_show_an_unknown_id_is_one_line_and_exit_2(cli: Any) -> None:
    result = cli("sink", "show", "987654")
    assert result.code == 2
    assert result.out == ""
    assert result.err.strip() == "mailconduit: no message named '987654'"


def test_clear_removes_everything(cli: Any, three_messages: list[int]) -> None:
    result = cli("sink", "clear")
    assert result.code == 0
    assert result.out.strip() == "removed 3 messages"
    assert cli("sink", "list").out.strip() == "no messages"


def test_credentials_say_where_the_password_is_without_showing_it(cli: Any, sink_port: int) -> None:
    result = cli("sink", "credentials")
    assert result.code == 0
    assert "user: mailconduit" in result.out
    assert str(sink_dir() / "credentials.json") in result.out
    assert f"port: {sink_port}" in result.out
    assert str(sink_dir() / "ca.pem") in result.out
    assert the_password() not in result.output


def test_status_reports_running_or_not(cli: Any, sink_port: int) -> None:
    idle = cli("sink", "status").out
    assert idle.startswith(f"not running (a new sink would listen on port {sink_port})")
    with sink.ensure_running():
        running = cli("sink", "status")
        assert running.out.startswith(f"running: pid {os.getpid()}, 127.0.0.1:{sink_port}")
        assert json.loads(cli("sink", "status", "--json").out)["port"] == sink_port
    assert json.loads(cli("sink", "status", "--json").out) == {"running": False}


def test_every_subcommand_has_help(cli: Any) -> None:
    top = cli("sink", "--help")
    assert top.code == 0
    for command in ("list", "show", "clear", "status", "credentials"):
        assert command in top.out
        sub = cli("sink", command, "--help")
        assert sub.code == 0 and len(sub.out) > 100


# --- the console script in a subprocess --------------------------------------------------


def read_line(process: subprocess.Popen[str], timeout: float = 20.0) -> str:
    """The next line the process prints on stdout, waiting at most ``timeout`` seconds."""
    assert process.stdout is not None
    with selectors.DefaultSelector() as selector:
        selector.register(process.stdout, selectors.EVENT_READ)
        if not selector.select(timeout):
            raise TimeoutError("the sink printed nothing")
    return process.stdout.readline()


def run_cli(home: Path, *args: str, sink_port: str = "") -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "MAILCONDUIT_HOME": str(home)}
    if sink_port:
        env["MAILCONDUIT_SINK_PORT"] = sink_port
    return subprocess.run(
        [str(MAILCONDUIT), *args], env=env, capture_output=True, text=True, timeout=60
    )


def test_foreground_sink_serves_refuses_a_second_and_stops_on_ctrl_c(home: Path) -> None:
    port = free_port()
    env = {**os.environ, "MAILCONDUIT_HOME": str(home)}
    process = subprocess.Popen(
        [str(MAILCONDUIT), "sink", "--port", str(port)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    outputs: list[str] = []
    try:
        banner = read_line(process)
        outputs.append(banner)
        assert banner.startswith(f"mailconduit sink listening on 127.0.0.1:{port} ")
        assert "user mailconduit" in banner and str(home / "sink") in banner
        assert json.loads((home / "sink" / "sink.json").read_text())["pid"] == process.pid

        with sink_client(port) as client:
            message_id = deliver(client, simple_message("through the console script"))
        with (
            sink_client(port, starttls=False, login=False) as untrusting,
            pytest.raises(ssl.SSLError),  # this client does not trust the sink's CA
        ):
            untrusting.starttls(context=ssl.create_default_context())

        listed = run_cli(home, "sink", "list")
        outputs += [listed.stdout, listed.stderr]
        assert "through the console script" in listed.stdout

        raw = subprocess.run(
            [str(MAILCONDUIT), "sink", "show", str(message_id), "--raw"],
            env=env,
            capture_output=True,
            timeout=60,
        )
        assert raw.stdout == simple_message_bytes_of(home, message_id)

        second = run_cli(home, "sink", "--port", str(free_port()))
        outputs += [second.stdout, second.stderr]
        assert second.returncode == 2
        assert second.stderr.count("\n") == 1
        assert "a sink is already running for this home" in second.stderr
        assert f"127.0.0.1:{port}" in second.stderr

        process.send_signal(signal.SIGINT)
        out, err = process.communicate(timeout=30)
        outputs += [out, err]
        assert process.returncode == 0, err
        assert out.strip() == "mailconduit sink stopped"
        assert "Traceback" not in err
        assert (
            f"stored message {message_id} from <sender@example.com> to <rcpt@example.com>" in err
        )
        assert "a client's TLS handshake failed" in err
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate(timeout=30)
    assert not (home / "sink" / "sink.json").exists()
    password = json.loads((home / "sink" / "credentials.json").read_text())["password"]
    assert not any(password in text for text in outputs)


def simple_message_bytes_of(home: Path, message_id: int) -> bytes:
    return sink.raw_message(message_id, directory=home / "sink")


def test_fsync_sink_stores_and_sigterm_stops_it_cleanly(home: Path) -> None:
    port = free_port()
    process = subprocess.Popen(
        [str(MAILCONDUIT), "sink", "--fsync"],
        env={**os.environ, "MAILCONDUIT_HOME": str(home), "MAILCONDUIT_SINK_PORT": str(port)},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert f"127.0.0.1:{port}" in read_line(process)  # the port came from the environment
        with sink_client(port) as first, sink_client(port) as second:
            ids = [
                deliver(first, simple_message("durable one")),
                deliver(second, simple_message("durable two")),
            ]
        process.terminate()
        _, err = process.communicate(timeout=30)
        assert process.returncode == 0, err
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate(timeout=30)
    assert not (home / "sink" / "sink.json").exists()
    stored = [sink.message_summary(i, directory=home / "sink").subject for i in ids]
    assert stored == ["durable one", "durable two"]
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
        except ConnectionRefusedError:
            break
        time.sleep(0.05)
    else:
        pytest.fail("the port still accepts connections after SIGTERM")


def test_a_taken_port_is_named_and_exits_2(home: Path) -> None:
    with socket.socket() as other:
        other.bind(("127.0.0.1", 0))
        other.listen()
        port = other.getsockname()[1]
        result = run_cli(home, "sink", sink_port=str(port))
    assert result.returncode == 2
    assert result.stdout == ""
    assert result.stderr.count("\n") == 1
    assert f"port {port} on 127.0.0.1 is already in use by another program" in result.stderr


def test_a_bad_port_setting_is_refused(home: Path) -> None:
    result = run_cli(home, "sink", "--port", "0")
    assert result.returncode == 2
    assert "--port" in result.stderr and result.stderr.count("\n") == 1
    from_env = run_cli(home, "sink", sink_port="smtp")
    assert from_env.returncode == 2
    assert from_env.stderr.count("\n") == 1
    assert "MAILCONDUIT_SINK_PORT: 'smtp' is not a port in 1-65535" in from_env.stderr
    assert not (home / "sink" / "sink.json").exists()
