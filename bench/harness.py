"""Running one contender against one fresh sink, and measuring it.

Adapted from the reference harness in ../shared/bench/bench.py: same data, same sinks,
same validity rules (exit 0, the sink counted exactly N, the client's own count agrees,
and with a verifying sink every recipient distinct and every message holding its row),
same CPU placement, GNU time for peak RSS and CPU.

Everything is bounded: each run has a timeout or a time cap, sinks die with the driver
(PR_SET_PDEATHSIG) and all traffic stays on 127.0.0.1.
"""

from __future__ import annotations

import contextlib
import csv
import ctypes
import json
import os
import random
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
BENCH_VENV = HERE / ".venv"
BENCH_PY = BENCH_VENV / "bin" / "python"
CLIENTS = HERE / "clients"
SINKS = HERE / "sinks"
SMTP_SINK = "/usr/sbin/smtp-sink"
SMTP_SOURCE = "/usr/sbin/smtp-source"
GNU_TIME = "/usr/bin/time"
HOST = "127.0.0.1"
SENDER = "billing@example.com"
SUBJECT = "Statement for {{name}}"

# ---------------------------------------------------------------- test data

FIRST = ["Ada", "Bob", "Chloe", "Dmitri", "Esther", "Farid", "Grace", "Hiro",
         "Ines", "Jamal", "Kirsten", "Luis", "Mei", "Noah", "Olga", "Priya"]
LAST = ["Abbott", "Baker", "Castillo", "Dubois", "Eriksen", "Fischer",
        "Gupta", "Hughes", "Ivanova", "Jensen", "Kowalski", "Lopez"]
NOTES = ["Thanks for your business.",
         'Ref "Q3-2024", paid late',
         "Net 30; see attached terms",
         "Second reminder, please call us",
         "Discount applied: 5%, loyalty",
         "n/a"]

# ~1 KB once rendered; Jinja-style placeholders so the same file serves mailmerge,
# mailconduit (both Jinja2) and the str.format-based Python clients.
BODY_TEMPLATE = """\
Dear {{name}},

This is your monthly statement from Example Billing Services. According
to our records, the amount currently due on the account registered to
{{email}} is {{amount}} EUR.

Note from your account manager: {{note}}

Payment can be made by bank transfer to the account shown on your last
invoice. Please quote your e-mail address as the payment reference so that
we can match the transfer to your account without delay. If you have
already paid, please disregard this message; transfers can take up to
three business days to appear in our system.

If you believe this statement is wrong, reply to this message within
fourteen days and describe the problem. A member of our team will review
the account and respond within two business days. You can also reach us
by phone on weekdays between 9:00 and 17:00 CET.

Thank you for being a customer of Example Billing Services.

Kind regards,
The Example Billing Team
"""


@dataclass(frozen=True)
class DataSet:
    """The files every contender of a run reads: rows, templates, one rendered message."""

    n: int
    csv: Path
    body: Path
    mm_template: Path
    eml: Path
    eml_bytes: int
    #: The invoice scenario: the folder of the rows' PDFs, and the size of the payload
    #: (everything after the header block) of row 0's message, for smtp-source -l.
    attach_dir: Path | None = None
    payload_bytes: int = 0


def write_data(data_dir: Path, n: int, seed: int = 20240601) -> DataSet:
    """Deterministic CSV (email,name,amount,note) and templates; cached by N."""
    data_dir.mkdir(parents=True, exist_ok=True)
    csv_path = data_dir / f"rows_{n}.csv"
    if not csv_path.exists():
        rng = random.Random(seed)
        tmp = csv_path.with_suffix(".tmp")
        with open(tmp, "w", newline="", encoding="utf-8") as fh:
            writer = csv.writer(fh)
            writer.writerow(["email", "name", "amount", "note"])
            for i in range(n):
                writer.writerow([f"user{i:06d}@example.com",
                                 f"{rng.choice(FIRST)} {rng.choice(LAST)}",
                                 f"{rng.randint(100, 999_999) / 100:.2f}",
                                 rng.choice(NOTES)])
        tmp.rename(csv_path)
    body = data_dir / "body_template.txt"
    body.write_text(BODY_TEMPLATE, encoding="utf-8")
    mm_template = data_dir / "mailmerge_template.txt"
    mm_template.write_text(f"TO: {{{{email}}}}\nSUBJECT: {SUBJECT}\nFROM: {SENDER}\n\n"
                           + BODY_TEMPLATE, encoding="utf-8")
    # Row 0 built exactly as the Python clients build theirs, for smtp-source -F:
    # the C client then sends messages of the same size.
    if str(CLIENTS) not in sys.path:
        sys.path.insert(0, str(CLIENTS))
    import common  # the clients' shared module

    row = next(common.iter_rows(csv_path))
    msg = common.build_message(row, common.compile_template(BODY_TEMPLATE),
                               common.compile_template(SUBJECT), SENDER)
    eml = data_dir / "message.eml"
    raw = msg.as_bytes()
    eml.write_bytes(raw)
    return DataSet(n=n, csv=csv_path, body=body, mm_template=mm_template, eml=eml,
                   eml_bytes=len(raw))


# ---------------------------------------------------------------- invoice data

INVOICE_SUBJECT = "Invoice {{number}} from Example Billing"
#: ~1.6 KB once rendered; plain {{name}} substitutions, as both mailmerge and mailconduit
#: read them (mailconduit without Jinja, mailmerge with it).
INVOICE_HTML = """\
<html>
<head><meta charset="utf-8"><title>Invoice {{number}}</title></head>
<body style="font-family: Arial, Helvetica, sans-serif; color: #222;">
<table width="100%" cellpadding="0" cellspacing="0" style="max-width: 640px;">
<tr><td style="padding: 16px 0; border-bottom: 2px solid #0a5;">
<b style="font-size: 18px;">Example Billing Services</b></td></tr>
<tr><td style="padding: 16px 0;">
<p>Dear {{name}},</p>
<p>Please find attached invoice <b>{{number}}</b> for the services of last month.
The amount of <b>{{amount}} EUR</b> is due on <b>{{due}}</b>.</p>
<table cellpadding="4" cellspacing="0" style="border: 1px solid #ccc;">
<tr><td>Invoice number</td><td>{{number}}</td></tr>
<tr><td>Account</td><td>{{email}}</td></tr>
<tr><td>Amount due</td><td>{{amount}} EUR</td></tr>
<tr><td>Due date</td><td>{{due}}</td></tr>
</table>
<p>Payment can be made by bank transfer to the account shown on the invoice. Please
quote the invoice number as the payment reference so that we can match the transfer
without delay. If you have already paid, please disregard this message; transfers can
take up to three business days to appear in our system.</p>
<p>Questions about this invoice? Reply to this message within fourteen days, or call us
on weekdays between 9:00 and 17:00 CET.</p>
<p>Kind regards,<br>The Example Billing Team</p>
</td></tr>
<tr><td style="padding: 8px 0; border-top: 1px solid #ccc; font-size: 11px; color: #777;">
Example Billing Services, 1 Example Street, 10115 Berlin. VAT ID DE000000000.</td></tr>
</table>
</body>
</html>
"""
#: Bytes of pixel data in each invoice's embedded image (compressed, it stays about as
#: large): with the page and the font, a PDF of ~100 KB.
_PDF_IMAGE_SIDE = 180


def invoice_pdf(number: str, name: str, amount: str, due: str, seed: int) -> bytes:
    """A valid one-page PDF invoice of ~100 KB: a text content stream and a Flate-compressed
    image (noise, as a scanned signature or a photo is, so it does not shrink)."""
    import zlib

    rng = random.Random(seed)
    image = zlib.compress(rng.randbytes(_PDF_IMAGE_SIDE * _PDF_IMAGE_SIDE * 3), 1)
    text = (f"BT /F1 20 Tf 72 770 Td (Invoice {number}) Tj ET\n"
            f"BT /F1 12 Tf 72 740 Td (Bill to: {name}) Tj ET\n"
            f"BT /F1 12 Tf 72 722 Td (Amount due: {amount} EUR) Tj ET\n"
            f"BT /F1 12 Tf 72 704 Td (Due date: {due}) Tj ET\n"
            "q 180 0 0 180 72 480 cm /Im1 Do Q\n").encode("ascii")
    objects = [
        b"<< /Type /Catalog /Pages 2 0 R >>",
        b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
        b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 595 842] /Contents 5 0 R "
        b"/Resources << /Font << /F1 4 0 R >> /XObject << /Im1 6 0 R >> >> >>",
        b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>",
        b"<< /Length %d >>\nstream\n%s\nendstream" % (len(text), text),
        b"<< /Type /XObject /Subtype /Image /Width %d /Height %d /ColorSpace /DeviceRGB "
        b"/BitsPerComponent 8 /Filter /FlateDecode /Length %d >>\nstream\n%s\nendstream"
        % (_PDF_IMAGE_SIDE, _PDF_IMAGE_SIDE, len(image), image),
    ]
    out = bytearray(b"%PDF-1.4\n%\xe2\xe3\xcf\xd3\n")
    offsets = []
    for number_, body in enumerate(objects, 1):
        offsets.append(len(out))
        out += b"%d 0 obj\n%s\nendobj\n" % (number_, body)
    xref = len(out)
    out += b"xref\n0 %d\n0000000000 65535 f \n" % (len(objects) + 1)
    out += b"".join(b"%010d 00000 n \n" % offset for offset in offsets)
    out += b"trailer\n<< /Size %d /Root 1 0 R >>\nstartxref\n%d\n%%%%EOF\n" % (
        len(objects) + 1, xref)
    return bytes(out)


def write_invoice_data(data_dir: Path, n: int, seed: int = 20241101) -> DataSet:
    """Rows (email,name,amount,number,due,pdf), one PDF per row, the HTML body template,
    mailmerge's template with the same body and attachment; cached by N."""
    folder = data_dir / f"invoices_{n}"
    pdf_dir = folder / "pdf"
    csv_path = folder / "invoices.csv"
    if not csv_path.exists():
        pdf_dir.mkdir(parents=True, exist_ok=True)
        rng = random.Random(seed)
        tmp = csv_path.with_suffix(".tmp")
        with open(tmp, "w", newline="", encoding="utf-8") as fh:
            writer = csv.writer(fh)
            writer.writerow(["email", "name", "amount", "number", "due", "pdf"])
            for i in range(n):
                row = [f"customer{i:06d}@example.com", f"{rng.choice(FIRST)} {rng.choice(LAST)}",
                       f"{rng.randint(1000, 999_999) / 100:.2f}", f"INV-2024-{i:06d}",
                       f"2024-12-{1 + i % 28:02d}", f"invoice-{i:06d}.pdf"]
                (pdf_dir / row[5]).write_bytes(invoice_pdf(row[3], row[1], row[2], row[4],
                                                           seed + i))
                writer.writerow(row)
        tmp.rename(csv_path)
    body = folder / "invoice.html"
    body.write_text(INVOICE_HTML, encoding="utf-8")
    # mailmerge: Jinja2 over the same rows; ATTACHMENT paths are relative to the template.
    mm_template = folder / "mailmerge_invoice.txt"
    mm_template.write_text(
        f"TO: {{{{email}}}}\nSUBJECT: {INVOICE_SUBJECT}\nFROM: {SENDER}\n"
        "ATTACHMENT: pdf/{{pdf}}\nContent-Type: text/html\n\n" + INVOICE_HTML,
        encoding="utf-8")
    # Row 0 as a mail client would build it (HTML body, PDF attached), for its size.
    from email.message import EmailMessage

    with open(csv_path, newline="", encoding="utf-8") as fh:
        row = next(csv.DictReader(fh))
    msg = EmailMessage()
    msg["From"] = SENDER
    msg["To"] = row["email"]
    msg["Subject"] = INVOICE_SUBJECT.replace("{{number}}", row["number"])
    html = INVOICE_HTML
    for column, value in row.items():
        html = html.replace("{{" + column + "}}", value)
    msg.set_content(html, subtype="html")
    msg.add_attachment((pdf_dir / row["pdf"]).read_bytes(), maintype="application",
                       subtype="pdf", filename=row["pdf"])
    raw = msg.as_bytes()
    eml = folder / "message.eml"
    eml.write_bytes(raw)
    return DataSet(n=n, csv=csv_path, body=body, mm_template=mm_template, eml=eml,
                   eml_bytes=len(raw), attach_dir=pdf_dir,
                   payload_bytes=len(raw) - raw.index(b"\n\n") - 2)


# ---------------------------------------------------------------- CPU placement

_libc = ctypes.CDLL("libc.so.6", use_errno=True)
_PR_SET_PDEATHSIG = 1

#: "split": sink on CPU 0, client (and its children) on CPU 1, like a sink on another
#: host; "same": both on CPU 0; "none": the scheduler decides. On this 2-vCPU guest a
#: lock-step exchange across vCPUs is ~10x slower than on one, so unpinned runs are
#: bimodal (see README).
PLACEMENT = {"mode": "split"}


def _cpus_for(role: str) -> set[int] | None:
    mode = PLACEMENT["mode"]
    if mode == "none" or (os.cpu_count() or 1) < 2:
        return None
    if mode == "same":
        return {0}
    return {0} if role == "sink" else {1}


def preexec_for(role: str) -> Callable[[], None]:
    """Child set-up: die with the driver, then move to the role's CPU."""
    cpus = _cpus_for(role)

    def setup() -> None:
        _libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)
        if cpus is not None:
            os.sched_setaffinity(0, cpus)

    return setup


# ---------------------------------------------------------------- sinks


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((HOST, 0))
        return int(s.getsockname()[1])


def is_listening(port: int) -> bool:
    """True if 127.0.0.1:port is in LISTEN state, read from /proc (no probe connection)."""
    want = f"0100007F:{port:04X}"
    with contextlib.suppress(OSError), open("/proc/net/tcp") as fh:
        for line in fh:
            cols = line.split()
            if len(cols) > 3 and cols[1] == want and cols[3] == "0A":
                return True
    return False


def proc_read_bytes(pid: int) -> int | None:
    """Bytes ``pid`` has read so far (all read and recv calls: for a sink, what it received)."""
    try:
        for line in Path(f"/proc/{pid}/io").read_text().splitlines():
            if line.startswith("rchar:"):
                return int(line.split()[1])
    except (OSError, ValueError):
        pass
    return None


def proc_cpu_seconds(pid: int) -> float | None:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(stat[11]) + int(stat[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, IndexError, ValueError):
        return None


class Sink:
    """One fresh sink per client run: smtp-sink, the aiosmtpd checker, or the latency sink."""

    def __init__(self, kind: str, run_dir: Path, *, verify_csv: Path | None, max_s: float,
                 latency_ms: float | None = None) -> None:
        self.kind = kind
        self.port = free_port()
        self.out = run_dir / "sink.out"
        self.summary = run_dir / "sink_summary.json"
        if kind == "smtp-sink":
            # -c: running counters on stdout; backlog 1000; -u is needed as root
            argv = [SMTP_SINK, "-c", "-u", "nobody", f"{HOST}:{self.port}", "1000"]
        else:
            script = "latency_sink.py" if kind == "latency" else "aiosmtpd_sink.py"
            argv = [str(BENCH_PY), str(SINKS / script), "--port", str(self.port),
                    "--summary", str(self.summary), "--max-seconds", str(int(max_s))]
            if kind == "latency":
                argv += ["--latency-ms", f"{latency_ms or 0:g}"]
            if verify_csv is not None:
                argv += ["--csv", str(verify_csv)]
        self._fh = open(self.out, "wb")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(argv, stdout=self._fh, stderr=subprocess.STDOUT,
                                     stdin=subprocess.DEVNULL, preexec_fn=preexec_for("sink"))
        deadline = time.monotonic() + 10
        while not is_listening(self.port):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"{kind} did not start: {self.out.read_text()[-500:]}")
            time.sleep(0.02)
        self.cpu_start = proc_cpu_seconds(self.proc.pid) or 0.0
        self.read_start = proc_read_bytes(self.proc.pid) or 0
        self.cpus = sorted(os.sched_getaffinity(self.proc.pid))

    def cpu_used(self) -> float | None:
        used = proc_cpu_seconds(self.proc.pid)
        return None if used is None else used - self.cpu_start

    def bytes_received(self) -> int | None:
        """Bytes the sink read since it started listening: messages and SMTP commands."""
        read = proc_read_bytes(self.proc.pid)
        return None if read is None else read - self.read_start

    def stop(self) -> dict[str, Any]:
        """Stop the sink; its counts (and, for the Python sinks, the verification)."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=5)
        self._fh.close()
        if self.kind == "smtp-sink":
            text = self.out.read_bytes().decode("ascii", "replace")
            mesg = re.findall(r"mesg=(\d+)", text)
            sess = re.findall(r"sess=(\d+)", text)
            return {"messages": int(mesg[-1]) if mesg else 0,
                    "sessions": int(sess[-1]) if sess else 0,
                    "counted": bool(mesg)}
        try:
            got: dict[str, Any] = json.loads(self.summary.read_text())
        except (OSError, ValueError):
            return {"messages": 0, "sessions": 0, "error": "no summary", "counted": False}
        got["counted"] = True
        return got


# ---------------------------------------------------------------- measuring a client


def parse_gnu_time(path: Path) -> dict[str, float]:
    out: dict[str, float] = {}
    try:
        text = path.read_text()
    except OSError:
        return out
    for key, pattern in (("rss_kb", r"Maximum resident set size \(kbytes\): (\d+)"),
                         ("user_s", r"User time \(seconds\): ([\d.]+)"),
                         ("sys_s", r"System time \(seconds\): ([\d.]+)"),
                         ("vol_cs", r"Voluntary context switches: (\d+)"),
                         ("invol_cs", r"Involuntary context switches: (\d+)")):
        match = re.search(pattern, text)
        if match:
            out[key] = float(match.group(1))
    return out


def _children(pid: int) -> list[int]:
    try:
        return [int(x) for x in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except (OSError, ValueError):
        return []


def wait_exactly(proc: subprocess.Popen[bytes], timeout: float) -> int:
    """``proc.wait(timeout)`` that returns the moment the child exits.

    ``Popen.wait`` with a timeout polls, sleeping up to 50 ms between looks, so a 0.5 s run
    could be measured up to 10 % long. Here a helper thread waits without a timeout (a
    blocking waitpid) and the caller waits on an Event, which wakes at once.
    """
    exited = threading.Event()

    def reap() -> None:
        with contextlib.suppress(Exception):
            proc.wait()
        exited.set()

    threading.Thread(target=reap, name=f"reap-{proc.pid}", daemon=True).start()
    if not exited.wait(timeout):
        raise subprocess.TimeoutExpired(proc.args, timeout)
    return int(proc.returncode if proc.returncode is not None else proc.wait())


def stop_at_cap(proc: subprocess.Popen[bytes], grace: float = 5.0) -> int:
    """Time cap reached: SIGTERM the client under GNU time (so time still writes its
    report, and a tool that stops gracefully can), then SIGKILL our child's group."""
    kids = _children(proc.pid)
    for kid in kids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(kid, signal.SIGTERM)
    if not kids:
        os.killpg(proc.pid, signal.SIGTERM)
    try:
        return proc.wait(timeout=grace)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        return proc.wait(timeout=10)


@dataclass
class Invocation:
    """What to execute for one run: argv, extra environment, and an untimed set-up step."""

    argv: list[str]
    env: dict[str, str] = field(default_factory=dict)
    prepare: list[str] | None = None  # run once, untimed, with the same env (e.g. a home)
    stdout_to_file: bool = True

    def shell(self) -> str:
        """The command as one could paste it into a shell (environment first)."""
        env = " ".join(f"{k}={shlex.quote(v)}" for k, v in self.env.items())
        return (env + " " if env else "") + shlex.join(self.argv)


@dataclass(frozen=True)
class RunSpec:
    """One timed client run: which contender, how many rows, against which sink."""

    key: str
    label: str
    kind: str  # "c", "py", "mailmerge", "mailconduit"
    n: int
    sink: str
    run_dir: Path
    timeout_s: float
    verify_csv: Path | None = None
    cap_s: float | None = None
    latency_ms: float | None = None


def run_one(spec: RunSpec, build: Callable[[dict[str, Any]], Invocation],
            data: DataSet) -> dict[str, Any]:
    """One client run against a fresh sink; the result record (see README, Method).

    With a time cap, Python clients get it as their own --max-seconds and stop
    themselves; anything still running at the cap (+10 s for Python clients) is
    stopped by the harness. A capped run is "partial (time cap)": valid if the sink
    counted what it received (and, when verifying, all of it was right); its rate is
    messages received / wall.
    """
    spec.run_dir.mkdir(parents=True, exist_ok=True)
    if spec.cap_s is not None:
        client_limit = spec.cap_s
        wait_s = spec.cap_s + 10 if spec.kind == "py" else spec.cap_s
    else:
        client_limit = wait_s = spec.timeout_s
    sink = Sink(spec.sink, spec.run_dir, verify_csv=spec.verify_csv, max_s=wait_s + 120,
                latency_ms=spec.latency_ms)
    ctx = {"data": data, "n": spec.n, "port": sink.port, "run_dir": spec.run_dir,
           "timeout": client_limit}
    inv = build(ctx)
    # Nothing of the caller's own mailconduit set-up (home, store, key) leaks in.
    env = {k: v for k, v in os.environ.items() if not k.startswith("MAILCONDUIT_")}
    env.update(inv.env)
    res: dict[str, Any] = {
        "key": spec.key, "label": spec.label, "kind": spec.kind, "n": spec.n,
        "sink": spec.sink, "pin": PLACEMENT["mode"], "latency_ms": spec.latency_ms,
        "cap_s": spec.cap_s, "cmd": inv.shell(), "sink_cpus": sink.cpus,
    }
    if inv.prepare:
        subprocess.run(inv.prepare, env=env, cwd=spec.run_dir, check=False, timeout=120,
                       stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                       stderr=subprocess.DEVNULL)
    tfile = spec.run_dir / "time.txt"
    cmd = [GNU_TIME, "-v", "-o", str(tfile), *inv.argv]
    timed_out = stopped = False
    with open(spec.run_dir / "client.err", "wb") as err_fh, \
            open(spec.run_dir / "client.out", "wb") as out_fh:
        t0 = time.perf_counter()
        proc = subprocess.Popen(cmd, stdout=out_fh if inv.stdout_to_file else subprocess.DEVNULL,
                                stderr=err_fh, stdin=subprocess.DEVNULL, cwd=spec.run_dir,
                                env=env, start_new_session=True,
                                preexec_fn=preexec_for("client"))
        with contextlib.suppress(OSError):
            res["client_cpus"] = sorted(os.sched_getaffinity(proc.pid))
        try:
            rc = wait_exactly(proc, wait_s)
        except subprocess.TimeoutExpired:
            if spec.cap_s is not None:
                stopped = True
                rc = stop_at_cap(proc)
            else:
                timed_out = True
                os.killpg(proc.pid, signal.SIGKILL)  # our own child's process group
                rc = proc.wait(timeout=10)
        wall = time.perf_counter() - t0
    time.sleep(0.05)  # let the sink finish the last QUIT/close bookkeeping
    sink_cpu = sink.cpu_used()
    sink_bytes = sink.bytes_received()
    got = sink.stop()
    res.update(parse_gnu_time(tfile))
    res.update(rc=rc, timed_out=timed_out, stopped_at_cap=stopped, wall_s=wall,
               sink_messages=got.get("messages", 0), sink_sessions=got.get("sessions", 0),
               sink_cpu_s=sink_cpu, sink_bytes=sink_bytes, sink_detail=got)
    res.update(_client_report(spec.kind, spec.run_dir / "client.out"))
    home = spec.run_dir / "home"
    if home.is_dir():
        res["home_bytes"] = sum(p.stat().st_size for p in home.rglob("*") if p.is_file())
        if spec.n > 20_000:  # a million-row journal is not worth keeping
            shutil.rmtree(home, ignore_errors=True)
    _judge(res, spec, got, stopped=stopped, timed_out=timed_out, rc=rc)
    return res


def _client_report(kind: str, out: Path) -> dict[str, Any]:
    """The client's own count: the reference clients' JSON line, mailconduit's --json."""
    try:
        text = out.read_text(errors="replace").strip()
    except OSError:
        return {}
    if kind == "py" and text:
        try:
            rep = json.loads(text.splitlines()[-1])
            return {"client_sent": rep["sent"], "loop_rate": rep["loop_rate"],
                    "setup_s": rep["setup_s"]}
        except (ValueError, KeyError, TypeError):
            return {}
    if kind == "mailconduit" and text.startswith("{"):
        try:
            rep = json.loads(text)
        except ValueError:
            return {}
        counts = rep.get("counts", rep)
        sent = counts.get("sent") if isinstance(counts, dict) else None
        return {"client_sent": sent} if isinstance(sent, int) else {}
    return {}


def _judge(res: dict[str, Any], spec: RunSpec, got: dict[str, Any], *, stopped: bool,
           timed_out: bool, rc: int) -> None:
    n = spec.n
    problems = []
    # capped: stopped by the harness at the cap, or a client that stopped itself at its
    # --max-seconds (exit 0, fewer than N sent)
    capped = spec.cap_s is not None and (
        stopped or (rc == 0 and res.get("client_sent", n) < n))
    want = n
    if capped:
        if not got.get("counted"):
            problems.append("time cap hit and the sink count is unknown")
        elif res["sink_messages"] == 0:
            problems.append("time cap hit and the sink received nothing")
        else:
            want = res["sink_messages"]
    if timed_out:
        problems.append("timeout")
    if rc != 0 and not stopped:
        problems.append(f"exit {rc}")
    if res["sink_messages"] != want:
        problems.append(f"sink got {res['sink_messages']}/{n}")
    if "client_sent" in res and res["client_sent"] != want and not (
            capped and spec.kind == "mailconduit"):
        problems.append(f"client sent {res['client_sent']}, sink got {res['sink_messages']}")
    if spec.verify_csv is not None or spec.sink == "aiosmtpd":
        if got.get("distinct_rcpts") != want:
            problems.append(f"distinct rcpts {got.get('distinct_rcpts')}")
        if got.get("duplicate_rcpts"):
            problems.append(f"duplicate_rcpts={got['duplicate_rcpts']}")
        if spec.kind != "c":  # smtp-source sends one synthetic message, not rows
            for key in ("missing_rcpts", "unexpected_rcpts", "content_mismatch"):
                if key == "missing_rcpts" and capped:
                    continue  # rows after the cap were never sent
                if got.get(key):
                    problems.append(f"{key}={got[key]}")
    if problems:
        res["err_tail"] = (spec.run_dir / "client.err").read_text(errors="replace")[-400:]
    res["problems"] = problems
    res["valid"] = not problems
    res["partial"] = capped and not problems
    res["msgs"] = want
    res["rate"] = want / res["wall_s"] if res["wall_s"] > 0 else 0.0
