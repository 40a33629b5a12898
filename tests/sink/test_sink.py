"""The embedded sink: TLS and AUTH rules, exact storage, index and reading API, lifecycle.

Every message goes through a real SMTP session (stdlib smtplib with STARTTLS and
AUTH, trusting only the sink's generated CA) to a real sink on a free port.
"""

from __future__ import annotations

import asyncio
import base64
import datetime as dt
import json
import os
import smtplib
import socket
import ssl
import subprocess
import sys
import threading
from collections.abc import Iterator
from email.message import EmailMessage
from email.policy import SMTP as SMTP_POLICY
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

from mailconduit import sink
from mailconduit.config import Security
from mailconduit.errors import ConfigError, NotFoundError
from mailconduit.home import sink_dir
from mailconduit.sink.certs import ensure_certificates
from mailconduit.sink.store import MailboxWriter
from mailconduit.testing.postfix import free_port
from sink_support import configure_sink_port, deliver, simple_message, sink_client, tls_context


@pytest.fixture
def sink_port(monkeypatch: pytest.MonkeyPatch) -> int:
    return configure_sink_port(monkeypatch)


@pytest.fixture
def running(sink_port: int) -> Iterator[sink.SinkInfo]:
    with sink.ensure_running() as info:
        yield info


def mode(path: Path) -> int:
    return path.stat().st_mode & 0o777


# --- first use: certificates, credentials, the local connection -----------------------


def test_first_use_creates_a_ca_a_server_certificate_and_private_credentials() -> None:
    conn = sink.local_connection()
    directory = sink_dir()
    for key in ("ca-key.pem", "server-key.pem", "credentials.json"):
        assert mode(directory / key) == 0o600, key
    ca = x509.load_pem_x509_certificate((directory / "ca.pem").read_bytes())
    server = x509.load_pem_x509_certificate((directory / "server.pem").read_bytes())
    server.verify_directly_issued_by(ca)
    assert ca.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    names = server.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert names.get_values_for_type(x509.DNSName) == ["localhost"]
    assert {str(a) for a in names.get_values_for_type(x509.IPAddress)} == {"127.0.0.1", "::1"}
    stored = json.loads((directory / "credentials.json").read_text())
    assert stored["username"] == "mailconduit" == conn.username
    assert conn.password is not None and stored["password"] == conn.password.reveal()
    assert len(stored["password"]) >= 24
    # Stable on later use: the same password, the same CA.
    again = sink.local_connection()
    assert again.password == conn.password
    assert (directory / "ca.pem").read_bytes() == ca.public_bytes(serialization.Encoding.PEM)


def test_each_home_gets_its_own_random_password(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    first = sink.local_connection().password
    monkeypatch.setenv("MAILCONDUIT_HOME", str(tmp_path / "other-home"))
    second = sink.local_connection().password
    assert first is not None and second is not None and first != second


def test_local_connection_points_at_the_sink_with_verification_on(sink_port: int) -> None:
    conn = sink.local_connection()
    assert conn.name == "local"
    assert conn.origin == "builtin"
    assert conn.server_url == "127.0.0.1"
    assert conn.port == sink_port
    assert conn.security is Security.STARTTLS
    assert conn.verify_tls is True
    assert conn.ca_file == str(sink_dir() / "ca.pem")
    assert conn.from_address == sink.LOCAL_FROM_ADDRESS == "mailconduit@example.com"
    assert conn.from_name == "mailconduit"
    assert conn.agent == "local"
    assert conn.is_active and conn.is_target and not conn.use_html_body
    assert "password" not in conn.public_dict()


def test_local_connection_uses_the_running_sinks_port(sink_port: int) -> None:
    other = free_port()
    with sink.ensure_running(port=other) as info:
        assert info.port == other
        assert sink.local_connection().port == other
    assert sink.local_connection().port == sink_port


def test_default_port_is_1025_and_a_bad_setting_is_named(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MAILCONDUIT_SINK_PORT", raising=False)
    assert sink.configured_port() == sink.DEFAULT_PORT == 1025
    monkeypatch.setenv("MAILCONDUIT_SINK_PORT", "70000")
    with pytest.raises(ConfigError, match="MAILCONDUIT_SINK_PORT"):
        sink.configured_port()


def test_a_broken_credentials_file_is_reported_not_replaced() -> None:
    path = sink_dir() / "credentials.json"
    path.write_text("{not json: s3cret-in-file")
    with pytest.raises(ConfigError) as caught:
        sink.local_connection()
    assert str(path) in str(caught.value)
    assert "s3cret-in-file" not in str(caught.value)
    assert path.read_text() == "{not json: s3cret-in-file"


def test_an_expiring_server_certificate_is_renewed() -> None:
    certs = ensure_certificates(sink_dir())
    ca_key = serialization.load_pem_private_key(certs.ca_key_file.read_bytes(), password=None)
    ca = x509.load_pem_x509_certificate(certs.ca_file.read_bytes())
    assert isinstance(ca_key, ec.EllipticCurvePrivateKey)
    key = ec.generate_private_key(ec.SECP256R1())
    now = dt.datetime.now(dt.UTC)
    soon_expired = (
        x509.CertificateBuilder()
        .subject_name(ca.subject)
        .issuer_name(ca.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(days=700))
        .not_valid_after(now + dt.timedelta(days=3))
        .sign(ca_key, hashes.SHA256())
    )
    certs.cert_file.write_bytes(soon_expired.public_bytes(serialization.Encoding.PEM))
    certs.key_file.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    ensure_certificates(sink_dir())
    renewed = x509.load_pem_x509_certificate(certs.cert_file.read_bytes())
    assert renewed.not_valid_after_utc > now + dt.timedelta(days=365)
    renewed.verify_directly_issued_by(ca)
    assert certs.ca_file.read_bytes() == ca.public_bytes(serialization.Encoding.PEM)
    assert mode(certs.key_file) == 0o600


# --- the SMTP conversation ---------------------------------------------------------------


def test_ehlo_offers_starttls_first_and_auth_only_inside_tls(running: sink.SinkInfo) -> None:
    with sink_client(running.port, starttls=False, login=False) as client:
        assert client.has_extn("starttls")
        assert not client.has_extn("auth")
        for ext in ("size", "8bitmime", "smtputf8", "pipelining"):
            assert client.has_extn(ext), ext
        assert client.esmtp_features["size"] == str(25 * 1024 * 1024)
        client.starttls(context=tls_context())
        client.ehlo()
        assert set(client.esmtp_features["auth"].split()) == {"PLAIN", "LOGIN"}
        assert not client.has_extn("starttls")


def test_the_certificate_is_verified_against_the_sinks_ca_only(running: sink.SinkInfo) -> None:
    with (
        sink_client(running.port, starttls=False, login=False) as client,
        pytest.raises(ssl.SSLCertVerificationError),
    ):
        client.starttls(context=ssl.create_default_context())  # system CAs: not trusted


def test_auth_before_starttls_is_refused(running: sink.SinkInfo) -> None:
    password = sink.local_connection().password
    assert password is not None
    blob = base64.b64encode(f"\0mailconduit\0{password.reveal()}".encode()).decode()
    with sink_client(running.port, starttls=False, login=False) as client:
        code, reply = client.docmd("AUTH", f"PLAIN {blob}")
        assert code == 530, reply  # STARTTLS is required before anything but EHLO/NOOP/QUIT
        code, reply = client.mail("sender@example.com")
        assert code == 530 and b"STARTTLS" in reply


def test_auth_is_not_offered_without_tls(running: sink.SinkInfo) -> None:
    with (
        sink_client(running.port, starttls=False, login=False) as client,
        pytest.raises(smtplib.SMTPNotSupportedError),
    ):
        client.login("mailconduit", "whatever")


def test_mail_without_auth_is_refused(running: sink.SinkInfo) -> None:
    with sink_client(running.port, login=False) as client:
        code, reply = client.mail("sender@example.com")
        assert code == 530 and b"Authentication required" in reply
        code, _ = client.rcpt("rcpt@example.com")
        assert code == 530
    assert sink.count_messages() == 0


def test_wrong_password_or_user_is_refused(running: sink.SinkInfo) -> None:
    with sink_client(running.port, login=False) as client:
        with pytest.raises(smtplib.SMTPAuthenticationError) as caught:
            client.login("mailconduit", "not-the-password")
        assert caught.value.smtp_code == 535
    password = sink.local_connection().password
    assert password is not None
    with (
        sink_client(running.port, login=False) as client,
        pytest.raises(smtplib.SMTPAuthenticationError),
    ):
        client.login("someone-else", password.reveal())


def test_auth_login_mechanism_is_accepted(running: sink.SinkInfo) -> None:
    conn = sink.local_connection()
    assert conn.password is not None
    with sink_client(running.port, login=False) as client:
        client.user, client.password = conn.username, conn.password.reveal()
        code, _ = client.auth("LOGIN", client.auth_login, initial_response_ok=False)
        assert code == 235
        deliver(client, simple_message("via LOGIN"))
    assert [m.subject for m in sink.list_messages()] == ["via LOGIN"]


def test_stored_bytes_are_exactly_what_was_sent(running: sink.SinkInfo) -> None:
    message = (
        b"From: Sender <sender@example.com>\r\n"
        b"To: Someone <rcpt@example.com>, other@example.org\r\n"
        b"Subject: =?utf-8?q?R=C3=A9sum=C3=A9_of_the_day?=\r\n"
        b"Message-ID: <exact-1@example.com>\r\n"
        b"Content-Type: text/plain; charset=utf-8\r\n"
        b"Content-Transfer-Encoding: 8bit\r\n"
        b"\r\n"
        b".\r\n"
        b"..leading dots\r\n"
        b".\r\n.\r\n"
        b"caf\xc3\xa9 8-bit body\r\n"
        b"trailing spaces   \r\n" + b"x" * 998 + b"\r\n"
    )
    with sink_client(running.port) as client:
        message_id = deliver(
            client,
            message,
            recipients=["rcpt@example.com", "other@example.org", "bcc@example.net"],
            mail_options=["BODY=8BITMIME"],
        )
    summary = sink.message_summary(message_id)
    assert summary.path.read_bytes() == message
    assert sink.raw_message(message_id) == message
    assert summary.size == len(message)
    assert summary.envelope_from == "sender@example.com"
    assert summary.envelope_recipients == (
        "rcpt@example.com",
        "other@example.org",
        "bcc@example.net",
    )
    assert summary.from_header == "Sender <sender@example.com>"
    assert summary.to_header == "Someone <rcpt@example.com>, other@example.org"
    assert summary.subject == "Résumé of the day"
    assert summary.message_id == "<exact-1@example.com>"
    assert not summary.smtputf8
    assert abs(summary.received - dt.datetime.now(dt.UTC)) < dt.timedelta(minutes=1)
    assert summary.path.is_relative_to(sink_dir() / "messages")
    assert mode(summary.path) == 0o600


def test_smtputf8_message_keeps_utf8_addresses_and_headers(running: sink.SinkInfo) -> None:
    message = (
        "From: Jörg <jörg@bücher.example>\r\n"
        "To: 用户@例子.example\r\n"
        "Subject: Grüße aus Köln ✓\r\n"
        "Message-ID: <utf8-1@example.com>\r\n"
        "\r\n"
        "Grüße\r\n"
    ).encode()
    with sink_client(running.port) as client:
        message_id = deliver(
            client,
            message,
            sender="jörg@bücher.example",
            recipients=["用户@例子.example"],
            mail_options=["SMTPUTF8", "BODY=8BITMIME"],
        )
    summary = sink.message_summary(message_id)
    assert summary.path.read_bytes() == message
    assert summary.smtputf8
    assert summary.envelope_from == "jörg@bücher.example"
    assert summary.envelope_recipients == ("用户@例子.example",)
    assert summary.subject == "Grüße aus Köln ✓"
    assert summary.from_header == "Jörg <jörg@bücher.example>"
    assert [m.id for m in sink.list_messages(search="KÖLN")] == [message_id]
    assert [m.id for m in sink.list_messages(search="例子")] == [message_id]


def test_pipelined_commands_are_answered_in_order(running: sink.SinkInfo) -> None:
    with sink_client(running.port) as client:
        client.send(
            b"MAIL FROM:<p@example.com>\r\nRCPT TO:<a@example.com>\r\n"
            b"RCPT TO:<b@example.com>\r\nDATA\r\n"
        )
        replies = [client.getreply() for _ in range(4)]
        assert [code for code, _ in replies] == [250, 250, 250, 354]
        client.send(simple_message("pipelined") + b".\r\n")
        code, reply = client.getreply()
        assert code == 250, reply
    [summary] = sink.list_messages()
    assert summary.envelope_recipients == ("a@example.com", "b@example.com")
    assert summary.subject == "pipelined"


def test_a_message_larger_than_size_is_refused_up_front(running: sink.SinkInfo) -> None:
    with sink_client(running.port) as client:
        code, reply = client.mail("sender@example.com", [f"SIZE={sink.MAX_MESSAGE_SIZE + 1}"])
        assert code == 552, reply
    assert sink.count_messages() == 0


def test_concurrent_sessions_store_every_message(running: sink.SinkInfo) -> None:
    sessions, per_session = 6, 12
    errors: list[BaseException] = []

    def send_batch(worker: int) -> None:
        try:
            with sink_client(running.port) as client:
                for n in range(per_session):
                    body = f"body {worker}/{n}\r\n"
                    deliver(client, simple_message(f"w{worker}-m{n}", body=body))
        except BaseException as exc:  # reported below, from the test thread
            errors.append(exc)

    threads = [threading.Thread(target=send_batch, args=(w,)) for w in range(sessions)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors, errors
    stored = sink.list_messages(limit=1000)
    assert len(stored) == sessions * per_session
    assert len({m.id for m in stored}) == len({m.path for m in stored}) == len(stored)
    for m in stored:
        worker, n = m.subject[1:].split("-m")
        assert m.path.read_bytes().endswith(f"body {worker}/{n}\r\n".encode())


def test_a_storage_failure_answers_451_and_the_sink_recovers(running: sink.SinkInfo) -> None:
    messages = sink_dir() / "messages"
    today = dt.datetime.now(dt.UTC).date()
    blockers = [messages / f"{today + dt.timedelta(days=d):%Y-%m-%d}" for d in (0, 1)]
    for blocker in blockers:  # a file where the day's folder should be: writes fail
        if blocker.is_dir():
            blocker.rmdir()
        blocker.write_text("not a folder")
    with sink_client(running.port) as client:
        client.mail("sender@example.com")
        client.rcpt("rcpt@example.com")
        code, reply = client.data(simple_message("will not fit"))
        assert code == 451, reply
        assert sink.count_messages() == 0
        for blocker in blockers:
            blocker.unlink()
        deliver(client, simple_message("after the repair"))
    assert [m.subject for m in sink.list_messages()] == ["after the repair"]


# --- the reading API ---------------------------------------------------------------------


def test_search_matches_subject_from_to_and_envelope_and_pages(running: sink.SinkInfo) -> None:
    with sink_client(running.port) as client:
        first = deliver(client, simple_message("Invoice March", to="alice@example.com"))
        second = deliver(client, simple_message("Weekly report", to="bob@example.com"))
        third = deliver(
            client,
            simple_message("Invoice April", to="carol@example.com"),
            recipients=["hidden-bcc@example.net"],
        )
    assert [m.id for m in sink.list_messages()] == [third, second, first]  # newest first
    assert [m.id for m in sink.list_messages(search="invoice")] == [third, first]
    assert [m.id for m in sink.list_messages(search="INVOICE april")] == [third]
    assert [m.id for m in sink.list_messages(search="bob@")] == [second]
    assert [m.id for m in sink.list_messages(search="hidden-bcc")] == [third]
    assert [m.id for m in sink.list_messages(search="sender@example.com")] == [third, second, first]
    assert sink.list_messages(search="100%") == []
    assert sink.list_messages(search="_") == []  # LIKE wildcards are matched literally
    assert sink.count_messages(search="invoice") == 2
    assert [m.id for m in sink.list_messages(limit=1, offset=1)] == [second]
    assert sink.count_messages() == 3


def test_get_message_gives_headers_text_html_and_attachments(running: sink.SinkInfo) -> None:
    msg = EmailMessage(policy=SMTP_POLICY)
    msg["From"] = "Zoë <zoe@example.com>"
    msg["To"] = "rcpt@example.com"
    msg["Subject"] = "Quarterly figures – Q3"
    msg["Message-ID"] = "<parts-1@example.com>"
    msg.set_content("Plain text body.\nSecond line.\n")
    msg.add_alternative("<p>HTML <b>body</b></p>\n", subtype="html")
    pdf = b"%PDF-1.4 fake \x00\x01\x02 bytes"
    msg.add_attachment(pdf, maintype="application", subtype="pdf", filename="Übersicht 2024.pdf")
    msg.add_attachment("a,b\n1,2\n", subtype="csv", filename="data.csv")
    raw = msg.as_bytes()
    with sink_client(running.port) as client:
        message_id = deliver(client, raw)
    stored = sink.get_message(message_id)
    assert stored.id == message_id
    assert stored.raw == raw
    assert stored.header("subject") == "Quarterly figures – Q3"
    assert stored.header("From") == "Zoë <zoe@example.com>"
    assert ("Message-ID", "<parts-1@example.com>") in stored.headers
    assert stored.header("X-Missing") is None
    assert stored.text == "Plain text body.\nSecond line.\n"
    assert stored.html == "<p>HTML <b>body</b></p>\n"
    names = [(a.index, a.filename, a.content_type, a.disposition) for a in stored.attachments]
    assert names == [
        (0, "Übersicht 2024.pdf", "application/pdf", "attachment"),
        (1, "data.csv", "text/csv", "attachment"),
    ]
    assert stored.attachment(0).content == pdf
    assert stored.attachment(0).size == len(pdf)
    assert stored.attachment(1).content.replace(b"\r\n", b"\n") == b"a,b\n1,2\n"
    with pytest.raises(NotFoundError):
        stored.attachment(2)
    as_json = json.loads(json.dumps(stored.to_dict()))
    assert as_json["subject"] == "Quarterly figures – Q3"
    assert as_json["attachments"][0] == {
        "index": 0,
        "filename": "Übersicht 2024.pdf",
        "content_type": "application/pdf",
        "disposition": "attachment",
        "content_id": "",
        "size": len(pdf),
    }


def test_inline_images_and_forwarded_messages_are_attachments(running: sink.SinkInfo) -> None:
    inner = EmailMessage()
    inner["Subject"] = "the original"
    inner.set_content("forwarded text\n")
    msg = EmailMessage()
    msg["Subject"] = "with related parts"
    msg.set_content("text\n")
    msg.add_alternative('<img src="cid:logo@x">\n', subtype="html")
    _, html_part = msg.iter_parts()
    html_part.add_related(b"\x89PNG fake", maintype="image", subtype="png", cid="<logo@x>")
    msg.add_attachment(inner)
    with sink_client(running.port) as client:
        message_id = deliver(client, msg.as_bytes(policy=SMTP_POLICY))
    stored = sink.get_message(message_id)
    assert stored.text == "text\n"
    assert stored.html == '<img src="cid:logo@x">\n'
    kinds = [(a.content_type, a.content_id) for a in stored.attachments]
    assert kinds == [("image/png", "logo@x"), ("message/rfc822", "")]
    assert stored.attachments[0].content == b"\x89PNG fake"
    assert b"Subject: the original" in stored.attachments[1].content


def test_unknown_message_id_raises_not_found() -> None:
    with pytest.raises(NotFoundError) as caught:
        sink.get_message(424242)
    assert caught.value.kind == "message" and caught.value.name == "424242"
    with pytest.raises(NotFoundError):
        sink.raw_message(424242)


def test_clear_removes_every_message_file_and_row(running: sink.SinkInfo) -> None:
    with sink_client(running.port) as client:
        ids = [deliver(client, simple_message(f"to clear {n}")) for n in range(3)]
    paths = [sink.message_summary(i).path for i in ids]
    assert all(p.exists() for p in paths)
    assert sink.clear() == 3
    assert sink.list_messages() == []
    assert not any(p.exists() for p in paths)
    with sink_client(running.port) as client:
        new_id = deliver(client, simple_message("after clear"))
    assert new_id > max(ids)  # ids are never reused
    assert sink.clear() == 1


# --- lifecycle ---------------------------------------------------------------------------


def refuses_connections(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=2).close()
    except ConnectionRefusedError:
        return True
    return False


def test_ensure_running_starts_the_sink_and_stops_it(sink_port: int) -> None:
    state = sink_dir() / "sink.json"
    assert not sink.is_running()
    with sink.ensure_running() as info:
        assert info.port == sink_port and info.pid == os.getpid()
        assert sink.is_running()
        assert json.loads(state.read_text())["port"] == sink_port
        with sink_client(info.port) as client:
            deliver(client, simple_message("while running"))
    assert not sink.is_running()
    assert not state.exists()
    assert refuses_connections(sink_port)
    assert [m.subject for m in sink.list_messages()] == ["while running"]


def test_ensure_running_leaves_a_running_sink_alone(running: sink.SinkInfo) -> None:
    with sink.ensure_running() as inner:
        assert inner == running
    assert sink.is_running()
    with sink_client(running.port) as client:
        deliver(client, simple_message("outer still serves"))


def test_a_second_sink_for_the_same_home_is_refused(running: sink.SinkInfo) -> None:
    second = sink.SinkServer(port=free_port())
    with pytest.raises(ConfigError, match="already running") as caught:
        asyncio.run(second.start())
    assert str(running.port) in str(caught.value)
    assert sink.is_running()


def test_a_port_taken_by_another_program_is_named(sink_port: int) -> None:
    with socket.socket() as other:
        other.bind(("127.0.0.1", sink_port))
        other.listen()
        with pytest.raises(ConfigError) as caught, sink.ensure_running():
            pytest.fail("the sink must not start on a taken port")
    assert f"port {sink_port}" in str(caught.value)
    assert caught.value.field == "port"
    assert not (sink_dir() / "sink.json").exists()


def test_a_state_file_left_by_a_dead_process_is_ignored(sink_port: int) -> None:
    dead = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"],
        capture_output=True,
        text=True,
        check=True,
        timeout=30,
    )
    stale = {"pid": int(dead.stdout), "host": "127.0.0.1", "port": sink_port, "started": "x"}
    (sink_dir() / "sink.json").write_text(json.dumps(stale))
    assert not sink.is_running()
    stale["started"] = dt.datetime.now(dt.UTC).isoformat()
    (sink_dir() / "sink.json").write_text(json.dumps({**stale, "pid": os.getpid()}))
    assert not sink.is_running()  # our pid is alive, but nothing answers on the port
    with sink.ensure_running() as info:
        assert info.pid == os.getpid()
        assert sink.is_running()


# --- the writer's durable mode (group commit) --------------------------------------------


def test_fsync_mode_commits_concurrent_messages_in_shared_batches() -> None:
    directory = sink_dir()
    contents = [simple_message(f"batched {n}", body=f"n={n}\r\n") for n in range(40)]

    async def store_all() -> tuple[list[int], list[int]]:
        writer = MailboxWriter(directory, fsync=True)
        batch_sizes: list[int] = []
        persist = writer._persist

        def recording_persist(batch: list[Any]) -> list[int]:
            batch_sizes.append(len(batch))
            return persist(batch)

        writer._persist = recording_persist  # type: ignore[method-assign]
        try:
            ids = await asyncio.gather(
                *(
                    writer.store(
                        c,
                        envelope_from="s@example.com",
                        envelope_recipients=["r@x.org"],
                        smtputf8=False,
                    )
                    for c in contents
                )
            )
        finally:
            await writer.close()
        return list(ids), batch_sizes

    ids, batch_sizes = asyncio.run(asyncio.wait_for(store_all(), 60))
    assert len(set(ids)) == len(contents)
    assert sum(batch_sizes) == len(contents)
    assert len(batch_sizes) < len(contents)  # concurrent messages shared commits
    for message_id, content in zip(ids, contents, strict=True):
        assert sink.raw_message(message_id) == content
        assert (
            sink.message_summary(message_id).subject
            == content.split(b"Subject: ")[1].split(b"\r\n")[0].decode()
        )


def test_fsync_mode_fails_the_whole_batch_when_a_file_cannot_be_written() -> None:
    directory = sink_dir()

    async def store_blocked() -> list[BaseException | int]:
        writer = MailboxWriter(directory, fsync=True)
        today = dt.datetime.now(dt.UTC).date()
        for day in (today, today + dt.timedelta(days=1)):
            (directory / "messages" / f"{day:%Y-%m-%d}").write_text("not a folder")
        try:
            return await asyncio.gather(
                *(
                    writer.store(
                        simple_message(f"x{n}"),
                        envelope_from="",
                        envelope_recipients=[],
                        smtputf8=False,
                    )
                    for n in range(3)
                ),
                return_exceptions=True,
            )
        finally:
            await writer.close()

    results = asyncio.run(asyncio.wait_for(store_blocked(), 60))
    assert all(isinstance(r, OSError) for r in results), results
    assert sink.count_messages() == 0
