"""Run and row state: what was claimed, sent, failed or skipped, durable across crashes."""

from mailconduit.journal.records import (
    FINAL_STATES,
    DailyUsage,
    Lease,
    RowState,
    RowStatus,
    RunInfo,
    RunStatus,
)
from mailconduit.journal.store import Journal

__all__ = [
    "FINAL_STATES",
    "DailyUsage",
    "Journal",
    "Lease",
    "RowState",
    "RowStatus",
    "RunInfo",
    "RunStatus",
]
