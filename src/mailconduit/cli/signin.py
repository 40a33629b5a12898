"""Options of ``connections create/edit`` for presets and OAuth2, and what ``authorize`` prints.

Secrets (client secret, refresh token) come from environment variables only, so they never
appear in a shell history or in the process list.
"""

from __future__ import annotations

import os
from typing import Annotated, Any

import typer

from mailconduit.errors import ConfigError, FieldError

__all__ = ["oauth_changes", "show_device_code"]

Preset = Annotated[
    str | None,
    typer.Option(
        "--preset",
        metavar="NAME",
        help="Fill server, port, security, sign-in and published limits from a provider preset "
        "(microsoft365, google-workspace, gmail, amazon-ses, sendgrid, mailgun, mailgun-eu, "
        "postmark, brevo, mailjet, mailpit, mailhog); options you give win.",
    ),
]
Region = Annotated[
    str | None,
    typer.Option("--region", help="AWS Region of the amazon-ses preset (default us-east-1)."),
]
OAuthProvider = Annotated[
    str | None,
    typer.Option(
        "--oauth-provider",
        help="Sign in with OAuth2 (XOAUTH2) at microsoft, google or generic (any RFC 6749 server).",
    ),
]
NoOAuth = Annotated[
    bool,
    typer.Option("--no-oauth", help="Forget the OAuth2 settings and tokens of the connection."),
]
Tenant = Annotated[
    str | None,
    typer.Option(
        "--tenant",
        help="Microsoft: the directory (tenant) id or domain; 'common' by default, a real one for app-only.",
    ),
]
ClientId = Annotated[
    str | None,
    typer.Option("--client-id", help="The application (client) id of your app registration."),
]
ClientSecretEnv = Annotated[
    str | None,
    typer.Option(
        "--client-secret-env",
        metavar="VAR",
        help="Take the app's client secret from this environment variable (public apps have none).",
    ),
]
RefreshTokenEnv = Annotated[
    str | None,
    typer.Option(
        "--refresh-token-env",
        metavar="VAR",
        help="Take a refresh token obtained elsewhere from this environment variable "
        "(otherwise run 'connections authorize').",
    ),
]
Scope = Annotated[
    str | None,
    typer.Option("--scope", help="OAuth2 scope (default: the provider's SMTP scope for the flow)."),
]
TokenEndpoint = Annotated[
    str | None,
    typer.Option("--token-endpoint", help="Token URL of a generic provider (https)."),
]
DeviceEndpoint = Annotated[
    str | None,
    typer.Option(
        "--device-endpoint", help="Device authorization URL of a generic provider (https)."
    ),
]
Flow = Annotated[
    str | None,
    typer.Option(
        "--flow",
        help="refresh_token (a user signs in once) or client_credentials (Microsoft app-only).",
    ),
]
ClientAuth = Annotated[
    str | None,
    typer.Option(
        "--client-auth",
        help="How the client secret is sent: client_secret_post (default) or client_secret_basic.",
    ),
]


def _from_env(variable: str | None, field: str) -> str | None:
    if not variable:
        return None
    value = os.environ.get(variable)
    if not value:
        raise ConfigError.for_fields(
            "options", [FieldError(field, f"environment variable {variable} is not set or empty")]
        )
    return value


def oauth_changes(
    *,
    preset: str | None,
    region: str | None,
    provider: str | None,
    tenant: str | None,
    client_id: str | None,
    client_secret_env: str | None,
    refresh_token_env: str | None,
    scope: str | None,
    token_endpoint: str | None,
    device_endpoint: str | None,
    flow: str | None,
    client_auth: str | None,
    remove: bool = False,
) -> dict[str, Any]:
    """The preset and ``oauth_*`` fields the options give (only those given)."""
    given = {
        "preset": preset,
        "region": region,
        "oauth_provider": "" if remove else provider,
        "oauth_tenant": tenant,
        "oauth_client_id": client_id,
        "oauth_client_secret": _from_env(client_secret_env, "oauth_client_secret"),
        "oauth_refresh_token": _from_env(refresh_token_env, "oauth_refresh_token"),
        "oauth_scope": scope,
        "oauth_token_endpoint": token_endpoint,
        "oauth_device_endpoint": device_endpoint,
        "oauth_flow": flow,
        "oauth_client_auth": client_auth,
    }
    if remove and any(
        v is not None for k, v in given.items() if k.startswith("oauth_") and k != "oauth_provider"
    ):
        raise ConfigError.for_fields(
            "options", [FieldError("oauth_provider", "--no-oauth takes no other OAuth2 option")]
        )
    return {k: v for k, v in given.items() if v is not None}


def show_device_code(instructions: str, uri: str, code: str) -> None:
    """Tell the user where to sign in (stderr: stdout stays for what scripts read)."""
    typer.echo(instructions, err=True)
    typer.echo(f"  open:  {uri}", err=True)
    typer.echo(f"  code:  {code}", err=True)
    typer.echo("waiting for the sign-in to finish...", err=True)
