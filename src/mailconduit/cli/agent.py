"""``mailconduit agent run NAME``: a Celery worker sending the exports queued for an agent."""

from __future__ import annotations

from typing import Annotated

import typer

app = typer.Typer(
    help="Run a worker of an agent: it sends the exports of connections routed to it.",
    no_args_is_help=True,
)


@app.command("run")
def run(
    name: Annotated[str, typer.Argument(help="The agent's name (a connection's Cloud Agent).")],
    concurrency: Annotated[
        int,
        typer.Option(
            "--concurrency",
            "-c",
            help="Chunks this worker sends at once, each in a process of its own (default 1).",
        ),
    ] = 1,
) -> None:
    """Start a worker for agent NAME; it runs until stopped (Ctrl-C or SIGTERM: it first ends
    the chunks it is sending).

    Needs MAILCONDUIT_BROKER_URL (redis:// or amqp://), MAILCONDUIT_DB on PostgreSQL shared
    with every host, and the same MAILCONDUIT_KEY as the host that stored the connection.
    """
    from mailconduit import api

    raise typer.Exit(api.run_agent(name, concurrency=concurrency))
