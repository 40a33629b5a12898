"""Micro-benchmark of the SMTP client alone: prebuilt ~1.2 KB messages, K pipelined sessions.

Measures what ``mailconduit.smtp.SMTPSession.stream`` costs, without reading,
rendering or building messages, against Postfix's smtp-sink (the loopback ceiling,
~32k msg/s on this machine) or the WAN-like latency sink (every reply L ms late).
The sink runs on CPU 0 and this client on CPU 1, as in ../shared/bench.

    .venv/bin/python bench/smtp_client_bench.py                        # smtp-sink, N=5000, K=4
    .venv/bin/python bench/smtp_client_bench.py --latency-ms 20 -k 16  # latency sink, 16 sessions
    .venv/bin/python bench/smtp_client_bench.py --profile              # cProfile of the client

Prints one JSON line per run: msg/s (wall from the first connect to the last outcome),
client CPU µs per message, and the sink's own count of messages received.
"""

from __future__ import annotations

import argparse
import asyncio
import ctypes
import json
import os
import re
import resource
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from mailconduit.config import validate_connection
from mailconduit.smtp import DeliveryStatus, Envelope, SMTPSession
from mailconduit.testing import free_port

HERE = Path(__file__).resolve().parent
SMTP_SINK = "/usr/sbin/smtp-sink"
HOST = "127.0.0.1"
_libc = ctypes.CDLL("libc.so.6", use_errno=True)


def _sink_preexec() -> None:
    _libc.prctl(1, signal.SIGTERM)  # die with us (PR_SET_PDEATHSIG)
    if (os.cpu_count() or 1) > 1:
        os.sched_setaffinity(0, {0})


def is_listening(port: int) -> bool:
    want = f"0100007F:{port:04X}"
    with open("/proc/net/tcp") as fh:
        return any(
            len(f) > 3 and f[1] == want and f[3] == "0A" for f in (line.split() for line in fh)
        )


class Sink:
    """smtp-sink or the latency sink on a free port, pinned to CPU 0."""

    def __init__(self, latency_ms: float | None, workdir: Path) -> None:
        self.port = free_port()
        self.latency_ms = latency_ms
        self.out = workdir / "sink.out"
        self.summary = workdir / "summary.json"
        if latency_ms is None:
            argv = [SMTP_SINK, "-c", f"{HOST}:{self.port}", "1000"]
            if os.geteuid() == 0:
                argv[1:1] = ["-u", "nobody"]
        else:
            argv = [
                sys.executable,
                str(HERE / "sinks" / "latency_sink.py"),
                "--port",
                str(self.port),
                "--latency-ms",
                f"{latency_ms:g}",
                "--summary",
                str(self.summary),
            ]
        self.fh = open(self.out, "wb")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(
            argv, stdout=self.fh, stderr=subprocess.STDOUT, preexec_fn=_sink_preexec
        )
        deadline = time.monotonic() + 10
        while not is_listening(self.port):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise SystemExit(f"sink did not start: {self.out.read_text()[-400:]}")
            time.sleep(0.02)

    def stop(self) -> dict[str, int]:
        self.proc.send_signal(signal.SIGTERM)
        self.proc.wait(timeout=15)
        self.fh.close()
        if self.latency_ms is None:
            text = self.out.read_text("ascii", "replace")
            mesg = re.findall(r"mesg=(\d+)", text)
            sess = re.findall(r"sess=(\d+)", text)
            return {
                "messages": int(mesg[-1]) if mesg else -1,
                "sessions": int(sess[-1]) if sess else -1,
            }
        data = json.loads(self.summary.read_text())
        return {
            "messages": data["messages"],
            "sessions": data["sessions"],
            "multi_reply_batches": data["multi_reply_batches"],
        }


def make_messages(n: int) -> list[Envelope]:
    """~1.2 KB messages like the reference harness's rendered statements."""
    body = (
        "Dear {name},\r\n\r\nYour statement for this month is ready. The amount due is "
        "{amount} EUR.\r\n\r\n"
        + "This paragraph stands for the rest of a realistic templated message, with enough "
        "words to make the whole message about one kilobyte and a bit on the wire.\r\n"
        * 6
        + "\r\nNote: {note}\r\n\r\n-- \r\nBilling\r\n"
    )
    messages = []
    for i in range(n):
        rcpt = f"user{i:06d}@example.com"
        headers = (
            f"From: billing@example.com\r\nTo: {rcpt}\r\nSubject: Statement for Name {i}\r\n"
            f"Date: Sat, 29 Nov 2026 12:00:00 +0000\r\nMessage-ID: <{i}.bench@example.com>\r\n"
            "MIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\n"
            "Content-Transfer-Encoding: 7bit\r\n\r\n"
        )
        data = (headers + body.format(name=f"Name {i}", amount=i % 997, note="n/a")).encode()
        messages.append(Envelope("billing@example.com", (rcpt,), data, token=i))
    return messages


async def run(port: int, messages: list[Envelope], sessions: int) -> dict[str, float]:
    conn = validate_connection(
        {"name": "bench", "server_url": HOST, "port": port, "auth_mechanism": "none"}
    )
    queue: asyncio.Queue[Envelope | None] = asyncio.Queue()
    for message in messages:
        queue.put_nowait(message)
    queue.put_nowait(None)
    sent = 0
    other = 0

    def on_outcome(outcome: object) -> None:
        nonlocal sent, other
        if outcome.status is DeliveryStatus.SENT:  # type: ignore[attr-defined]
            sent += 1
        else:
            other += 1

    cpu0 = resource.getrusage(resource.RUSAGE_SELF)
    t0 = time.perf_counter()
    opened = [SMTPSession(conn) for _ in range(sessions)]
    await asyncio.gather(*(s.connect() for s in opened))
    t1 = time.perf_counter()
    await asyncio.gather(*(s.stream(queue, on_outcome) for s in opened))
    t2 = time.perf_counter()
    await asyncio.gather(*(s.quit() for s in opened))
    cpu1 = resource.getrusage(resource.RUSAGE_SELF)
    cpu = (cpu1.ru_utime - cpu0.ru_utime) + (cpu1.ru_stime - cpu0.ru_stime)
    n = len(messages)
    return {
        "sent": sent,
        "not_sent": other,
        "msg_per_s": round(n / (t2 - t0), 1),
        "in_loop_msg_per_s": round(n / (t2 - t1), 1),
        "client_cpu_us_per_msg": round(cpu / n * 1e6, 1),
        "wall_s": round(t2 - t0, 3),
    }


async def run_aiosmtplib(port: int, messages: list[Envelope], sessions: int) -> dict[str, float]:
    """The same messages through aiosmtplib (no pipelining), K connections, for comparison."""
    import aiosmtplib

    pending = iter(messages)
    sent = 0

    async def worker() -> None:
        nonlocal sent
        async with aiosmtplib.SMTP(hostname=HOST, port=port, start_tls=False) as smtp:
            for message in pending:
                await smtp.sendmail(message.sender, list(message.recipients), message.data)
                sent += 1

    cpu0 = resource.getrusage(resource.RUSAGE_SELF)
    t0 = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(sessions)))
    t2 = time.perf_counter()
    cpu1 = resource.getrusage(resource.RUSAGE_SELF)
    cpu = (cpu1.ru_utime - cpu0.ru_utime) + (cpu1.ru_stime - cpu0.ru_stime)
    n = len(messages)
    return {
        "sent": sent,
        "not_sent": n - sent,
        "msg_per_s": round(n / (t2 - t0), 1),
        "in_loop_msg_per_s": round(n / (t2 - t0), 1),
        "client_cpu_us_per_msg": round(cpu / n * 1e6, 1),
        "wall_s": round(t2 - t0, 3),
    }


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("-n", type=int, default=5000, help="messages per run (default 5000)")
    ap.add_argument("-k", type=int, default=4, help="sessions (default 4)")
    ap.add_argument("-r", type=int, default=3, help="runs (default 3)")
    ap.add_argument("--latency-ms", type=float, default=None, help="use the latency sink")
    ap.add_argument("--no-pin", action="store_true", help="do not pin the client to CPU 1")
    ap.add_argument("--profile", action="store_true", help="print a cProfile of one run")
    ap.add_argument(
        "--compare",
        action="store_true",
        help="also run aiosmtplib with the same messages after each run (same load, same sink)",
    )
    args = ap.parse_args()
    if not args.no_pin and (os.cpu_count() or 1) > 1:
        os.sched_setaffinity(0, {1})
    messages = make_messages(args.n)
    avg = sum(len(m.data) for m in messages) / len(messages)
    for index in range(args.r):
        with tempfile.TemporaryDirectory() as tmp:
            sink = Sink(args.latency_ms, Path(tmp))
            try:
                if args.profile and index == 0:
                    import cProfile
                    import pstats

                    profiler = cProfile.Profile()
                    profiler.enable()
                    result = asyncio.run(run(sink.port, messages, args.k))
                    profiler.disable()
                    pstats.Stats(profiler).sort_stats("tottime").print_stats(25)
                else:
                    result = asyncio.run(run(sink.port, messages, args.k))
            finally:
                got = sink.stop()
        contenders = [("mailconduit", result, got)]
        if args.compare:
            with tempfile.TemporaryDirectory() as tmp:
                sink = Sink(args.latency_ms, Path(tmp))
                try:
                    other = asyncio.run(run_aiosmtplib(sink.port, messages, args.k))
                finally:
                    other_got = sink.stop()
            contenders.append(("aiosmtplib", other, other_got))
        for client, result, got in contenders:
            line = {
                "run": index + 1,
                "client": client,
                "sink": "smtp-sink"
                if args.latency_ms is None
                else f"latency {args.latency_ms:g} ms",
                "sessions": args.k,
                "n": args.n,
                "avg_message_bytes": round(avg),
                **result,
                "sink_messages": got["messages"],
                **{k: v for k, v in got.items() if k != "messages"},
            }
            print(json.dumps(line), flush=True)


if __name__ == "__main__":
    main()
