"""Loose input (text from a form, a flag, a YAML file) read as typed values, and the one
error collector every validation step writes to. Private to :mod:`mailconduit.config`."""

from __future__ import annotations

import enum
import re
from collections.abc import Mapping
from typing import Any

from mailconduit.errors import ConfigError, FieldError

_TRUE = {"1", "true", "yes", "on", "y", "t"}
_FALSE = {"0", "false", "no", "off", "n", "f", ""}
#: More digits than any setting needs; longer numbers are refused before Python reads them
#: (it refuses over 4,300 digits itself, and a float cannot hold one over about 309).
_MAX_DIGITS = 30


def as_bool(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, int) and value in (0, 1):
        return bool(value)
    if isinstance(value, str) and value.strip().lower() in _TRUE | _FALSE:
        return value.strip().lower() in _TRUE
    raise ValueError("must be true or false")


def as_int(value: Any) -> int:
    if isinstance(value, bool):
        raise ValueError("must be a whole number")
    if isinstance(value, int):
        number = value
    elif isinstance(value, float) and value.is_integer():
        number = int(value)
    elif isinstance(value, str) and re.fullmatch(r"\s*[+-]?\d+\s*", value):
        if len(value.strip().lstrip("+-")) > _MAX_DIGITS:
            raise ValueError(f"is too large (more than {_MAX_DIGITS} digits)")
        number = int(value)
    else:
        raise ValueError("must be a whole number")
    if abs(number) >= 10**_MAX_DIGITS:
        raise ValueError(f"is too large (more than {_MAX_DIGITS} digits)")
    return number


def as_float(value: Any) -> float:
    if isinstance(value, bool):
        raise ValueError("must be a number")
    if isinstance(value, str) and len(value) > 400:
        raise ValueError("must be a number (this text is too long for one)")
    try:
        result = float(value)
    except (TypeError, ValueError):
        raise ValueError("must be a number") from None
    except OverflowError:  # an int beyond any float
        raise ValueError("must be a finite number") from None
    if result != result or result in (float("inf"), float("-inf")):
        raise ValueError("must be a finite number")
    return result


def as_enum(kind: type[enum.Enum], value: Any, aliases: Mapping[str, str] | None = None) -> Any:
    """The member of ``kind`` a user means (any case, ``_`` for ``-``, or one of ``aliases``)."""
    if isinstance(value, kind):
        return value
    text = str(value).strip().lower().replace("_", "-")
    if aliases:
        text = aliases.get(text, text)
    for member in kind:
        if member.value == text:
            return member
    choices = ", ".join(m.value for m in kind)
    raise ValueError(f"{value!r} is not one of: {choices}")


class FieldErrors:
    """Every wrong field found by the validation steps, in the order found; raised at once."""

    __slots__ = ("errors",)

    def __init__(self) -> None:
        self.errors: list[FieldError] = []

    def __call__(self, name: str, message: str) -> None:
        self.errors.append(FieldError(name, message))

    def __bool__(self) -> bool:
        return bool(self.errors)

    def names(self, name: str) -> bool:
        """True when a field already has an error (a second rule need not repeat it)."""
        return any(e.field == name for e in self.errors)

    def raise_for(self, what: str) -> None:
        """Raise one :class:`ConfigError` naming every field, duplicates dropped."""
        if self.errors:
            raise ConfigError.for_fields(what, _dedupe(self.errors))


def _dedupe(errors: list[FieldError]) -> list[FieldError]:
    seen: set[tuple[str, str]] = set()
    out = []
    for e in errors:
        if (e.field, e.message) not in seen:
            seen.add((e.field, e.message))
            out.append(e)
    return out
