"""Run and row state: what was claimed, sent, failed or skipped, durable across crashes.

The package's names are its modules' public ones: the records (states, rows, runs, leases,
the daily usage) and the :class:`Journal` that stores them.
"""

from mailconduit.journal import records, store
from mailconduit.journal.records import *  # noqa: F403
from mailconduit.journal.store import *  # noqa: F403

__all__: list[str] = []
__all__ += records.__all__
__all__ += store.__all__
