"""Self-test of sinks/latency_sink.py: protocol, delays, counting, summary.

    .venv/bin/python sinks/selftest_latency_sink.py        # exit 0 = all passed

Starts the sink on a free 127.0.0.1 port with a 50 ms delay and a 3-row CSV,
talks raw SMTP to it over plain sockets (lock-step and pipelined), stops it
with SIGTERM and checks the JSON summary.  Takes ~3 s.
"""
import json
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
L = 0.050            # sink latency under test (s)
SLACK = 0.035        # scheduling slack allowed above one delay (s)
MAX_SIZE = 4000
FAILS = []


def check(cond, what):
    print(("ok   " if cond else "FAIL ") + what, flush=True)
    if not cond:
        FAILS.append(what)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Conn:
    def __init__(self, port):
        self.s = socket.create_connection(("127.0.0.1", port), timeout=5)
        self.s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.buf = b""
        self.recv_calls = 0

    def send(self, data):
        self.s.sendall(data)

    def replies(self, n):
        """Read n reply lines (an EHLO reply is several lines)."""
        out = []
        while len(out) < n:
            while b"\r\n" not in self.buf:
                chunk = self.s.recv(65536)
                self.recv_calls += 1
                if not chunk:
                    raise ConnectionError(f"closed after {out}")
                self.buf += chunk
            line, self.buf = self.buf.split(b"\r\n", 1)
            out.append(line)
        return out

    def timed(self, data, n):
        t = time.perf_counter()
        if data:
            self.send(data)
        r = self.replies(n)
        return r, time.perf_counter() - t

    def close(self):
        self.s.close()


def main():
    tmp = Path(tempfile.mkdtemp(prefix="latsink-test-"))
    csv = tmp / "rows.csv"
    csv.write_text("email,name,amount,note\n"
                   "u1@example.com,Ada Abbott,12.50,n/a\n"
                   "u2@example.com,Bob Baker,99.00,n/a\n"
                   "u3@example.com,Chloe Castillo,7.25,n/a\n")
    summary = tmp / "summary.json"
    port = free_port()
    sink = subprocess.Popen(
        [sys.executable, str(HERE / "latency_sink.py"), "--port", str(port),
         "--latency-ms", str(L * 1000), "--csv", str(csv), "--summary",
         str(summary), "--max-size", str(MAX_SIZE), "--max-seconds", "60"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        line = sink.stdout.readline().decode()
        check("listening" in line, f"sink started: {line.strip()}")
        run(port)
    finally:
        if sink.poll() is None:
            sink.send_signal(signal.SIGTERM)
        try:
            sink.wait(timeout=10)
        except subprocess.TimeoutExpired:
            sink.kill()
            sink.wait()
    d = json.loads(summary.read_text())
    print(json.dumps(d))
    # 4 accepted messages: u1 (lock-step), u2 (pipelined, dot-stuffed),
    # u3 + u1 again (pipelined after "."), empty message to u2;
    # one too big (not counted)
    check(d["messages"] == 5, f"messages == 5 ({d['messages']})")
    check(d["sessions"] == 3, f"sessions == 3 ({d['sessions']})")
    check(d["bytes"] == EXPECTED_BYTES, f"bytes == {EXPECTED_BYTES} ({d['bytes']})")
    check(d["distinct_rcpts"] == 4, f"distinct rcpts == 4 ({d['distinct_rcpts']})")
    check(d["duplicate_rcpts"] == 2, f"duplicate rcpts == 2 ({d['duplicate_rcpts']})")
    check(d["missing_rcpts"] == 0, f"missing == 0 ({d['missing_rcpts']})")
    check(d["unexpected_rcpts"] == 1, f"unexpected == 1 ({d['unexpected_rcpts']})")
    check(d["content_mismatch"] == 2, "content mismatch == 2: empty message to u2 and "
          f"u1's second message without its amount ({d['content_mismatch']})")
    check(d["too_big"] == 2, f"too_big == 2 (SIZE= and data) ({d['too_big']})")
    check(d["delay_ms_min"] >= L * 1000 - 0.01,
          f"every reply delayed >= {L * 1000:g} ms (min {d['delay_ms_min']})")
    check(d["multi_reply_batches"] >= 3, f"pipelined batches seen ({d['multi_reply_batches']})")
    shutil_rm(tmp)
    if FAILS:
        print(f"{len(FAILS)} FAILED")
        return 1
    print("all passed")
    return 0


def shutil_rm(path):
    for p in path.iterdir():
        p.unlink()
    path.rmdir()


MSG1 = (b"From: a@example.com\r\nTo: u1@example.com\r\nSubject: Ada Abbott\r\n\r\n"
        b"Amount 12.50\r\n")
# dot-stuffed lines: "..leading" -> ".leading", "..." -> "..", "." + CRLF
MSG2_WIRE = (b"Subject: Bob Baker\r\n\r\n..leading dot 99.00\r\n...\r\nmid.\r\n"
             b"..\r\nend\r\n")
MSG2 = (b"Subject: Bob Baker\r\n\r\n.leading dot 99.00\r\n..\r\nmid.\r\n"
        b".\r\nend\r\n")
MSG3 = b"Subject: Chloe Castillo 7.25\r\n\r\nhi\r\n"
MSG4 = b"Subject: Ada Abbott again, no amount\r\n\r\nhi\r\n"
EXPECTED_BYTES = len(MSG1) + len(MSG2) + len(MSG3) + len(MSG4) + 0


def run(port):
    lo, hi = L, L + SLACK

    # -- session 1: lock-step, every reply one delay late ------------------
    c = Conn(port)
    r, dt = c.timed(None, 1)
    check(r[0].startswith(b"220 ") and lo <= dt < hi + 0.05,
          f"greeting 220 after one delay ({dt * 1000:.1f} ms)")
    c.send(b"EHLO client.example\r\n")
    t = time.perf_counter()
    ehlo = b""
    while not ehlo.endswith(b"\r\n") or b"\r\n250 " not in b"\r\n" + ehlo:
        ehlo += c.s.recv(65536)
    dt = time.perf_counter() - t
    check(all(k in ehlo for k in (b"250-PIPELINING", b"250-8BITMIME", b"SIZE 4000")),
          f"EHLO advertises PIPELINING, 8BITMIME, SIZE ({ehlo!r})")
    check(lo <= dt < hi, f"EHLO reply after one delay ({dt * 1000:.1f} ms)")
    for cmd, code in ((b"RCPT TO:<u1@example.com>", b"503"),
                      (b"DATA", b"503"),
                      (b"FOO bar", b"502"),
                      (b"NOOP", b"250"),
                      (b"MAIL FROM:<a@example.com> SIZE=999999", b"552"),
                      (b"MAIL FROM:<a@example.com> SIZE=100 BODY=8BITMIME", b"250"),
                      (b"MAIL FROM:<a@example.com>", b"503"),
                      (b"DATA", b"503"),
                      (b"RSET", b"250"),
                      (b"MAIL FROM:<a@example.com>", b"250"),
                      (b"RCPT TO:<u1@example.com>", b"250"),
                      (b"DATA", b"354")):
        r, dt = c.timed(cmd + b"\r\n", 1)
        check(r[0].startswith(code) and lo <= dt < hi,
              f"{cmd.decode()} -> {r[0].decode()} after {dt * 1000:.1f} ms")
    # end of data split across segments, right inside CRLF.CRLF
    c.send(MSG1[:-1])                 # ...\r | \n. | \r\n
    time.sleep(0.02)
    c.send(b"\n.")
    time.sleep(0.02)
    r, dt = c.timed(b"\r\n", 1)
    check(r[0].startswith(b"250 2.0.0"), f"split CRLF.CRLF ends the message ({r[0]!r})")
    r, dt = c.timed(b"QUIT\r\n", 1)
    check(r[0].startswith(b"221"), "QUIT -> 221")
    check(c.s.recv(10) == b"", "connection closed after 221")
    c.close()

    # -- session 2: pipelined client -------------------------------------
    c = Conn(port)
    c.replies(1)
    c.timed(b"EHLO client.example\r\n", 4)
    calls0 = c.recv_calls
    r, dt = c.timed(b"MAIL FROM:<a@example.com>\r\nRCPT TO:<u2@example.com>\r\n"
                    b"RCPT TO:<stranger@example.org>\r\nDATA\r\n", 4)
    check([x[:3] for x in r] == [b"250", b"250", b"250", b"354"],
          f"pipelined MAIL/RCPT/RCPT/DATA -> {[x[:3].decode() for x in r]}")
    check(lo <= dt < hi, f"4 pipelined replies after ONE delay ({dt * 1000:.1f} ms)")
    check(c.recv_calls - calls0 == 1, "4 pipelined replies arrive in one write")
    # message with stuffed dots, then the next transaction in the same write
    r, dt = c.timed(MSG2_WIRE + b".\r\nMAIL FROM:<a@example.com>\r\n"
                    b"RCPT TO:<u3@example.com>\r\nDATA\r\n", 4)
    check([x[:3] for x in r] == [b"250", b"250", b"250", b"354"] and lo <= dt < hi,
          f"'.' + next MAIL/RCPT/DATA in one write -> one batch after "
          f"{dt * 1000:.1f} ms")
    # two messages back to back, the second pipelined after the first "."
    r, dt = c.timed(MSG3 + b".\r\nMAIL FROM:<a@example.com>\r\nRCPT TO:<u1@example.com>\r\n"
                    b"DATA\r\n", 4)
    check([x[:3] for x in r] == [b"250", b"250", b"250", b"354"], "second pipelined message")
    r, dt = c.timed(MSG4 + b".\r\n", 1)
    check(r[0].startswith(b"250"), "message 4 queued")
    # empty message: DATA then "." right away (counts, 0 bytes, no amount)
    r, dt = c.timed(b"MAIL FROM:<>\r\nRCPT TO:<u2@example.com>\r\nDATA\r\n", 3)
    r, dt = c.timed(b".\r\n", 1)
    check(r[0].startswith(b"250"), "empty message accepted")
    # too big for --max-size: 552 and not counted
    r, dt = c.timed(b"MAIL FROM:<a@example.com>\r\nRCPT TO:<u3@example.com>\r\nDATA\r\n", 3)
    big = (b"x" * 998 + b"\r\n") * 5
    r, dt = c.timed(big + b".\r\nNOOP\r\n", 2)
    check(r[0].startswith(b"552") and r[1].startswith(b"250"),
          f"message over SIZE limit -> {r[0][:3].decode()}, session goes on")
    r, dt = c.timed(b"QUIT\r\n", 1)
    c.close()

    # -- session 3: HELO + a line that is too long --------------------------
    c = Conn(port)
    c.replies(1)
    r, dt = c.timed(b"HELO client.example\r\n", 1)
    check(r[0].startswith(b"250 "), "HELO -> 250")
    r, dt = c.timed(b"NOOP " + b"y" * 5000, 1)
    check(r[0].startswith(b"500"), "line over 4096 bytes -> 500")
    c.timed(b"\r\nQUIT\r\n", 2)
    c.close()


if __name__ == "__main__":
    sys.exit(main())
