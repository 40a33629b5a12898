"""What ``mailconduit export`` loads before its first message: a fresh process exporting
through a connection that needs no OAuth2 token imports neither SQLAlchemy (the connection
store) nor httpx (the token endpoint's client). Start-up is part of every short export's
wall time (bench/RESULTS.md, invoice scenario); an OAuth2 connection still gets both.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from export_support import server_messages, write_csv
from mailconduit.testing import FaultServer

# Runs the CLI in this interpreter, then says which of the heavy modules it imported.
PROBE = """
import json, sys
from mailconduit.cli import main
code = main(sys.argv[1:])
print(json.dumps({"code": code, "loaded": sorted(m for m in ("sqlalchemy", "httpx")
                                                  if m in sys.modules)}))
"""


def _export_in_a_fresh_process(
    home: Path, csv_path: Path, env: dict[str, str]
) -> dict[str, object]:
    args = ["export", str(csv_path), "--connection", "target", "--to", "{{ email }}",
            "--subject", "Hi", "--body", "Hello {{ name }}", "--quiet"]  # fmt: skip
    done = subprocess.run(
        [sys.executable, "-c", PROBE, *args],
        env={**os.environ, "MAILCONDUIT_HOME": str(home), **env},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    result: dict[str, object] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def test_an_export_without_oauth_loads_neither_the_store_nor_httpx(tmp_path: Path) -> None:
    rows = [
        {"name": "Ann", "email": "ann@example.com"},
        {"name": "Bob", "email": "bob@example.com"},
    ]
    data = write_csv(tmp_path / "people.csv", rows)
    with FaultServer() as server:
        url = f"smtp://127.0.0.1:{server.port}?from_address=noreply%40example.com"
        result = _export_in_a_fresh_process(
            tmp_path / "home", data, {"MAILCONDUIT_CONN_TARGET": url}
        )
        received = sorted(r for m in server_messages(server) for r in m.recipients)
    assert result == {"code": 0, "loaded": []}
    assert received == ["ann@example.com", "bob@example.com"]
