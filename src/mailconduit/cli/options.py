"""Options several commands share, each declared once, tables of options a command takes whole,
and the confirmation several commands ask before deleting.

A table (name -> :class:`Param`) lets a group of options be written once and given to
several commands: ``connections create`` and ``edit`` take the same connection fields,
``export`` and ``run`` the same ways of starting a run. :func:`with_options` adds a
table's options to a command's signature and hands the command their values as one dict.
"""

from __future__ import annotations

import functools
import inspect
import sys
from collections.abc import Callable, Mapping
from typing import Annotated, Any, NamedTuple

import typer

__all__ = [
    "RUN_START_OPTIONS",
    "AsJson",
    "LogJson",
    "Param",
    "Quiet",
    "Yes",
    "confirm_unless",
    "option",
    "with_options",
]


class Param(NamedTuple):
    """One option of a table: its ``Annotated`` type (carrying the ``typer.Option``) and default."""

    annotation: Any
    default: Any


def option(kind: Any, *names: str, help: str, default: Any = None, **settings: Any) -> Param:
    """A table entry: ``option(int, help="...")`` is ``--KEY`` (the entry's key, dashed) taking
    an int, None when not given. ``names`` spell a flag (``"--ssl/--no-ssl"``) or another name."""
    value = kind if default is not None else kind | None
    return Param(Annotated[value, typer.Option(*names, help=help, **settings)], default)


AsJson = Annotated[bool, typer.Option("--json", help="Print JSON instead of text.")]
Yes = Annotated[bool, typer.Option("--yes", "-y", help="Do not ask for confirmation.")]
Quiet = Annotated[bool, typer.Option("--quiet", "-q", help="Print nothing but errors.")]
LogJson = Annotated[
    bool, typer.Option("--log-json", help="Progress and events as JSON lines on stderr.")
]

#: How ``export`` and ``run`` start a run and what they print (``--detach`` and ``--queue``
#: matter for connections of implementation type celery).
RUN_START_OPTIONS: dict[str, Param] = {
    "detach": option(
        bool, "--detach", default=False,
        help="Celery connections: print the run id once the run is queued and return; "
        "the agent's workers send it ('runs show' follows it).",
    ),
    "queue": option(
        bool, "--queue", default=False,
        help="Celery connections: queue the run even when its agent has no live worker yet.",
    ),
    "as_json": option(bool, "--json", default=False, help="Print the result as JSON."),
    "quiet": Param(Quiet, False),
    "log_json": Param(LogJson, False),
}  # fmt: skip

Command = Callable[..., None]


def confirm_unless(yes: bool, question: str) -> None:
    """Ask ``question`` at a terminal unless ``--yes`` was given; no answer aborts."""
    if not yes and sys.stdin.isatty():
        typer.confirm(question, abort=True)


def with_options(**tables: Mapping[str, Param]) -> Callable[[Command], Command]:
    """Give a command the options of each table, in place of its parameter of the table's name.

    ``@with_options(fields=TABLE)`` on ``def create(name, *, fields: dict[str, Any])``: the
    command line shows every option of TABLE where ``fields`` stands, and ``create`` receives
    their values as the dict ``fields`` (option name -> value, None where not given).
    """

    def decorate(command: Command) -> Command:
        own = inspect.signature(command, eval_str=True)
        unknown = set(tables) - set(own.parameters)
        if unknown:
            raise TypeError(f"{command.__name__} has no parameter {sorted(unknown)}")
        params: list[inspect.Parameter] = []
        for param in own.parameters.values():
            if param.name not in tables:
                params.append(param)
                continue
            params += [
                inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=p.default,
                                  annotation=p.annotation)
                for name, p in tables[param.name].items()
            ]  # fmt: skip

        @functools.wraps(command)
        def run(*args: Any, **values: Any) -> None:
            grouped = {group: {name: values.pop(name) for name in table}
                       for group, table in tables.items()}  # fmt: skip
            command(*args, **values, **grouped)

        signature = own.replace(parameters=params)
        run.__signature__ = signature  # type: ignore[attr-defined]
        run.__annotations__ = {p.name: p.annotation for p in params}
        run.__annotations__["return"] = None
        return run

    return decorate
