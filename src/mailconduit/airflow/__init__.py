"""mailconduit's Apache Airflow provider (the ``airflow`` extra, Airflow 3).

:class:`~mailconduit.airflow.operators.MailconduitExportOperator` sends a query's result,
a file or rows from XCom as e-mail, resuming its run when Airflow retries the task;
:class:`~mailconduit.airflow.hooks.MailconduitHook` turns an Airflow ``smtp`` or
``mailconduit`` connection into a mailconduit one and gives Airflow's "Test" button
mailconduit's Test Connection. Airflow itself is imported only by those two modules.
"""

from __future__ import annotations

from mailconduit.airflow.provider import get_provider_info

__all__ = ["get_provider_info"]
