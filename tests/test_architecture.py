"""The dependency direction of ARCHITECTURE.md, checked on every import statement in src/."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parent.parent / "src" / "mailconduit"

#: What each layer may import from mailconduit (besides itself). Lower layers never
#: reach up; siblings of the middle layer do not import each other.
ALLOWED: dict[str, set[str]] = {
    "errors": set(),
    "address": {"errors"},
    "config": {"errors", "address"},
    "home": set(),
    "smtp": {"errors", "config", "home", "address"},
    "message": {"errors", "config", "address"},
    "sources": {"errors", "config", "home"},
    "journal": {"errors", "config", "home"},
    "connections": {"errors", "config", "home", "db"},
    "db": {"errors", "home", "connections", "web"},  # imports table modules so create_all sees them
    "netpolicy": {"errors", "config"},
    "oauth": {"errors", "config"},
    "presets": {"errors", "config"},
    "delivery": {"errors", "config", "home", "smtp", "message", "sources", "journal"},
    # Agents sit beside delivery (they drive its runner on Celery workers), below api.
    "agents": {
        "errors",
        "config",
        "home",
        "smtp",
        "message",
        "sources",
        "journal",
        "connections",
        "delivery",
        "netpolicy",
    },
    "api": {
        "agents",
        "errors",
        "config",
        "home",
        "connections",
        "delivery",
        "journal",
        "smtp",
        "sink",
        "netpolicy",
    },
    # The Airflow provider sits on top, beside cli and web: the public API only.
    "airflow": {"api", "config", "errors", "__version__"},
}


def _layer(path: Path) -> str:
    rel = path.relative_to(SRC)
    return rel.parts[0].removesuffix(".py")


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    found: set[str] = set()
    for node in ast.walk(tree):
        if (
            isinstance(node, ast.ImportFrom)
            and node.module
            and node.module.startswith("mailconduit.")
        ):
            found.add(node.module.split(".")[1])
        elif isinstance(node, ast.ImportFrom) and node.module == "mailconduit":
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.startswith("mailconduit."):
                    found.add(alias.name.split(".")[1])
    return found


FILES = sorted(p for p in SRC.rglob("*.py"))


@pytest.mark.parametrize("path", FILES, ids=lambda p: str(p.relative_to(SRC)))
def test_imports_follow_the_layers(path: Path) -> None:
    layer = _layer(path)
    used = _imports(path) - {layer}
    assert "testing" not in used or layer == "testing", f"{path} imports mailconduit.testing"
    if layer in ALLOWED:
        assert used <= ALLOWED[layer], f"{layer} may not import {sorted(used - ALLOWED[layer])}"


def test_only_smtp_speaks_smtp_and_only_the_store_layers_touch_sql() -> None:
    for path in FILES:
        text = path.read_text(encoding="utf-8")
        layer = _layer(path)
        if "import aiosmtplib" in text or "import smtplib" in text:
            assert layer == "smtp", path
        if "import sqlite3" in text or "import psycopg" in text or "from sqlalchemy" in text:
            assert layer in {"journal", "connections", "db", "sources", "web", "sink", "oauth"}, path


def _imports_airflow(path: Path) -> bool:
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import) and any(
            a.name == "airflow" or a.name.startswith("airflow.") for a in node.names
        ):
            return True
        if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module and (
            node.module == "airflow" or node.module.startswith("airflow.")
        ):
            return True
    return False


def test_nothing_imports_the_airflow_provider_and_only_it_imports_airflow() -> None:
    for path in FILES:
        if _layer(path) == "airflow":
            continue
        assert "airflow" not in _imports(path), f"{path} imports mailconduit.airflow"
        assert not _imports_airflow(path), f"{path} imports Airflow"
    assert any(_imports_airflow(p) for p in FILES if _layer(p) == "airflow")


def _imports_celery(path: Path) -> bool:
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        names = [a.name for a in node.names] if isinstance(node, ast.Import) else []
        if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names = [node.module]
        if any(n.split(".")[0] in ("celery", "kombu") for n in names):
            return True
    return False


def test_only_the_agents_app_imports_celery() -> None:
    importers = [p for p in FILES if _imports_celery(p)]
    assert importers == [SRC / "agents" / "app.py"], importers
