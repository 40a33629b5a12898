"""The "Provider and OAuth2 sign-in" part of the connection form: a preset choice that fills
the form (every field stays editable) and the OAuth2 fields, secrets write-only.

The same :class:`~mailconduit.web.forms.FormField` descriptions feed the HTML form and the
REST schema. The client secret and refresh token are never put back into a page: an empty
box on edit keeps the stored value.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from mailconduit import api
from mailconduit.web.forms import FormField

__all__ = [
    "OAUTH_FIELDS",
    "OAUTH_FIELDS_BY_NAME",
    "SECRET_FIELDS",
    "form_to_oauth_data",
    "oauth_form_values",
    "preset_data",
]

SECRET_FIELDS = frozenset({"oauth_client_secret", "oauth_refresh_token"})


def _preset_choices() -> tuple[tuple[str, str], ...]:
    return (
        ("", "none (fill the form yourself)"),
        *((p["name"], p["title"]) for p in api.presets()),
    )


OAUTH_FIELDS: tuple[FormField, ...] = (
    FormField(
        "preset",
        "Provider preset",
        "select",
        "Fills server, port, security, login method and the provider's published sending "
        "limits. Everything it fills can still be changed before saving.",
        choices=_preset_choices(),
    ),
    FormField(
        "region",
        "AWS Region",
        "text",
        "Only for Amazon SES: the Region of your SES account, e.g. eu-west-1.",
        placeholder="us-east-1",
    ),
    FormField(
        "oauth_provider",
        "OAuth2 provider",
        "select",
        "Sign in with OAuth2 instead of a password (XOAUTH2): Microsoft 365, Google, or any "
        "standard OAuth2 server. 'none' uses the password above.",
        choices=(
            ("", "none (password)"),
            ("microsoft", "Microsoft"),
            ("google", "Google"),
            ("generic", "generic OAuth2 server"),
        ),
    ),
    FormField(
        "oauth_tenant",
        "Tenant",
        "text",
        "Microsoft only: your directory (tenant) id or domain, e.g. contoso.onmicrosoft.com. "
        "Empty means 'common'; app-only sign-in needs the real one.",
    ),
    FormField(
        "oauth_client_id",
        "Client id",
        "text",
        "The application (client) id of the app you registered for mailconduit.",
    ),
    FormField(
        "oauth_client_secret",
        "Client secret",
        "password",
        "The app's secret, if it has one (public apps signing in a user need none). Stored "
        "encrypted, never shown again; leave empty on edit to keep it.",
    ),
    FormField(
        "oauth_refresh_token",
        "Refresh token",
        "password",
        "Only if you obtained one elsewhere; otherwise use Sign in on the connection's page. "
        "Stored encrypted, never shown again.",
    ),
    FormField(
        "oauth_scope",
        "Scope",
        "text",
        "Empty: the provider's scope for sending mail (Microsoft: SMTP.Send offline_access; "
        "Google: https://mail.google.com/).",
    ),
    FormField(
        "oauth_flow",
        "Sign-in flow",
        "select",
        "refresh_token: a person signs in once for the mailbox. client_credentials: the app "
        "signs itself in (Microsoft app-only, with SMTP.SendAsApp).",
        choices=(
            ("refresh_token", "refresh_token (a user signs in)"),
            ("client_credentials", "client_credentials (app-only)"),
        ),
    ),
    FormField(
        "oauth_token_endpoint",
        "Token endpoint",
        "text",
        "Generic provider only: the https URL tokens are requested from.",
    ),
    FormField(
        "oauth_device_endpoint",
        "Device sign-in endpoint",
        "text",
        "Generic provider only: the https URL of its device authorization endpoint.",
    ),
    FormField(
        "oauth_client_auth",
        "Client authentication",
        "select",
        "How the client secret is sent to the token endpoint.",
        choices=(
            ("client_secret_post", "in the form (client_secret_post)"),
            ("client_secret_basic", "HTTP Basic (client_secret_basic)"),
        ),
    ),
)
OAUTH_FIELDS_BY_NAME: dict[str, FormField] = {f.name: f for f in OAUTH_FIELDS}


def preset_data() -> str:
    """JSON for the page's script: per preset, the form fields it fills."""
    out = {}
    for preset in api.presets():
        fields = dict(preset["fields"])
        if preset["oauth_provider"]:
            fields["oauth_provider"] = preset["oauth_provider"]
        out[preset["name"]] = fields
    return json.dumps(out, sort_keys=True)


def oauth_form_values(view: Mapping[str, Any] | None) -> dict[str, Any]:
    """Form values from a connection's public OAuth2 view (secrets are not in it).

    The endpoints of Microsoft and Google follow from the provider and are not shown as
    typed values, so saving the form again does not try to set them.
    """
    if view is None:
        return {"oauth_flow": "refresh_token", "oauth_client_auth": "client_secret_post"}
    values = {f"oauth_{k}": v for k, v in view.items() if f"oauth_{k}" in OAUTH_FIELDS_BY_NAME}
    if view.get("provider") != "generic":
        values.pop("oauth_token_endpoint", None)
        values.pop("oauth_device_endpoint", None)
    return values


def form_to_oauth_data(form: Mapping[str, Any], *, editing: bool) -> dict[str, Any]:
    """The preset and ``oauth_*`` input of a submitted form.

    Provider 'none' means no OAuth2 (on edit: remove it). An empty secret box keeps the
    stored secret; an empty text box clears that setting.
    """
    data: dict[str, Any] = {}
    for name in ("preset", "region"):
        value = str(form.get(name) or "").strip()
        if value:
            data[name] = value
    provider = str(form.get("oauth_provider") or "").strip()
    if not provider:
        if editing:
            data["oauth_provider"] = ""
        return data
    for field in OAUTH_FIELDS:
        if not field.name.startswith("oauth_"):
            continue
        raw = form.get(field.name)
        text = raw.strip() if isinstance(raw, str) else ""
        if field.name in SECRET_FIELDS:
            if text:
                data[field.name] = text
        elif text or editing:
            data[field.name] = text
    return data
