"""Agents: exports run on Celery workers across machines, with the journal (PostgreSQL)
as the one place that says which rows are sent, which chunk each worker holds, and how
fast the connection may go. See README "Running on several machines".

Nothing here imports Celery until a worker starts or a run is published.
"""

from __future__ import annotations

from mailconduit.agents import coordinator
from mailconduit.agents.coordinator import *  # noqa: F403
from mailconduit.agents.settings import AgentSettings

__all__ = ["AgentSettings"]
__all__ += coordinator.__all__
