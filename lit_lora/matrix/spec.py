"""The ``matrix`` spec: tasks, a base model and the models (adapters, merges) to evaluate on each task."""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from lit_lora.errors import LitLoraError

TOP_KEYS = {"base", "tasks", "models"}
TASK_KEYS = {"name", "config", "metric", "args"}
MODEL_KEYS = {"name", "adapter", "own_task", "merge"}
NAME = re.compile(r"^[A-Za-z0-9_.-]+$")  # names become folder names under DIR/cells


@dataclass(frozen=True)
class Task:
    name: str
    config: str
    metrics: tuple[str, ...]  # keys read from results.json; the first is the task's headline
    args: tuple[str, ...] = ()

    @property
    def metric(self) -> str:
        return self.metrics[0]


@dataclass(frozen=True)
class Column:
    """One metric of one task: a column of the tables. The headline metric's column is the task's name."""

    task: Task
    metric: str

    @property
    def name(self) -> str:
        return self.task.name if self.metric == self.task.metric else f"{self.task.name}:{self.metric}"


@dataclass(frozen=True)
class Model:
    name: str
    adapter: str | None = None
    own_task: str | None = None
    merge: bool = False

    @property
    def kind(self) -> str:
        return "base" if self.adapter is None else "merge" if self.merge else "adapter"


@dataclass(frozen=True)
class Spec:
    base: str
    tasks: tuple[Task, ...]
    models: tuple[Model, ...]

    @property
    def columns(self) -> tuple[Column, ...]:
        return tuple(Column(t, m) for t in self.tasks for m in t.metrics)

    def own_adapter(self, task: str) -> Model | None:
        """The (non-merge) model trained on ``task``, against which merges are measured."""
        return next((m for m in self.models if m.own_task == task and not m.merge), None)


def _mapping(value: Any, where: str, allowed: set[str], required: set[str]) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise LitLoraError(f"{where} must be a mapping with keys {sorted(allowed)}")
    unknown = sorted(set(value) - allowed)
    if unknown:
        raise LitLoraError(f"{where}: unknown key(s) {unknown}; allowed: {sorted(allowed)}")
    missing = sorted(required - set(value))
    if missing:
        raise LitLoraError(f"{where}: missing key(s) {missing}")
    return value


def _name(value: Any, where: str, seen: set[str]) -> str:
    if not isinstance(value, str) or not NAME.match(value):
        raise LitLoraError(f"{where}.name={value!r} must be letters, digits, '_', '-' or '.'")
    if value in seen:
        raise LitLoraError(f"{where}.name={value!r} is a duplicate name")
    seen.add(value)
    return value


def _args(value: Any, where: str) -> tuple[str, ...]:
    if value is None:
        return ()
    if isinstance(value, str):  # one command-line string is easier to write by hand
        return tuple(shlex.split(value))
    if isinstance(value, list) and all(isinstance(v, str | int | float) for v in value):
        return tuple(str(v) for v in value)
    raise LitLoraError(f"{where}.args must be a string or a list of strings")


def _metrics(value: Any, where: str) -> tuple[str, ...]:
    metrics = [value] if isinstance(value, str) else value
    if not isinstance(metrics, list) or not metrics:
        raise LitLoraError(f"{where}.metric={value!r} must be a logged key (test/acc) or a list of them")
    for metric in metrics:
        if not isinstance(metric, str) or "/" not in metric:
            raise LitLoraError(f"{where}.metric={metric!r} must be a logged key such as test/acc")
    if len(set(metrics)) != len(metrics):
        raise LitLoraError(f"{where}.metric={value!r} names a key twice")
    return tuple(metrics)


def parse_spec(raw: Any, check_files: bool = True) -> Spec:
    """Check the structure (and, unless ``check_files`` is false, that every file and folder exists)."""
    raw = _mapping(raw, "spec", TOP_KEYS, TOP_KEYS)
    if not isinstance(raw["base"], str) or not raw["base"]:
        raise LitLoraError("spec: base must be a model name or path (model_name_or_path)")
    for key in ("tasks", "models"):
        if not isinstance(raw[key], list) or not raw[key]:
            raise LitLoraError(f"spec: {key} must be a non-empty list")
    tasks, names = [], set()
    for i, item in enumerate(raw["tasks"]):
        where = f"tasks[{i}]"
        item = _mapping(item, where, TASK_KEYS, {"name", "config", "metric"})
        name = _name(item["name"], where, names)
        metrics = _metrics(item["metric"], where)
        config = str(item["config"])
        if check_files and not Path(config).is_file():
            raise LitLoraError(f"{where}.config={config}: no such file")
        tasks.append(Task(name, config, metrics, _args(item.get("args"), where)))
    task_names, models, names = {t.name for t in tasks}, [], set()
    for i, item in enumerate(raw["models"]):
        where = f"models[{i}]"
        item = _mapping(item, where, MODEL_KEYS, {"name", "adapter"})
        name = _name(item["name"], where, names)
        adapter, own, merge = item["adapter"], item.get("own_task"), item.get("merge", False)
        if not isinstance(merge, bool):
            raise LitLoraError(f"{where}.merge={merge!r} must be true or false")
        if adapter is None and (merge or own is not None):
            raise LitLoraError(f"{where} ({name}): the base model (adapter: null) has no merge or own_task")
        if merge and own is not None:
            raise LitLoraError(
                f"{where} ({name}): a merge has no own_task; mark the adapters it was built from"
            )
        if own is not None and own not in task_names:
            raise LitLoraError(f"{where}.own_task={own!r} is not a task; tasks: {sorted(task_names)}")
        if own is not None and any(m.own_task == own for m in models):
            raise LitLoraError(f"{where}.own_task={own!r}: another model already claims that task")
        if adapter is not None:
            adapter = str(adapter)
            if check_files and not Path(adapter).is_dir():
                raise LitLoraError(f"{where}.adapter={adapter}: no such folder")
        models.append(Model(name, adapter, own, merge))
    return Spec(raw["base"], tuple(tasks), tuple(models))


def load_spec(path: str | Path, check_files: bool = True) -> Spec:
    path = Path(path)
    if not path.is_file():
        raise LitLoraError(f"matrix spec {path}: no such file")
    try:
        raw = yaml.safe_load(path.read_text())
    except yaml.YAMLError as err:
        raise LitLoraError(f"matrix spec {path}: not YAML ({str(err).splitlines()[0]})") from None
    return parse_spec(raw, check_files)


def cell_command(spec: Spec, model: Model, task: Task, cell_dir: Path, python: str) -> list[str]:
    """The ordinary ``lit_lora test`` command line for one (model, task) cell."""
    command = [python, "-m", "lit_lora", "test", "--config", task.config]
    command += ["--model.model_name_or_path", spec.base]
    if model.adapter is not None:
        command += ["--model.adapter_path", model.adapter]
    return command + [*task.args, "--trainer.default_root_dir", str(cell_dir)]
