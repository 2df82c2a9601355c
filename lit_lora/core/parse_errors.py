"""Turn jsonargparse's nested error report into one line that names the key and what is allowed."""

from __future__ import annotations

import re

_PARSER_KEY = re.compile(r'^(\s*)(?:error: )?Parser key "([^"]+)":')
_UNKNOWN = re.compile(r"^(\s*)(?:- )?Option '([^']+)' is not accepted")
_EXPECTED = re.compile(r"^(\s*)(?:- )?Expected a (.+?)\. Got value: (.*)$")
_LITERAL = re.compile(r"typing\.Literal\[(.*)\]")
_CLASS = re.compile(r"<class '([\w.]+)'>")
_UNRECOGNISED = re.compile(r"unrecognized arguments: (.*)")
_CLASS_PATH = re.compile(r"^(\s*)(?:- )?Problem with given class_path '([^']+)':")
_NOT_IMPORTED = re.compile(r"has no attribute|No module named")
_SUBTYPES = re.compile(r"^\s*Subtypes: \[(.*)\]$")
_GIVEN = re.compile(r"^(\s*)Given value: (.*)$")
_ABSTRACT = re.compile(r"^(\s*)(?:- )?Expected an instantiatable class, but ([\w.]+) is abstract")
_MEMBER = re.compile(r"typing\.Literal\[(.*)\]|<class '([\w.]+)'>|(.+)")  # choices, class, generic


def condense(message: str) -> str:
    """The first concrete problem in ``message``, prefixed with its dotted key path."""
    stack: list[tuple[int, str]] = []
    class_path: tuple[int, str] | None = None  # a class_path whose reason is on the next line
    subtypes = ""  # of the union being reported: its value comes a few lines on
    for line in message.splitlines():
        if class_path is not None and _NOT_IMPORTED.search(line):
            path = _path(stack, class_path[0])
            return f"{path}: class_path {class_path[1]!r} cannot be imported ({line.strip()})"
        class_path = None
        if match := _CLASS_PATH.match(line):
            class_path = (len(match.group(1)), match.group(2))
            continue
        if match := _PARSER_KEY.match(line):
            indent = len(match.group(1))
            stack = [(i, k) for i, k in stack if i < indent] + [(indent, match.group(2))]
            continue
        if (match := _UNKNOWN.match(line)) is not None:
            path = _path(stack, len(match.group(1)), match.group(2))
            return f"{path}: unknown key (see --help for the keys allowed here)"
        if (match := _EXPECTED.match(line)) is not None and "NoneType" not in match.group(2):
            path = _path(stack, len(match.group(1)))
            return f"{path}: got {match.group(3)!r}, expected {_allowed(match.group(2))}"
        if (match := _UNRECOGNISED.search(line)) is not None:
            return f"unknown argument {match.group(1)} (see --help)"
        if match := _ABSTRACT.match(line):  # a field of a class-typed setting given before its class
            path, abstract = _path(stack, len(match.group(1))), match.group(2)
            return f"{path}: give its class first (--{path} CLASS), then its fields; {abstract} is abstract"
        if match := _SUBTYPES.match(line):
            subtypes = match.group(1)
        # A union field (int | None, bool | Literal['auto']): its key, the value, what each member takes.
        # Not a whole section (model, data): its value is the nested arguments, and their error comes first.
        if (match := _GIVEN.match(line)) and subtypes and not match.group(2).startswith("NestedArg("):
            path = _path(stack, len(match.group(1)))
            return f"{path}: got {match.group(2)!r}, expected {_union_allowed(subtypes)}"
    first = next((line.strip() for line in message.splitlines() if line.strip()), message)
    return first.removeprefix("error: ")


def _path(stack: list[tuple[int, str]], indent: int, leaf: str | None = None) -> str:
    keys = [key for i, key in stack if i < indent]
    return ".".join([*keys, leaf] if leaf else keys)


def _allowed(expected: str) -> str:
    if literal := _LITERAL.search(expected):
        return "one of " + literal.group(1)
    if cls := _CLASS.search(expected):
        return f"a value of type {cls.group(1)}"
    return expected


def _union_allowed(subtypes: str) -> str:
    """ "[<class 'bool'>, typing.Literal['auto']]" as "true, false or 'auto'"."""
    types: list[str] = []
    values: list[str] = []
    for member in _members(subtypes):
        literal, cls, generic = _MEMBER.fullmatch(member).groups()  # type: ignore[union-attr]
        if literal is not None:
            values += _members(literal)
        elif cls in ("bool", "NoneType"):
            values += ["true", "false"] if cls == "bool" else ["null"]
        else:
            types.append(cls or generic)  # list[str] as written
    allowed = ([f"a value of type {' or '.join(types)}"] if types else []) + values
    return allowed[0] if len(allowed) == 1 else f"{', '.join(allowed[:-1])} or {allowed[-1]}"


def _members(listing: str) -> list[str]:
    """The comma-separated items of ``listing`` outside brackets: 'list[str], int' is two."""
    items, depth, start = [], 0, 0
    for i, char in enumerate(listing):
        if char in "[(":
            depth += 1
        elif char in "])":
            depth -= 1
        elif char == "," and depth == 0:
            items.append(listing[start:i].strip())
            start = i + 1
    return [*items, listing[start:].strip()]
