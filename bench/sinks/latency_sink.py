"""WAN-latency sink: a fast SMTP sink that answers every reply L ms late.

Real SMTP servers are far away, so a client's throughput depends on how many
round trips it waits for (concurrency, pipelining), not only on its CPU.
This sink models that on 127.0.0.1: every server reply -- the 220 greeting
included -- is written --latency-ms after the command that caused it was
read.  When a client pipelines (RFC 2920), all complete commands found in one
read are answered together, in one write, after one delay, as a real server
would do; a lock-step client pays one delay per command.

It is written on asyncio.Protocol directly (no aiosmtpd: far too slow to be
a neutral sink), and delays with loop.call_later (no threads, no sleeps).

Supported: EHLO (advertises PIPELINING, 8BITMIME, SIZE), HELO, MAIL (SIZE=
and BODY= parameters), RCPT, DATA (end of data on CRLF.CRLF, dot-unstuffing),
RSET, NOOP, QUIT; anything else gets 502.  It counts messages and sessions,
records every recipient and, with --csv, checks that each message contains
that row's name and amount, exactly like sinks/aiosmtpd_sink.py.  On SIGTERM
or SIGINT, or after --max-seconds, it writes the same JSON summary as
aiosmtpd_sink.py (plus latency/batching counters) to --summary and exits.

    python sinks/latency_sink.py --port 2525 --latency-ms 20 --summary s.json
"""
import argparse
import asyncio
import collections
import csv
import json
import resource
import signal
import sys
import time

HOST = "127.0.0.1"
MAX_LINE = 4096          # longest command line accepted (RFC 5321: 512)
MAX_RCPTS = 1000         # recipients per transaction
READ_SIZE = 65536        # bytes per recv() (see connection_made)
CMD, DATA, CLOSING = 0, 1, 2

# Replies (constants: no formatting on the hot path).
R_OK = b"250 2.0.0 Ok\r\n"
R_MAIL = b"250 2.1.0 Ok\r\n"
R_RCPT = b"250 2.1.5 Ok\r\n"
R_DATA = b"354 End data with <CR><LF>.<CR><LF>\r\n"
R_QUEUED = b"250 2.0.0 Ok: queued\r\n"
R_BYE = b"221 2.0.0 Bye\r\n"
R_NEED_HELO = b"503 5.5.1 Error: send HELO/EHLO first\r\n"
R_NESTED = b"503 5.5.1 Error: nested MAIL command\r\n"
R_NEED_MAIL = b"503 5.5.1 Error: need MAIL command\r\n"
R_NEED_RCPT = b"503 5.5.1 Error: need RCPT command\r\n"
R_SYNTAX = b"501 5.5.4 Syntax error in parameters or arguments\r\n"
R_UNKNOWN = b"502 5.5.2 Error: command not recognized\r\n"
R_TOO_LONG = b"500 5.5.2 Error: line too long\r\n"
R_TOO_MANY = b"452 4.5.3 Error: too many recipients\r\n"
R_TOO_BIG = b"552 5.3.4 Error: message too big\r\n"

# Set in main(); module globals keep attribute look-ups off the hot path.
LATENCY = 0.0
MAX_SIZE = 33554432
EHLO_REPLY = b""
HELO_REPLY = b""
GREETING = b""
loop = None


class Stats:
    def __init__(self, expected):
        self.expected = expected   # rcpt bytes -> (name bytes, amount bytes)
        self.t0 = time.perf_counter()
        self.messages = 0
        self.sessions = 0
        self.bytes = 0
        self.rcpts = {}            # rcpt bytes -> times seen
        self.content_mismatch = 0
        self.unexpected_rcpt = 0
        self.too_big = 0
        self.errors = 0            # 4xx/5xx replies sent
        self.first_msg = None
        self.last_msg = None
        # batching / latency bookkeeping
        self.batches = 0           # delayed writes scheduled
        self.replies = 0
        self.max_batch = 0
        self.multi_batches = 0     # batches with > 1 reply (pipelined input)
        self.delay_sum = 0.0
        self.delay_min = None
        self.delay_max = 0.0
        self.flushes = 0


ST = None


class SinkProtocol(asyncio.Protocol):
    __slots__ = (
        "buf",
        "helo",
        "mail",
        "msg",
        "overflow",
        "pending",
        "rcpts",
        "state",
        "timer",
        "transport",
    )

    def connection_made(self, transport):
        ST.sessions += 1
        # The selector transport recv()s into a fresh max_size (256 KiB)
        # bytes object per read; glibc serves that size with mmap/brk churn
        # (page faults, ~2x the sink's CPU per message, measured).  SMTP
        # commands and ~1 KB messages never need more than 64 KiB per read.
        if getattr(transport, "max_size", 0) > READ_SIZE:
            transport.max_size = READ_SIZE
        self.transport = transport
        self.buf = b""
        self.state = CMD
        self.helo = False
        self.mail = False
        self.rcpts = []
        self.msg = None
        self.overflow = False
        self.pending = collections.deque()
        self.timer = None
        self._send([GREETING], False)

    def connection_lost(self, exc):
        self.state = CLOSING
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        self.pending.clear()
        self.msg = None

    # ---------------------------------------------------------- replies

    def _send(self, replies, close):
        n = len(replies)
        st = ST
        st.batches += 1
        st.replies += n
        if n > 1:
            st.multi_batches += 1
            if n > st.max_batch:
                st.max_batch = n
        elif st.max_batch == 0:
            st.max_batch = 1
        data = replies[0] if n == 1 else b"".join(replies)
        if LATENCY <= 0:
            self.transport.write(data)
            if close:
                self.transport.close()
            return
        now = loop.time()
        self.pending.append((now, data, close))
        if self.timer is None:
            self.timer = loop.call_later(LATENCY, self._flush)

    def _flush(self):
        self.timer = None
        pending = self.pending
        now = loop.time()
        due_by = now - LATENCY + 1e-6
        st = ST
        out = []
        close = False
        while pending and pending[0][0] <= due_by:
            t_in, data, close = pending.popleft()
            d = now - t_in
            st.delay_sum += d
            if d > st.delay_max:
                st.delay_max = d
            if st.delay_min is None or d < st.delay_min:
                st.delay_min = d
            out.append(data)
            if close:
                break
        st.flushes += 1
        tr = self.transport
        if out and not tr.is_closing():
            tr.write(out[0] if len(out) == 1 else b"".join(out))
        if close:
            pending.clear()
            tr.close()
        elif pending:
            self.timer = loop.call_later(
                max(0.0, pending[0][0] + LATENCY - now), self._flush)

    # ---------------------------------------------------------- input

    def data_received(self, data):
        state = self.state
        if state == CLOSING:
            return
        replies = []
        if state == DATA:
            data = self._feed_data(data, replies)
            if data is None:          # still inside the message
                if replies:
                    self._send(replies, False)
                return
        if self.buf:
            data = self.buf + data
        pos = 0
        find = data.find
        while True:
            eol = find(b"\n", pos)
            if eol < 0:
                break
            end = eol - 1 if eol > pos and data[eol - 1] == 13 else eol
            replies.append(self._command(data[pos:end]))
            pos = eol + 1
            if self.state == DATA:
                rest = self._feed_data(data[pos:], replies)
                if rest is None:
                    data = b""
                    pos = 0
                    break
                data = rest
                find = data.find
                pos = 0
            elif self.state == CLOSING:
                data = b""
                pos = 0
                break
        rest = data[pos:] if pos else data
        if len(rest) > MAX_LINE:
            replies.append(R_TOO_LONG)
            ST.errors += 1
            rest = b""
        self.buf = rest
        if replies:
            self._send(replies, self.state == CLOSING)

    def _feed_data(self, chunk, replies):
        """Append message data; on CRLF.CRLF finish the message and return
        the bytes that follow it (next commands), else None."""
        msg = self.msg
        start = len(msg) - 4
        msg += chunk
        idx = msg.find(b"\r\n.\r\n", start if start > 0 else 0)
        if idx < 0:
            if len(msg) > MAX_SIZE + 16:
                # too big: keep only the tail needed to see the terminator
                self.overflow = True
                self.msg = bytearray(b"\0\0") + msg[-4:]
            return None
        rest = bytes(msg[idx + 5:])
        self.msg = None
        self.state = CMD
        st = ST
        if self.overflow or idx > MAX_SIZE:
            self.overflow = False
            st.too_big += 1
            st.errors += 1
            replies.append(R_TOO_BIG)
        else:
            # msg starts with a virtual CRLF, so the first line is unstuffed
            # too; the content keeps the CRLF that ends its last line.
            body = bytes(msg[:idx + 2].replace(b"\r\n..", b"\r\n."))[2:]
            st.messages += 1
            st.bytes += len(body)
            now = time.perf_counter()
            if st.first_msg is None:
                st.first_msg = now
            st.last_msg = now
            seen = st.rcpts
            expected = st.expected
            for r in self.rcpts:
                seen[r] = seen.get(r, 0) + 1
                if expected is not None:
                    exp = expected.get(r)
                    if exp is None:
                        st.unexpected_rcpt += 1
                    elif exp[0] not in body or exp[1] not in body:
                        st.content_mismatch += 1
            replies.append(R_QUEUED)
        self.mail = False
        self.rcpts = []
        return rest

    def _command(self, line):
        verb = line[:4].upper()
        if len(line) > 4 and line[4] != 32:   # e.g. "MAILX"
            verb = b""
        if verb == b"MAIL":
            if not self.helo:
                return self._err(R_NEED_HELO)
            if self.mail:
                return self._err(R_NESTED)
            if line[5:10].upper() != b"FROM:":
                return self._err(R_SYNTAX)
            gt = line.find(b">", 10)
            if gt >= 0:
                params = line[gt + 1:]
                if params and b"=" in params:
                    for p in params.split():
                        if p[:5].upper() == b"SIZE=":
                            try:
                                size = int(p[5:])
                            except ValueError:
                                return self._err(R_SYNTAX)
                            if size > MAX_SIZE:
                                ST.too_big += 1
                                return self._err(R_TOO_BIG)
            self.mail = True
            self.rcpts = []
            return R_MAIL
        if verb == b"RCPT":
            if not self.mail:
                return self._err(R_NEED_MAIL)
            if line[5:8].upper() != b"TO:":
                return self._err(R_SYNTAX)
            arg = line[8:].strip()
            if arg[:1] == b"<":
                gt = arg.find(b">")
                if gt < 0:
                    return self._err(R_SYNTAX)
                arg = arg[1:gt]
            else:
                arg = arg.split(None, 1)[0] if arg else b""
            if not arg:
                return self._err(R_SYNTAX)
            if len(self.rcpts) >= MAX_RCPTS:
                return self._err(R_TOO_MANY)
            self.rcpts.append(arg)
            return R_RCPT
        if verb == b"DATA":
            if not self.mail:
                return self._err(R_NEED_MAIL)
            if not self.rcpts:
                return self._err(R_NEED_RCPT)
            self.state = DATA
            self.msg = bytearray(b"\r\n")
            return R_DATA
        if verb == b"RSET":
            self.mail = False
            self.rcpts = []
            return R_OK
        if verb == b"QUIT":
            self.state = CLOSING
            return R_BYE
        if verb == b"EHLO" or verb == b"HELO":
            if not line[5:].strip():
                return self._err(R_SYNTAX)
            self.helo = True
            self.mail = False
            self.rcpts = []
            return EHLO_REPLY if verb == b"EHLO" else HELO_REPLY
        if verb == b"NOOP":
            return R_OK
        return self._err(R_UNKNOWN)

    @staticmethod
    def _err(reply):
        ST.errors += 1
        return reply


def load_expected(path):
    expected = {}
    with open(path, newline="", encoding="utf-8") as fh:
        for row in csv.DictReader(fh):
            expected[row["email"].encode()] = (row["name"].encode(),
                                               row["amount"].encode())
    return expected


def summary(st, latency_ms):
    dup = sum(1 for c in st.rcpts.values() if c > 1)
    ru = resource.getrusage(resource.RUSAGE_SELF)
    out = {
        "messages": st.messages,
        "sessions": st.sessions,
        "bytes": st.bytes,
        "distinct_rcpts": len(st.rcpts),
        "duplicate_rcpts": dup,
        "alive_s": round(time.perf_counter() - st.t0, 3),
    }
    if st.expected is not None:
        out.update({
            "expected_rows": len(st.expected),
            "missing_rcpts": sum(1 for e in st.expected if e not in st.rcpts),
            "unexpected_rcpts": st.unexpected_rcpt,
            "content_mismatch": st.content_mismatch,
        })
    delayed = st.replies if latency_ms > 0 else 0
    out.update({
        "latency_ms": latency_ms,
        "replies": st.replies,
        "reply_batches": st.batches,
        "multi_reply_batches": st.multi_batches,
        "max_batch": st.max_batch,
        "error_replies": st.errors,
        "too_big": st.too_big,
        "writes_after_delay": st.flushes if latency_ms > 0 else None,
        "delay_ms_mean": (round(1000 * st.delay_sum / st.batches, 3)
                          if delayed and st.batches else None),
        "delay_ms_min": (round(1000 * st.delay_min, 3)
                         if delayed and st.delay_min is not None else None),
        "delay_ms_max": round(1000 * st.delay_max, 3) if delayed else None,
        "first_to_last_msg_s": (round(st.last_msg - st.first_msg, 4)
                                if st.first_msg is not None else None),
        "cpu_s": round(ru.ru_utime + ru.ru_stime, 3),
    })
    return out


def main(argv=None):
    global LATENCY, MAX_SIZE, EHLO_REPLY, HELO_REPLY, GREETING, ST, loop
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--host", default=HOST,
                    help="listen address (loopback only; default 127.0.0.1)")
    ap.add_argument("--latency-ms", type=float, default=20.0,
                    help="delay of every reply / reply batch (default 20)")
    ap.add_argument("--csv", default=None,
                    help="rows CSV: check each message has its row's name+amount")
    ap.add_argument("--summary", required=True, help="JSON summary written at exit")
    ap.add_argument("--max-size", type=int, default=MAX_SIZE,
                    help="SIZE limit advertised and enforced (bytes)")
    ap.add_argument("--max-seconds", type=float, default=900,
                    help="exit (writing the summary) after this long")
    ap.add_argument("--hostname", default="latency-sink")
    a = ap.parse_args(argv)
    if a.host not in ("127.0.0.1", "::1", "localhost"):
        sys.exit("refusing: the benchmark sink only listens on loopback")
    if not 0 <= a.latency_ms <= 10_000:
        sys.exit("--latency-ms must be 0..10000")

    LATENCY = a.latency_ms / 1000.0
    MAX_SIZE = a.max_size
    host = a.hostname.encode()
    GREETING = b"220 " + host + b" ESMTP latency-sink\r\n"
    HELO_REPLY = b"250 " + host + b"\r\n"
    EHLO_REPLY = (b"250-" + host + b"\r\n250-PIPELINING\r\n250-8BITMIME\r\n"
                  b"250 SIZE " + str(MAX_SIZE).encode() + b"\r\n")
    ST = Stats(load_expected(a.csv) if a.csv else None)

    async def run():
        global loop
        loop = asyncio.get_running_loop()
        stop = loop.create_future()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, lambda: stop.done() or stop.set_result(1))
        loop.call_later(a.max_seconds, lambda: stop.done() or stop.set_result(2))
        server = await loop.create_server(SinkProtocol, host=a.host, port=a.port,
                                          backlog=1000, reuse_address=True)
        print(f"latency-sink listening on {a.host}:{a.port} "
              f"latency={a.latency_ms:g}ms", flush=True)
        await stop
        server.close()

    asyncio.run(run())
    with open(a.summary, "w") as fh:
        json.dump(summary(ST, a.latency_ms), fh)


if __name__ == "__main__":
    main()
