"""Medians, ratios and the Markdown tables of a benchmark run, plus issue 4's targets."""

from __future__ import annotations

import statistics
from collections.abc import Callable
from typing import Any

from contenders import Contender, same_sessions_source

ANCHOR_C = "src_s16"
ANCHOR_PY = "mailmerge"


def fmt(x: float | None, nd: int = 0) -> str:
    return "–" if x is None else f"{x:,.{nd}f}"


def fmt_rate(x: float | None) -> str:
    """msg/s: one decimal below 100 (latency-bound runs do 7-12 msg/s)."""
    return fmt(x, 1 if x is not None and x < 100 else 0)


def summarize(results: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Per contender: valid runs, median/min/max rate, wall, RSS, CPU, sink share."""
    by_key: dict[str, list[dict[str, Any]]] = {}
    for r in results:
        by_key.setdefault(r["key"], []).append(r)
    summary: dict[str, dict[str, Any]] = {}
    for key, runs in by_key.items():
        ok = [r for r in runs if r["valid"]]
        s: dict[str, Any] = {
            "label": runs[0]["label"], "runs": len(runs), "valid": len(ok),
            "partial": sum(1 for r in ok if r.get("partial")),
            "problems": sorted({p for r in runs for p in r["problems"]}),
        }
        if ok:
            rates = [r["rate"] for r in ok]
            sink_shares = [100 * r["sink_cpu_s"] / r["wall_s"] for r in ok
                           if r["sink_cpu_s"] is not None]
            byte_rates = [r["sink_bytes"] / r["wall_s"] for r in ok
                          if r.get("sink_bytes") is not None and r["wall_s"] > 0]
            s.update(
                median=statistics.median(rates), lo=min(rates), hi=max(rates),
                wall=statistics.median(r["wall_s"] for r in ok),
                msgs=statistics.median(r["msgs"] for r in ok),
                rss_mib=max(r.get("rss_kb", 0) for r in ok) / 1024,
                cpu_ms_per_k=statistics.median(
                    (r.get("user_s", 0) + r.get("sys_s", 0)) * 1e6 / r["msgs"] for r in ok),
                sink_pct=statistics.median(sink_shares) if sink_shares else None,
                sink_bps=statistics.median(byte_rates) if byte_rates else None,
                bytes_per_msg=(statistics.median(r["sink_bytes"] / r["msgs"] for r in ok)
                               if byte_rates else None),
                sessions=statistics.median(r["sink_sessions"] for r in ok),
                loop=(statistics.median(r["loop_rate"] for r in ok)
                      if all("loop_rate" in r for r in ok) else None),
            )
        summary[key] = s
    return summary


def runs_cell(s: dict[str, Any]) -> str:
    """'2/2', '2/2 partial (time cap)', '1/2 (problems...)'."""
    cell = f"{s['valid']}/{s['runs']}"
    if s["partial"]:
        cell += (" partial (time cap)" if s["partial"] == s["valid"]
                 else f" ({s['partial']} partial, time cap)")
    if s["valid"] != s["runs"]:
        cell += f" ({'; '.join(s['problems'])})"
    return cell


def _invalid_row(s: dict[str, Any], columns: int) -> str:
    return (f"| {s['label']} | 0/{s['runs']} INVALID: {'; '.join(s['problems'])} |"
            + " |" * (columns - 2))


def _ratio(x: float | None, y: float | None, nd: int) -> str:
    return fmt(x / y, nd) if x is not None and y else "–"


def loopback_table(summary: dict[str, dict[str, Any]], keys: list[str]) -> str:
    anchor_c = summary.get(ANCHOR_C, {}).get("median")
    anchor_py = summary.get(ANCHOR_PY, {}).get("median")
    header = ("| contender | valid runs | median msg/s | min–max msg/s | median wall s "
              "| in-loop msg/s | peak RSS MiB | client CPU ms / 1k msgs | sink CPU % "
              "| sink sessions | × smtp-source -s16 -d | × mailmerge |")

    def row(key: str, s: dict[str, Any]) -> str:
        med = s["median"]
        return (
            f"| {s['label']} | {runs_cell(s)} | {fmt(med)} | {fmt(s['lo'])}–{fmt(s['hi'])} | "
            f"{fmt(s['wall'], 2)} | {fmt(s['loop'])} | {fmt(s['rss_mib'], 1)} | "
            f"{fmt(s['cpu_ms_per_k'])} | {fmt(s['sink_pct'])} | {fmt(s['sessions'])} | "
            f"{_ratio(med, anchor_c, 3)} | {_ratio(med, anchor_py, 2)} |")

    return _table(header, "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
                  summary, keys, row)


def _table(header: str, align: str, summary: dict[str, dict[str, Any]], keys: list[str],
           row: Callable[[str, dict[str, Any]], str]) -> str:
    """A Markdown table with one row per contender of ``keys`` that ran; invalid ones say why."""
    lines = [header, align]
    for key in keys:
        s = summary.get(key)
        if s is not None:
            lines.append(row(key, s) if s["valid"] else _invalid_row(s, align.count("|") - 1))
    return "\n".join(lines)


def _src_short(key: str) -> str:
    if key == "src_s1_conn":
        return "-s1, new conn/msg"
    return "-s" + key.removeprefix("src_s") + " -d"


def latency_table(summary: dict[str, dict[str, Any]], keys: list[str],
                  contenders: dict[str, Contender]) -> str:
    anchor_py = summary.get(ANCHOR_PY, {}).get("median")
    header = ("| contender | valid runs | median msg/s | min–max msg/s | msgs received per run "
              "| median wall s | client CPU ms / 1k msgs | sink CPU % | sink sessions "
              "| smtp-source, same sessions | × that smtp-source | × mailmerge |")

    def row(key: str, s: dict[str, Any]) -> str:
        med = s["median"]
        src = same_sessions_source(contenders[key])
        src_rate = summary.get(src, {}).get("median") if src else None
        return (
            f"| {s['label']} | {runs_cell(s)} | {fmt_rate(med)} | "
            f"{fmt_rate(s['lo'])}–{fmt_rate(s['hi'])} | {fmt(s['msgs'])} | "
            f"{fmt(s['wall'], 1)} | {fmt(s['cpu_ms_per_k'])} | {fmt(s['sink_pct'])} | "
            f"{fmt(s['sessions'])} | {_src_short(src) if src else '–'} | "
            f"{_ratio(med, src_rate, 2)} | {_ratio(med, anchor_py, 2)} |")

    return _table(header, "|---|---|---:|---:|---:|---:|---:|---:|---:|---|---:|---:|",
                  summary, keys, row)


def verify_table(runs: list[dict[str, Any]]) -> str:
    lines = ["| contender | sink msgs / N | distinct rcpts | missing | dup | "
             "content mismatch | avg msg bytes | verdict |",
             "|---|---:|---:|---:|---:|---:|---:|---|"]
    for r in runs:
        d = r["sink_detail"]
        avg = d.get("bytes", 0) / d["messages"] if d.get("messages") else None
        synthetic = r["kind"] == "c"
        verdict = ("FAIL: " + "; ".join(r["problems"]) if not r["valid"]
                   else "OK, partial (time cap)" if r.get("partial") else "OK")
        lines.append(
            f"| {r['label']} | {d.get('messages')}/{r['n']} | {d.get('distinct_rcpts')} | "
            f"{'n/a' if synthetic else d.get('missing_rcpts')} | {d.get('duplicate_rcpts')} | "
            f"{'n/a' if synthetic else d.get('content_mismatch')} | {fmt(avg)} | {verdict} |")
    return "\n".join(lines)


def rss_table(runs: list[dict[str, Any]]) -> str:
    lines = ["| contender | N | peak RSS MiB | msg/s | wall s | sink msgs | journal on disk MiB "
             "| valid |",
             "|---|---:|---:|---:|---:|---:|---:|---|"]
    for r in runs:
        home = r.get("home_bytes")
        verdict = ("yes" + (", partial (time cap)" if r.get("partial") else "")
                   if r["valid"] else "NO: " + "; ".join(r["problems"]))
        lines.append(
            f"| {r['label']} | {r['n']:,} | {r.get('rss_kb', 0) / 1024:.1f} | "
            f"{fmt(r['rate']) if r['valid'] else '–'} | {r['wall_s']:.1f} | "
            f"{r['sink_messages']:,} | {fmt(home / 2**20, 1) if home else '–'} | {verdict} |")
    return "\n".join(lines)


INVOICE_ANCHOR_C = "inv_src_s16"
INVOICE_ANCHOR_PY = "inv_mailmerge"


def invoice_table(summary: dict[str, dict[str, Any]], keys: list[str]) -> str:
    """Messages and bytes per second at the sink, and the ratios of issue 9 §6."""
    anchor_py = summary.get(INVOICE_ANCHOR_PY, {}).get("median")
    anchor_bps = summary.get(INVOICE_ANCHOR_C, {}).get("sink_bps")
    header = ("| contender | valid runs | median msg/s | median wall s | sink MB/s | sink KB / msg "
              "| peak RSS MiB | client CPU ms / 1k msgs | sink CPU % | sink sessions | × mailmerge "
              "(msg/s) | × smtp-source -s16 (sink MB/s) |")

    def row(key: str, s: dict[str, Any]) -> str:
        bps, per_msg = s.get("sink_bps"), s.get("bytes_per_msg")
        return (
            f"| {s['label']} | {runs_cell(s)} | {fmt_rate(s['median'])} | {fmt(s['wall'], 2)} | "
            f"{fmt(bps / 1e6 if bps else None, 1)} | "
            f"{fmt(per_msg / 1e3 if per_msg else None, 1)} | {fmt(s['rss_mib'], 1)} | "
            f"{fmt(s['cpu_ms_per_k'])} | {fmt(s['sink_pct'])} | {fmt(s['sessions'])} | "
            f"{_ratio(s['median'], anchor_py, 2)} | {_ratio(bps, anchor_bps, 2)} |")

    return _table(header, "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
                  summary, keys, row)


# ---------------------------------------------------------------- targets (issue 4, §5)


def _median(summary: dict[str, dict[str, Any]], key: str) -> float | None:
    value = summary.get(key, {}).get("median")
    return float(value) if value is not None else None


def _verdict(ok: bool | None) -> str:
    return "–" if ok is None else ("met" if ok else "**missed**")


def _cpu(summary: dict[str, dict[str, Any]], key: str) -> float | None:
    value = summary.get(key, {}).get("cpu_ms_per_k")
    return float(value) if value else None


def loopback_targets(summary: dict[str, dict[str, Any]], keys: list[str]) -> list[str]:
    """(a) ≥ 10x mailmerge and ≥ 25 % of smtp-source -s16; (d) journal < 20 %.

    The verdict uses wall-clock rates, as the target says; the ratio of client CPU time
    per message is shown beside it because it moves much less when the machine is busy.
    """
    out = []
    mm, src = _median(summary, ANCHOR_PY), _median(summary, ANCHOR_C)
    for key in (k for k in keys if k.startswith("mailconduit") and "nojournal" not in k):
        rate = _median(summary, key)
        if rate is None:
            continue
        vs_mm = rate / mm if mm else None
        vs_src = rate / src if src else None
        cpu_mm, cpu_src, cpu = _cpu(summary, ANCHOR_PY), _cpu(summary, ANCHOR_C), _cpu(
            summary, key)
        by_cpu = (f" (by client CPU per message: {fmt(cpu_mm / cpu, 1)}x mailmerge, "
                  f"{fmt(cpu_src / cpu, 3)}x smtp-source)" if cpu and cpu_mm and cpu_src
                  else "")
        ok = None if vs_mm is None or vs_src is None else vs_mm >= 10 and vs_src >= 0.25
        out.append(f"| (a) loopback | {summary[key]['label']} | {fmt(rate)} msg/s = "
                   f"{fmt(vs_mm, 1)}x mailmerge, {fmt(vs_src, 3)}x smtp-source -s16{by_cpu} "
                   f"| ≥ 10x and ≥ 0.25x | {_verdict(ok)} |")
    out += journal_targets(summary, keys)
    return out


def journal_targets(summary: dict[str, dict[str, Any]], keys: list[str]) -> list[str]:
    """(d) median wall with the journal / without it, minus one; CPU shown beside it."""
    out = []
    for key in keys:
        if not key.startswith("mailconduit_nojournal"):
            continue
        with_journal = key.replace("_nojournal", "")
        wall_on = summary.get(with_journal, {}).get("wall")
        wall_off = summary.get(key, {}).get("wall")
        if not wall_on or not wall_off:
            continue
        cost = wall_on / wall_off - 1
        cpu_on, cpu_off = _cpu(summary, with_journal), _cpu(summary, key)
        by_cpu = (f" (client CPU per message {100 * (cpu_on / cpu_off - 1):+.1f} %)"
                  if cpu_on and cpu_off else "")
        out.append(f"| (d) journal cost | {summary[with_journal]['label']} vs --no-journal | "
                   f"median wall {wall_on:.2f} s vs {wall_off:.2f} s: {100 * cost:+.1f} %"
                   f"{by_cpu} | < 20 % | {_verdict(cost < 0.20)} |")
    return out


def latency_targets(summary: dict[str, dict[str, Any]], keys: list[str],
                    contenders: dict[str, Contender]) -> list[str]:
    """(b) ≥ 100x mailmerge and ≥ smtp-source with the same sessions."""
    out = []
    mm = _median(summary, ANCHOR_PY)
    for key in (k for k in keys if k.startswith("mailconduit")):
        rate = _median(summary, key)
        if rate is None:
            continue
        src = same_sessions_source(contenders[key])
        src_rate = _median(summary, src) if src else None
        vs_mm = rate / mm if mm else None
        vs_src = rate / src_rate if src_rate else None
        ok = None if vs_mm is None or vs_src is None else vs_mm >= 100 and vs_src >= 1
        src_text = f"{fmt(vs_src, 2)}x smtp-source {_src_short(src)}" if src else "no pair"
        out.append(f"| (b) latency | {summary[key]['label']} | {fmt_rate(rate)} msg/s = "
                   f"{fmt(vs_mm, 1)}x mailmerge, {src_text} | ≥ 100x and ≥ 1x | "
                   f"{_verdict(ok)} |")
    return out


def rss_targets(runs: list[dict[str, Any]]) -> list[str]:
    """(c) peak RSS < 150 MB at the largest N, and constant in rows."""
    out = []
    by_key: dict[str, list[dict[str, Any]]] = {}
    for r in runs:
        if r["valid"] and r.get("rss_kb"):
            by_key.setdefault(r["key"], []).append(r)
    for rs in by_key.values():
        rs.sort(key=lambda r: r["n"])
        small, big = rs[0], rs[-1]
        peak = big["rss_kb"] / 1024
        growth = (big["rss_kb"] - small["rss_kb"]) / 1024
        constant = growth <= max(5.0, 0.10 * small["rss_kb"] / 1024)
        msgs = big["sink_messages"]
        out.append(f"| (c) memory | {big['label']} | {peak:.1f} MiB at {msgs:,} rows sent "
                   f"(N={big['n']:,}), {small['rss_kb'] / 1024:.1f} MiB at N={small['n']:,}: "
                   f"{growth:+.1f} MiB | < 150 MB, constant (≤ +5 MiB or +10 %) | "
                   f"{_verdict(peak * 1.048576 < 150 and constant)} |")
    return out


def invoice_targets(summary: dict[str, dict[str, Any]], keys: list[str]) -> list[str]:
    """Issue 9 §6: ≥ 10x mailmerge in msg/s, and the sink's byte rate at least half of
    smtp-source -s16's sending messages of the same size."""
    out = []
    mm = _median(summary, INVOICE_ANCHOR_PY)
    src_bps = summary.get(INVOICE_ANCHOR_C, {}).get("sink_bps")
    for key in (k for k in keys if k.startswith("inv_mailconduit")):
        rate, bps = _median(summary, key), summary.get(key, {}).get("sink_bps")
        if rate is None:
            continue
        vs_mm = rate / mm if mm else None
        vs_src = bps / src_bps if bps and src_bps else None
        ok = None if vs_mm is None or vs_src is None else vs_mm >= 10 and vs_src >= 0.5
        out.append(f"| (e) invoices, HTML + 100 KB PDF | {summary[key]['label']} | "
                   f"{fmt_rate(rate)} msg/s = {fmt(vs_mm, 1)}x mailmerge; sink "
                   f"{fmt(bps / 1e6 if bps else None, 1)} MB/s = {fmt(vs_src, 2)}x "
                   f"smtp-source -s16 | ≥ 10x and ≥ 0.5x | {_verdict(ok)} |")
    return out


TARGETS_HEADER = ["| target | contender | measured | wanted | verdict |",
                  "|---|---|---|---|---|"]
