"""One export from start to report: check, prepare, then dry-run or deliver.

The public entry points of delivery, each living in the module named after what it does:
:mod:`~mailconduit.delivery.prepare` (the checks before sending),
:mod:`~mailconduit.delivery.jobs` (messages built, split to fit),
:mod:`~mailconduit.delivery.lease` (one sender per run),
:mod:`~mailconduit.delivery.execution` (the run itself),
:mod:`~mailconduit.delivery.resume`, :mod:`~mailconduit.delivery.dryrun` and
:mod:`~mailconduit.delivery.preview`.

Per-row problems (an invalid address, a missing attachment, a control character in a
cell) skip that row and are reported; in table and group mode such a row is left out of
its message, which goes on.
"""

from __future__ import annotations

from mailconduit.delivery.execution import execute
from mailconduit.delivery.jobs import new_run_id
from mailconduit.delivery.lease import LEASE_RENEW_SECONDS, LEASE_SECONDS
from mailconduit.delivery.prepare import Prepared, prepare
from mailconduit.delivery.preview import PreviewMessage, preview, preview_text
from mailconduit.delivery.report import report_from_journal
from mailconduit.delivery.resume import resume, spec_of_run

__all__ = [
    "LEASE_RENEW_SECONDS",
    "LEASE_SECONDS",
    "Prepared",
    "PreviewMessage",
    "execute",
    "new_run_id",
    "prepare",
    "preview",
    "preview_text",
    "report_from_journal",
    "resume",
    "spec_of_run",
]
