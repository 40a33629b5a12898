"""The numbers behind the console's charts: the Main Menu's last 30 days, next runs and
latest failures; a run's throughput, outcomes, failure replies and retries; a connection's
daily usage against its cap."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from mailconduit import api
from mailconduit.interfaces import schedule, store
from mailconduit.web.charts import Chart, Series, bar_chart, breakdown_chart
from mailconduit.web.uploads import public_text
from mailconduit.web.views import format_time

__all__ = ["FailureReason", "connection_usage", "menu_context", "run_charts"]

#: Time slices of a run's charts.
RUN_BUCKETS = 30
#: Rows a failure reason links to.
LINKED_ROWS = 5
#: Failure reasons listed on a run's page.
TOP_REASONS = 10


def _days_chart(chart_id: str, title: str, days: list[tuple[str, int, int]]) -> Chart:
    return bar_chart(
        chart_id,
        title,
        [d[5:] for d, _, _ in days],
        [
            Series("sent", [s for _, s, _ in days], "solid"),
            Series("failed", [f for _, _, f in days], "hatch"),
        ],
        label_every=5,
    )


def menu_context() -> dict[str, Any]:
    """The Main Menu's chart of the last 30 days, next scheduled runs and latest failures."""
    days = api.outcomes_by_day(days=30)
    failures: list[dict[str, Any]] = []
    for run in api.list_runs(limit=200):
        failed = run.counts.get("failed", 0) + run.counts.get("skipped", 0)
        if failed or run.status in ("failed", "aborted"):
            why = run.message
            if not why and failed:
                why = "".join(_reason(row) for row in api.first_unsent_rows(run.run_id))
            failures.append(
                {
                    "run_id": run.run_id,
                    "when": format_time(run.updated_at),
                    "failed": failed,
                    "status": run.status,
                    "message": public_text(why),
                }
            )
        if len(failures) >= 5:
            break
    for entry in store.runs_of(None, limit=50):
        if entry.error and len(failures) < 10:
            failures.append(
                {
                    "run_id": "",
                    "when": format_time(entry.started_at),
                    "failed": 0,
                    "status": f"interface {entry.interface}",
                    "message": public_text(entry.error),
                }
            )
    return {
        "days_chart": _days_chart("chart-days", "Rows sent and failed per day, last 30 days", days),
        "next_runs": [
            {"interface": n.interface, "at": format_time(n.at), "schedule": n.schedule}
            for n in schedule.next_runs(limit=5)
        ],
        "failures": failures,
    }


@dataclass(frozen=True, slots=True)
class FailureReason:
    """One reply (or reason for skipping) shared by rows, how many, and the first of those
    rows (their seq)."""

    reply: str
    count: int
    rows: list[int]


def _bucket_of(moment: float, start: float, width: float) -> int:
    return min(RUN_BUCKETS - 1, max(0, int((moment - start) / width)))


def _reason(row: Any) -> str:
    """Why a row was not sent, as the run page groups rows: the server's reply, or the
    reason it was skipped."""
    reply = (
        " ".join(p for p in (str(row.code) if row.code else "", row.enhanced, row.reply) if p)
        or "no reply (refused before sending)"
    )
    return f"skipped: {reply}" if row.state == "skipped" else reply


def run_charts(info: Any, rows: Iterable[Any]) -> dict[str, Any]:
    """A finished run's charts and failure reasons, from its journal rows."""
    start = float(info.created_at)
    end = max(float(info.finished_at or info.updated_at), start + 1.0)
    width = (end - start) / RUN_BUCKETS
    sent = [0.0] * RUN_BUCKETS
    retried = [0.0] * RUN_BUCKETS
    reasons: Counter[str] = Counter()
    reason_rows: dict[str, list[int]] = {}
    for row in rows:
        bucket = _bucket_of(float(row.updated_at or start), start, width)
        if row.state == "sent":
            sent[bucket] += 1
        if row.attempts > 1:
            retried[bucket] += row.attempts - 1
        if row.state in ("failed", "skipped"):
            reply = _reason(row)
            reasons[reply] += 1
            linked = reason_rows.setdefault(reply, [])
            if len(linked) < LINKED_ROWS:
                linked.append(int(row.seq))
    digits = 0 if width >= 1 else 1 if width >= 0.1 else 2
    labels = [f"+{i * width:.{digits}f}s" for i in range(RUN_BUCKETS)]
    counts = info.counts
    outcome_parts: list[tuple[str, int, Any]] = [
        ("sent", counts.get("sent", 0), "solid"),
        ("failed", counts.get("failed", 0), "hatch"),
        ("skipped", counts.get("skipped", 0), "dots"),
        ("uncertain", counts.get("uncertain", 0) + counts.get("claimed", 0), "outline"),
    ]
    return {
        "throughput": bar_chart(
            "chart-throughput",
            "Messages sent per second over the run",
            labels,
            [Series("messages/s", [round(n / width, 2) for n in sent], "solid")],
            label_every=5,
        ),
        "outcomes": breakdown_chart("chart-outcomes", "Outcome of the rows", outcome_parts),
        "retries": bar_chart(
            "chart-retries",
            "Retries over the run (extra attempts of the rows that ended then)",
            labels,
            [Series("retries", retried, "dots")],
            label_every=5,
        ),
        "reasons": [
            FailureReason(public_text(reply), n, reason_rows[reply])
            for reply, n in reasons.most_common(TOP_REASONS)
        ],
    }


def connection_usage(name: str, daily_cap: int) -> Chart:
    """A connection's messages per day over 30 days, with its daily cap when it has one."""
    days = api.outcomes_by_day(days=30, connection=name)
    return bar_chart(
        "chart-usage",
        f"Messages through {name} per day, last 30 days",
        [d[5:] for d, _, _ in days],
        [
            Series("sent", [s for _, s, _ in days], "solid"),
            Series("failed", [f for _, _, f in days], "hatch"),
        ],
        limit=float(daily_cap) if daily_cap else None,
        limit_label="daily cap",
        label_every=5,
    )
