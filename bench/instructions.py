#!/usr/bin/env python3
"""CPU instructions per message of ``mailconduit export``: a noise-free A/B of the send path.

Wall-clock runs of a ~0.7 s export move by +-40 % on a busy 2-CPU guest; the number of
instructions the client executes does not. This runs the loopback scenario's ``mailconduit``
contender (the message, options and environment of bench/contenders.py: journal on, its
default concurrency, a fresh home prepared by ``connections list``) against a fresh
Postfix smtp-sink on 127.0.0.1, under

    valgrind --tool=callgrind --callgrind-out-file=... --trace-children=no

at two sizes, and reports the total instructions (Ir) of each run and the marginal Ir per
message, (Ir(large) - Ir(small)) / (large - small), which removes the start-up. Every
source tree given is run with the same interpreter and PYTHONPATH=<tree>/src (checked:
``mailconduit`` is imported from there); its ``src`` is byte-compiled first, so no run
pays for compiling. PYTHONHASHSEED is fixed. Only the client is counted, never the sink.

    .venv/bin/python bench/instructions.py                           # this tree, 300 and 1300 rows
    .venv/bin/python bench/instructions.py /work/wt/base . -r 2      # A/B, 2 repetitions each
    .venv/bin/python bench/instructions.py . --mailmerge             # + mailmerge (30 and 130 rows)
    .venv/bin/python bench/instructions.py . --sizes 300,1300 --json out.json

Under callgrind the client runs ~30-50x slower: a 1,300-row run takes ~15 s, an A/B of two
trees with -r 2 and --mailmerge ~3 minutes. Valgrind, Postfix's smtp-sink and mailmerge (from
bench/.venv or the project's .venv) must be installed. Repetitions agree within ~0.3 % (the
journal's thread and the event loop make the counts not quite exact).
Results (one folder per run: callgrind.out, valgrind.log, the client's output, the sink's
counters) go to bench/results/instructions-<timestamp>/ unless ``--out`` says otherwise.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import contenders as cs
import harness as hs

VALGRIND = "valgrind"
DEFAULT_PYTHON = hs.REPO / ".venv" / "bin" / "python"


@dataclass(frozen=True)
class Count:
    """One run under callgrind: who, which tree, how many rows, and its instructions."""

    contender: str
    tree: str
    commit: str
    rep: int
    n: int
    ir: int
    sink_messages: int
    seconds: float


@dataclass(frozen=True)
class Client:
    """What runs under valgrind: an interpreter, a console script, and the source tree."""

    key: str  # "mailconduit" or "mailmerge"
    python: Path
    script: Path
    tree: Path | None  # PYTHONPATH=<tree>/src; None for mailmerge


def _git(tree: Path, *args: str) -> str:
    out = subprocess.run(["git", "-C", str(tree), *args], capture_output=True, text=True,
                         timeout=30, check=False)
    return out.stdout.strip() or "?"


def tree_label(tree: Path | None) -> tuple[str, str]:
    """(label, short commit) of a source tree; the commit notes uncommitted src changes."""
    if tree is None:
        return "-", "-"
    commit = _git(tree, "rev-parse", "--short", "HEAD")
    if _git(tree, "status", "--porcelain", "--", "src") not in ("", "?"):
        commit += "+dirty"
    return str(tree), commit


def client_env(client: Client, run_dir: Path, port: int, inv_env: dict[str, str]) -> dict[str, str]:
    """The harness's environment (no MAILCONDUIT_* of the caller) plus the tree and a fixed hash seed."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith("MAILCONDUIT_") and k != "PYTHONPATH"}
    env.update(inv_env)
    env["PYTHONHASHSEED"] = "0"
    if client.tree is not None:
        env["PYTHONPATH"] = str(client.tree / "src")
    return env


def check_tree(client: Client) -> None:
    """Byte-compile the tree's src and make sure the interpreter imports mailconduit from it."""
    assert client.tree is not None
    src = client.tree / "src"
    subprocess.run([str(client.python), "-m", "compileall", "-q", str(src)], check=True,
                   timeout=600)
    env = client_env(client, Path("."), 0, {})
    got = subprocess.run([str(client.python), "-c", "import mailconduit; print(mailconduit.__file__)"],
                         env=env, capture_output=True, text=True, timeout=60, check=True)
    where = Path(got.stdout.strip()).resolve()
    if not where.is_relative_to(src.resolve()):
        sys.exit(f"{client.python} imports mailconduit from {where}, not from {src}")


def build_invocation(client: Client, ctx: dict[str, Any]) -> hs.Invocation:
    """The bench contender's own command line, with the console script run by ``client.python``."""
    if client.key == "mailconduit":
        reg = cs.registry(sessions=[], binary=client.script)
        inv = reg["mailconduit"].build(ctx)
    else:
        inv = cs.registry(sessions=[])["mailmerge"].build(ctx)
        inv.argv[0] = str(client.script)
    inv.argv = [str(client.python), *inv.argv]
    if inv.prepare:
        inv.prepare = [str(client.python), *inv.prepare]
    return inv


def read_total(path: Path) -> int:
    """The total Ir of a callgrind output file (its ``totals:`` or ``summary:`` line)."""
    text = path.read_text(errors="replace")
    match = re.search(r"^(?:totals|summary):\s+(\d+)", text, re.MULTILINE)
    if not match:
        raise RuntimeError(f"no totals in {path}")
    return int(match.group(1))


def run_once(client: Client, n: int, rep: int, data: hs.DataSet, run_dir: Path,
             timeout_s: float) -> Count:
    """One client run under callgrind against a fresh smtp-sink; raises unless it sent all n."""
    if run_dir.exists():
        shutil.rmtree(run_dir)
    run_dir.mkdir(parents=True)
    sink = hs.Sink("smtp-sink", run_dir, verify_csv=None, max_s=timeout_s + 60)
    try:
        ctx = {"data": data, "n": n, "port": sink.port, "run_dir": run_dir, "timeout": timeout_s}
        inv = build_invocation(client, ctx)
        env = client_env(client, run_dir, sink.port, inv.env)
        if inv.prepare:
            subprocess.run(inv.prepare, env=env, cwd=run_dir, check=True, timeout=120,
                           stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL)
        out_file = run_dir / "callgrind.out"
        argv = [VALGRIND, "--tool=callgrind", f"--callgrind-out-file={out_file}",
                "--trace-children=no", f"--log-file={run_dir / 'valgrind.log'}", *inv.argv]
        (run_dir / "command.txt").write_text(
            hs.Invocation(argv, env={k: v for k, v in env.items()
                                     if k.startswith(("MAILCONDUIT_", "PYTHON"))}).shell() + "\n")
        t0 = time.perf_counter()
        with open(run_dir / "client.out", "wb") as out_fh, \
                open(run_dir / "client.err", "wb") as err_fh:
            proc = subprocess.run(argv, env=env, cwd=run_dir, stdin=subprocess.DEVNULL,
                                  stdout=out_fh if inv.stdout_to_file else subprocess.DEVNULL,
                                  stderr=err_fh, timeout=timeout_s, check=False,
                                  preexec_fn=hs.preexec_for("client"))
        seconds = time.perf_counter() - t0
        time.sleep(0.05)  # the sink's last counters
    finally:
        got = sink.stop()
    label, commit = tree_label(client.tree)
    if proc.returncode != 0 or got.get("messages") != n:
        err = (run_dir / "client.err").read_text(errors="replace")[-400:]
        raise RuntimeError(f"{client.key} n={n} in {run_dir}: exit {proc.returncode}, "
                           f"sink counted {got.get('messages')}: {err}")
    return Count(contender=client.key, tree=label, commit=commit, rep=rep, n=n,
                 ir=read_total(out_file), sink_messages=int(got["messages"]), seconds=seconds)


def marginal(small: Count, large: Count) -> float:
    """Instructions per message once start-up is taken out."""
    return (large.ir - small.ir) / (large.n - small.n)


def table(counts: list[Count]) -> list[str]:
    """One markdown row per (contender, tree, repetition): both totals and the marginal Ir."""
    lines = ["| contender | tree | commit | rep | Ir(small) | Ir(large) | marginal Ir/msg "
             "| start-up Ir |",
             "|---|---|---|---|---|---|---|---|"]
    for (who, tree, rep), runs in _groups(counts).items():
        small, large = runs[0], runs[-1]
        per_msg = marginal(small, large) if large.n > small.n else float("nan")
        start = small.ir - per_msg * small.n
        lines.append(f"| {who} | {tree} | {small.commit} | {rep} | {small.ir:,} (n={small.n}) "
                     f"| {large.ir:,} (n={large.n}) | {per_msg:,.0f} | {start:,.0f} |")
    return lines


def summary(counts: list[Count]) -> list[str]:
    """Per contender and tree: the mean marginal Ir/msg, its spread over repetitions, the change
    against the first tree ((mailmerge) how many times mailconduit's it is), the mean start-up."""
    per: dict[tuple[str, str], list[float]] = {}
    starts: dict[tuple[str, str], list[float]] = {}
    commits: dict[tuple[str, str], str] = {}
    for (who, tree, _rep), runs in _groups(counts).items():
        if runs[-1].n > runs[0].n:
            per_msg = marginal(runs[0], runs[-1])
            per.setdefault((who, tree), []).append(per_msg)
            starts.setdefault((who, tree), []).append(runs[0].ir - per_msg * runs[0].n)
            commits[(who, tree)] = runs[0].commit
    means = {key: sum(v) / len(v) for key, v in per.items()}
    base = next((m for (who, _), m in means.items() if who == "mailconduit"), None)
    last = next((m for (who, _), m in reversed(means.items()) if who == "mailconduit"), None)
    lines = ["| contender | tree | commit | marginal Ir/msg (mean) | spread | vs first tree "
             "| start-up Ir (mean) |",
             "|---|---|---|---|---|---|---|"]
    for (who, tree), mean in means.items():
        values = per[(who, tree)]
        spread = (max(values) - min(values)) / mean
        if who == "mailconduit" and base:
            versus = f"{100 * (mean / base - 1):+.2f} %"
        elif last:
            versus = f"{mean / last:.2f}x the last mailconduit tree"
        else:
            versus = "-"
        lines.append(f"| {who} | {tree} | {commits[(who, tree)]} | {mean:,.0f} "
                     f"| {100 * spread:.2f} % | {versus} "
                     f"| {sum(starts[(who, tree)]) / len(values):,.0f} |")
    return lines


def _groups(counts: list[Count]) -> dict[tuple[str, str, int], list[Count]]:
    """The runs of each (contender, tree, repetition), smallest first."""
    groups: dict[tuple[str, str, int], list[Count]] = {}
    for c in counts:
        groups.setdefault((c.contender, c.tree, c.rep), []).append(c)
    for runs in groups.values():
        runs.sort(key=lambda c: c.n)
    return groups


def sizes(text: str) -> tuple[int, int]:
    small, large = (int(x) for x in text.split(","))
    if not 0 < small < large:
        raise argparse.ArgumentTypeError("two sizes, small,large")
    return small, large


def find_mailmerge() -> Path | None:
    for candidate in (hs.BENCH_VENV / "bin" / "mailmerge", hs.REPO / ".venv" / "bin" / "mailmerge"):
        if candidate.exists():
            return candidate
    return None


def interpreter_of(script: Path) -> Path:
    """The interpreter on a console script's #! line."""
    first = script.read_text().splitlines()[0]
    if not first.startswith("#!"):
        sys.exit(f"{script}: no #! line")
    return Path(first[2:].strip().split()[0])


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("trees", nargs="*", type=Path, default=[hs.REPO],
                    help="source trees to measure (each run with PYTHONPATH=<tree>/src); "
                         "default: this one")
    ap.add_argument("--sizes", type=sizes, default=(300, 1300), help="rows, small,large")
    ap.add_argument("-r", "--repeat", type=int, default=1, help="repetitions per tree")
    ap.add_argument("--python", type=Path, default=DEFAULT_PYTHON,
                    help="the interpreter for every tree (default: this repo's .venv)")
    ap.add_argument("--mailmerge", action="store_true",
                    help="also count the mailmerge contender (once per repetition)")
    ap.add_argument("--mailmerge-sizes", type=sizes, default=(30, 130))
    ap.add_argument("--timeout", type=float, default=900, help="seconds per run")
    ap.add_argument("--out", type=Path, default=None, help="results folder")
    ap.add_argument("--json", type=Path, default=None, help="also write every count here")
    return ap.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if shutil.which(VALGRIND) is None or not Path(hs.SMTP_SINK).exists():
        sys.exit("needs valgrind and Postfix's smtp-sink (`make system-deps`)")
    hs.PLACEMENT["mode"] = "none"  # instruction counts do not depend on CPU placement
    out = args.out or hs.HERE / "results" / time.strftime("instructions-%Y%m%d-%H%M%S")
    out.mkdir(parents=True, exist_ok=True)
    script = args.python.parent / "mailconduit"
    clients = [Client("mailconduit", args.python, script, tree.resolve()) for tree in args.trees]
    for client in clients:
        check_tree(client)
    plan: list[tuple[Client, tuple[int, int]]] = [(c, args.sizes) for c in clients]
    if args.mailmerge:
        mm = find_mailmerge()
        if mm is None:
            sys.exit("mailmerge not found (bench/.venv or .venv)")
        plan.append((Client("mailmerge", interpreter_of(mm), mm, None), args.mailmerge_sizes))
    counts: list[Count] = []
    for rep in range(1, args.repeat + 1):
        for index, (client, pair) in enumerate(plan):  # interleaved: A, B, A, B
            for n in pair:
                data = hs.write_data(out / "data", n)
                run_dir = out / f"{index}_{client.key}" / f"rep{rep}_n{n}"
                count = run_once(client, n, rep, data, run_dir, args.timeout)
                counts.append(count)
                print(f"# {client.key} {count.tree} ({count.commit}) rep {rep} n={n}: "
                      f"Ir {count.ir:,} in {count.seconds:.0f} s", flush=True)
    lines = [*table(counts), "", *summary(counts)]
    print("\n".join(lines))
    (out / "instructions.md").write_text("\n".join(lines) + "\n")
    rows = [asdict(c) for c in counts]
    (out / "instructions.json").write_text(json.dumps(rows, indent=1) + "\n")
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1) + "\n")
    print(f"# results in {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
