"""Micro-benchmark of the per-message shortcuts in delivery/ and journal/: µs per call,
each shortcut side by side with the plain way it replaces.

Run: ``.venv/bin/python bench/delivery_bench.py [--json]``. Each case is timed with
``timeit`` (best of 7 rounds of about 0.2 s), in one process. The comments in the code
quote these figures; the whole-export effect of each is in bench/RESULTS.md.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import timeit
from collections.abc import Callable

from mailconduit.delivery.outcome import Outcome, outcome_of
from mailconduit.journal import RowState, RowStatus
from mailconduit.journal.records import _json_strings
from mailconduit.smtp import DeliveryStatus, Envelope, RecipientResult, RecipientStatus, SendOutcome

#: RowState's fields, in a frozen dataclass: what the plain slotted one is measured against.
FrozenRowState = dataclasses.make_dataclass(
    "FrozenRowState",
    [(f.name, f.type, f) for f in dataclasses.fields(RowState)],
    frozen=True,
    slots=True,
)
ROW = dict(
    row_key="k1",
    seq=1,
    row_number=1,
    state=RowStatus.SENT,
    attempts=1,
    recipients=("jane@example.com",),
    message_id="<a@b>",
    code=250,
    enhanced="2.0.0",
    reply="ok",
)
RECIPIENTS = ("jane.doe@example.com",)
ENVELOPE = Envelope("billing@example.com", RECIPIENTS, b"x\r\n", False, None, True)
SENT = SendOutcome(
    ENVELOPE,
    DeliveryStatus.SENT,
    250,
    "2.0.0",
    "ok",
    (RecipientResult(RECIPIENTS[0], RecipientStatus.ACCEPTED, 250),),
)


def _us(func: Callable[[], object]) -> float:
    """Best µs per call over 7 rounds."""
    timer = timeit.Timer(func)
    number, _ = timer.autorange()
    number = max(number, 1) * 2
    return min(timer.repeat(7, number)) / number * 1e6


CASES: list[tuple[str, Callable[[], object], Callable[[], object]]] = [
    (
        "RowState: slotted, not frozen (vs frozen)",
        lambda: RowState(**ROW),  # type: ignore[arg-type]
        lambda: FrozenRowState(**ROW),
    ),
    (
        "recipients as JSON: one plain address shortcut (vs json.dumps)",
        lambda: _json_strings(RECIPIENTS),
        lambda: json.dumps(list(RECIPIENTS)),
    ),
    (
        "outcome of an all-accepted send: fast path (vs outcome_of)",
        lambda: Outcome(SENT.status, SENT.code, SENT.enhanced, SENT.text),
        lambda: outcome_of(SENT),
    ),
]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--json", action="store_true", help="print the figures as JSON")
    args = ap.parse_args()
    results = {name: (_us(ours), _us(plain)) for name, ours, plain in CASES}
    if args.json:
        json.dump(results, sys.stdout, indent=2)
        print()
        return 0
    print(f"{'case':<66} {'ours µs':>8} {'plain µs':>9}")
    for name, (ours, plain) in results.items():
        print(f"{name:<66} {ours:>8.2f} {plain:>9.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
