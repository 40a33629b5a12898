"""Jinja's sandbox as mailconduit uses it, with limits on operations that allocate huge strings.

Imported only when a template needs Jinja (anything beyond plain ``{{ name }}`` or
``{{ row["name"] }}`` substitutions): loading Jinja is a tenth of the export command's
start-up.
"""

from __future__ import annotations

import copy
import re
import string
from collections.abc import Callable, Mapping
from typing import Any

from jinja2 import StrictUndefined, nodes, pass_context
from jinja2.compiler import CodeGenerator, Frame
from jinja2.exceptions import SecurityError
from jinja2.runtime import Context
from jinja2.sandbox import SandboxedEnvironment

__all__ = ["Sandbox"]

_HUGE_FORMAT_WIDTH_RE = re.compile(r"%[-+ #0]*(\d{6,}|\*)|\{[^{}]*?[:.][^{}]*?\d{6,}")
_PADDING_METHODS = frozenset({"center", "ljust", "rjust", "zfill"})


def _finalize(value: Any) -> Any:
    """None renders as an empty string, everything else as Jinja would."""
    return "" if value is None else value


#: Loop steps one rendering of one field may take: far beyond a table of every row and column
#: of a large group, far below nested ``range`` loops that would hold a worker for hours
#: without writing a character (which the size caps cannot see).
MAX_LOOP_STEPS = 1_000_000
#: The global every loop body calls first (see :class:`_CountingCodeGenerator`).
_STEP = "__mailconduit_loop_step"


@pass_context
def _loop_step(context: Context) -> str:
    """Count one step of a loop in this rendering (its EvalContext is made per rendering)."""
    state = context.eval_ctx
    steps = getattr(state, "mailconduit_steps", 0) + 1
    if steps > MAX_LOOP_STEPS:
        raise SecurityError(f"the loops ran more than {MAX_LOOP_STEPS:,} steps")
    state.mailconduit_steps = steps  # type: ignore[attr-defined]
    return ""


class _CountingCodeGenerator(CodeGenerator):
    """Compiles every ``{% for %}`` with a call to the step counter at the top of its body."""

    def visit_For(self, node: nodes.For, frame: Frame) -> None:
        step = nodes.ExprStmt(nodes.Call(nodes.Name(_STEP, "load"), [], [], None, None))
        counted = copy.copy(node)  # the parsed tree stays as written (its names are read)
        counted.body = [step, *node.body]
        super().visit_For(counted, frame)


class Sandbox(SandboxedEnvironment):
    """Jinja's sandbox, plus limits on operations that can allocate huge strings at once.

    Intercepting ``*``, ``**`` and ``%`` also stops Jinja from folding them at compile time.
    """

    intercepted_binops = frozenset({"*", "**", "%"})
    code_generator_class = _CountingCodeGenerator

    def __init__(self, *, max_chars: int, **options: Any) -> None:
        super().__init__(undefined=StrictUndefined, finalize=_finalize, **options)
        self.max_chars = max_chars
        del self.globals["lipsum"]
        self.globals[_STEP] = _loop_step
        for name in ("center", "indent", "wordwrap"):
            self.filters[name] = self._guarded_filter(self.filters[name])
        self.filters["format"] = self._guarded_format(self.filters["format"])
        self.filters["replace"] = self._guarded_replace(self.filters["replace"])

    def _too_large(self, what: str) -> SecurityError:
        return SecurityError(f"{what} would produce more than {self.max_chars} characters")

    def call_binop(self, context: Context, operator: str, left: Any, right: Any) -> Any:
        if operator == "*":
            for seq, count in ((left, right), (right, left)):
                if (
                    isinstance(seq, str | bytes | list | tuple)
                    and isinstance(count, int)
                    and len(seq) * count > self.max_chars
                ):
                    raise self._too_large("repeating a value")
        elif operator == "**":
            if (
                isinstance(right, int)
                and right > 10_000
                and isinstance(left, int)
                and abs(left) > 1
            ):
                raise SecurityError("exponent too large")
        elif operator == "%" and isinstance(left, str) and _HUGE_FORMAT_WIDTH_RE.search(left):
            raise self._too_large("a format width")
        return super().call_binop(context, operator, left, right)

    def call(self, context: Context, obj: Any, /, *args: Any, **kwargs: Any) -> Any:
        owner = getattr(obj, "__self__", None)
        if isinstance(owner, str):
            name = getattr(obj, "__name__", "")
            numbers = [a for a in (*args, *kwargs.values()) if isinstance(a, int)]
            if name in _PADDING_METHODS and any(n > self.max_chars for n in numbers):
                raise self._too_large(f"str.{name}")
            if name == "expandtabs" and numbers and owner.count("\t") * numbers[0] > self.max_chars:
                raise self._too_large("str.expandtabs")
            if name == "replace" and len(args) >= 2:
                self._check_replace(owner, args[0], args[1])
            if name in ("format", "format_map") and _HUGE_FORMAT_WIDTH_RE.search(owner):
                raise self._too_large("a format width")
        return super().call(context, obj, *args, **kwargs)

    def wrap_str_format(self, value: Any) -> Callable[..., str] | None:
        """``str.format``/``format_map`` reached as an attribute (Jinja wraps it there, so
        :meth:`call` never sees the string): refuse a huge width written in the format, and
        one given as an argument to a nested ``{:>{}}`` field."""
        wrapped = super().wrap_str_format(value)
        if wrapped is None:
            return None
        text = value.__self__
        if _HUGE_FORMAT_WIDTH_RE.search(text):
            raise self._too_large("a format width")
        try:
            nested = any("{" in (spec or "") for _, _, spec, _ in string.Formatter().parse(text))
        except ValueError:
            return wrapped  # a malformed format: the call itself reports it
        if not nested:
            return wrapped

        def guarded(*args: Any, **kwargs: Any) -> str:
            given = [*args, *kwargs.values()]
            if value.__name__ == "format_map" and args and isinstance(args[0], Mapping):
                given = list(args[0].values())
            if any(isinstance(v, int) and abs(v) > self.max_chars for v in given):
                raise self._too_large("a format width")
            return wrapped(*args, **kwargs)

        return guarded

    def _check_replace(self, text: Any, old: Any, new: Any) -> None:
        if isinstance(text, str) and isinstance(old, str) and isinstance(new, str):
            hits = len(text) + 1 if not old else text.count(old)
            if len(text) + hits * len(new) > self.max_chars:
                raise self._too_large("replace")

    def _guarded_filter(self, original: Callable[..., Any]) -> Callable[..., Any]:
        def guarded(*args: Any, **kwargs: Any) -> Any:
            for value in (*args[1:], *kwargs.values()):
                if (
                    isinstance(value, int)
                    and not isinstance(value, bool)
                    and value > self.max_chars
                ):
                    raise self._too_large("a filter width")
            return original(*args, **kwargs)

        guarded.__dict__.update(getattr(original, "__dict__", {}))
        return guarded

    def _guarded_format(self, original: Callable[..., Any]) -> Callable[..., Any]:
        def guarded(value: Any, *args: Any, **kwargs: Any) -> Any:
            if isinstance(value, str) and _HUGE_FORMAT_WIDTH_RE.search(value):
                raise self._too_large("a format width")
            return original(value, *args, **kwargs)

        return guarded

    def _guarded_replace(self, original: Callable[..., Any]) -> Callable[..., Any]:
        def guarded(eval_ctx: Any, value: Any, old: Any, new: Any, count: Any = None) -> Any:
            self._check_replace(str(value), str(old), str(new))
            return original(eval_ctx, value, old, new, count)

        guarded.__dict__.update(getattr(original, "__dict__", {}))
        return guarded
