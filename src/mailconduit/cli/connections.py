"""``mailconduit connections``: create, list, show, edit, delete, test, export, import."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Annotated, Any

import typer

from mailconduit import api
from mailconduit.cli import signin
from mailconduit.cli.options import (
    AsJson,
    Param,
    Yes,
    confirm_unless,
    option,
    with_options,
)
from mailconduit.config.connection import Connection
from mailconduit.config.document import read_document_text
from mailconduit.errors import ConfigError, FieldError

app = typer.Typer(
    help='Manage SMTP connections (the "SMTP Data Provider"): where and how mail is delivered.',
    no_args_is_help=True,
)

#: One option per field of :class:`~mailconduit.config.Connection` that a user sets (a test
#: holds the keys to the dataclass's fields), under the field's own name. Every default is
#: None = "not given", so that ``edit`` changes only what the user typed.
CONNECTION_OPTIONS: dict[str, Param] = {
    "server_url": option(
        str, help="Mail server: a host name, an IP address, or smtp://host[:port] / smtps://host[:port].",
    ),
    "port": option(int, help="Server port: 587 (submission, STARTTLS), 465 (implicit TLS), 25 or 2525."),
    "username": option(str, help="Account name used to log in to the server."),
    "use_ssl": option(
        bool, "--ssl/--no-ssl",
        help="Encrypt the connection (implicit TLS on port 465 or smtps://, STARTTLS otherwise).",
    ),
    "use_html_body": option(
        bool, "--html-body/--no-html-body", help="Send message bodies as HTML (with a plain-text twin).",
    ),
    "timeout_ms": option(int, help="How long to wait for the server at each step, in milliseconds."),
    "agent": option(str, help="Agent that runs exports for this connection ('local' = this machine)."),
    "implementation_type": option(
        str, help="'default' sends from the process that starts an export; 'celery' sends it through "
        "the workers of --agent ('mailconduit agent run NAME'), see 'Running on several machines'.",
    ),
    "is_active": option(bool, "--active/--inactive", help="Whether exports may use this connection."),
    "is_target": option(bool, "--target/--no-target", help="Whether this connection may receive exported data."),
    "from_address": option(
        str, "--from", help="Default sender address (defaults to the username when it is an address).",
    ),
    "from_name": option(str, help="Display name shown next to the sender address."),
    "reply_to": option(str, help="Default Reply-To address."),
    "ca_file": option(str, help="PEM file of CA certificates to trust for this server."),
    "verify_tls": option(
        bool, "--verify-tls/--no-verify-tls",
        help="Check the server's TLS certificate (the default); --no-verify-tls skips the check, "
        "which exposes the password to impostors.",
    ),
    "security": option(
        str, help="tls (implicit, port 465), starttls (required, never falls back to plaintext) or none.",
    ),
    "ehlo_hostname": option(str, help="Name we announce in EHLO (default: this host)."),
    "auth_mechanism": option(
        str, "--auth",
        help="AUTH mechanism: auto, plain, login, cram-md5, xoauth2 (OAuth2 sign-in, or a token "
        "as password) or none.",
    ),
    "allow_insecure_auth": option(
        bool, "--allow-insecure-auth/--no-allow-insecure-auth",
        help="Allow sending credentials over an unencrypted connection to a non-loopback host.",
    ),
    "concurrency": option(int, help="Default number of parallel SMTP sessions for exports."),
    **{
        f"rate_per_{unit}": option(float, help=f"Default cap on messages per {unit} (0 = none).")
        for unit in ("second", "minute", "hour")
    },
    "daily_cap": option(int, help="At most this many messages per day (0 = none)."),
    "messages_per_connection": option(
        int, help="Reconnect after this many messages (providers impose such caps; 0 = none).",
    ),
    "query": option(str, help="Not used by the SMTP connector; must stay empty."),
    "datetime_format": option(str, help="Not used by the SMTP connector; must stay empty."),
    "is_source": option(bool, "--source/--no-source", help="Not used: an SMTP connection is never a data source."),
}  # fmt: skip

#: Where the password comes from (never a command-line argument: it would show in ``ps``).
PASSWORD_OPTIONS: dict[str, Param] = {
    "password_stdin": option(
        bool, "--password-stdin", default=False,
        help="Read the password from the first line of standard input.",
    ),
    "password_env": option(str, metavar="VAR", help="Take the password from this environment variable."),
}  # fmt: skip


def _password(given: dict[str, Any], *, prompt: bool) -> dict[str, str]:
    """``{"password": ...}`` when one was given (or typed at the prompt), else nothing."""
    stdin, env = given["password_stdin"], given["password_env"]
    if stdin and env:
        raise ConfigError.for_fields(
            "options",
            [FieldError("password", "give either --password-stdin or --password-env, not both")],
        )
    if stdin:
        line = sys.stdin.readline()
        if not line.strip():
            raise ConfigError.for_fields(
                "options", [FieldError("password", "standard input was empty")]
            )
        return {"password": line.rstrip("\r\n")}
    if env:
        return {"password": str(signin.from_env(env, "password"))}
    if prompt and sys.stdin.isatty():
        return {"password": str(typer.prompt("Password", hide_input=True, confirmation_prompt=True))}
    return {}


def _changes(fields: dict[str, Any]) -> dict[str, Any]:
    """The connection fields the user gave (None = not given)."""
    return {field: value for field, value in fields.items() if value is not None}


def _print_connection(conn: Connection, *, as_json: bool) -> None:
    data = conn.public_dict()
    oauth = api.connection_oauth(conn.name) if conn.origin == "store" else None
    if oauth is not None:
        data.update({f"oauth_{k}": v for k, v in oauth.items()})
    if as_json:
        typer.echo(json.dumps(data, indent=2))
        return
    width = max(len(k) for k in data)
    for key, value in data.items():
        if isinstance(value, bool):
            value = "yes" if value else "no"
        typer.echo(f"{key.ljust(width)}  {value}")


@app.command()
@with_options(fields=CONNECTION_OPTIONS, password=PASSWORD_OPTIONS, sign_in=signin.SIGN_IN_PARAMS)
def create(
    name: Annotated[str, typer.Argument(help="Unique name (alias) of the new connection.")],
    *,
    fields: dict[str, Any],
    password: dict[str, Any],
    sign_in: dict[str, Any],
    as_json: AsJson = False,
) -> None:
    """Create a connection. Every wrong field is named in one message (exit status 2)."""
    data = {"name": name, **_changes(fields), **signin.oauth_changes(**sign_in)}
    data.update(_password(password, prompt=_wants_password(data)))
    _report(api.create_connection(data), as_json=as_json, created=True)


def _wants_password(data: dict[str, Any]) -> bool:
    """Whether to prompt for a password: the connection logs in with one, not with OAuth2."""
    if any(key.startswith("oauth_") for key in data):
        return False
    chosen = next((p for p in api.presets() if p["name"] == data.get("preset")), None)
    auth_default = chosen["fields"]["auth_mechanism"] if chosen else "auto"
    return str(data.get("auth_mechanism", auth_default)).lower() not in ("none", "xoauth2")


def _report(conn: Connection, *, as_json: bool, created: bool) -> None:
    """What create and edit print: the connection as JSON, or one line."""
    if as_json:
        _print_connection(conn, as_json=True)
    elif created:
        typer.echo(
            f"created connection {conn.name!r} ({conn.host}:{conn.port}, security {conn.security.value})"
        )
    else:
        typer.echo(f"updated connection {conn.name!r}")


@app.command()
@with_options(fields=CONNECTION_OPTIONS, password=PASSWORD_OPTIONS, sign_in=signin.SIGN_IN_PARAMS)
def edit(
    name: Annotated[str, typer.Argument(help="Name of the connection to change.")],
    rename: Annotated[
        str | None, typer.Option("--name", help="Give the connection a new name.")
    ] = None,
    *,
    fields: dict[str, Any],
    password: dict[str, Any],
    sign_in: dict[str, Any],
    no_oauth: signin.NoOAuth = False,
    as_json: AsJson = False,
) -> None:
    """Change fields of a stored connection; fields not given keep their values.

    Changing the server or port forgets the stored password: enter it again, so it is
    never sent to a host it was not typed for.
    """
    changes = _changes({"name": rename, **fields})
    changes.update(signin.oauth_changes(**sign_in, remove=no_oauth))
    changes.update(_password(password, prompt=False))
    _report(api.update_connection(name, changes), as_json=as_json, created=False)


@app.command("list")
def list_(as_json: AsJson = False) -> None:
    """List every connection: built-in, from the environment, and stored."""
    rows = api.list_connections()
    if as_json:
        out = []
        for conn, test in rows:
            item = conn.public_dict()
            item["last_test"] = test.to_dict() if test else None
            out.append(item)
        typer.echo(json.dumps(out, indent=2))
        return
    header = ("NAME", "SERVER", "PORT", "SECURITY", "ACTIVE", "AGENT", "ORIGIN", "LAST TEST")
    table = [header]
    for conn, test in rows:
        last = (
            "-" if test is None else ("ok" if test.ok else "failed") + f" {test.at:%Y-%m-%d %H:%M}"
        )
        table.append(
            (
                conn.name,
                conn.host,
                str(conn.port),
                conn.security.value,
                "yes" if conn.is_active else "no",
                conn.agent,
                conn.origin,
                last,
            )
        )
    widths = [max(len(r[i]) for r in table) for i in range(len(header))]
    for r in table:
        typer.echo("  ".join(cell.ljust(w) for cell, w in zip(r, widths, strict=True)).rstrip())


@app.command()
def show(
    name: Annotated[str, typer.Argument(help="Connection to show.")],
    as_json: AsJson = False,
) -> None:
    """Show every field of a connection (never the password)."""
    _print_connection(api.get_connection(name), as_json=as_json)


@app.command()
def delete(
    name: Annotated[str, typer.Argument(help="Connection to delete.")],
    yes: Yes = False,
) -> None:
    """Delete a stored connection."""
    api.get_connection(name)
    confirm_unless(yes, f"Delete connection {name!r}?")
    api.delete_connection(name)
    typer.echo(f"deleted connection {name!r}")


@app.command()
def test(
    name: Annotated[str, typer.Argument(help="Connection to test.")],
    send_to: Annotated[
        str | None, typer.Option("--send-to", help="Also send a real test message to this address.")
    ] = None,
    verbose: Annotated[
        bool, typer.Option("--verbose", "-v", help="Print the SMTP conversation (secrets removed).")
    ] = False,
    as_json: AsJson = False,
) -> None:
    """Test Connection: connect, TLS, EHLO, AUTH, QUIT; success, or which stage failed and why.

    Exit status 0 on success, 1 when the test failed.
    """
    result = api.test_connection(name, send_to=send_to)
    if as_json:
        typer.echo(json.dumps(result.to_dict(), indent=2))
    else:
        for line in result.report_lines(verbose=verbose):
            typer.echo(line)
    raise typer.Exit(0 if result.ok else 1)


@app.command()
def authorize(
    name: Annotated[str, typer.Argument(help="Stored OAuth2 connection to sign in.")],
) -> None:
    """Sign an OAuth2 connection in with a device code: open the address shown on any device,
    type the code, sign in; the refresh token is then stored (encrypted) with the connection.
    """

    def show(pending: Any) -> None:
        signin.show_device_code(pending.instructions(), pending.verification_uri, pending.user_code)

    api.authorize_connection(name, show=show)
    typer.echo(f"signed in: connection {name!r} now holds a refresh token")


@app.command("export")
def export_(
    names: Annotated[
        list[str] | None, typer.Argument(help="Connections to export (default: all stored).")
    ] = None,
    fmt: Annotated[str, typer.Option("--format", help="yaml or json.")] = "yaml",
    output: Annotated[
        Path | None, typer.Option("--output", "-o", help="Write here instead of stdout.")
    ] = None,
    include_passwords: Annotated[
        bool,
        typer.Option(
            "--include-passwords", help="Write passwords in clear text too (keep that file safe)."
        ),
    ] = False,
) -> None:
    """Export connections to YAML or JSON; passwords are left out unless asked for."""
    from mailconduit.connections.store import list_stored
    from mailconduit.connections.transfer import dump_connections

    conns = [api.get_connection(n) for n in names] if names else list_stored()
    text = dump_connections(conns, fmt=fmt, include_passwords=include_passwords)
    if output:
        fd = os.open(output, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
        typer.echo(f"exported {len(conns)} connection(s) to {output}")
    else:
        typer.echo(text, nl=False)


@app.command("import")
def import_(
    file: Annotated[
        Path,
        typer.Argument(help="YAML or JSON file written by 'connections export' ('-' = stdin)."),
    ],
    replace: Annotated[
        bool, typer.Option("--replace", help="Overwrite connections that already exist.")
    ] = False,
) -> None:
    """Import connections; nothing is written unless every entry is valid."""

    if str(file) == "-":
        text = sys.stdin.read()
        fmt = None
    else:
        text = read_document_text(file, what="import")
        fmt = "json" if file.suffix.lower() == ".json" else None
    done = api_import(text, fmt=fmt, replace=replace)
    typer.echo(f"imported {len(done)} connection(s): {', '.join(done)}")


def api_import(text: str, *, fmt: str | None, replace: bool) -> list[str]:
    from mailconduit.connections.transfer import load_connections

    return load_connections(text, fmt=fmt, replace=replace)
