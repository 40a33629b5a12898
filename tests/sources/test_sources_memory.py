"""Sources: streaming a CSV keeps memory constant in the number of rows, and is fast.

Issue 4 §5(c): peak RSS below 150 MB for a 1,000,000-row CSV. Measured in a fresh
subprocess (VmHWM from /proc/self/status) so the test process's own memory is not counted.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

_ITERATE = """
import json, sys, time
from mailconduit.sources import open_source
source = open_source(sys.argv[1], key=sys.argv[2] or None)
start = time.process_time()
rows = 0
for row in source.rows():
    rows += 1
elapsed = time.process_time() - start
status = open("/proc/self/status").read()
peak_kb = int(status.split("VmHWM:")[1].split()[0])
print(json.dumps({"rows": rows, "seconds": elapsed, "peak_mb": peak_kb / 1024, "last": row.key}))
"""


def generate(path: Path, rows: int) -> Path:
    with path.open("w", encoding="utf-8") as out:
        out.write("id,email,first_name,amount,city,note\n")
        for i in range(rows):
            out.write(f'{i},user{i}@example.com,Name{i},{i * 1.5:.2f},City{i % 97},"a, quoted"\n')
    return path


def stream(path: Path, key: str = "") -> dict[str, Any]:
    done = subprocess.run(
        [sys.executable, "-c", _ITERATE, str(path), key],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    result: dict[str, Any] = json.loads(done.stdout)
    return result


@pytest.mark.slow
def test_a_million_row_csv_streams_in_constant_memory(tmp_path: Path) -> None:
    small = stream(generate(tmp_path / "small.csv", 100_000), key="email")
    large = stream(generate(tmp_path / "large.csv", 1_000_000))
    assert small["rows"] == 100_000 and large["rows"] == 1_000_000
    assert small["last"] == "user99999@example.com"
    assert large["peak_mb"] < 150
    assert large["peak_mb"] - small["peak_mb"] < 5, (small, large)
    # Target: well over 200,000 rows per CPU second (Row objects and content-hash keys
    # included); CPU time, not wall time, and a loose bound, so a busy machine passes.
    rate = large["rows"] / large["seconds"]
    print(f"CSV streaming: {rate:,.0f} rows per CPU second, peak RSS {large['peak_mb']:.1f} MB")
    assert rate > 100_000
