"""``mailconduit users``: accounts of the web console and their API tokens."""

from __future__ import annotations

import json
import sys
from datetime import UTC, datetime
from typing import Annotated

import typer

from mailconduit.accounts import users
from mailconduit.cli.options import Yes, confirm_unless

app = typer.Typer(
    help="Manage the web console's accounts and the API tokens scripts use.",
    no_args_is_help=True,
)

PasswordStdin = Annotated[
    bool,
    typer.Option(
        "--password-stdin",
        help="Read the password from the first line of standard input (for scripts).",
    ),
]


def _read_password(*, from_stdin: bool) -> str:
    """The new password: first line of stdin, or typed twice at a terminal prompt."""
    if from_stdin:
        return sys.stdin.readline().rstrip("\r\n")
    if not sys.stdin.isatty():
        raise typer.BadParameter(
            "no terminal to prompt for a password; use --password-stdin",
            param_hint="--password-stdin",
        )
    return str(typer.prompt("Password", hide_input=True, confirmation_prompt=True))


@app.command()
def create(
    name: Annotated[str, typer.Argument(help="User name to sign in with.")],
    password_stdin: PasswordStdin = False,
) -> None:
    """Create a console user (password hashed with argon2id; at least 8 characters)."""
    users.create_user(name, _read_password(from_stdin=password_stdin))
    typer.echo(f"created user {name!r}")


@app.command("password")
def password_(
    name: Annotated[str, typer.Argument(help="User whose password changes.")],
    password_stdin: PasswordStdin = False,
) -> None:
    """Set a new password for a user; that user's open sessions end."""
    users.set_password(name, _read_password(from_stdin=password_stdin))
    typer.echo(f"changed the password of {name!r}")


@app.command("list")
def list_(
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")] = False,
) -> None:
    """List console users and how many API tokens each has."""
    accounts = users.list_users()
    if as_json:
        rows = [
            {
                "name": a.name,
                "created_at": datetime.fromtimestamp(a.created_at, UTC).isoformat(),
                "tokens": a.tokens,
            }
            for a in accounts
        ]
        typer.echo(json.dumps(rows, indent=2))
        return
    if not accounts:
        typer.echo("no users yet; create one with: mailconduit users create NAME")
        return
    width = max(len(a.name) for a in accounts)
    for a in accounts:
        created = datetime.fromtimestamp(a.created_at, UTC).strftime("%Y-%m-%d %H:%M UTC")
        typer.echo(f"{a.name:<{width}}  created {created}  tokens {a.tokens}")


@app.command()
def delete(
    name: Annotated[str, typer.Argument(help="User to delete.")],
    yes: Yes = False,
) -> None:
    """Delete a user with its API tokens and sessions."""
    confirm_unless(yes, f"Delete user {name!r} and its API tokens?")
    users.delete_user(name)
    typer.echo(f"deleted user {name!r}")


@app.command()
def token(
    name: Annotated[str, typer.Argument(help="User the token acts as.")],
    label: Annotated[
        str, typer.Option("--label", help="A note saying what the token is for.")
    ] = "",
    revoke_all: Annotated[
        bool,
        typer.Option(
            "--revoke-all", help="Revoke every token of this user instead of issuing one."
        ),
    ] = False,
) -> None:
    """Issue an API token (printed once; send it as 'Authorization: Bearer TOKEN') or revoke all."""
    if revoke_all:
        count = users.revoke_tokens(name)
        typer.echo(f"revoked {count} token(s) of {name!r}")
        return
    typer.echo(users.issue_token(name, label=label))
