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
from mailconduit.config.connection import Connection
from mailconduit.config.document import read_document_text
from mailconduit.errors import ConfigError, FieldError

app = typer.Typer(
    help='Manage SMTP connections (the "SMTP Data Provider"): where and how mail is delivered.',
    no_args_is_help=True,
)

# Options shared by create and edit. Every default is None = "not given", so that
# edit changes only what the user typed.
ServerUrl = Annotated[
    str | None,
    typer.Option(
        "--server-url",
        help="Mail server: a host name, an IP address, or smtp://host[:port] / smtps://host[:port].",
    ),
]
Port = Annotated[
    int | None,
    typer.Option(
        "--port", help="Server port: 587 (submission, STARTTLS), 465 (implicit TLS), 25 or 2525."
    ),
]
Username = Annotated[
    str | None, typer.Option("--username", help="Account name used to log in to the server.")
]
PasswordStdin = Annotated[
    bool,
    typer.Option(
        "--password-stdin", help="Read the password from the first line of standard input."
    ),
]
PasswordEnv = Annotated[
    str | None,
    typer.Option(
        "--password-env", metavar="VAR", help="Take the password from this environment variable."
    ),
]
Ssl = Annotated[
    bool | None,
    typer.Option(
        "--ssl/--no-ssl",
        help="Encrypt the connection (implicit TLS on port 465 or smtps://, STARTTLS otherwise).",
    ),
]
HtmlBody = Annotated[
    bool | None,
    typer.Option(
        "--html-body/--no-html-body", help="Send message bodies as HTML (with a plain-text twin)."
    ),
]
TimeoutMs = Annotated[
    int | None,
    typer.Option(
        "--timeout-ms", help="How long to wait for the server at each step, in milliseconds."
    ),
]
Agent = Annotated[
    str | None,
    typer.Option(
        "--agent", help="Agent that runs exports for this connection ('local' = this machine)."
    ),
]
ImplType = Annotated[
    str | None,
    typer.Option(
        "--implementation-type",
        help="'default' sends from the process that starts an export; 'celery' sends it through "
        "the workers of --agent ('mailconduit agent run NAME'), see 'Running on several machines'.",
    ),
]
Active = Annotated[
    bool | None,
    typer.Option("--active/--inactive", help="Whether exports may use this connection."),
]
Target = Annotated[
    bool | None,
    typer.Option("--target/--no-target", help="Whether this connection may receive exported data."),
]
FromAddr = Annotated[
    str | None,
    typer.Option(
        "--from", help="Default sender address (defaults to the username when it is an address)."
    ),
]
FromName = Annotated[
    str | None, typer.Option("--from-name", help="Display name shown next to the sender address.")
]
ReplyTo = Annotated[str | None, typer.Option("--reply-to", help="Default Reply-To address.")]
CaFile = Annotated[
    str | None,
    typer.Option("--ca-file", help="PEM file of CA certificates to trust for this server."),
]
NoVerify = Annotated[
    bool | None,
    typer.Option(
        "--no-verify-tls/--verify-tls",
        help="Skip (or restore) TLS certificate verification. Skipping exposes the password to impostors.",
    ),
]
SecurityOpt = Annotated[
    str | None,
    typer.Option(
        "--security",
        help="tls (implicit, port 465), starttls (required, never falls back to plaintext) or none.",
    ),
]
Ehlo = Annotated[
    str | None,
    typer.Option("--ehlo-hostname", help="Name we announce in EHLO (default: this host)."),
]
Auth = Annotated[
    str | None,
    typer.Option(
        "--auth",
        help="AUTH mechanism: auto, plain, login, cram-md5, xoauth2 (OAuth2 sign-in, or a token as password) or none.",
    ),
]
Insecure = Annotated[
    bool | None,
    typer.Option(
        "--allow-insecure-auth/--no-allow-insecure-auth",
        help="Allow sending credentials over an unencrypted connection to a non-loopback host.",
    ),
]
Concurrency = Annotated[
    int | None,
    typer.Option("--concurrency", help="Default number of parallel SMTP sessions for exports."),
]
RatePerSecond = Annotated[
    float | None,
    typer.Option("--rate-per-second", help="Default cap on messages per second (0 = none)."),
]
RatePerMinute = Annotated[
    float | None,
    typer.Option("--rate-per-minute", help="Default cap on messages per minute (0 = none)."),
]
RatePerHour = Annotated[
    float | None,
    typer.Option("--rate-per-hour", help="Default cap on messages per hour (0 = none)."),
]
DailyCap = Annotated[
    int | None, typer.Option("--daily-cap", help="At most this many messages per day (0 = none).")
]
PerConnection = Annotated[
    int | None,
    typer.Option(
        "--messages-per-connection",
        help="Reconnect after this many messages (providers impose such caps; 0 = none).",
    ),
]
Query = Annotated[
    str | None, typer.Option("--query", help="Not used by the SMTP connector; must stay empty.")
]
DateFmt = Annotated[
    str | None,
    typer.Option("--datetime-format", help="Not used by the SMTP connector; must stay empty."),
]
SourceFlag = Annotated[
    bool | None,
    typer.Option(
        "--source/--no-source", help="Not used: an SMTP connection is never a data source."
    ),
]
JsonOut = Annotated[bool, typer.Option("--json", help="Print JSON instead of text.")]


def _password(stdin: bool, env: str | None, *, prompt: bool) -> str | None:
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
        return line.rstrip("\r\n")
    if env:
        value = os.environ.get(env)
        if not value:
            raise ConfigError.for_fields(
                "options",
                [FieldError("password", f"environment variable {env} is not set or empty")],
            )
        return value
    if prompt and sys.stdin.isatty():
        value = typer.prompt("Password", hide_input=True, confirmation_prompt=True)
        return str(value)
    return None


#: The CLI parameters spelled otherwise than the connection field they set (``--source``
#: sets ``is_source``...); every other parameter is the field's own name. A test holds this
#: and the options of ``create`` to :class:`~mailconduit.config.Connection`'s fields.
OPTION_FIELDS: dict[str, str] = {
    "from_": "from_address",
    "no_verify": "verify_tls",
    "ehlo": "ehlo_hostname",
    "auth": "auth_mechanism",
    "insecure": "allow_insecure_auth",
    "source": "is_source",
    "target": "is_target",
    "active": "is_active",
    "html_body": "use_html_body",
    "ssl": "use_ssl",
    "impl": "implementation_type",
    "per_connection": "messages_per_connection",
    "date_fmt": "datetime_format",
}


def _changes(**given: Any) -> dict[str, Any]:
    """The connection fields the user gave (None = not given), under their field names."""
    out: dict[str, Any] = {}
    for key, value in given.items():
        if value is None:
            continue
        field = OPTION_FIELDS.get(key, key)
        if key == "no_verify":
            value = not value
        out[field] = value
    return out


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
def create(
    name: Annotated[str, typer.Argument(help="Unique name (alias) of the new connection.")],
    server_url: ServerUrl = None,
    port: Port = None,
    username: Username = None,
    password_stdin: PasswordStdin = False,
    password_env: PasswordEnv = None,
    ssl: Ssl = None,
    html_body: HtmlBody = None,
    timeout_ms: TimeoutMs = None,
    agent: Agent = None,
    impl: ImplType = None,
    active: Active = None,
    target: Target = None,
    from_: FromAddr = None,
    from_name: FromName = None,
    reply_to: ReplyTo = None,
    ca_file: CaFile = None,
    no_verify: NoVerify = None,
    security: SecurityOpt = None,
    ehlo: Ehlo = None,
    auth: Auth = None,
    insecure: Insecure = None,
    concurrency: Concurrency = None,
    rate_per_second: RatePerSecond = None,
    rate_per_minute: RatePerMinute = None,
    rate_per_hour: RatePerHour = None,
    daily_cap: DailyCap = None,
    per_connection: PerConnection = None,
    query: Query = None,
    date_fmt: DateFmt = None,
    source: SourceFlag = None,
    preset: signin.Preset = None,
    region: signin.Region = None,
    oauth_provider: signin.OAuthProvider = None,
    tenant: signin.Tenant = None,
    client_id: signin.ClientId = None,
    client_secret_env: signin.ClientSecretEnv = None,
    refresh_token_env: signin.RefreshTokenEnv = None,
    scope: signin.Scope = None,
    token_endpoint: signin.TokenEndpoint = None,
    device_endpoint: signin.DeviceEndpoint = None,
    flow: signin.Flow = None,
    client_auth: signin.ClientAuth = None,
    as_json: JsonOut = False,
) -> None:
    """Create a connection. Every wrong field is named in one message (exit status 2)."""
    data = _changes(
        name=name, server_url=server_url, port=port, username=username, ssl=ssl, html_body=html_body,
        timeout_ms=timeout_ms, agent=agent, impl=impl, active=active, target=target, from_=from_,
        from_name=from_name, reply_to=reply_to, ca_file=ca_file, no_verify=no_verify, security=security,
        ehlo=ehlo, auth=auth, insecure=insecure, concurrency=concurrency,
        rate_per_second=rate_per_second, rate_per_minute=rate_per_minute, rate_per_hour=rate_per_hour,
        daily_cap=daily_cap, per_connection=per_connection, query=query, date_fmt=date_fmt, source=source,
    )  # fmt: skip
    data.update(
        signin.oauth_changes(
            preset=preset, region=region, oauth_provider=oauth_provider, tenant=tenant,
            client_id=client_id, client_secret_env=client_secret_env,
            refresh_token_env=refresh_token_env, scope=scope, token_endpoint=token_endpoint,
            device_endpoint=device_endpoint, flow=flow, client_auth=client_auth,
        )
    )  # fmt: skip
    oauth = any(k.startswith("oauth_") for k in data)
    chosen = next((p for p in api.presets() if p["name"] == data.get("preset")), None)
    auth_default = chosen["fields"]["auth_mechanism"] if chosen else "auto"
    wants_password = str(data.get("auth_mechanism", auth_default)).lower() not in (
        "none",
        "xoauth2",
    )
    password = _password(password_stdin, password_env, prompt=wants_password and not oauth)
    if password is not None:
        data["password"] = password
    conn = api.create_connection(data)
    if as_json:
        _print_connection(conn, as_json=True)
    else:
        typer.echo(
            f"created connection {conn.name!r} ({conn.host}:{conn.port}, security {conn.security.value})"
        )


@app.command()
def edit(
    name: Annotated[str, typer.Argument(help="Name of the connection to change.")],
    rename: Annotated[
        str | None, typer.Option("--name", help="Give the connection a new name.")
    ] = None,
    server_url: ServerUrl = None,
    port: Port = None,
    username: Username = None,
    password_stdin: PasswordStdin = False,
    password_env: PasswordEnv = None,
    ssl: Ssl = None,
    html_body: HtmlBody = None,
    timeout_ms: TimeoutMs = None,
    agent: Agent = None,
    impl: ImplType = None,
    active: Active = None,
    target: Target = None,
    from_: FromAddr = None,
    from_name: FromName = None,
    reply_to: ReplyTo = None,
    ca_file: CaFile = None,
    no_verify: NoVerify = None,
    security: SecurityOpt = None,
    ehlo: Ehlo = None,
    auth: Auth = None,
    insecure: Insecure = None,
    concurrency: Concurrency = None,
    rate_per_second: RatePerSecond = None,
    rate_per_minute: RatePerMinute = None,
    rate_per_hour: RatePerHour = None,
    daily_cap: DailyCap = None,
    per_connection: PerConnection = None,
    query: Query = None,
    date_fmt: DateFmt = None,
    source: SourceFlag = None,
    preset: signin.Preset = None,
    region: signin.Region = None,
    oauth_provider: signin.OAuthProvider = None,
    tenant: signin.Tenant = None,
    client_id: signin.ClientId = None,
    client_secret_env: signin.ClientSecretEnv = None,
    refresh_token_env: signin.RefreshTokenEnv = None,
    scope: signin.Scope = None,
    token_endpoint: signin.TokenEndpoint = None,
    device_endpoint: signin.DeviceEndpoint = None,
    flow: signin.Flow = None,
    client_auth: signin.ClientAuth = None,
    no_oauth: signin.NoOAuth = False,
    as_json: JsonOut = False,
) -> None:
    """Change fields of a stored connection; fields not given keep their values.

    Changing the server or port forgets the stored password: enter it again, so it is
    never sent to a host it was not typed for.
    """
    changes = _changes(
        name=rename, server_url=server_url, port=port, username=username, ssl=ssl, html_body=html_body,
        timeout_ms=timeout_ms, agent=agent, impl=impl, active=active, target=target, from_=from_,
        from_name=from_name, reply_to=reply_to, ca_file=ca_file, no_verify=no_verify, security=security,
        ehlo=ehlo, auth=auth, insecure=insecure, concurrency=concurrency,
        rate_per_second=rate_per_second, rate_per_minute=rate_per_minute, rate_per_hour=rate_per_hour,
        daily_cap=daily_cap, per_connection=per_connection, query=query, date_fmt=date_fmt, source=source,
    )  # fmt: skip
    changes.update(
        signin.oauth_changes(
            preset=preset, region=region, oauth_provider=oauth_provider, tenant=tenant,
            client_id=client_id, client_secret_env=client_secret_env,
            refresh_token_env=refresh_token_env, scope=scope, token_endpoint=token_endpoint,
            device_endpoint=device_endpoint, flow=flow, client_auth=client_auth, remove=no_oauth,
        )
    )  # fmt: skip
    password = _password(password_stdin, password_env, prompt=False)
    if password is not None:
        changes["password"] = password
    conn = api.update_connection(name, changes)
    if as_json:
        _print_connection(conn, as_json=True)
    else:
        typer.echo(f"updated connection {conn.name!r}")


@app.command("list")
def list_(as_json: JsonOut = False) -> None:
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
    as_json: JsonOut = False,
) -> None:
    """Show every field of a connection (never the password)."""
    _print_connection(api.get_connection(name), as_json=as_json)


@app.command()
def delete(
    name: Annotated[str, typer.Argument(help="Connection to delete.")],
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Do not ask for confirmation.")] = False,
) -> None:
    """Delete a stored connection."""
    api.get_connection(name)
    if not yes and sys.stdin.isatty():
        typer.confirm(f"Delete connection {name!r}?", abort=True)
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
    as_json: JsonOut = False,
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
