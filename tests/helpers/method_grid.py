"""PEFT-style checks that tests/test_method_grid.py's table runs for every method on each task module.

A method's row gives its spec and an independent count of its trainable adapter parameters from
layer shapes; these checks then assert, per task: exact trainable counts, gradients on adapter and
head parameters only, merged = unmerged outputs, PEFT-format save/load with the same outputs, an exact
resume from a checkpoint, and what results.json and the report say.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from pathlib import Path
from typing import Any

import lightning as L
import pytest
import torch
from lightning.pytorch.callbacks import ModelCheckpoint

from lit_lora.methods import ADAPTER, PeftMethod
from lit_lora.models import CausalLM, PeftModule, QuestionAnswering, SequenceClassifier
from lit_lora.report.runs import approach
from tests.helpers import sst2
from tests.helpers.training import LossTrace, fit

TASKS = ("classification", "causal_lm", "question_answering")
# Two projections of different shapes in Llama (grouped-query attention narrows v_proj).
TARGETS = {"classification": ["query", "value"], "causal_lm": ["q_proj", "v_proj"]}
TARGETS["question_answering"] = TARGETS["classification"]
AdapterCount = Callable[[list[tuple[int, int]]], int]  # (d_in, d_out) of each adapted layer -> count


def build(task: str, spec: PeftMethod, models: dict[str, Path], **kwargs: Any) -> PeftModule:
    """The task module on its tiny model (tiny BERT for classification and QA, tiny Llama for LM)."""
    kwargs.setdefault("learning_rate", 1e-2)
    kwargs.setdefault("warmup_ratio", 0.0)
    if task == "classification":
        return SequenceClassifier(str(models["bert"]), adapter=spec, num_labels=2, **kwargs)
    if task == "question_answering":
        return QuestionAnswering(str(models["bert"]), adapter=spec, **kwargs)
    return CausalLM(str(models["llama"]), adapter=spec, **kwargs)


def batch(task: str, module: PeftModule) -> dict[str, torch.Tensor]:
    """A seeded batch of 3 rows x 12 tokens with the task's training targets."""
    generator = torch.Generator().manual_seed(0)
    vocab = module.peft_model.config.vocab_size
    ids = torch.randint(5, vocab, (3, 12), generator=generator)
    inputs = {"input_ids": ids, "attention_mask": torch.ones_like(ids)}
    if task == "classification":
        return {**inputs, "labels": torch.tensor([0, 1, 1])}
    if task == "question_answering":
        return {
            **inputs,
            "start_positions": torch.tensor([0, 3, 5]),
            "end_positions": torch.tensor([0, 4, 7]),
        }
    return {**inputs, "labels": ids.clone()}


def outputs(model: torch.nn.Module, task: str, inputs: dict[str, torch.Tensor]) -> torch.Tensor:
    """The task's logits from a PEFT tuner model or a merged plain model, without the targets."""
    targets = ("labels", "start_positions", "end_positions")
    result = model(**{k: v for k, v in inputs.items() if k not in targets})
    if task == "question_answering":
        return torch.stack([result.start_logits, result.end_logits])
    return result.logits


def adapted_shapes(module: PeftModule, task: str) -> list[tuple[int, int]]:
    """(in, out) features of the targeted layers, read from the plain base model."""
    base = module.auto_model_class.from_pretrained(module.model_name_or_path, **module._build_kwargs())
    return [
        (m.in_features, m.out_features)
        for name, m in base.named_modules()
        if isinstance(m, torch.nn.Linear) and name.rsplit(".", 1)[-1] in TARGETS[task]
    ]


def head_params(module: PeftModule, task: str) -> int:
    """Parameters of the task head (and pooler) trained in full: classifier 2 x H + 2, pooler H x H + H,
    QA span head 2 x H + 2; a language model trains none."""
    hidden = module.peft_model.config.hidden_size
    return {
        "classification": 2 * hidden + 2 + hidden * hidden + hidden,
        "question_answering": 2 * hidden + 2,
    }.get(task, 0)


def perturb(module: PeftModule) -> None:
    """Move every trainable weight off its initialisation, as training would (LoRA's B starts at zero)."""
    generator = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for param in module.peft_model.parameters():
            if param.requires_grad:
                param.add_(0.1 * torch.randn(param.shape, generator=generator))


# ---- the checks -------------------------------------------------------------------------------------


def check_trainable_count(module: PeftModule, task: str, adapter_count: AdapterCount) -> None:
    shapes = adapted_shapes(module, task)
    assert len(shapes) == 4  # two targets in each of two layers
    expected = adapter_count(shapes) + head_params(module, task)
    assert module.parameter_counts()["trainable"] == expected


def check_only_adapter_and_head_get_gradients(module: PeftModule, task: str) -> None:
    model = module.peft_model
    model.base_model(**batch(task, module)).loss.backward()
    with_grad = {n for n, p in model.named_parameters() if p.grad is not None}
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert with_grad == trainable
    assert trainable and all(ADAPTER in n.split(".") for n in trainable), sorted(trainable)[:3]


def check_merged_equals_unmerged(module: PeftModule, task: str) -> None:
    perturb(module)
    model = module.peft_model.eval()
    inputs = batch(task, module)
    with torch.no_grad():
        expected = outputs(model.base_model, task, inputs)
        # Merged in place rather than merge_and_unload: PEFT 0.21's VeRA unload fails on a head that is
        # not a Linear (BERT's pooler); the merge arithmetic under test is the same.
        model.merge_adapter()
        torch.testing.assert_close(outputs(model.base_model, task, inputs), expected, rtol=1e-4, atol=1e-5)
        model.unmerge_adapter()
        torch.testing.assert_close(outputs(model.base_model, task, inputs), expected, rtol=1e-4, atol=1e-5)


def check_save_and_reload(
    module: PeftModule, task: str, models: dict[str, Path], directory: Path, atol: float = 0
) -> None:
    """The PEFT-format export reloads, through lit_lora and through plain PEFT, to the same outputs."""
    from peft import PeftModel

    perturb(module)
    module.save_adapter(directory)
    inputs = batch(task, module)
    with torch.no_grad():
        expected = outputs(module.peft_model.eval().base_model, task, inputs)
        reloaded = build(task, module.adapter, models, adapter_path=str(directory)).peft_model.eval()
        got = outputs(reloaded.base_model, task, inputs)
        base = module.auto_model_class.from_pretrained(module.model_name_or_path, **module._build_kwargs())
        plain = PeftModel.from_pretrained(base, directory).eval()
        plain_got = outputs(plain.base_model, task, inputs)
    for result in (got, plain_got):
        if atol:
            torch.testing.assert_close(result, expected, rtol=0, atol=atol)
        else:
            assert torch.equal(result, expected)


def check_described(module: PeftModule, method: str, label: str) -> None:
    record = module.describe()
    assert (record["method"], record["method_label"]) == (method, label)
    assert approach({**record, "precision": "32-true"}).startswith(label)


def check_method_on_task(
    task: str,
    make_spec: Callable[[str], PeftMethod],
    models: dict[str, Path],
    directory: Path,
    adapter_count: AdapterCount,
    names: tuple[str, str],
    atol: float = 0.0,
) -> PeftModule:
    """Every grid check for one method on one task module (each on a freshly built module); ``names`` is
    the (method, label) pair results.json must carry. Returns the module that was saved and reloaded."""
    check_trainable_count(build(task, make_spec(task), models), task, adapter_count)
    check_only_adapter_and_head_get_gradients(build(task, make_spec(task), models), task)
    check_merged_equals_unmerged(build(task, make_spec(task), models), task)
    module = build(task, make_spec(task), models)
    check_save_and_reload(module, task, models, directory, atol=atol)
    check_described(module, *names)
    return module


def check_resume(spec: PeftMethod, tiny_bert: Path, tiny_sst2: Path, root: Path) -> None:
    """Resumed from the checkpoint its first of two epochs left, a classifier run continues the
    uninterrupted run's loss curve and ends on its weights."""

    def run(name: str, *callbacks: L.Callback, ckpt_path: str | None = None) -> tuple[PeftModule, LossTrace]:
        module = build("classification", copy.deepcopy(spec), {"bert": tiny_bert})
        data = sst2(tiny_bert, tiny_sst2, batch_size=16)
        trace = fit(module, data, root / name, max_epochs=2, callbacks=list(callbacks),
                    enable_checkpointing=True, ckpt_path=ckpt_path)  # fmt: skip
        return module, trace

    # The uninterrupted run keeps each epoch's checkpoint: no second run is needed to stop half-way.
    straight, straight_losses = run("straight", ModelCheckpoint(dirpath=root / "ckpt", save_top_k=-1))
    half = len(straight_losses.losses) // 2
    resumed, resumed_losses = run("resumed", ckpt_path=str(root / "ckpt" / f"epoch=0-step={half}.ckpt"))
    assert resumed_losses.losses == pytest.approx(straight_losses.losses[half:], abs=1e-5)
    expected = {n: p for n, p in straight.peft_model.named_parameters() if p.requires_grad}
    for name, param in resumed.peft_model.named_parameters():
        if param.requires_grad:
            torch.testing.assert_close(param, expected[name], rtol=0, atol=1e-6, msg=name)
