"""``mailconduit agents list``: the agents, their live workers and their queued work."""

from __future__ import annotations

import json
from typing import Annotated

import typer

app = typer.Typer(help="List the agents that send exports on Celery workers.", no_args_is_help=True)


@app.command("list")
def list_(as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False) -> None:
    """Each agent: live workers (host, heartbeat age), queued and running chunks, last seen."""
    from mailconduit import api

    agents = api.list_agents()
    if as_json:
        typer.echo(json.dumps([a.to_dict() for a in agents], indent=2))
        return
    if not agents:
        typer.echo("no agent has started a worker yet (mailconduit agent run NAME)")
        return
    table = [("AGENT", "LIVE WORKERS", "QUEUED", "RUNNING", "LAST SEEN")]
    for a in agents:
        seen = "never" if a.last_seen is None else f"{a.last_seen:.0f} s ago"
        table.append((a.name, str(len(a.workers)), str(a.queued), str(a.running), seen))
    widths = [max(len(row[i]) for row in table) for i in range(len(table[0]))]
    for row in table:
        typer.echo("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip())
    for a in agents:
        for w in a.workers:
            typer.echo(f"  {a.name}: {w.worker} on {w.host} (pid {w.pid}, concurrency "
                       f"{w.concurrency}), heartbeat {w.heartbeat_age:.1f} s ago")
