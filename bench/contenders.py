"""The contenders: what each one runs, keyed by the names ``--only`` takes.

Every contender reads the same CSV and template and sends one message per row to the
sink at ``127.0.0.1:{port}``, without TLS or AUTH.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from harness import (
    BENCH_PY,
    BENCH_VENV,
    CLIENTS,
    HOST,
    INVOICE_SUBJECT,
    REPO,
    SENDER,
    SMTP_SOURCE,
    SUBJECT,
)
from harness import Invocation as Inv

Builder = Callable[[dict[str, Any]], Inv]

#: The mailconduit the harness runs: the project's own venv, found from the repo root.
MAILCONDUIT_BIN = REPO / ".venv" / "bin" / "mailconduit"


@dataclass(frozen=True)
class Contender:
    """One way of sending the rows; ``sessions`` and ``per_message`` say how it talks SMTP."""

    key: str
    label: str
    kind: str  # "c", "py", "mailmerge", "mailconduit"
    build: Builder
    sessions: int
    per_message: bool = False  # a new connection for every message


def _python_client(script: str, *extra: str) -> Builder:
    def build(ctx: dict[str, Any]) -> Inv:
        data = ctx["data"]
        return Inv([str(BENCH_PY), str(CLIENTS / script), "--host", HOST,
                    "--port", str(ctx["port"]), "--csv", str(data.csv),
                    "--template", str(data.body), "--subject", SUBJECT, "--sender", SENDER,
                    "--max-seconds", str(int(ctx["timeout"])), *extra])
    return build


def smtp_source(sessions: int, *, reuse: bool) -> Builder:
    def build(ctx: dict[str, Any]) -> Inv:
        argv = [SMTP_SOURCE, "-s", str(sessions), "-m", str(ctx["n"]),
                "-F", str(ctx["data"].eml), "-f", SENDER, "-t", "user@example.com",
                "-N", "-M", "localhost"]
        if reuse:
            argv.append("-d")
        return Inv([*argv, f"{HOST}:{ctx['port']}"])
    return build


def _mailmerge(ctx: dict[str, Any]) -> Inv:
    conf: Path = ctx["run_dir"] / "mailmerge_server.conf"
    conf.write_text(f"[smtp_server]\nhost = {HOST}\nport = {ctx['port']}\nratelimit = 0\n")
    data = ctx["data"]
    # mailmerge prints every message it sends: its stdout goes to /dev/null
    return Inv([str(BENCH_VENV / "bin" / "mailmerge"), "--no-dry-run", "--no-limit",
                "--template", str(data.mm_template), "--database", str(data.csv),
                "--config", str(conf), "--output-format", "text"], stdout_to_file=False)


def _mailconduit(extra: tuple[str, ...], *, binary: Path, cmd_template: str | None) -> Builder:
    def build(ctx: dict[str, Any]) -> Inv:
        data = ctx["data"]
        run_dir: Path = ctx["run_dir"]
        env = {"MAILCONDUIT_HOME": str(run_dir / "home"),
               "MAILCONDUIT_CONN_BENCH": f"smtp://{HOST}:{ctx['port']}"}
        if cmd_template:
            cmd = cmd_template.format(
                host=HOST, port=ctx["port"], csv=data.csv, template=data.body,
                mm_template=data.mm_template, subject=SUBJECT, sender=SENDER, n=ctx["n"],
                workdir=run_dir, extra=" ".join(extra), mailconduit=binary)
            return Inv(["sh", "-c", cmd], env=env)
        argv = [str(binary), "export", str(data.csv), "--connection", "bench",
                "--to", "{{email}}", "--from", SENDER, "--subject", SUBJECT,
                "--body-file", str(data.body), "--quiet", *extra]
        # An existing home, as a user has: the store is created before the clock starts.
        return Inv(argv, env=env, prepare=[str(binary), "connections", "list"])
    return build


# ---------------------------------------------------------------- the invoice scenario
# HTML body + one ~100 KB PDF per row (harness.write_invoice_data); keys start "inv_".


def _source_same_size(sessions: int) -> Builder:
    """smtp-source sending a generated payload as large as row 0's invoice message."""
    def build(ctx: dict[str, Any]) -> Inv:
        argv = [SMTP_SOURCE, "-s", str(sessions), "-m", str(ctx["n"]),
                "-l", str(ctx["data"].payload_bytes), "-f", SENDER, "-t", "user@example.com",
                "-N", "-M", "localhost", "-d", f"{HOST}:{ctx['port']}"]
        return Inv(argv)
    return build


def _mailconduit_invoice(binary: Path) -> Builder:
    def build(ctx: dict[str, Any]) -> Inv:
        data = ctx["data"]
        run_dir: Path = ctx["run_dir"]
        # HTML bodies through the connection's own setting, as a user would store it
        env = {"MAILCONDUIT_HOME": str(run_dir / "home"),
               "MAILCONDUIT_CONN_BENCH": f"smtp://{HOST}:{ctx['port']}?use_html_body=true"}
        argv = [str(binary), "export", str(data.csv), "--connection", "bench",
                "--to", "{{email}}", "--from", SENDER, "--subject", INVOICE_SUBJECT,
                "--body-file", str(data.body), "--attach", "{{pdf}}",
                "--attach-dir", str(data.attach_dir), "--quiet"]
        return Inv(argv, env=env, prepare=[str(binary), "connections", "list"])
    return build


def invoice_contenders(*, binary: Path = MAILCONDUIT_BIN) -> list[Contender]:
    """The invoice scenario's contenders: the same rows, body and PDFs for the Python two."""
    return [
        Contender("inv_src_s4", "smtp-source -s4 -d, same size (C)", "c",
                  _source_same_size(4), 4),
        Contender("inv_src_s16", "smtp-source -s16 -d, same size (C)", "c",
                  _source_same_size(16), 16),
        # its template is HTML with an ATTACHMENT header naming the row's PDF
        Contender("inv_mailmerge", "mailmerge 2.3.0 CLI, HTML + PDF", "mailmerge",
                  _mailmerge, 1, per_message=True),
        Contender("inv_mailconduit", "mailconduit export, HTML + PDF", "mailconduit",
                  _mailconduit_invoice(binary), 0),
    ]


def registry(*, sessions: list[int], binary: Path = MAILCONDUIT_BIN,
             cmd_template: str | None = None) -> dict[str, Contender]:
    """Every contender known to this run, in table order."""
    entries: list[Contender] = [
        Contender("src_s1_conn", "smtp-source -s1, new conn/msg (C)",
                  "c", smtp_source(1, reuse=False), 1, per_message=True),
    ]
    for k in sorted({1, 4, 16, *sessions}):
        entries.append(Contender(f"src_s{k}", f"smtp-source -s{k} -d (C)", "c",
                                 smtp_source(k, reuse=True), k))
    entries += [
        Contender("smtplib_naive", "smtplib, new conn/msg", "py",
                  _python_client("smtplib_naive.py"), 1, per_message=True),
        Contender("smtplib_reuse", "smtplib, 1 reused conn", "py",
                  _python_client("smtplib_reuse.py"), 1),
    ]
    for k in sorted({4, 16, *sessions}):
        entries.append(Contender(f"aiosmtplib_k{k}", f"aiosmtplib, K={k} conns", "py",
                                 _python_client("aiosmtplib_pool.py", "-k", str(k)), k))
    entries += [
        Contender("mailmerge", "mailmerge 2.3.0 CLI", "mailmerge", _mailmerge, 1,
                  per_message=True),
        # extras: the same transports fed one precompiled string template instead of
        # email.message: how much of the Python cost is building messages
        Contender("smtplib_reuse_raw", "extra: smtplib, 1 conn, raw template", "py",
                  _python_client("smtplib_reuse.py", "--raw"), 1),
        Contender("aiosmtplib_k4_raw", "extra: aiosmtplib K=4, raw template", "py",
                  _python_client("aiosmtplib_pool.py", "-k", "4", "--raw"), 4),
    ]

    def mc(key: str, label: str, extra: tuple[str, ...], k: int) -> Contender:
        return Contender(key, label, "mailconduit",
                         _mailconduit(extra, binary=binary, cmd_template=cmd_template), k)

    entries += [
        mc("mailconduit", "mailconduit export", (), 0),
        mc("mailconduit_nojournal", "mailconduit export --no-journal", ("--no-journal",), 0),
    ]
    for k in sorted({16, 64, *sessions}):
        entries.append(mc(f"mailconduit_c{k}", f"mailconduit export --concurrency {k}",
                          ("--concurrency", str(k)), k))
        entries.append(mc(f"mailconduit_nojournal_c{k}",
                          f"mailconduit export --no-journal --concurrency {k}",
                          ("--no-journal", "--concurrency", str(k)), k))
    entries += invoice_contenders(binary=binary)
    return {c.key: c for c in entries}


def profiled(contender: Contender) -> Contender:
    """The same mailconduit contender, run under cProfile (output: profile.pstats)."""
    def build(ctx: dict[str, Any]) -> Inv:
        inv = contender.build(ctx)
        python = Path(inv.argv[0]).parent / "python"
        inv.argv = [str(python), "-m", "cProfile", "-o", str(ctx["run_dir"] / "profile.pstats"),
                    *inv.argv]
        return inv
    return Contender(contender.key, contender.label + " (cProfile)", contender.kind, build,
                     contender.sessions)


def same_sessions_source(contender: Contender) -> str | None:
    """The smtp-source run with the same sessions and connection pattern, for ratios."""
    if contender.kind == "c":
        return contender.key
    if contender.per_message:
        return "src_s1_conn"
    if contender.sessions <= 0:
        return None
    return f"src_s{contender.sessions}"

