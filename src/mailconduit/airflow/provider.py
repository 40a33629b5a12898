"""What Airflow reads through the ``apache_airflow_provider`` entry point to list the
provider: its hooks, operators and the ``mailconduit`` connection type with its form."""

from __future__ import annotations

from typing import Any

from mailconduit.config.connection import AuthMechanism, Security

__all__ = ["CONN_TYPE", "get_provider_info"]

CONN_TYPE = "mailconduit"
_INTEGRATION = "mailconduit"


def _field(label: str, kind: str, **schema: Any) -> dict[str, Any]:
    return {"label": label, "schema": {"type": [kind, "null"], **schema}}


#: The extras the connection form shows; any other connection field goes in Extra (JSON).
CONN_FIELDS: dict[str, dict[str, Any]] = {
    "security": _field(
        "Security", "string", enum=[s.value for s in Security]
    ) | {"description": "tls (implicit, port 465), starttls (required), none; "
                        "empty: by port, 465 tls, else starttls"},
    "from_address": _field("From address", "string"),
    "from_name": _field("From name", "string"),
    "reply_to": _field("Reply-To", "string"),
    "verify_tls": _field("Verify the server's certificate", "boolean", default=True),
    "auth_mechanism": _field("AUTH mechanism", "string", enum=[a.value for a in AuthMechanism]),
    "timeout_ms": _field("Timeout per step (ms)", "integer", default=30000),
    "concurrency": _field("SMTP sessions at once", "integer", default=4),
    "rate_per_second": _field("Messages per second (0: no limit)", "number"),
}  # fmt: skip


def get_provider_info() -> dict[str, Any]:
    """The provider's description in the shape Airflow's providers manager validates."""
    from mailconduit import __version__

    return {
        "package-name": "mailconduit",
        "name": "mailconduit",
        "description": "Rows of data as e-mail through an SMTP server (mail merges, table "
        "reports, per-group summaries), resumed rather than resent when a task is retried.",
        "versions": [__version__],
        "integrations": [{"integration-name": _INTEGRATION, "tags": ["protocol"]}],
        "operators": [
            {"integration-name": _INTEGRATION, "python-modules": ["mailconduit.airflow.operators"]}
        ],
        "hooks": [
            {"integration-name": _INTEGRATION, "python-modules": ["mailconduit.airflow.hooks"]}
        ],
        "connection-types": [
            {
                "connection-type": CONN_TYPE,
                "hook-class-name": "mailconduit.airflow.hooks.MailconduitHook",
                "hook-name": "mailconduit (SMTP)",
                "conn-fields": CONN_FIELDS,
                "ui-field-behaviour": {
                    "hidden-fields": ["schema"],
                    "relabeling": {"host": "SMTP server", "login": "Username"},
                    "placeholders": {"host": "smtp.example.com", "port": "587"},
                },
            }
        ],
    }
