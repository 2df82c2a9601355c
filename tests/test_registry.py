"""What a new PEFT method, merge method or classification task needs: its own file (or row), no more."""

from __future__ import annotations

import dataclasses
import importlib
import inspect
import json
import os
import pkgutil
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import yaml
from peft import LoraConfig

import lit_lora.methods
from lit_lora.errors import LitLoraError
from lit_lora.merge import checks as merge_checks
from lit_lora.merge import command as merge
from lit_lora.methods import METHODS, LoraSpec, PeftMethod, method_of
from tests.helpers import REPO


def test_every_method_file_is_registered_and_exported():
    defined = set()
    for info in pkgutil.iter_modules(lit_lora.methods.__path__):
        module = importlib.import_module(f"lit_lora.methods.{info.name}")
        for value in vars(module).values():
            if (
                inspect.isclass(value)
                and value.__module__ == module.__name__
                and issubclass(value, PeftMethod)
            ):
                defined |= set() if inspect.isabstract(value) else {value}
    assert set(METHODS) == defined and len(METHODS) == 7
    for method in METHODS:  # VeraSpec was importable but missing from __all__
        assert method.__name__ in lit_lora.methods.__all__
        assert getattr(lit_lora.methods, method.__name__) is method


def test_method_of_refuses_two_methods_claiming_one_saved_config(monkeypatch):
    @dataclasses.dataclass
    class Greedy(LoraSpec):
        @classmethod
        def recognises(cls, config):
            return True

    assert method_of(LoraConfig(r=4)) is LoraSpec
    monkeypatch.setattr(lit_lora.methods, "METHODS", (*METHODS, Greedy))
    with pytest.raises(RuntimeError, match="LoraSpec, Greedy all recognise this PeftType.LORA config"):
        method_of(LoraConfig(r=4))


# A new method and a new classification task, each one file beside the shipped ones, and one config.
NEW_METHOD = """
from dataclasses import dataclass
from typing import ClassVar

from lit_lora.methods.lora import LoraSpec


@dataclass
class ScratchSpec(LoraSpec):
    method: ClassVar[str] = "scratch"
    label: ClassVar[str] = "Scratch"

    @classmethod
    def recognises(cls, config):
        return False
"""
NEW_TASK = """
from lit_lora.data.classification import ClassificationDataModule


class ScratchTopicsDataModule(ClassificationDataModule):
    hub_path = "none/scratch"
    text_columns = ("text",)
    label_names = ("a", "b", "c")
"""
CHECK = """
import contextlib, io, sys
import lit_lora.data, lit_lora.methods
from lit_lora.cli import build_cli

printed = io.StringIO()
with contextlib.redirect_stdout(printed), contextlib.suppress(SystemExit):
    build_cli(["fit", "--config", sys.argv[1], "--print_config"])
cli = build_cli(["--config", sys.argv[1]], run=False)
print([m.method for m in lit_lora.methods.METHODS], "ScratchSpec" in lit_lora.methods.__all__)
print("ScratchTopicsDataModule" in lit_lora.data.__all__, cli.datamodule.num_labels)
print(type(cli.model.adapter).__name__, cli.model.adapter.r)
print([line.strip() for line in printed.getvalue().splitlines() if "Scratch" in line])
"""


def test_a_new_method_and_task_are_their_own_file_plus_a_config(tiny_bert, tmp_path):
    shutil.copytree(REPO / "lit_lora", tmp_path / "lit_lora", ignore=shutil.ignore_patterns("__pycache__"))
    (tmp_path / "lit_lora" / "methods" / "scratch.py").write_text(NEW_METHOD)
    (tmp_path / "lit_lora" / "data" / "scratch_topics.py").write_text(NEW_TASK)
    config = yaml.safe_load((REPO / "configs" / "sst2_lora.yaml").read_text())
    config["model"]["init_args"]["model_name_or_path"] = str(tiny_bert)
    config["model"]["init_args"]["adapter"] = {
        "class_path": "lit_lora.methods.ScratchSpec",
        "init_args": {"r": 3},
    }
    config["data"]["class_path"] = "lit_lora.data.ScratchTopicsDataModule"
    (tmp_path / "scratch.yaml").write_text(yaml.safe_dump(config))
    (tmp_path / "check.py").write_text(textwrap.dedent(CHECK))

    env = {**os.environ, "PYTHONPATH": str(tmp_path), "HF_HUB_OFFLINE": "1"}
    result = subprocess.run(
        [sys.executable, str(tmp_path / "check.py"), str(tmp_path / "scratch.yaml")],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.splitlines() == [
        "['adalora', 'dora', 'lora', 'loraplus', 'olora', 'pissa', 'scratch', 'vera'] True",
        "True 3",
        "ScratchSpec 3",
        "['class_path: lit_lora.methods.ScratchSpec', 'class_path: lit_lora.data.ScratchTopicsDataModule']",
    ]


def fake_adapter(directory: Path) -> Path:
    directory.mkdir()
    config = {"peft_type": "LORA", "r": 4, "lora_alpha": 8, "target_modules": ["q"], "task_type": "CAUSAL_LM"}
    (directory / "adapter_config.json").write_text(json.dumps({**config, "base_model_name_or_path": "b"}))
    (directory / "adapter_model.safetensors").write_bytes(b"")
    return directory


def test_a_merge_method_is_its_table_row(tmp_path, monkeypatch):
    calls = []
    row = dataclasses.replace(
        merge_checks.COMBINATIONS["average_ab"], combine=lambda *args: calls.append(args)
    )
    monkeypatch.setitem(merge_checks.COMBINATIONS, "average_ab", row)
    sources = [fake_adapter(tmp_path / "a"), fake_adapter(tmp_path / "b")]
    merge.merge(sources, "average_ab", [1.0, 3.0], tmp_path / "out")
    assert [(a, c["base_model_name_or_path"], w) for a, c, w, _ in calls] == [(sources, "b", [1.0, 3.0])]
    assert json.loads((tmp_path / "out" / "merge.json").read_text())["method"] == "average_ab"

    needs_density = merge_checks.Combination("pruned", "help", density=True)
    monkeypatch.setitem(merge_checks.COMBINATIONS, "pruned", needs_density)
    configs = [merge_checks.read_config(s) for s in sources]
    with pytest.raises(LitLoraError, match="--method pruned needs --density"):
        merge_checks.check_adapters(sources, configs, "pruned", [1.0, 1.0], None)
