#!/usr/bin/env python3
"""Side-by-side SMTP sending benchmark: mailconduit against its peers (issue 4, §5).

    make bench                                  # loopback: N=5000, 3 interleaved runs + verify
    make bench BENCH_ARGS=--quick               # ~1 minute smoke check (N=1000, 1 run)
    make bench BENCH_ARGS="--scenario latency"  # every reply 20 ms late, 16/64 sessions
    make bench BENCH_ARGS="--scenario rss"      # peak RSS of mailconduit at 10k vs 1M rows
    make bench BENCH_ARGS="--scenario journal"  # the journal's cost: with vs --no-journal
    make bench BENCH_ARGS="--scenario invoice"  # HTML body + 100 KB PDF per row, N=2000
    make bench BENCH_ARGS="--scenario all"      # the five above, one report

The first run creates bench/.venv with the pinned peers (requirements.txt); Postfix's
smtp-sink/smtp-source and GNU time come from `make system-deps`. Results (report.md,
results.json and one folder per run) go to bench/results/<timestamp>/. See README.md.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import pstats
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import contenders as cs
import harness as hs
import report as rp

SCENARIOS = ("loopback", "latency", "rss", "journal", "invoice", "probe", "profile")
DEFAULT_BUDGET_S = {"loopback": 900, "latency": 1500, "rss": 2400, "journal": 600,
                    "invoice": 900, "probe": 600, "profile": 300}


# ---------------------------------------------------------------- set-up


def ensure_bench_venv() -> None:
    """bench/.venv with the pinned peers; reinstalled when requirements.txt changes."""
    req = hs.HERE / "requirements.txt"
    digest = hashlib.sha256(req.read_bytes()).hexdigest()
    stamp = hs.BENCH_VENV / ".requirements.sha256"
    if stamp.is_file() and stamp.read_text().strip() == digest and hs.BENCH_PY.exists():
        return
    print(f"# setting up {hs.BENCH_VENV} (pinned peers from {req.name})", flush=True)
    if not hs.BENCH_PY.exists():
        subprocess.run([sys.executable, "-m", "venv", str(hs.BENCH_VENV)], check=True,
                       timeout=300)
    subprocess.run([str(hs.BENCH_PY), "-m", "pip", "install", "-q", "-r", str(req)],
                   check=True, timeout=600)
    stamp.write_text(digest + "\n")


def check_tools() -> None:
    missing = [p for p in (hs.SMTP_SINK, hs.SMTP_SOURCE, hs.GNU_TIME) if not Path(p).exists()]
    if missing:
        sys.exit(f"missing: {', '.join(missing)} -- run `make system-deps` first")


def mailconduit_ready(binary: Path, cmd_template: str | None) -> str | None:
    """None when the mailconduit contender can run, else why not."""
    if cmd_template:
        return None
    if not binary.exists():
        return f"{binary} not found (run `make venv`)"
    probe = subprocess.run([str(binary), "export", "--help"], capture_output=True, text=True,
                           timeout=60, check=False)
    if probe.returncode != 0:
        return f"`mailconduit export --help` failed: {probe.stderr.strip()[-200:]}"
    return None


def _read(path: str) -> str:
    try:
        return Path(path).read_text()
    except OSError:
        return ""


def _output(argv: list[str]) -> str:
    try:
        return subprocess.run(argv, capture_output=True, text=True, timeout=30,
                              check=False).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "?"


def machine_facts() -> dict[str, Any]:
    cpu = next((line.split(":", 1)[1].strip() for line in _read("/proc/cpuinfo").splitlines()
                if line.startswith("model name")), "?")
    mem_kb = next((int(line.split()[1]) for line in _read("/proc/meminfo").splitlines()
                   if line.startswith("MemTotal:")), 0)
    freeze = _output([str(hs.BENCH_PY), "-m", "pip", "freeze"]).splitlines()
    wanted = ("aiosmtplib==", "aiosmtpd==", "mailmerge==", "jinja2==")
    commit = _output(["git", "-C", str(hs.REPO), "rev-parse", "--short", "HEAD"])
    dirty = _output(["git", "-C", str(hs.REPO), "status", "--porcelain", "--", "src"])
    return {
        "nproc": os.cpu_count(), "cpu": cpu, "mem": f"{mem_kb // 1024} MiB",
        "kernel": platform.release(),
        "python": _output([str(hs.BENCH_PY), "-c", "import sys; print(sys.version.split()[0])"]),
        "postfix": _output(["dpkg-query", "-W", "-f=${Version}", "postfix"]),
        "packages": " ".join(p for p in freeze if p.lower().startswith(wanted)),
        "mailconduit": commit + (" (src modified)" if dirty else ""),
        "loadavg": _read("/proc/loadavg").split()[:3],
    }


# ---------------------------------------------------------------- the driver


@dataclass
class Section:
    """What one scenario contributes to the report."""

    title: str
    lines: list[str]
    targets: list[str] = field(default_factory=list)
    runs: list[dict[str, Any]] = field(default_factory=list)


class Driver:
    """Runs contenders with a global deadline and records every run."""

    def __init__(self, args: argparse.Namespace, out: Path,
                 registry: dict[str, cs.Contender]) -> None:
        self.args = args
        self.out = out
        self.registry = registry
        self.deadline = time.monotonic() + args.max_seconds
        self.all_runs: list[dict[str, Any]] = []

    def remaining(self) -> float:
        return self.deadline - time.monotonic()

    def timeout_for(self, n: int) -> float:
        return max(5.0, min(30 + n / 20, self.remaining() - 20))

    def run(self, key: str, n: int, data: hs.DataSet, *, sink: str, run_dir: Path,
            verify: bool = False, cap_s: float | None = None,
            contender: cs.Contender | None = None) -> dict[str, Any] | None:
        if self.remaining() < 30:
            print(f"# deadline reached, skipping {run_dir.name}", flush=True)
            return None
        c = contender or self.registry[key]
        if cap_s is not None:
            cap_s = max(5.0, min(cap_s, self.remaining() - 20))
        spec = hs.RunSpec(key=c.key, label=c.label, kind=c.kind, n=n, sink=sink,
                          run_dir=run_dir, timeout_s=self.timeout_for(n),
                          verify_csv=data.csv if verify else None, cap_s=cap_s,
                          latency_ms=self.args.latency_ms if sink == "latency" else None)
        result = hs.run_one(spec, c.build, data)
        self.all_runs.append(result)
        return result

    def interleaved(self, keys: list[str], n: int, reps: int, data: hs.DataSet, *,
                    sink: str, folder: str, verify: bool = False,
                    cap_s: float | None = None) -> list[dict[str, Any]]:
        """Run 1 of every contender, then run 2, ...: drifting load hits all alike."""
        results = []
        for rep in range(1, reps + 1):
            for key in keys:
                r = self.run(key, n, data, sink=sink, verify=verify, cap_s=cap_s,
                             run_dir=self.out / folder / f"rep{rep}_{key}")
                if r is None:
                    continue
                r["rep"] = rep
                results.append(r)
                _print_run(r, n)
        return results

    def verify_pass(self, keys: list[str], n: int, data: hs.DataSet,
                    folder: str) -> list[dict[str, Any]]:
        """One untimed run each against the aiosmtpd sink, which checks every message."""
        print("# correctness pass against the aiosmtpd sink (not timed for the table)",
              flush=True)
        runs = []
        for key in keys:
            r = self.run(key, n, data, sink="aiosmtpd", verify=True,
                         run_dir=self.out / folder / f"verify_{key}")
            if r is None:
                continue
            runs.append(r)
            d = r["sink_detail"]
            print(f"  verify {key:24s} msgs {d.get('messages')}/{n} distinct "
                  f"{d.get('distinct_rcpts')} {'OK' if r['valid'] else r['problems']}",
                  flush=True)
        return runs


def _print_run(r: dict[str, Any], n: int) -> None:
    verdict = (("OK, partial (time cap)" if r["partial"] else "OK") if r["valid"]
               else r["problems"])
    sink_pct = (100 * r["sink_cpu_s"] / r["wall_s"]) if r["sink_cpu_s"] is not None else 0
    print(f"  rep {r.get('rep', 1)} {r['key']:24s} {r['rate']:9.1f} msg/s  wall "
          f"{r['wall_s']:7.2f}s  rss {r.get('rss_kb', 0) / 1024:6.1f} MiB  sink "
          f"{r['sink_messages']}/{n} sess {r['sink_sessions']}  sink CPU {sink_pct:3.0f}%  "
          f"{verdict}", flush=True)


def _available(keys: list[str], drv: Driver) -> list[str]:
    if drv.args.only:
        keys = drv.args.only
    return [k for k in keys if k in drv.registry]


def _commands(runs: list[dict[str, Any]]) -> list[str]:
    seen: dict[str, str] = {}
    for r in runs:
        seen.setdefault(r["key"], r["cmd"])
    return [f"- `{k}`: `{cmd}`" for k, cmd in seen.items()]


def _checked_and_run(verified: list[dict[str, Any]], results: list[dict[str, Any]],
                     how: str) -> list[str]:
    """The correctness pass's table (when there was one) and the commands that ran."""
    lines = [f"Correctness pass ({how}):", "", rp.verify_table(verified), ""] if verified else []
    return [*lines, "Commands (ports and paths of the last run):", "", *_commands(results), ""]


# ---------------------------------------------------------------- scenarios


def scenario_loopback(drv: Driver) -> Section:
    a = drv.args
    n, reps = (1000, 1) if a.quick else (a.n or 5000, a.reps or 3)
    keys = ["src_s1_conn", "src_s1", "src_s4", "src_s16", "smtplib_naive", "smtplib_reuse",
            "aiosmtplib_k4", "aiosmtplib_k16", "mailmerge", "smtplib_reuse_raw",
            "aiosmtplib_k4_raw", "mailconduit", "mailconduit_nojournal", "mailconduit_c16"]
    if a.quick:
        keys = [k for k in keys if k not in ("aiosmtplib_k4", "smtplib_reuse_raw",
                                             "aiosmtplib_k4_raw", "src_s4")]
    keys = _available(keys, drv)
    data = hs.write_data(hs.HERE / "data", n)
    print(f"## loopback: N={n}, {reps} run(s), smtp-sink; message {data.eml_bytes} bytes",
          flush=True)
    results = drv.interleaved(keys, n, reps, data, sink="smtp-sink", folder="loopback")
    verified = [] if a.no_verify else drv.verify_pass(keys, n, data, "loopback")
    summary = rp.summarize(results)
    lines = [f"N = {n} messages per run, {reps} interleaved run(s) per contender, sink = "
             f"smtp-sink on 127.0.0.1, CPU placement = {hs.PLACEMENT['mode']}; rate = N / "
             "wall time of the client process (start-up included).", "",
             rp.loopback_table(summary, keys), ""]
    lines += _checked_and_run(verified, results, "one run each against the aiosmtpd sink, which "
                              "records every RCPT and checks the row's name and amount in the "
                              "message")
    return Section("Loopback (target a, d)", lines, rp.loopback_targets(summary, keys),
                   results + verified)


def scenario_latency(drv: Driver) -> Section:
    a = drv.args
    sessions = a.sessions_list
    n, reps = (300, 1) if a.quick else (a.n or 2000, a.reps or 2)
    cap = a.run_max_seconds or (10.0 if a.quick else 60.0)
    keys = (["src_s1_conn", "src_s1"] + [f"src_s{k}" for k in sessions]
            + ["smtplib_naive", "smtplib_reuse"] + [f"aiosmtplib_k{k}" for k in sessions]
            + ["mailmerge"] + [f"mailconduit_c{k}" for k in sessions])
    keys = _available(list(dict.fromkeys(keys)), drv)
    data = hs.write_data(hs.HERE / "data", n)
    print(f"## latency: every reply {a.latency_ms:g} ms late, N={n}, {reps} run(s), "
          f"cap {cap:g} s per run, sessions {sessions}", flush=True)
    results = drv.interleaved(keys, n, reps, data, sink="latency", folder="latency",
                              verify=True, cap_s=cap)
    summary = rp.summarize(results)
    lines = [f"N = {n} rows per run, {reps} run(s) per contender, sink = "
             f"sinks/latency_sink.py answering every reply (or batch of pipelined replies) "
             f"{a.latency_ms:g} ms late, time cap {cap:g} s per run, CPU placement = "
             f"{hs.PLACEMENT['mode']}; rate = messages the sink received / wall time of the "
             "client process. Every run is verified by the sink.", "",
             rp.latency_table(summary, keys, drv.registry), "",
             "Correctness, every timed run (smtp-source sends one synthetic message, so only "
             "its recipient count is checked):", "", rp.verify_table(results), "",
             "Commands (ports and paths of the last run):", "", *_commands(results), ""]
    return Section(f"WAN-like latency, {a.latency_ms:g} ms per reply (target b)", lines,
                   rp.latency_targets(summary, keys, drv.registry), results)


def scenario_rss(drv: Driver) -> Section:
    a = drv.args
    ns = [1000, 20_000] if a.quick else a.rss_ns
    keys = _available(a.rss_contenders, drv)
    print(f"## rss: {keys} at N={ns}", flush=True)
    runs = []
    for key in keys:
        for n in ns:
            data = hs.write_data(hs.HERE / "data", n)
            # a run that cannot finish in the time left stops gracefully at the cap
            r = drv.run(key, n, data, sink="smtp-sink", run_dir=drv.out / "rss" / f"{key}_{n}",
                        cap_s=drv.remaining() - 30)
            if r is not None:
                runs.append(r)
                _print_run(r, n)
    lines = ["Peak RSS (GNU time) of one run per N against smtp-sink, CPU placement = "
             f"{hs.PLACEMENT['mode']}.", "", rp.rss_table(runs), "",
             "Commands:", "", *_commands(runs), ""]
    return Section("Memory: peak RSS by number of rows (target c)", lines,
                   rp.rss_targets(runs), runs)


def scenario_journal(drv: Driver) -> Section:
    a = drv.args
    n, reps = (1000, 2) if a.quick else (a.n or 5000, a.reps or 5)
    keys = _available(["mailconduit", "mailconduit_nojournal", "mailconduit_c16",
                       "mailconduit_nojournal_c16"], drv)
    data = hs.write_data(hs.HERE / "data", n)
    print(f"## journal: N={n}, {reps} interleaved run(s)", flush=True)
    results = drv.interleaved(keys, n, reps, data, sink="smtp-sink", folder="journal")
    summary = rp.summarize(results)
    lines = [f"N = {n} messages per run, {reps} interleaved run(s) per variant, smtp-sink, "
             f"CPU placement = {hs.PLACEMENT['mode']}.", "",
             rp.loopback_table(summary, keys), "",
             "Commands:", "", *_commands(results), ""]
    return Section("Journal on vs off (target d)", lines,
                   rp.journal_targets(summary, keys), results)


def scenario_invoice(drv: Driver) -> Section:
    """Issue 9 §6: an HTML body and a ~100 KB PDF per row, against mailmerge sending the
    same, and smtp-source sending messages of the same size; then a correctness pass."""
    a = drv.args
    n, reps = (200, 1) if a.quick else (a.n or 2000, a.reps or 1)
    keys = _available(["inv_src_s4", "inv_src_s16", "inv_mailmerge", "inv_mailconduit"], drv)
    data = hs.write_invoice_data(hs.HERE / "data", n)
    print(f"## invoice: N={n}, {reps} run(s), smtp-sink; HTML body + one PDF of ~100 KB per "
          f"row; a mail client's message for row 0 is {data.eml_bytes:,} bytes", flush=True)
    results = drv.interleaved(keys, n, reps, data, sink="smtp-sink", folder="invoice")
    verified = [] if a.no_verify else drv.verify_pass(keys, n, data, "invoice")
    summary = rp.summarize(results)
    lines = [f"N = {n} invoices per run, {reps} run(s) per contender, sink = smtp-sink on "
             f"127.0.0.1, CPU placement = {hs.PLACEMENT['mode']}. Each row: an HTML body "
             "(~1.6 KB) and its own PDF (~98 KB, base64 in the message). smtp-source sends "
             f"a generated payload of {data.payload_bytes:,} bytes (`-l`), as large as a mail "
             "client's message for row 0. Sink MB/s = bytes the sink read (its /proc/PID/io "
             "rchar: messages and commands) / wall time of the client process.", "",
             rp.invoice_table(summary, keys), ""]
    lines += _checked_and_run(verified, results, "aiosmtpd sink: every RCPT, each row's name "
                              "and amount in its message; avg msg bytes shows the PDF went along")
    return Section("Invoices: HTML body + 100 KB PDF per row (issue 9, §6)", lines,
                   rp.invoice_targets(summary, keys), results + verified)


def scenario_probe(drv: Driver) -> Section:
    """smtp-source -d at growing session counts: the sink's own ceiling."""
    a = drv.args
    n = 5000 if a.quick else 20_000
    sink = "latency" if a.scenario_given_latency else "smtp-sink"
    data = hs.write_data(hs.HERE / "data", n)
    runs = []
    for rep in range(1, (1 if a.quick else (a.reps or 3)) + 1):
        for k in a.probe_sessions:
            c = cs.Contender(f"src_s{k}", f"smtp-source -s{k} -d (C)", "c",
                             cs.smtp_source(k, reuse=True), k)
            r = drv.run(c.key, n, data, sink=sink, contender=c,
                        run_dir=drv.out / "probe" / f"rep{rep}_{c.key}")
            if r is not None:
                r["rep"] = rep
                runs.append(r)
                _print_run(r, n)
    summary = rp.summarize(runs)
    keys = [f"src_s{k}" for k in a.probe_sessions]
    lines = [f"smtp-source -d against {sink}, N={n}, message {data.eml_bytes} bytes.", "",
             rp.loopback_table(summary, keys), ""]
    return Section(f"Sink ceiling ({sink})", lines, [], runs)


def scenario_profile(drv: Driver) -> Section:
    """mailconduit under cProfile against smtp-sink: where its time goes."""
    a = drv.args
    n = a.n or 5000
    key = (a.only or ["mailconduit"])[0]
    if key not in drv.registry or drv.registry[key].kind != "mailconduit":
        return Section("Profile", [f"no mailconduit contender {key!r} to profile", ""])
    if a.mailconduit_cmd:
        return Section("Profile", ["only the built-in mailconduit command is profiled", ""])
    c = cs.profiled(drv.registry[key])
    if key.startswith("inv_"):
        n = a.n or 2000
        data = hs.write_invoice_data(hs.HERE / "data", n)
    else:
        data = hs.write_data(hs.HERE / "data", n)
    run_dir = drv.out / "profile" / key
    r = drv.run(key, n, data, sink="smtp-sink", run_dir=run_dir, contender=c)
    if r is None:
        return Section("Profile", ["deadline reached before profiling", ""])
    _print_run(r, n)
    lines = [f"`{r['cmd']}`", "", f"N={n}, {r['rate']:.0f} msg/s under cProfile "
             f"(profiling slows Python code down, so the shares matter, not the rate).", ""]
    prof = run_dir / "profile.pstats"
    if prof.exists():
        for order in ("tottime", "cumulative"):
            text = run_dir / f"profile_{order}.txt"
            with open(text, "w") as fh:
                pstats.Stats(str(prof), stream=fh).sort_stats(order).print_stats(40)
            lines += [f"Top 40 by {order} (full list: {text.relative_to(drv.out)}):", "",
                      "```", *_stats_body(text.read_text()), "```", ""]
    return Section(f"Profile of {c.label}", lines, [], [r])


def _stats_body(text: str) -> list[str]:
    lines = text.splitlines()
    start = next((i for i, line in enumerate(lines) if "ncalls" in line), 0)
    return [line[:160] for line in lines[start:] if line.strip()]


# ---------------------------------------------------------------- main


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--scenario", default=None,
                    help="comma-separated: " + ", ".join(SCENARIOS) + ", or all "
                    "(= loopback,latency,rss,journal,invoice); default loopback")
    ap.add_argument("--quick", action="store_true",
                    help="smoke check: small N, one run (loopback alone takes ~1 minute)")
    ap.add_argument("-n", type=int, default=None,
                    help="rows per run (default 5000; 2000 for latency and invoice)")
    ap.add_argument("-r", "--reps", type=int, default=None,
                    help="interleaved runs per contender (default 3; latency 2, journal 5, "
                    "invoice 1)")
    ap.add_argument("--only", default=None, help="comma-separated contender keys "
                    "(see README; e.g. mailconduit,mailmerge,src_s16)")
    ap.add_argument("--pin", choices=["split", "same", "none"], default="split",
                    help="CPU placement: split = sink on CPU 0, client on CPU 1 (default)")
    ap.add_argument("--no-verify", action="store_true",
                    help="skip the loopback correctness pass against the aiosmtpd sink")
    ap.add_argument("--latency-ms", type=float, default=None, metavar="L",
                    help="reply delay of the latency sink (default 20); implies "
                    "--scenario latency when no scenario is given")
    ap.add_argument("--sessions-list", default="16,64", metavar="K,K",
                    help="latency scenario: sessions for smtp-source, aiosmtplib and "
                    "mailconduit --concurrency (default 16,64)")
    ap.add_argument("--run-max-seconds", type=float, default=None, metavar="S",
                    help="latency scenario: time cap per run (default 60; 10 with --quick)")
    ap.add_argument("--rss-ns", default="10000,1000000",
                    help="rss scenario: row counts (default 10000,1000000)")
    ap.add_argument("--rss-contenders", default="mailconduit",
                    help="rss scenario: contender keys (default mailconduit)")
    ap.add_argument("--probe-sessions", default="1,2,4,8,16,32,64",
                    help="probe scenario: smtp-source session counts")
    ap.add_argument("--mailconduit", type=Path, default=cs.MAILCONDUIT_BIN,
                    help="the mailconduit executable (default: the repo's .venv)")
    ap.add_argument("--mailconduit-cmd", default=None, metavar="TEMPLATE",
                    help="replace the built-in mailconduit command line by this shell "
                    "template; placeholders {host} {port} {csv} {template} {subject} "
                    "{sender} {n} {workdir} {extra} {mailconduit}")
    ap.add_argument("--max-seconds", type=float, default=None,
                    help="hard cap for the whole invocation (default: per scenario)")
    ap.add_argument("--out", type=Path, default=None,
                    help="results folder (default bench/results/<timestamp>)")
    ap.add_argument("--self-test", action="store_true",
                    help="check the harness itself (latency sink, a tiny run) and exit")
    a = ap.parse_args(argv)
    if a.scenario is None:
        a.scenario = "latency" if a.latency_ms is not None else "loopback"
    names = a.scenario.split(",")
    if names == ["all"]:
        names = ["loopback", "latency", "rss", "journal", "invoice"]
    bad = [s for s in names if s not in SCENARIOS]
    if bad:
        ap.error(f"unknown scenario(s) {bad}; choose from {', '.join(SCENARIOS)} or all")
    a.scenarios = names
    a.scenario_given_latency = a.latency_ms is not None
    if a.latency_ms is None:
        a.latency_ms = 20.0
    if not 0 <= a.latency_ms <= 10_000:
        ap.error("--latency-ms must be 0..10000")
    try:
        a.sessions_list = [int(x) for x in a.sessions_list.split(",") if x.strip()]
        a.rss_ns = [int(x) for x in a.rss_ns.split(",") if x.strip()]
        a.probe_sessions = [int(x) for x in a.probe_sessions.split(",") if x.strip()]
    except ValueError as exc:
        ap.error(f"not a list of integers: {exc}")
    if not all(1 <= k <= 1000 for k in a.sessions_list + a.probe_sessions):
        ap.error("session counts must be 1..1000")
    if not all(1 <= n <= 5_000_000 for n in a.rss_ns) or (a.n is not None
                                                          and not 1 <= a.n <= 5_000_000):
        ap.error("row counts must be 1..5000000")
    if a.reps is not None and not 1 <= a.reps <= 20:
        ap.error("--reps must be 1..20")
    a.rss_contenders = a.rss_contenders.split(",")
    a.only = a.only.split(",") if a.only else None
    if a.max_seconds is None:
        a.max_seconds = sum(DEFAULT_BUDGET_S[s] for s in names)
    return a


def self_test() -> int:
    """The latency sink's own test, then a 60-row run of two contenders, verified."""
    print("# latency sink self-test", flush=True)
    rc = subprocess.run([str(hs.BENCH_PY), str(hs.SINKS / "selftest_latency_sink.py")],
                        timeout=120, check=False).returncode
    out = hs.HERE / "results" / ("selftest-" + time.strftime("%Y%m%d-%H%M%S"))
    args = parse_args(["--quick", "--out", str(out), "--max-seconds", "120"])
    registry = cs.registry(sessions=[])
    drv = Driver(args, out, registry)
    data = hs.write_data(hs.HERE / "data", 60)
    ok = rc == 0
    for key in ("src_s1", "smtplib_reuse", "aiosmtplib_k4"):
        for sink in ("smtp-sink", "aiosmtpd", "latency"):
            r = drv.run(key, 60, data, sink=sink, verify=sink != "smtp-sink",
                        run_dir=out / f"{sink}_{key}", cap_s=30 if sink == "latency" else None)
            if r is None:
                return 1
            _print_run(r, 60)
            ok = ok and r["valid"] and r["sink_messages"] == 60
    print("self-test " + ("passed" if ok else "FAILED"), flush=True)
    return 0 if ok else 1


def main(argv: list[str] | None = None) -> int:
    a = parse_args(argv)
    check_tools()
    ensure_bench_venv()
    hs.PLACEMENT["mode"] = a.pin
    if a.self_test:
        return self_test()
    registry = cs.registry(sessions=a.sessions_list, binary=a.mailconduit,
                           cmd_template=a.mailconduit_cmd)
    why_not = mailconduit_ready(a.mailconduit, a.mailconduit_cmd)
    if why_not:
        print(f"# mailconduit contenders skipped: {why_not}", flush=True)
        registry = {k: c for k, c in registry.items() if c.kind != "mailconduit"}
    if a.only:
        unknown = [k for k in a.only if k not in registry]
        if unknown:
            sys.exit(f"unknown or unavailable contender(s): {unknown}; known: "
                     + ", ".join(registry))
    stamp = time.strftime("%Y%m%d-%H%M%S")
    out = (a.out or hs.HERE / "results" / stamp).resolve()
    out.mkdir(parents=True, exist_ok=True)
    facts = machine_facts()
    print(f"# machine: nproc={facts['nproc']} cpu={facts['cpu']} mem={facts['mem']} "
          f"python={facts['python']} postfix={facts['postfix']} load={facts['loadavg']} "
          f"pin={a.pin} mailconduit={facts['mailconduit']}", flush=True)
    print(f"# results -> {out}", flush=True)
    t_start = time.monotonic()
    drv = Driver(a, out, registry)
    runners: dict[str, Callable[[Driver], Section]] = {
        "loopback": scenario_loopback, "latency": scenario_latency, "rss": scenario_rss,
        "journal": scenario_journal, "invoice": scenario_invoice, "probe": scenario_probe,
        "profile": scenario_profile,
    }
    sections = [runners[name](drv) for name in a.scenarios]
    facts["loadavg_end"] = _read("/proc/loadavg").split()[:3]
    command = "bench/run.py " + " ".join(argv if argv is not None else sys.argv[1:])
    md = [f"# mailconduit benchmark, {stamp}", "",
          f"Command: `{command.strip()}` ({time.monotonic() - t_start:.0f} s).", "",
          f"Machine: nproc={facts['nproc']}, {facts['cpu']}, {facts['mem']}, kernel "
          f"{facts['kernel']}, Python {facts['python']}, postfix {facts['postfix']}, "
          f"{facts['packages']}; mailconduit {facts['mailconduit']}; load average at start "
          f"{' '.join(facts['loadavg'])}, at end {' '.join(facts['loadavg_end'])}.", ""]
    targets = [t for s in sections for t in s.targets]
    if targets:
        md += ["## Targets (issue 4, §5; issue 9, §6)", "", *rp.TARGETS_HEADER, *targets, ""]
    for s in sections:
        md += [f"## {s.title}", "", *s.lines]
    text = "\n".join(md)
    (out / "report.md").write_text(text)
    (out / "results.json").write_text(json.dumps(
        {"facts": facts, "args": {k: str(v) for k, v in vars(a).items()},
         "sections": [{"title": s.title, "targets": s.targets, "runs": s.runs}
                      for s in sections]}, indent=1, default=str))
    print("\n" + text)
    print(f"# report: {out / 'report.md'}", flush=True)
    return 0 if all(r["valid"] for r in drv.all_runs) else 1


if __name__ == "__main__":
    sys.exit(main())
