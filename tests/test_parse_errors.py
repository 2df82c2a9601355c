"""Every scalar setting a user can mistype on the command line fails in one line naming it.

Each field of every model, data module and adapter method whose type is a number, a flag, a choice or
a union of those (``int | None``, ``bool | Literal['auto']``) gets a value none of its types takes.
"""

from __future__ import annotations

import contextlib
import io
import types
import typing
from typing import Any

import pytest

import lit_lora.data
import lit_lora.models
from lit_lora.cli import build_cli
from lit_lora.core.parse_errors import condense
from lit_lora.methods import METHODS

BAD = "not-a-value"
pytestmark = pytest.mark.filterwarnings("ignore:LightningCLI's args parameter")


def _is_scalar(annotation: Any) -> bool:
    if typing.get_origin(annotation) is typing.Annotated:
        annotation = typing.get_args(annotation)[0]
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        return all(_is_scalar(member) for member in typing.get_args(annotation))
    return annotation in (int, float, bool, type(None)) or typing.get_origin(annotation) is typing.Literal


def _scalar_fields(hints: dict[str, Any]) -> list[str]:
    return sorted(n for n, t in hints.items() if n != "return" and t is not type(None) and _is_scalar(t))


def _cases() -> list[tuple[list[str], str]]:
    """(command-line arguments, the key they set wrong) for every scalar field."""
    found = []
    for name in lit_lora.data.__all__:
        data = getattr(lit_lora.data, name)
        if isinstance(data, type) and issubclass(data, lit_lora.data.TextDataModule):
            hints = typing.get_type_hints(data.__init__, include_extras=True)
            found += [(["--data", name, f"--data.{f}", BAD], f"data.{f}") for f in _scalar_fields(hints)]
    for model in ("CausalLM", "QuestionAnswering", "SequenceClassifier"):
        hints = typing.get_type_hints(getattr(lit_lora.models, model).__init__, include_extras=True)
        found += [(["--model", model, f"--model.{f}", BAD], f"model.{f}") for f in _scalar_fields(hints)]
    for method in METHODS:
        adapter = ["--model.adapter", f"{method.__module__}.{method.__name__}"]
        hints = typing.get_type_hints(method, include_extras=True)
        found += [
            ([*adapter, f"--model.adapter.{f}", BAD], f"model.adapter.{f}") for f in _scalar_fields(hints)
        ]
    return found


CASES = _cases()


def _error_lines(*args: str) -> list[str]:
    stderr = io.StringIO()
    with contextlib.redirect_stderr(stderr), pytest.raises(SystemExit) as exited:
        build_cli(["fit", "--model", "CausalLM", "--data", "GSM8KDataModule", *args, "--print_config"])
    assert exited.value.code == 2
    return stderr.getvalue().strip().splitlines()


def test_a_list_field_names_its_element_type():
    lines = _error_lines("--model.adapter", "LoraSpec", "--model.adapter.target_modules", "{a: 1}")
    expected = """model.adapter.target_modules: got "{'a': 1}", expected a value of type list[str] or null"""
    assert lines == [f"lit_lora: error: {expected}"]


def test_a_field_of_a_class_not_yet_chosen_says_to_choose_it_first():
    lines = _error_lines("--model.adapter.r", "4")
    assert lines == [
        "lit_lora: error: model.adapter: give its class first (--model.adapter CLASS), then its fields; "
        "lit_lora.methods.PeftMethod is abstract"
    ]


def test_every_kind_of_field_is_covered():
    keys = {key for _, key in CASES}
    assert {"data.packing", "data.eval_batch_size", "data.mixing", "model.loss_chunk_size"} <= keys
    assert {"model.adapter.r", "model.adapter.tinit"} <= keys  # int, and AdaLoRA's int | float


@pytest.mark.parametrize(("args", "key"), CASES, ids=[" ".join(args[-4:-1]) for args, _ in CASES])
def test_a_value_none_of_the_fields_types_takes_is_named_in_one_line(args, key):
    lines = _error_lines(*args)
    assert len(lines) == 1 and lines[0].startswith(f"lit_lora: error: {key}: got '{BAD}', expected "), lines


@pytest.mark.parametrize(
    ("subtypes", "allowed"),
    [
        ("[<class 'bool'>, typing.Literal['auto']]", "true, false or 'auto'"),
        ("[<class 'int'>, <class 'NoneType'>]", "a value of type int or null"),
        ("[<class 'int'>, <class 'float'>]", "a value of type int or float"),
        ("[typing.Literal['a', 'b'], <class 'NoneType'>]", "'a', 'b' or null"),
        ("[list[str], <class 'NoneType'>]", "a value of type list[str] or null"),
        ("[dict[str, int], <class 'int'>]", "a value of type dict[str, int] or int"),
    ],
)
def test_a_union_names_what_each_of_its_members_takes(subtypes, allowed):
    report = (
        'Parser key "data":\n'
        "  Does not validate against any of the Union subtypes\n"
        "  Subtypes: [<class 'lit_lora.data.base.TextDataModule'>, <class 'NoneType'>]\n"
        "  Errors:\n"
        "    - Problem with given class_path 'lit_lora.data.GSM8KDataModule':\n"
        '        Parser key "field":\n'
        "          Does not validate against any of the Union subtypes\n"
        f"          Subtypes: {subtypes}\n"
        "          Given value type: <class 'str'>\n"
        "          Given value: x\n"
        "  Given value: NestedArg(key='field', val='x')"
    )
    assert condense(report) == f"data.field: got 'x', expected {allowed}"
