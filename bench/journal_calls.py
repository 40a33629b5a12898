"""Where an export's journal time goes: every public ``Journal`` method timed, one export run.

    MAILCONDUIT_CONN_BENCH=smtp://127.0.0.1:PORT taskset -c 1 .venv/bin/python \
        bench/journal_calls.py bench/data/rows_5000.csv [--concurrency 16]

Runs ``mailconduit export`` in this process (a fresh home under /tmp) against the
``bench`` connection, then prints each method's calls and total milliseconds.
"""

from __future__ import annotations

import collections
import os
import sys
import tempfile
import time
from typing import Any


def main() -> int:
    os.environ["MAILCONDUIT_HOME"] = tempfile.mkdtemp(prefix="journal-calls-")
    from mailconduit.cli import main as cli
    from mailconduit.journal.store import Journal

    calls: collections.Counter[str] = collections.Counter()
    spent: collections.Counter[str] = collections.Counter()
    for name in [n for n in dir(Journal) if not n.startswith("_")]:
        original = getattr(Journal, name)
        if not callable(original):
            continue

        def timed(self: Journal, *args: Any, _original: Any = original, _name: str = name,
                  **kwargs: Any) -> Any:  # fmt: skip
            calls[_name] += 1
            started = time.perf_counter()
            try:
                return _original(self, *args, **kwargs)
            finally:
                spent[_name] += time.perf_counter() - started

        setattr(Journal, name, timed)
    source, *extra = sys.argv[1:] or ["bench/data/rows_5000.csv"]
    started = time.perf_counter()
    status = cli([
        "export", source, "-c", "bench", "--to", "{{email}}", "--from", "billing@example.com",
        "--subject", "Statement for {{name}}", "--body-file", "bench/data/body_template.txt",
        "-q", *extra,
    ])  # fmt: skip
    print(f"export: exit {status}, {time.perf_counter() - started:.3f} s")
    for name, count in sorted(calls.items(), key=lambda item: -spent[item[0]]):
        print(f"  {name:20s} {count:6d} calls {spent[name] * 1000:8.1f} ms")
    return 0


if __name__ == "__main__":
    sys.exit(main())
