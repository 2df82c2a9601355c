"""Every numeric and enumerated config field declares its allowed values (lit_lora/core/ranges.py), and an
out-of-range value for any of them ends in one line naming the key and the value, before anything loads.

The config classes and their fields are found by walking from the CLI's roots, not listed by hand, and the
bad values are built from the declarations, so a new field or class is covered (or fails here) by itself.
"""

from __future__ import annotations

import contextlib
import importlib
import inspect
import io
import json
import math
import pkgutil
import typing
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Annotated, Any, Literal

import pytest
import yaml

import lit_lora.data
import lit_lora.methods
import lit_lora.models
from lit_lora.cli import build_cli
from lit_lora.core.quantization import Quantization
from lit_lora.core.ranges import Range, check_config, field_hints
from lit_lora.data import ChatSFTDataModule, ChatSource, SST2DataModule, TextDataModule
from lit_lora.errors import LitLoraError
from lit_lora.matrix.command import run_matrix
from lit_lora.matrix.spec import Model, Spec, Task
from lit_lora.merge.command import merge
from lit_lora.methods import PeftMethod
from lit_lora.models.base import PeftModule
from lit_lora.models.classification import SequenceClassifier
from lit_lora.sweep.command import run_sweep, validate_keys
from lit_lora.sweep.spec import Sweep, load_sweep
from tests.helpers import REPO
from tests.helpers.cli import run_cli

for package in (lit_lora.data, lit_lora.methods, lit_lora.models):  # every subclass, registered
    for info in pkgutil.iter_modules(package.__path__):
        importlib.import_module(f"{package.__name__}.{info.name}")

# The own commands' checked entry points and spec classes, with the command line that reaches them.
COMMANDS: dict[Any, list[str]] = {
    merge: ["merge", "a", "b", "--method", "cat", "--weights", "1", "1", "--out", "merged"],
    run_matrix: ["matrix", "spec.yaml", "--out", "matrix"],
    run_sweep: ["sweep", "spec.yaml"],
}
SPEC_CLASSES = (Sweep, Spec, Task, Model)
# Where each kind of config class sits in the fit/validate/test/predict config.
CLI_PLACES: dict[type, str] = {
    PeftModule: "model",
    TextDataModule: "data",
    PeftMethod: "model.adapter",
    Quantization: "model.quantization",
    ChatSource: "data.sources[0]",
}
# Fields the CLI sets from another key (LitLoraCLI.add_arguments_to_parser): set there, named there.
LINK_SOURCES = {"data.seed": "seed_everything"}
GOOD_SOURCE = {"name": "qa", "path": "qa.jsonl", "user": "question", "assistant": "answer"}
NOT_A_CHOICE = "not_a_choice"
# The CLI cases hand their arguments to one parser, as a test does.
pytestmark = pytest.mark.filterwarnings("ignore:LightningCLI's args parameter")


def _subclasses(cls: type) -> list[type]:
    return [c for sub in cls.__subclasses__() for c in (sub, *_subclasses(sub))]


def _lit_lora_types(hint: Any) -> Iterator[type]:
    if isinstance(hint, type) and hint.__module__.startswith("lit_lora"):
        yield hint
    for arg in typing.get_args(hint):
        yield from _lit_lora_types(arg)


def config_classes() -> list[type]:
    """The model and data modules and every config class their fields reach (adapters, quantisation,
    chat sources), subclasses included."""
    found: list[type] = []
    queue = [c for root in (PeftModule, TextDataModule) for c in (root, *_subclasses(root))]
    while queue:
        cls = queue.pop(0)
        if cls in found:
            continue
        found.append(cls)
        for hint in field_hints(cls).values():
            queue += [c for t in _lit_lora_types(hint) for c in (t, *_subclasses(t))]
    return found


CLASSES = config_classes()
EVERYTHING = [*CLASSES, *SPEC_CLASSES, *COMMANDS]


def _name(target: Any) -> str:
    return target if isinstance(target, str) else getattr(target, "__qualname__", str(target))


def _undeclared(hint: Any) -> bool:
    """Whether a number hides in ``hint`` without a Range (an enumeration is declared by its Literal)."""
    origin = typing.get_origin(hint)
    if origin is Annotated and any(isinstance(m, Range) for m in hint.__metadata__):
        return False
    if origin is Literal:
        return False
    if hint in (int, float):
        return True
    return any(_undeclared(arg) for arg in typing.get_args(hint) if not isinstance(arg, list))


def _declared(hint: Any) -> bool:
    origin = typing.get_origin(hint)
    if origin is Literal or (origin is Annotated and any(isinstance(m, Range) for m in hint.__metadata__)):
        return True
    return any(_declared(arg) for arg in typing.get_args(hint) if not isinstance(arg, list))


def out_of_range(hint: Any) -> tuple[Any, str]:
    """A value ``hint`` refuses, and the key suffix that names it ("" or "[query]" or "[0]")."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin is Literal:
        return NOT_A_CHOICE, ""
    if origin is Annotated and (ranges := [m for m in hint.__metadata__ if isinstance(m, Range)]):
        allowed, integer = ranges[0], args[0] is int or set(typing.get_args(args[0])) == {int, type(None)}
        step = 1 if integer else 0.5
        if allowed.ge is not None:
            return allowed.ge - step, ""
        if allowed.gt is not None:
            return allowed.gt, ""
        if allowed.le is not None:
            return allowed.le + step, ""
        if allowed.lt is not None:
            return allowed.lt, ""
        assert not integer, "an unbounded integer range refuses nothing"
        return math.inf, ""
    if origin in (dict, Mapping):
        value, suffix = out_of_range(args[1])
        return {"query": value}, f"[query]{suffix}"
    if origin in (list, tuple, Sequence):
        value, suffix = out_of_range(args[0])
        return [value], f"[0]{suffix}"
    declared = [arg for arg in args if _declared(arg)]  # a union: its declared member
    return out_of_range(declared[0])


def _own_fields(cls: type) -> list[str]:
    """The fields a class declares itself (its own __init__ parameters or annotations)."""
    if "__dataclass_fields__" in cls.__dict__:
        return [n for n in field_hints(cls) if n in cls.__dict__.get("__annotations__", {})]
    init = cls.__dict__.get("__init__")
    return [] if init is None else [n for n in inspect.signature(init).parameters if n in field_hints(cls)]


def _cases(targets: Sequence[Any], own_only: bool) -> list[tuple[Any, str]]:
    cases = []
    for target in targets:
        names = _own_fields(target) if own_only and isinstance(target, type) else list(field_hints(target))
        cases += [(target, n) for n in names if _declared(field_hints(target)[n])]
    return cases


def _text(value: Any) -> str:
    return json.dumps(value) if isinstance(value, dict | list) else str(value)


# ---- every field declares its range --------------------------------------------------------------------


def test_the_walk_finds_every_kind_of_config_class():
    names = {c.__name__ for c in CLASSES}
    assert {"SequenceClassifier", "CausalLM", "QuestionAnswering", "ChatSFTDataModule", "ChatSource"} <= names
    assert {m.__name__ for m in lit_lora.methods.METHODS} | {"Quantization", "SquadV2DataModule"} <= names


@pytest.mark.parametrize("target", EVERYTHING, ids=_name)
def test_every_numeric_or_enumerated_field_declares_its_range(target):
    undeclared = [name for name, hint in field_hints(target).items() if _undeclared(hint)]
    assert undeclared == [], f"{_name(target)}: declare a Range (lit_lora/core/ranges.py) for {undeclared}"


# ---- every declared field refuses a value outside it ---------------------------------------------------


@pytest.mark.parametrize(("target", "field"), _cases(EVERYTHING, own_only=False), ids=_name)
def test_the_check_refuses_an_out_of_range_value_for_every_field_of_every_class(target, field):
    value, suffix = out_of_range(field_hints(target)[field])
    with pytest.raises(LitLoraError) as err:
        check_config(target, {field: value}, "key.")
    assert str(err.value).startswith(f"key.{field}{suffix}={_shown(value)} must be "), str(err.value)
    assert "\n" not in str(err.value)


def _leaf(value: Any) -> Any:
    """The out-of-range number or name inside a container value."""
    if isinstance(value, dict | list):
        return _leaf(next(iter(value.values() if isinstance(value, dict) else value)))
    return value


def _shown(value: Any) -> str:
    leaf = _leaf(value)
    return repr(leaf) if isinstance(leaf, str) else str(leaf)


@pytest.fixture(scope="module")
def cli(tmp_path_factory: pytest.TempPathFactory) -> Any:
    """One parser of the real CLI; each case parses with it and runs the CLI's own check."""
    root = tmp_path_factory.mktemp("runs")
    args = ["--model", _qualified(SequenceClassifier), "--model.model_name_or_path", "base"]
    args += ["--data", _qualified(SST2DataModule), "--trainer.default_root_dir", str(root)]
    return build_cli([*args, "--trainer.logger", "false"], run=False)


def _qualified(cls: type) -> str:
    return f"{cls.__module__}.{cls.__qualname__}"


def _concrete(cls: type) -> type:
    return next(c for c in (cls, *_subclasses(cls)) if not inspect.isabstract(c))


def _cli_args(cls: type, field: str, value: Any) -> list[str]:
    """Command-line arguments that set ``field`` of config class ``cls`` to ``value``."""
    place = next(p for kind, p in CLI_PLACES.items() if issubclass(cls, kind))
    carrier = _concrete(cls)
    args = ["--model", _qualified(SequenceClassifier), "--model.model_name_or_path", "base"]
    args += ["--data", _qualified(SST2DataModule)]
    if place == "data.sources[0]":
        return [
            *args,
            "--data",
            _qualified(ChatSFTDataModule),
            "--data.sources",
            _text([{**GOOD_SOURCE, field: value}]),
        ]
    if place in ("model", "data", "model.adapter"):
        args += [f"--{place}", _qualified(carrier)]
    if issubclass(carrier, ChatSFTDataModule):  # its one required argument
        args += ["--data.sources", _text([GOOD_SOURCE])]
    return [*args, f"--{LINK_SOURCES.get(f'{place}.{field}', f'{place}.{field}')}", _text(value)]


def refusal(run: Callable[[], Any]) -> tuple[int, str]:
    """The exit status and the one error line of ``run``, the way the CLI reports it."""
    stderr = io.StringIO()
    with contextlib.redirect_stderr(stderr):
        try:
            run()
        except LitLoraError as err:
            return 2, f"lit_lora: error: {err}"
        except SystemExit as stop:
            lines = [line for line in stderr.getvalue().splitlines() if line.startswith("lit_lora: error:")]
            assert len(lines) == 1, stderr.getvalue()
            return int(stop.code or 0), lines[0]
    return 0, ""


@pytest.mark.parametrize(("cls", "field"), _cases(CLASSES, own_only=True), ids=_name)
def test_the_cli_refuses_an_out_of_range_value_for_every_field_in_one_line(cli, cls, field):
    value, suffix = out_of_range(field_hints(cls)[field])
    place = next(p for kind, p in CLI_PLACES.items() if issubclass(cls, kind))
    args = _cli_args(cls, field, value)

    def parse_and_check() -> None:
        cli.parse_arguments(cli.parser, args)

    status, line = refusal(parse_and_check)
    assert status == 2, args
    key = LINK_SOURCES.get(f"{place}.{field}", f"{place}.{field}{suffix}")
    assert key in line and str(_leaf(value)) in line, line


@pytest.mark.parametrize(("target", "field"), _cases(list(COMMANDS), own_only=False), ids=_name)
def test_merge_matrix_and_sweep_refuse_an_out_of_range_flag_in_one_line(target, field, tmp_path, monkeypatch):
    from lit_lora.__main__ import main

    monkeypatch.chdir(tmp_path)
    value, suffix = out_of_range(field_hints(target)[field])
    values = value if isinstance(value, list) else [value]
    flag = "--" + field.replace("_", "-")
    status, line = refusal(lambda: main([*COMMANDS[target], flag, *map(str, values)]))
    assert status == 2
    assert line.startswith(f"lit_lora: error: {flag}{suffix}=") and str(_leaf(value)) in line, line
    assert not (tmp_path / "merged").exists() and not (tmp_path / "matrix").exists()


@pytest.mark.parametrize(("target", "field"), _cases([Sweep], own_only=False), ids=_name)
def test_a_sweep_file_refuses_an_out_of_range_value(target, field, tmp_path):
    value, _ = out_of_range(field_hints(target)[field])
    spec = {"method": "grid", "parameters": {"x": {"values": [1]}}, field: value}
    (tmp_path / "sweep.yaml").write_text(yaml.safe_dump(spec))
    with pytest.raises(LitLoraError) as err:
        load_sweep(tmp_path / "sweep.yaml")
    assert f"sweep.yaml: {field}={_shown(value)} must be " in str(err.value), str(err.value)


def test_the_python_api_refuses_a_subclass_field_by_its_key():
    from lit_lora.data import GSM8KDataModule
    from lit_lora.models.question_answering import QuestionAnswering

    with pytest.raises(LitLoraError, match=r"^model\.n_best=0 must be an integer >= 1$"):
        QuestionAnswering("base", n_best=0)
    with pytest.raises(LitLoraError, match=r"^data\.max_length=0 must be an integer >= 1$"):
        GSM8KDataModule(max_length=0)
    with pytest.raises(LitLoraError, match=r"^model\.adapter\.alpha=0\.0 must be a number > 0$"):
        SequenceClassifier("base", adapter=lit_lora.methods.LoraSpec(alpha=0.0))


def test_an_out_of_range_value_ends_the_process_with_one_line_and_status_2(tmp_path):
    # merge starts without torch, so a real process is cheap; fit's exit path is test_cli's and bad_inputs'.
    args = ["merge", "a", "b", "--method", "ties", "--weights", "1", "1", "--density", "0", "--out", "merged"]
    result = run_cli(*args, cwd=tmp_path)
    assert result.returncode == 2
    assert result.stderr.splitlines() == ["lit_lora: error: --density=0.0 must be a number in (0, 1]"], (
        result.stderr
    )
    assert list(tmp_path.iterdir()) == []  # refused before anything was written


def test_a_sweep_is_refused_before_its_first_run_for_a_value_out_of_range(tmp_path, monkeypatch):
    monkeypatch.chdir(REPO)
    command = [
        "${env}",
        "${interpreter}",
        "-m",
        "lit_lora",
        "fit",
        "--config",
        "configs/sst2_lora.yaml",
        "${args}",
    ]
    spec = {"method": "grid", "command": command, "parameters": {"model.adapter.r": {"values": [8, 0]}}}
    (tmp_path / "sweep.yaml").write_text(yaml.safe_dump(spec))
    with pytest.raises(
        LitLoraError,
        match=r"parameter model\.adapter\.r=0 rejected by 'lit_lora fit': "
        r"model\.adapter\.r=0 must be an integer >= 1$",
    ):
        validate_keys(load_sweep(tmp_path / "sweep.yaml"))
