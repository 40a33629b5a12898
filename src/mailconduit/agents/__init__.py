"""Agents: exports run on Celery workers across machines, with the journal (PostgreSQL)
as the one place that says which rows are sent, which chunk each worker holds, and how
fast the connection may go. See README "Running on several machines".

Nothing here imports Celery until a worker starts or a run is published.
"""

from __future__ import annotations

from mailconduit.agents.coordinator import (
    AgentSummary,
    ChunkProgress,
    chunk_progress,
    is_celery,
    list_agents,
    resume,
    run,
    start,
    stop,
    wait,
)
from mailconduit.agents.settings import AgentSettings

__all__ = [
    "AgentSettings",
    "AgentSummary",
    "ChunkProgress",
    "chunk_progress",
    "is_celery",
    "list_agents",
    "resume",
    "run",
    "start",
    "stop",
    "wait",
]
