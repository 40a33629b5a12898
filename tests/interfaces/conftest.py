"""Fixtures of the interface tests: a data folder interfaces may read, and the embedded
server on a free port."""

from __future__ import annotations

from pathlib import Path

import pytest

from export_support import use_free_sink_port
from mailconduit.interfaces.model import DATA_DIRS_ENV


@pytest.fixture
def data_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A folder under MAILCONDUIT_DATA_DIRS; exports go to the embedded server."""
    folder = tmp_path / "data"
    folder.mkdir()
    monkeypatch.setenv(DATA_DIRS_ENV, str(folder))
    use_free_sink_port(monkeypatch)
    return folder
