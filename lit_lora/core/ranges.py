"""Allowed values of every numeric and enumerated config field, declared next to the field, and the one
check that enforces them before anything loads.

A numeric field declares its range in its annotation, ``r: Annotated[int, Range(ge=1)]`` (or one of the
aliases below, ``r: PositiveInt``); an enumerated field is a ``Literal``. jsonargparse reads through
``Annotated``, so ``--help`` and ``--print_config`` are unchanged. :func:`check_config` walks a config
class's fields (a dataclass's fields, or the ``__init__`` parameters of the class and its lit_lora bases)
and the config classes nested in them (``model.adapter``, ``model.quantization``, ``data.sources[i]``),
and raises one :class:`LitLoraError` naming the full key, the value and what is allowed:
``model.adapter.r=0 must be an integer >= 1``. Checks that need several fields stay with their class.
"""

from __future__ import annotations

import dataclasses
import importlib
import inspect
import math
import types
import typing
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Annotated, Any, Literal, Union

from lit_lora.errors import LitLoraError


@dataclass(frozen=True)
class Range:
    """The finite numbers a field allows; each bound is inclusive (ge, le) or exclusive (gt, lt)."""

    ge: float | None = None
    gt: float | None = None
    le: float | None = None
    lt: float | None = None

    def allows(self, value: float) -> bool:
        bounds = [
            (self.ge, lambda b: value >= b),
            (self.gt, lambda b: value > b),
            (self.le, lambda b: value <= b),
            (self.lt, lambda b: value < b),
        ]
        return math.isfinite(value) and all(ok(b) for b, ok in bounds if b is not None)

    def describe(self, integer: bool) -> str:
        kind = "an integer" if integer else "a number"
        low = f"[{self.ge}" if self.ge is not None else f"({self.gt}" if self.gt is not None else None
        high = f"{self.le}]" if self.le is not None else f"{self.lt})" if self.lt is not None else None
        if low and high:
            return f"{kind} in {low}, {high}"
        if low:
            return f"{kind} {'>=' if low[0] == '[' else '>'} {low[1:]}"
        if high:
            return f"{kind} {'<=' if high[-1] == ']' else '<'} {high[:-1]}"
        return kind if integer else "a finite number"


PositiveInt = Annotated[int, Range(ge=1)]
# None inside the Annotated: jsonargparse's --help then still says "int | null", not "Optional[int]".
OptionalPositiveInt = Annotated[int | None, Range(ge=1)]
NonNegativeInt = Annotated[int, Range(ge=0)]
PositiveFloat = Annotated[float, Range(gt=0)]
NonNegativeFloat = Annotated[float, Range(ge=0)]
FiniteFloat = Annotated[float, Range()]
DropoutRate = Annotated[float, Range(ge=0, lt=1)]
Seed = Annotated[int, Range(ge=0, le=2**32 - 1)]  # what numpy, and so Lightning's seed_everything, take


def check_config(target: type | Callable[..., Any], values: Mapping[str, Any], prefix: str) -> None:
    """Check every field of ``target`` that ``values`` holds; keys are ``prefix`` + the field's name."""
    for name, hint in field_hints(target).items():
        if name in values:
            # argparse flags spell a parameter's underscores as dashes (max_attempts: --max-attempts)
            key = name.replace("_", "-") if prefix == "--" else name
            check_value(f"{prefix}{key}", values[name], hint)


def check_init_arguments(obj: object, prefix: str) -> None:
    """Check the arguments of every ``__init__`` on the stack that is building ``obj``.

    Called once by a base class's ``__init__``: the subclasses' own arguments (already bound in their
    frames) are checked too, so a new subclass needs no call of its own.
    """
    arguments: dict[str, Any] = {}
    frame = inspect.currentframe()
    while frame is not None:
        if frame.f_code.co_name == "__init__" and frame.f_locals.get("self") is obj:
            info = inspect.getargvalues(frame)
            # outer frames belong to more specific classes: their values win
            arguments = {**{n: info.locals[n] for n in info.args if n != "self"}, **arguments}
        frame = frame.f_back
    check_config(type(obj), arguments, prefix)


def field_hints(target: type | Callable[..., Any]) -> dict[str, Any]:
    """The annotated fields of a config class (or the parameters of a function), metadata kept."""
    if dataclasses.is_dataclass(target):
        hints = typing.get_type_hints(target, include_extras=True)
        return {f.name: hints[f.name] for f in dataclasses.fields(target)}
    if not isinstance(target, type):
        hints = typing.get_type_hints(target, include_extras=True)
        return {k: v for k, v in hints.items() if k != "return"}
    merged: dict[str, Any] = {}
    for klass in reversed(target.__mro__):  # the most specific declaration wins
        init = klass.__dict__.get("__init__")
        if init is None or not klass.__module__.startswith("lit_lora"):
            continue
        parameters = inspect.signature(init).parameters
        hints = typing.get_type_hints(init, include_extras=True)
        merged.update({n: hints[n] for n, p in parameters.items() if n in hints and _named(p)})
    return merged


def check_value(key: str, value: Any, hint: Any) -> None:
    """Check ``value`` against what ``hint`` declares (ranges, Literals, nested config classes); None
    passes only where the hint allows it."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin is Annotated:
        ranges = [m for m in hint.__metadata__ if isinstance(m, Range)]
        if ranges and (value is None or _is_number(value)) and not (value is None and _fits(None, args[0])):
            _check_range(key, value, ranges[0], _is_integer(args[0]))
        check_value(key, value, args[0])
    elif origin is Literal:
        if value not in args:
            raise LitLoraError(f"{key}={_show(value)} must be one of {', '.join(map(repr, args))}")
    elif origin in (Union, types.UnionType):
        for arg in args:
            if _fits(value, arg):
                check_value(key, value, arg)
                return
    elif origin in (dict, Mapping) and isinstance(value, Mapping):
        for name, item in value.items():
            check_value(f"{key}[{name}]", item, args[1])
    elif origin in (list, tuple, Sequence) and isinstance(value, list | tuple):
        for index, item in enumerate(value):
            check_value(f"{key}[{index}]", item, args[0])
    elif isinstance(hint, type) and hint.__module__.startswith("lit_lora"):
        _check_nested(key, value, hint)


def _check_nested(key: str, value: Any, hint: type) -> None:
    """A config class's value: an instance, or the parsed config (class_path + init_args, or fields)."""
    if isinstance(value, hint):
        fields = field_hints(type(value))
        check_config(type(value), {n: getattr(value, n) for n in fields if hasattr(value, n)}, f"{key}.")
        return
    config = dict(vars(value)) if hasattr(value, "__dict__") else value
    if not isinstance(config, Mapping):
        return
    if "class_path" in config:
        module, _, name = str(config["class_path"]).rpartition(".")
        target = getattr(importlib.import_module(module), name) if module else hint
        config = config.get("init_args") or {}
        config = dict(vars(config)) if hasattr(config, "__dict__") else config
    else:
        target = hint
    check_config(target, config, f"{key}.")


def _check_range(key: str, value: float | None, allowed: Range, integer: bool) -> None:
    if value is None or (integer and not isinstance(value, int)) or not allowed.allows(value):
        raise LitLoraError(f"{key}={_show(value)} must be {allowed.describe(integer)}")


def _fits(value: Any, hint: Any) -> bool:
    """Whether ``value`` is of the union member ``hint`` (the member to check it against)."""
    origin = typing.get_origin(hint)
    if hint is type(None):
        return value is None
    if origin is Annotated:
        return _fits(value, typing.get_args(hint)[0])
    if origin is Literal:
        return isinstance(value, str | int) and not isinstance(value, bool)
    if origin in (Union, types.UnionType):
        return any(_fits(value, arg) for arg in typing.get_args(hint))
    if origin in (dict, Mapping):
        return isinstance(value, Mapping)
    if origin in (list, tuple, Sequence):
        return isinstance(value, list | tuple)
    if hint in (int, float):
        return _is_number(value)
    return isinstance(hint, type) and (isinstance(value, hint) or hint.__module__.startswith("lit_lora"))


def _is_integer(hint: Any) -> bool:
    """Whether a ranged hint takes integers only (``int``, or ``int | None``)."""
    return hint is int or set(typing.get_args(hint)) == {int, type(None)}


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _named(parameter: inspect.Parameter) -> bool:
    return parameter.kind not in (inspect.Parameter.VAR_POSITIONAL, inspect.Parameter.VAR_KEYWORD)


def _show(value: Any) -> str:
    return repr(value) if isinstance(value, str) else str(value)
