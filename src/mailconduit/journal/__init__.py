"""Run and row state: what was claimed, sent, failed or skipped, durable across crashes."""

from mailconduit.journal.store import (
    FINAL_STATES,
    DailyUsage,
    Journal,
    RowState,
    RowStatus,
    RunInfo,
    RunStatus,
)

__all__ = [
    "FINAL_STATES",
    "DailyUsage",
    "Journal",
    "RowState",
    "RowStatus",
    "RunInfo",
    "RunStatus",
]
