"""The bounded Jinja2 sandbox: every template the app renders from text people wrote (prompt
templates, judge prompts, rewrite prompts) compiles and renders here. Plain module, no Django.

Jinja's sandbox stops a template from reaching Python's internals, but not from running for
ever or filling memory: three nested ``range(10000)`` loops, ``'x' * 30000000``, or a macro that
calls itself. This environment bounds each render:

- ``range`` gives at most ``Limits.max_range`` items;
- every loop turn, call, filter and intercepted operator is a *step*: a render stops after
  ``max_steps`` of them or ``max_seconds`` of time (checked at each step: no signals, so it
  works in any thread);
- the output stops at ``max_output`` characters, and so does any one value a template makes:
  ``*``, ``+``, ``%``, ``**``, ``~``, ``str.format`` / ``center`` / ``join`` / ``replace`` and
  the filters that can grow text (``center``, ``indent``, ``wordwrap``, ``join``, ``batch``...)
  are checked before they build what they would build;
- a template calling itself too deeply stops with Python's ``RecursionError``.

Whatever goes wrong in a render or a compile (a limit, ``{{ 1/0 }}``, an undefined name, a
refused attribute) comes out as one ``TemplateRenderError`` (a ``jinja2.TemplateError``) whose
message starts with the template line: ``line 3: division by zero``.
"""

from __future__ import annotations

import contextvars
import functools
import re
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

from jinja2 import nodes
from jinja2.compiler import CodeGenerator
from jinja2.environment import Template
from jinja2.exceptions import SecurityError, TemplateError, TemplateSyntaxError
from jinja2.sandbox import ImmutableSandboxedEnvironment

RANGE_TOO_LONG = "range() of more than {limit} items"
OUTPUT_TOO_LONG = "the output is longer than {limit} characters"
VALUE_TOO_LONG = "a value longer than {limit} characters (or items) would be made"
NUMBER_TOO_LARGE = "a number larger than {limit} bits would be made"
TOO_MANY_STEPS = "rendering took more than {limit} steps (loop turns, calls and operations)"
TOO_SLOW = "rendering took more than {seconds:g} seconds"
TOO_DEEP = "the template calls itself too deeply (a macro that never stops calling itself?)"
NO_MEMORY = "the template ran out of memory"
SOURCE_TOO_LONG = "the template source is longer than {limit} characters"
NESTED_TOO_DEEP = "the template is nested too deeply to compile"
AT_LINE = "line {line}: {problem}"
_DETAIL = 300  # longest problem text kept from an exception (a run's error stays short)


@dataclass(frozen=True)
class Limits:
    max_range: int = 10_000
    max_output: int = 1_000_000
    max_steps: int = 1_000_000
    max_seconds: float = 2.0
    max_number_bits: int = 100_000
    max_source: int = 1_000_000


class TemplateLimitExceeded(SecurityError):
    """A render went past one of its ``Limits``."""


class TemplateRenderError(TemplateError):
    """A template that failed to compile or render: ``problem`` and the template ``line``."""

    def __init__(self, problem: str, line: int | None = None):
        self.problem, self.line = problem, line
        super().__init__(problem if line is None else AT_LINE.format(line=line, problem=problem))


# --- the budget of one render ------------------------------------------------------------------


class _Budget:
    def __init__(self, limits: Limits):
        self.limits = limits
        self.steps = 0
        self.deadline = time.monotonic() + limits.max_seconds

    def step(self) -> None:
        self.steps += 1
        if self.steps > self.limits.max_steps:
            raise TemplateLimitExceeded(TOO_MANY_STEPS.format(limit=self.limits.max_steps))
        if time.monotonic() > self.deadline:
            raise TemplateLimitExceeded(TOO_SLOW.format(seconds=self.limits.max_seconds))


# The render in progress on this thread (None outside ``BoundedTemplate.render``: compiling, say).
_CURRENT: contextvars.ContextVar[_Budget | None] = contextvars.ContextVar(
    "template_budget", default=None
)


def _step() -> None:
    budget = _CURRENT.get()
    if budget is not None:
        budget.step()


# --- size checks -------------------------------------------------------------------------------

_SIZED = (str, bytes, list, tuple, dict, set, frozenset)
# A printf conversion (``%-10.3s``, ``%(name)*d``) and a str.format field (``{0:>{w}}``).
_PRINTF = re.compile(r"%(?:\([^)]*\))?[-#0 +]*(\*|\d+)?(?:\.(\*|\d+))?")
_FORMAT_FIELD = re.compile(r"\{[^{}]*(?:\{[^{}]*\}[^{}]*)*\}")


def _too_long(limits: Limits, size: int) -> None:
    if size > limits.max_output:
        raise TemplateLimitExceeded(VALUE_TOO_LONG.format(limit=limits.max_output))


def _bounded(limits: Limits, value: Any) -> Any:
    if isinstance(value, _SIZED):
        _too_long(limits, len(value))
    return value


def _as_int(value: Any, default: int = 0) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else default


def _numbers(values: Iterable[Any]) -> list[int]:
    return [abs(v) for v in values if isinstance(v, int) and not isinstance(v, bool)]


def _check_printf(limits: Limits, text: str, args: Any) -> None:
    """``text % args`` must not ask for a width or precision past the output limit."""
    starred = False
    for match in _PRINTF.finditer(text):
        for part in match.groups():
            if part == "*":
                starred = True
            elif part is not None:
                _too_long(limits, int(part))
    if starred:
        values = args if isinstance(args, tuple) else (args,)
        for number in _numbers(values):
            _too_long(limits, number)


def _check_format(limits: Limits, text: str, args: tuple, kwargs: dict) -> None:
    """``text.format(...)``: widths written in a field, or given as arguments, are bounded."""
    for field in _FORMAT_FIELD.findall(text):
        spec = field.partition(":")[2]
        for digits in re.findall(r"\d+", spec):
            _too_long(limits, int(digits))
    for number in _numbers([*args, *kwargs.values()]):
        _too_long(limits, number)


def _replace_size(text: str, old: Any, new: Any, count: Any = -1) -> int:
    if not isinstance(old, str) or not isinstance(new, str):
        return len(text)
    times = len(text) + 1 if old == "" else text.count(old)
    count = _as_int(count, -1)
    if count >= 0:
        times = min(times, count)
    return len(text) + times * len(new)


def _joined_size(separator: str, items: list) -> int:
    return sum(len(str(item)) for item in items) + len(separator) * max(len(items) - 1, 0)


# --- str methods and filters that can grow a value past what they are given ---------------------


def _str_method(limits: Limits, method: Any, args: tuple, kwargs: dict) -> tuple:
    """Check a call of a str method before it runs; returns the arguments to call it with (a
    generator handed to ``join`` is read into a list first, so that it can be measured)."""
    target = getattr(method, "__wrapped__", method)  # the sandbox wraps str.format
    text = getattr(target, "__self__", None)
    if not isinstance(text, str):
        return args
    name = getattr(target, "__name__", "")
    if name in ("center", "ljust", "rjust", "zfill") and args:
        _too_long(limits, _as_int(args[0]))
    elif name == "expandtabs":
        tabsize = _as_int(args[0] if args else kwargs.get("tabsize", 8), 8)
        _too_long(limits, len(text) + text.count("\t") * tabsize)
    elif name == "replace" and len(args) >= 2:
        _too_long(limits, _replace_size(text, *args[:3]))
    elif name == "join" and args:
        items = list(args[0])
        _too_long(limits, _joined_size(text, items))
        return (items, *args[1:])
    elif name in ("format", "format_map"):
        values = args[0] if name == "format_map" and args and isinstance(args[0], dict) else {}
        _check_format(limits, text, args if name == "format" else (), {**kwargs, **values})
    return args


def _filter_check(limits: Limits, name: str, args: tuple, kwargs: dict) -> tuple:
    """Check a filter's arguments (the value first) before it runs; returns the arguments to
    call it with (an iterable value read into a list when it has to be measured)."""
    if not args:
        return args
    value, rest = args[0], args[1:]

    def arg(index: int, key: str, default: Any = None) -> Any:
        return rest[index] if len(rest) > index else kwargs.get(key, default)

    if name == "center":
        _too_long(limits, _as_int(arg(0, "width", 80)))
    elif name == "indent":
        width = arg(0, "width", 4)
        text = str(value)
        step = len(width) if isinstance(width, str) else _as_int(width)
        _too_long(limits, len(text) + (text.count("\n") + 1) * step)
    elif name == "wordwrap":
        text = str(value)
        wrap = arg(3, "wrapstring") or "\n"
        width = max(_as_int(arg(0, "width", 79), 79), 1)
        lines = len(text) // width + text.count("\n") + 1
        _too_long(limits, len(text) + lines * len(str(wrap)))
    elif name == "replace":
        _too_long(limits, _replace_size(str(value), arg(0, "old"), arg(1, "new"), arg(2, "count")))
    elif name == "join":
        items = list(value)
        if arg(1, "attribute") is None:
            _too_long(limits, _joined_size(str(arg(0, "d", "")), items))
        return (items, *rest)
    elif name in ("batch", "slice"):
        count = _as_int(arg(0, "linecount" if name == "batch" else "slices"))
        if count > limits.max_range:
            raise TemplateLimitExceeded(RANGE_TOO_LONG.format(limit=limits.max_range))
    elif name == "format" and isinstance(value, str):
        _check_printf(limits, value, rest or tuple(kwargs.values()))
    elif name == "sum":
        start = arg(1, "start", 0)
        if isinstance(start, _SIZED):
            items = list(value)
            sizes = [len(item) for item in items if isinstance(item, _SIZED)]
            _too_long(limits, len(start) + sum(sizes))
            return (items, *rest)
    elif name == "tojson":
        _too_long(limits, _as_int(arg(0, "indent")) * 1000)  # an indent is a few spaces
    return args


def _guarded_filter(limits: Limits, name: str, function: Any) -> Any:
    # A filter given the environment or context first (jinja's pass_* decorators) keeps the
    # decorator's mark: functools.wraps copies the function's attributes.
    skip = 1 if getattr(function, "jinja_pass_arg", None) is not None else 0

    @functools.wraps(function)
    def guarded(*args: Any, **kwargs: Any) -> Any:
        _step()
        args = (*args[:skip], *_filter_check(limits, name, args[skip:], kwargs))
        return _bounded(limits, function(*args, **kwargs))

    return guarded


# --- the compiled code: every loop turn is a step, every ``~`` is measured ---------------------


class _GuardedCodeGenerator(CodeGenerator):
    def visit_Template(self, node: nodes.Template, frame: Any = None) -> None:
        # Each loop reads its iterable through environment.loop_guard. Done before the parent
        # tracks the symbols, so the new call compiles like any other.
        for loop in node.find_all(nodes.For):
            guard = nodes.EnvironmentAttribute("loop_guard", lineno=loop.iter.lineno)
            loop.iter = nodes.Call(guard, [loop.iter], [], None, None, lineno=loop.iter.lineno)
        super().visit_Template(node, frame)

    def visit_Concat(self, node: nodes.Concat, frame: Any) -> None:
        self.write("environment.bounded_concat((")
        for piece in node.nodes:
            self.visit(piece, frame)
            self.write(", ")
        self.write("))")


# --- the environment and its templates ---------------------------------------------------------


class BoundedSandbox(ImmutableSandboxedEnvironment):
    """Jinja's immutable sandbox with ``Limits`` on every render (see the module docstring)."""

    intercepted_binops = frozenset({"+", "*", "%", "**"})
    code_generator_class = _GuardedCodeGenerator

    def __init__(self, *, limits: Limits | None = None, **options: Any) -> None:
        if options.get("autoescape"):
            # visit_Concat and bounded_join build plain str: prompts are text, never HTML.
            raise ValueError("BoundedSandbox renders text: autoescape must be off")
        super().__init__(**options)
        self.limits = limits or Limits()
        self.template_class = BoundedTemplate
        # The compiled code joins every block's text (a macro's, a ``{% set %}`` or
        # ``{% filter %}`` block's) with ``environment.concat``: measured too.
        self.concat = self.bounded_join  # type: ignore[method-assign]
        self.globals["range"] = self.bounded_range
        self.globals.pop("lipsum", None)  # lipsum(n=10**7): nothing a prompt needs
        self.filters = {
            name: _guarded_filter(self.limits, name, function)
            for name, function in self.filters.items()
        }

    def bounded_range(self, *args: int) -> range:
        _step()
        numbers = range(*args)
        try:
            count = len(numbers)
        except OverflowError:
            count = self.limits.max_range + 1
        if count > self.limits.max_range:
            raise TemplateLimitExceeded(RANGE_TOO_LONG.format(limit=self.limits.max_range))
        return numbers

    def loop_guard(self, iterable: Iterable[Any]) -> Iterator[Any]:
        for item in iterable:
            _step()
            yield item

    def bounded_join(self, pieces: Iterable[Any]) -> str:
        texts = list(pieces)
        _too_long(self.limits, sum(map(len, texts)))
        return "".join(texts)

    def bounded_concat(self, pieces: tuple) -> str:
        texts = [str(piece) for piece in pieces]
        _too_long(self.limits, sum(map(len, texts)))
        return "".join(texts)

    def call(self, context: Any, obj: Any, /, *args: Any, **kwargs: Any) -> Any:
        _step()
        args = _str_method(self.limits, obj, args, kwargs)
        return _bounded(self.limits, super().call(context, obj, *args, **kwargs))

    def call_binop(self, context: Any, operator: str, left: Any, right: Any) -> Any:
        _step()
        limits = self.limits
        if operator == "*":
            for seq, times in ((left, right), (right, left)):
                if isinstance(seq, _SIZED) and isinstance(times, int):
                    _too_long(limits, len(seq) * max(times, 0))
            if _numbers([left]) and _numbers([right]):
                _bits(limits, left.bit_length() + right.bit_length())
        elif operator == "**" and _numbers([left]) and _numbers([right]):
            if abs(left) > 1 and right > 0:
                _bits(limits, left.bit_length() * right)
        elif operator == "+" and isinstance(left, _SIZED) and isinstance(right, _SIZED):
            _too_long(limits, len(left) + len(right))
        elif operator == "%" and isinstance(left, str):
            _check_printf(limits, left, right)
        return _bounded(limits, super().call_binop(context, operator, left, right))


def _bits(limits: Limits, bits: int) -> None:
    if bits > limits.max_number_bits:
        raise TemplateLimitExceeded(NUMBER_TOO_LARGE.format(limit=limits.max_number_bits))


class BoundedTemplate(Template):
    """A template of a ``BoundedSandbox``: ``render`` is bounded by the environment's limits and
    raises ``TemplateRenderError`` (with the template line) whatever went wrong."""

    def render(self, *args: Any, **kwargs: Any) -> str:
        limits: Limits = self.environment.limits
        token = _CURRENT.set(_Budget(limits))
        try:
            context = self.new_context(dict(*args, **kwargs))
            parts, size = [], 0
            chunks = self.root_render_func(context)
            for chunk in chunks:
                size += len(chunk)
                if size > limits.max_output:
                    # The render stopped at a yield: its frame is on the line that wrote this.
                    frame = chunks.gi_frame
                    line = frame and self.get_corresponding_lineno(frame.f_lineno)
                    problem = OUTPUT_TOO_LONG.format(limit=limits.max_output)
                    raise TemplateRenderError(problem, line)
                _step()
                parts.append(chunk)
            return "".join(parts)
        except Exception as exc:  # RecursionError and MemoryError are Exceptions too
            raise render_error(exc) from None
        finally:
            _CURRENT.reset(token)

    def generate(self, *args: Any, **kwargs: Any) -> Iterator[str]:
        yield self.render(*args, **kwargs)


def compile_template(environment: BoundedSandbox, source: str) -> BoundedTemplate:
    """``source`` compiled in ``environment``; TemplateRenderError (with its line when it has
    one) for a syntax error, a source too long, or one nested too deeply for Python."""
    limit = environment.limits.max_source
    if len(source) > limit:
        raise TemplateRenderError(SOURCE_TOO_LONG.format(limit=limit))
    try:
        return environment.from_string(source)
    except TemplateSyntaxError as exc:
        raise TemplateRenderError(_short(exc.message or str(exc)), exc.lineno) from None
    except (RecursionError, SyntaxError, MemoryError):
        # The parser recurses per nesting level; Python refuses > 20 nested blocks.
        raise TemplateRenderError(NESTED_TOO_DEEP) from None


def render_error(exc: BaseException) -> TemplateRenderError:
    """The ``TemplateRenderError`` a failed render raises: what went wrong, and the template
    line it went wrong on (the innermost template frame of the traceback)."""
    if isinstance(exc, TemplateRenderError):
        return exc
    if isinstance(exc, RecursionError):
        problem = TOO_DEEP
    elif isinstance(exc, MemoryError):
        problem = NO_MEMORY
    elif isinstance(exc, TemplateError):
        problem = exc.message or type(exc).__name__
    else:
        problem = f"{type(exc).__name__}: {exc}"
    return TemplateRenderError(_short(problem), template_line(exc))


def template_line(exc: BaseException) -> int | None:
    line, tb = None, exc.__traceback__
    while tb is not None:
        template = tb.tb_frame.f_globals.get("__jinja_template__")
        if isinstance(template, Template):
            line = template.get_corresponding_lineno(tb.tb_lineno)
        tb = tb.tb_next
    return line


def _short(text: str) -> str:
    return text if len(text) <= _DETAIL else text[: _DETAIL - 1] + "…"
