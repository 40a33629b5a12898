"""Airflow lists the provider: its version, the ``mailconduit`` connection type with its
hook, form fields and field behaviour, as its providers manager reads them."""

from __future__ import annotations

import mailconduit
from mailconduit.airflow.provider import CONN_FIELDS


def test_airflow_lists_the_provider_with_its_hook_and_connection_form() -> None:
    from airflow.providers_manager import ProvidersManager
    from airflow.sdk.providers_manager_runtime import ProvidersManagerTaskRuntime

    manager = ProvidersManager()
    assert manager.providers["mailconduit"].version == mailconduit.__version__
    hook = ProvidersManagerTaskRuntime().hooks["mailconduit"]
    assert hook is not None
    assert hook.hook_class_name == "mailconduit.airflow.hooks.MailconduitHook"
    assert hook.connection_id_attribute_name == "mailconduit_conn_id"
    assert hook.hook_name == "mailconduit (SMTP)"
    widgets = manager.connection_form_widgets
    assert {f"extra__mailconduit__{name}" for name in CONN_FIELDS} <= set(widgets)
    assert widgets["extra__mailconduit__security"].field["schema"]["enum"] == [
        "tls",
        "starttls",
        "none",
    ]
    behaviour = manager.field_behaviours["mailconduit"]
    assert behaviour["hidden_fields"] == ["schema"]
    assert behaviour["relabeling"]["login"] == "Username"


def test_the_smtp_connection_type_stays_the_smtp_providers() -> None:
    from airflow.sdk.providers_manager_runtime import ProvidersManagerTaskRuntime

    hook = ProvidersManagerTaskRuntime().hooks["smtp"]
    assert hook is not None
    assert hook.hook_class_name == "airflow.providers.smtp.hooks.smtp.SmtpHook"
