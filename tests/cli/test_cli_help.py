"""Every command and option of the CLI explains itself, and user mistakes give one line."""

from __future__ import annotations

from typing import Any

import pytest
import typer.main

from mailconduit.cli import _register, app


def _walk(command: Any, path: tuple[str, ...] = ()) -> list[tuple[tuple[str, ...], Any]]:
    found = [(path, command)]
    for name, sub in getattr(command, "commands", {}).items():
        found += _walk(sub, (*path, name))
    return found


def test_every_command_and_option_has_help() -> None:
    _register()
    root = typer.main.get_command(app)
    missing = []
    commands = _walk(root)
    assert len(commands) > 20
    for path, command in commands:
        if path and not (command.help or command.short_help):
            missing.append(" ".join(path))
        for param in command.params:
            if param.name == "help":
                continue
            if not getattr(param, "help", None):
                missing.append(f"{' '.join(path)} {param.name}")
    assert missing == []


@pytest.mark.parametrize(
    "args",
    [
        ["no-such-command"],
        ["connections", "create", "x", "--port", "not-a-number"],
        ["connections", "show", "nope"],
        ["export", "missing.csv", "--to", "{{email}}", "--subject", "s", "--body", "b"],
        ["runs", "show", "no-such-run"],
    ],
)
def test_user_mistakes_are_one_line_with_exit_2(cli: Any, args: list[str]) -> None:
    result = cli(*args)
    assert result.code == 2, result.output
    lines = [line for line in result.err.splitlines() if line.strip()]
    assert len(lines) == 1, result.err
    assert lines[0].startswith("mailconduit: ")
    assert "Traceback" not in result.output
