"""The hook: an Airflow ``smtp`` or ``mailconduit`` connection as a mailconduit connection.

It is read through Airflow's own connection machinery (so secrets backends work) every
time it is used, and never written anywhere: mailconduit gets it for the length of one
call as a ``MAILCONDUIT_CONN_<NAME>`` variable of this process, the way it reads
connections from the environment, and the journal records only its name.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from airflow.sdk import BaseHook

from mailconduit import api
from mailconduit.airflow.mapping import ENV_PREFIX, connection_of, connection_url
from mailconduit.airflow.provider import CONN_TYPE
from mailconduit.config.connection import Connection
from mailconduit.errors import MailconduitError

__all__ = ["MailconduitHook"]


class MailconduitHook(BaseHook):  # type: ignore[misc]  # Airflow has no type stubs here
    """An SMTP server as mailconduit sees it, from an Airflow connection.

    :param mailconduit_conn_id: an Airflow connection of type ``mailconduit`` or ``smtp``
        (host, port, login, password; extras such as from_email, disable_ssl, timeout,
        or any mailconduit connection field).
    """

    conn_name_attr = "mailconduit_conn_id"
    default_conn_name = "mailconduit_default"
    conn_type = CONN_TYPE
    hook_name = "mailconduit (SMTP)"

    def __init__(self, mailconduit_conn_id: str = default_conn_name, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.mailconduit_conn_id = mailconduit_conn_id

    def get_conn(self) -> Connection:
        """The connection, read from Airflow now and validated by mailconduit."""
        conn = self.get_connection(self.mailconduit_conn_id)
        return connection_of(
            self.mailconduit_conn_id,
            conn_type=conn.conn_type or "",
            host=conn.host,
            port=conn.port,
            login=conn.login,
            password=conn.password,
            extra=conn.extra_dejson,
        )

    @contextmanager
    def provided(self) -> Iterator[str]:
        """Make the connection known to mailconduit for the block; yields its name there."""
        conn = self.get_conn()
        var = ENV_PREFIX + conn.name.upper()
        before = os.environ.get(var)
        os.environ[var] = connection_url(conn)
        try:
            yield conn.name
        finally:
            if before is None:
                os.environ.pop(var, None)
            else:
                os.environ[var] = before

    def test_connection(self) -> tuple[bool, str]:
        """mailconduit's Test Connection, stage by stage, for Airflow's "Test" button."""
        try:
            result = api.test_connection(self.get_conn(), record=False)
        except MailconduitError as exc:
            return False, str(exc)
        return result.ok, "\n".join(result.report_lines())
