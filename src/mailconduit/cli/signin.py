"""Options of ``connections create/edit`` for presets and OAuth2, and what ``authorize`` prints.

Secrets (client secret, refresh token) come from environment variables only, so they never
appear in a shell history or in the process list.
"""

from __future__ import annotations

import os
from typing import Annotated, Any

import typer

from mailconduit.cli.options import Param, option
from mailconduit.errors import ConfigError, FieldError

__all__ = ["SIGN_IN_OPTIONS", "SIGN_IN_PARAMS", "NoOAuth", "from_env", "oauth_changes", "show_device_code"]

#: The preset and OAuth2 options of ``connections create`` and ``edit``, by parameter name;
#: :data:`SIGN_IN_OPTIONS` says which input field each one sets.
SIGN_IN_PARAMS: dict[str, Param] = {
    "preset": option(
        str, metavar="NAME",
        help="Fill server, port, security, sign-in and published limits from a provider preset "
        "(microsoft365, google-workspace, gmail, amazon-ses, sendgrid, mailgun, mailgun-eu, "
        "postmark, brevo, mailjet, mailpit, mailhog); options you give win.",
    ),
    "region": option(str, help="AWS Region of the amazon-ses preset (default us-east-1)."),
    "oauth_provider": option(
        str, help="Sign in with OAuth2 (XOAUTH2) at microsoft, google or generic (any RFC 6749 server).",
    ),
    "tenant": option(
        str, help="Microsoft: the directory (tenant) id or domain; 'common' by default, a real one for app-only.",
    ),
    "client_id": option(str, help="The application (client) id of your app registration."),
    "client_secret_env": option(
        str, metavar="VAR",
        help="Take the app's client secret from this environment variable (public apps have none).",
    ),
    "refresh_token_env": option(
        str, metavar="VAR",
        help="Take a refresh token obtained elsewhere from this environment variable "
        "(otherwise run 'connections authorize').",
    ),
    "scope": option(str, help="OAuth2 scope (default: the provider's SMTP scope for the flow)."),
    "token_endpoint": option(str, help="Token URL of a generic provider (https)."),
    "device_endpoint": option(str, help="Device authorization URL of a generic provider (https)."),
    "flow": option(str, help="refresh_token (a user signs in once) or client_credentials (Microsoft app-only)."),
    "client_auth": option(
        str, help="How the client secret is sent: client_secret_post (default) or client_secret_basic.",
    ),
}  # fmt: skip
NoOAuth = Annotated[
    bool,
    typer.Option("--no-oauth", help="Forget the OAuth2 settings and tokens of the connection."),
]


def from_env(variable: str | None, field: str) -> str | None:
    """The value of the environment variable an option names (None when none is named)."""
    if not variable:
        return None
    value = os.environ.get(variable)
    if not value:
        raise ConfigError.for_fields(
            "options", [FieldError(field, f"environment variable {variable} is not set or empty")]
        )
    return value


#: The options of :data:`SIGN_IN_PARAMS`, by parameter name, and the input field each one sets.
SIGN_IN_OPTIONS: dict[str, str] = {
    "preset": "preset",
    "region": "region",
    "oauth_provider": "oauth_provider",
    "tenant": "oauth_tenant",
    "client_id": "oauth_client_id",
    "client_secret_env": "oauth_client_secret",
    "refresh_token_env": "oauth_refresh_token",
    "scope": "oauth_scope",
    "token_endpoint": "oauth_token_endpoint",
    "device_endpoint": "oauth_device_endpoint",
    "flow": "oauth_flow",
    "client_auth": "oauth_client_auth",
}
_FROM_ENV = frozenset({"client_secret_env", "refresh_token_env"})


def oauth_changes(*, remove: bool = False, **options: str | None) -> dict[str, Any]:
    """The preset and ``oauth_*`` fields the options give (only those given; secrets read
    from the environment variables named). ``remove`` (``--no-oauth``) forgets them."""
    data: dict[str, Any] = {}
    for name, value in options.items():
        field = SIGN_IN_OPTIONS[name]
        data[field] = from_env(value, field) if name in _FROM_ENV else value
    given = {k: v for k, v in data.items() if v is not None}
    if remove:
        if any(k.startswith("oauth_") for k in given):
            raise ConfigError.for_fields(
                "options", [FieldError("oauth_provider", "--no-oauth takes no other OAuth2 option")]
            )
        given["oauth_provider"] = ""
    return given


def show_device_code(instructions: str, uri: str, code: str) -> None:
    """Tell the user where to sign in (stderr: stdout stays for what scripts read)."""
    typer.echo(instructions, err=True)
    typer.echo(f"  open:  {uri}", err=True)
    typer.echo(f"  code:  {code}", err=True)
    typer.echo("waiting for the sign-in to finish...", err=True)
