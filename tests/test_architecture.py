"""The layer rule of ARCHITECTURE.md, read from its table and checked on every import in src/:
every package has a row, the rows form no cycle, no import runs against them, and no module
of src/ is part of an import cycle."""

from __future__ import annotations

import ast
import re
from graphlib import CycleError, TopologicalSorter
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SRC = ROOT / "src" / "mailconduit"
#: The package root, as named in the table (``from mailconduit import __version__``).
PACKAGE = "mailconduit"
_ROW = re.compile(r"^\|\s*`(?P<layer>[\w.]+)`\s*\|(?P<allowed>[^|]*)\|")


def read_layer_rule(text: str) -> dict[str, set[str]]:
    """The table under "The layer rule": each package and what it may import."""
    section = text.split("## The layer rule", 1)[1].split("\n## ", 1)[0]
    rule: dict[str, set[str]] = {}
    for line in section.splitlines():
        if match := _ROW.match(line.strip()):
            assert match["layer"] not in rule, f"two rows for {match['layer']}"
            rule[match["layer"]] = set(re.findall(r"`([\w.]+)`", match["allowed"]))
    return rule


ALLOWED = read_layer_rule((ROOT / "ARCHITECTURE.md").read_text(encoding="utf-8"))
FILES = sorted(SRC.rglob("*.py"))


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(SRC.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {_module_name(p): p for p in FILES}


def _layer(module: str) -> str:
    """``mailconduit.web.app`` -> ``web``; the package root is its own layer."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else PACKAGE


def _resolve(name: str) -> str:
    """The module of src/ that importing ``name`` runs (a name inside a module -> that module)."""
    while name not in MODULES and "." in name:
        name = name.rpartition(".")[0]
    return name


def _type_checking_only(tree: ast.AST) -> set[int]:
    """The ids of the nodes under ``if TYPE_CHECKING:`` (imports for annotations only)."""
    hidden: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            hidden.update(id(inner) for stmt in node.body for inner in ast.walk(stmt))
    return hidden


def imported_modules(path: Path, *, at_run_time: bool = False) -> set[str]:
    """Every module of mailconduit that ``path`` imports, wherever the import statement is
    (``at_run_time``: leaving out those under ``if TYPE_CHECKING:``)."""
    module = _module_name(path)
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    tree = ast.parse(path.read_text(encoding="utf-8"))
    hidden = _type_checking_only(tree) if at_run_time else set()
    found: set[str] = set()
    for node in ast.walk(tree):
        if id(node) in hidden:
            continue
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
            found.update(_resolve(n) for n in names if n.split(".")[0] == PACKAGE)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                base = f"{anchor}.{base}" if base else anchor
            if base.split(".")[0] != PACKAGE:
                continue
            for alias in node.names:
                found.add(_resolve(f"{base}.{alias.name}"))
    found.discard(module)
    return found


GRAPH = {name: imported_modules(path) for name, path in MODULES.items()}
RUN_TIME_GRAPH = {name: imported_modules(p, at_run_time=True) for name, p in MODULES.items()}


def test_every_package_has_a_row_and_every_row_a_package() -> None:
    layers = {_layer(m) for m in MODULES}
    assert layers - ALLOWED.keys() == set(), "packages missing from ARCHITECTURE.md's table"
    assert ALLOWED.keys() - layers == set(), "rows of ARCHITECTURE.md naming no package"
    named = set().union(*ALLOWED.values())
    assert named <= ALLOWED.keys(), f"rows naming unknown packages: {sorted(named - ALLOWED.keys())}"


def test_the_layer_rule_has_no_cycle() -> None:
    try:
        order = list(TopologicalSorter(ALLOWED).static_order())
    except CycleError as exc:
        pytest.fail(f"ARCHITECTURE.md's table allows a cycle: {exc.args[1]}")
    assert set(order) == ALLOWED.keys()


#: Imports against the rule that another branch removes; strict, so the mark must go with them.


@pytest.mark.parametrize(
    "module",
    sorted(MODULES),
    ids=str,
)
def test_imports_follow_the_layers(module: str) -> None:
    layer = _layer(module)
    used = {_layer(m) for m in GRAPH[module]} - {layer}
    assert used <= ALLOWED[layer], f"{layer} may not import {sorted(used - ALLOWED[layer])}"


def test_no_module_is_part_of_an_import_cycle() -> None:
    """Imports that run, function-level ones included; one for an annotation only may point
    back (the layer test above still holds it to the layers)."""
    try:
        TopologicalSorter(RUN_TIME_GRAPH).prepare()
    except CycleError as exc:
        pytest.fail(f"import cycle: {' -> '.join(exc.args[1])}")


def test_the_checker_sees_imports_of_every_form() -> None:
    """Relative, function-level, TYPE_CHECKING and ``from package import module`` imports."""
    assert "mailconduit.web.console" in GRAPH["mailconduit.web.app"]
    assert "mailconduit.accounts.users" in GRAPH["mailconduit.cli.users"]
    assert "mailconduit.connections.store" in GRAPH["mailconduit.web.rest"]  # TYPE_CHECKING
    assert "mailconduit.connections.store" not in RUN_TIME_GRAPH["mailconduit.web.rest"]
    assert "mailconduit.sink" in GRAPH["mailconduit.api"]  # inside a function
    assert PACKAGE in GRAPH["mailconduit.cli"]  # from mailconduit import __version__
    with pytest.raises(CycleError):
        TopologicalSorter({"a": {"b"}, "b": {"c"}, "c": {"a"}}).prepare()


def test_only_smtp_speaks_smtp_and_only_the_store_layers_touch_sql() -> None:
    sql_layers = {
        "db", "connections", "accounts", "journal", "interfaces", "sources", "sink", "oauth"
    }  # fmt: skip
    for module, path in MODULES.items():
        text = path.read_text(encoding="utf-8")
        layer = _layer(module)
        if "import aiosmtplib" in text or "import smtplib" in text:
            assert layer == "smtp", path
        if "import sqlite3" in text or "import psycopg" in text or "from sqlalchemy" in text:
            assert layer in sql_layers, path


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


def test_nothing_imports_testing_or_the_airflow_provider_and_only_it_imports_airflow() -> None:
    for module, path in MODULES.items():
        used = {_layer(m) for m in GRAPH[module]}
        if _layer(module) != "testing":
            assert "testing" not in used, f"{path} imports mailconduit.testing"
        if _layer(module) == "airflow":
            continue
        assert "airflow" not in used, f"{path} imports mailconduit.airflow"
        assert not _imports_airflow(path), f"{path} imports Airflow"
    assert any(_imports_airflow(p) for m, p in MODULES.items() if _layer(m) == "airflow")


def test_the_built_in_connection_has_one_name() -> None:
    """Every default and check that means the built-in connection reads home.LOCAL_CONNECTION."""
    import inspect
    from dataclasses import fields

    from mailconduit.cli.export import export
    from mailconduit.config import ExportSpec
    from mailconduit.connections.store import RESERVED_NAMES
    from mailconduit.home import LOCAL_CONNECTION
    from mailconduit.sink import local_connection

    spec_default = next(f.default for f in fields(ExportSpec) if f.name == "connection")
    cli_default = inspect.signature(export).parameters["connection"].default
    assert spec_default == cli_default == LOCAL_CONNECTION
    assert set(RESERVED_NAMES) == {LOCAL_CONNECTION}
    assert local_connection().name == LOCAL_CONNECTION


def _imports_celery(path: Path) -> bool:
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        names = [a.name for a in node.names] if isinstance(node, ast.Import) else []
        if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names = [node.module]
        if any(n.split(".")[0] in ("celery", "kombu") for n in names):
            return True
    return False


def test_only_the_agents_app_imports_celery() -> None:
    importers = [p for p in MODULES.values() if _imports_celery(p)]
    assert importers == [SRC / "agents" / "app.py"], importers
